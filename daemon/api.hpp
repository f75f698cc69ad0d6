// The JSON API under /api/v1: authentication, permissions, input validation, pagination and
// audit helpers shared by every resource (daemon/api_*.cpp).
//
// - Every route names the permission it needs; Api::add wraps the handler so that a request
//   without a valid bearer token gets 401 and one whose principal lacks the permission gets 403,
//   before the handler runs. Public routes name kPublic.
// - Tokens: "mgs_..." are user sessions (POST /api/v1/session), "mgk_..." machine API keys. Both
//   are random, stored only as SHA-256 hashes, expire and can be revoked.
// - Roles grant permissions: readonly {read}; staff {read, crm.write, mail.send}; admin all.
//   An API key carries scopes out of {read, crm.write, mail.send, webform}, never admin.
// - Validation failures throw ApiError(422, code, message, field); malformed JSON is 400.
#pragma once
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include "daemon/router.hpp"
#include "daemon/services.hpp"
#include "store/audit.hpp"

namespace pqxx {
class field;
}

namespace mailgate {

inline constexpr const char* kPublic = "";
inline constexpr const char* kSelf = "self";  // any signed-in user, even one who must change the password
inline constexpr const char* kRead = "read";
inline constexpr const char* kCrmWrite = "crm.write";
inline constexpr const char* kMailSend = "mail.send";
inline constexpr const char* kWebform = "webform";
inline constexpr const char* kAdmin = "admin";

struct Principal {
  std::string kind;  // "user" | "api_key"
  std::int64_t id = 0;
  std::string label;  // the user's e-mail or the key's name
  std::set<std::string> roles;        // users
  std::set<std::string> permissions;  // what the roles or scopes grant
  std::int64_t session_id = 0;        // users: the session the token belongs to
  bool must_change_password = false;  // users: only kSelf routes until the password is changed
  bool must_enrol_totp = false;       // users: only kSelf routes until TOTP is set up (when required)

  bool can(const std::string& permission) const { return permissions.count(permission) > 0; }
  bool is_admin() const { return can(kAdmin); }
  Actor actor() const { return Actor{kind, id, label}; }
};

std::set<std::string> permissions_of_roles(const std::set<std::string>& roles);

using ApiHandler = std::function<boost::asio::awaitable<HttpResponse>(HttpRequest&, const Principal&)>;

struct ApiRoute {
  std::string method, pattern, permission;
};

class Api {
 public:
  Api(Router& router, Services& services) : router_(router), services_(services) {}
  void add(const std::string& method, const std::string& pattern, const std::string& permission, ApiHandler handler);
  const std::vector<ApiRoute>& routes() const { return routes_; }
  Services& services() { return services_; }

 private:
  Router& router_;
  Services& services_;
  std::vector<ApiRoute> routes_;
};

// Registers every /api/v1 route (each resource's register_* function below).
void register_api_routes(Api& api);
void register_openapi_route(Api& api);
void register_access_routes(Api& api);          // api_access.cpp: session, me, users, api keys, roles, settings, audit
void register_mailbox_routes(Api& api);         // api_mailboxes.cpp
void register_contact_routes(Api& api);         // api_contacts.cpp: contacts and groups
void register_administration_routes(Api& api);  // api_administrations.cpp: administrations, templates, products, orders
void register_message_routes(Api& api);         // api_messages.cpp: stored mail, its handling, links and downloads
void register_outbox_routes(Api& api);          // api_outbox.cpp: sending mail, templates, group mailings, the outbox
void register_receiver_routes(Api& api);        // api_receivers.cpp: trusted receivers, administration members
void register_mailgun_domain_routes(Api& api);  // api_mailgun_domains.cpp: Mailgun domains, chosen per mailbox

// --- request input -------------------------------------------------------------------------

// A JSON object body, read field by field. Every getter validates and throws ApiError(422)
// naming the field; strings are trimmed; single-line strings refuse CR and LF.
class JsonInput {
 public:
  explicit JsonInput(const std::string& body);  // 400 unless a JSON object

  bool has(const std::string& key) const;
  const boost::json::value* raw(const std::string& key) const;

  std::optional<std::string> text(const std::string& key, bool required = false, std::size_t max_length = 200,
                                  bool multiline = false) const;
  std::optional<std::string> email(const std::string& key, bool required = false) const;  // normalised
  std::optional<bool> boolean(const std::string& key) const;
  std::optional<std::int64_t> integer(const std::string& key, std::int64_t min, std::int64_t max,
                                      bool required = false) const;
  std::optional<std::vector<std::string>> text_list(const std::string& key, std::size_t max_items = 100,
                                                    bool required = false) const;
  std::optional<std::vector<std::int64_t>> id_list(const std::string& key, bool required = false) const;

  // Refuses any key not in `known` with 422 unknown_field.
  void only(const std::set<std::string>& known) const;
  const boost::json::object& object() const { return object_; }

 private:
  boost::json::object object_;
};

[[noreturn]] void invalid(const std::string& field, const std::string& message, const std::string& code = "invalid");

// Path parameter {name} as a positive id, else 404.
std::int64_t path_id(const HttpRequest& req, const std::string& name = "id");

// --- query parameters ---------------------------------------------------------------------

// ?key=value trimmed ("" when absent); 422 naming the key when it has a line break or is too long.
std::string query_param(const HttpRequest& req, const std::string& key, std::size_t max_length = 200);
// ?key=true|false as "" (absent: any), "true" or "false"; 422 otherwise.
std::string query_bool(const HttpRequest& req, const std::string& key);
// ?key=<id> (0 when absent); 422 unless a positive id.
std::int64_t query_id(const HttpRequest& req, const std::string& key);
// Escapes % _ and \ for a LIKE pattern (PostgreSQL's default escape character).
std::string escape_like(const std::string& s);

// --- pagination ----------------------------------------------------------------------------

// ?limit=1..200 (default 50) and ?cursor=<opaque>. The cursor carries the last id seen; lists
// are ordered by id, so pages stay stable while rows are added.
struct Page {
  std::int64_t limit = 50;
  std::int64_t after_id = 0;
};
Page page_of(const HttpRequest& req);
// {"items": [...], "next_cursor": "..." | null}; `items` holds at most limit+1 rows fetched, the
// extra row only tells that there is a next page.
HttpResponse page_response(boost::json::array items, const Page& page, const std::function<std::int64_t(const boost::json::value&)>& id_of);

// --- columns to JSON --------------------------------------------------------------------------

std::vector<std::string> pg_text_array(const pqxx::field& f);  // a text[] column; NULL elements skipped
boost::json::array json_text_array(const pqxx::field& f);
boost::json::array json_id_array(const pqxx::field& f);        // a bigint[] column
boost::json::value json_nullable_id(const pqxx::field& f);
boost::json::value json_nullable_text(const pqxx::field& f);
// SQL that renders a timestamptz column as ISO 8601 UTC ("2026-11-24T10:00:00Z").
std::string sql_iso_time(const std::string& column);

// --- responses and audit -------------------------------------------------------------------

HttpResponse json_response(int status, const boost::json::value& v);

// Field-by-field changes between two JSON objects (only changed fields; secrets masked).
std::vector<FieldChange> diff_objects(const boost::json::object& before, const boost::json::object& after,
                                      const std::set<std::string>& secret_fields = {});

}  // namespace mailgate
