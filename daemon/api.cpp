#include "daemon/api.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "rules/address.hpp"
#include "store/run.hpp"
#include "store/sql.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace json = boost::json;

std::set<std::string> permissions_of_roles(const std::set<std::string>& roles) {
  std::set<std::string> p;
  if (roles.count("readonly") || roles.count("staff") || roles.count("admin")) p.insert({kRead, kSelf});
  if (roles.count("staff") || roles.count("admin")) p.insert({kCrmWrite, kMailSend});
  if (roles.count("admin")) p.insert({kAdmin, kWebform});
  return p;
}

namespace {

std::set<std::string> text_array(const pqxx::field& f) {
  auto v = pg_text_array(f);
  return {v.begin(), v.end()};
}

boost::asio::awaitable<std::optional<Principal>> authenticate(Services& s, const HttpRequest& req) {
  const std::string* auth = req.header("authorization");
  if (!auth || auth->size() < 8 || !std::equal(auth->begin(), auth->begin() + 7, "Bearer ", [](char a, char b) {
        return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
      }))
    co_return std::nullopt;
  const std::string token = trim(std::string_view(*auth).substr(7));
  const bool session = token.rfind("mgs_", 0) == 0, key = token.rfind("mgk_", 0) == 0;
  if (!session && !key) co_return std::nullopt;
  const std::string hash = sha256_hex(token);
  auto op = store_run(s.store, [hash, session](pqxx::connection_base& c) -> std::optional<Principal> {
    pqxx::work tx(c);
    Principal p;
    if (session) {
      auto r = tx.exec_params(
          "SELECT s.id, u.id, u.email, u.password_must_change, "
          "       coalesce((SELECT array_agg(role) FROM user_roles WHERE user_id = u.id), '{}'), "
          "       NOT u.totp_enabled AND (SELECT value = 'true'::jsonb FROM settings WHERE key = 'totp_required') "
          "FROM sessions s JOIN users u ON u.id = s.user_id "
          "WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now() AND u.active",
          hash);
      if (r.empty()) return std::nullopt;
      p.kind = "user";
      p.session_id = r[0][0].as<std::int64_t>();
      p.id = r[0][1].as<std::int64_t>();
      p.label = r[0][2].as<std::string>();
      p.must_change_password = r[0][3].as<bool>();
      p.roles = text_array(r[0][4]);
      p.must_enrol_totp = r[0][5].as<bool>(false);
      p.permissions = permissions_of_roles(p.roles);
    } else {
      auto r = tx.exec_params(
          "UPDATE api_keys k SET last_used_at = now() FROM users u "
          "WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now()) "
          "  AND u.id = k.created_by AND u.active "
          "RETURNING k.id, k.name, k.scopes",
          hash);
      if (r.empty()) return std::nullopt;
      tx.commit();
      p.kind = "api_key";
      p.id = r[0][0].as<std::int64_t>();
      p.label = r[0][1].as<std::string>();
      p.permissions = text_array(r[0][2]);
    }
    return p;
  });
  co_return co_await std::move(op);
}

}  // namespace

void Api::add(const std::string& method, const std::string& pattern, const std::string& permission, ApiHandler handler) {
  routes_.push_back({method, pattern, permission});
  Services& s = services_;
  router_.add(method, pattern, [&s, permission, handler = std::move(handler)](HttpRequest& req) -> boost::asio::awaitable<HttpResponse> {
    if (permission == kPublic) {
      const Principal anonymous;  // named: GCC 12 mis-destroys temporaries in co_return co_await
      co_return co_await handler(req, anonymous);
    }
    auto principal = co_await authenticate(s, req);
    if (!principal) {
      HttpResponse r = HttpResponse::error(401, "unauthenticated", "a valid bearer token is required");
      r.headers.emplace_back("WWW-Authenticate", "Bearer");
      co_return r;
    }
    if (principal->must_change_password && permission != kSelf)
      co_return HttpResponse::error(403, "password_change_required", "change your one-time password first (POST /api/v1/me/password)");
    if (principal->must_enrol_totp && permission != kSelf)
      co_return HttpResponse::error(403, "totp_enrolment_required",
                                    "the organisation requires a second factor: set it up first (POST /api/v1/me/totp)");
    if (!principal->can(permission))
      co_return HttpResponse::error(403, "forbidden", "this needs the '" + permission + "' permission");
    co_return co_await handler(req, *principal);
  });
}

// --- input ---------------------------------------------------------------------------------

void invalid(const std::string& field, const std::string& message, const std::string& code) {
  throw ApiError(422, code, message, field);
}

JsonInput::JsonInput(const std::string& body) {
  boost::system::error_code ec;
  json::value v = json::parse(body.empty() ? std::string_view("{}") : std::string_view(body), ec);
  if (ec) throw ApiError(400, "invalid_json", "the request body is not valid JSON: " + ec.message());
  if (!v.is_object()) throw ApiError(400, "invalid_json", "the request body must be a JSON object");
  object_ = std::move(v.as_object());
}

bool JsonInput::has(const std::string& key) const { return object_.contains(key); }

const json::value* JsonInput::raw(const std::string& key) const {
  auto it = object_.find(key);
  return it == object_.end() ? nullptr : &it->value();
}

std::optional<std::string> JsonInput::text(const std::string& key, bool required, std::size_t max_length, bool multiline) const {
  const json::value* v = raw(key);
  if (!v || v->is_null()) {
    if (required) invalid(key, key + " is required", "required");
    return std::nullopt;
  }
  if (!v->is_string()) invalid(key, key + " must be a string");
  std::string s = multiline ? std::string(v->as_string()) : trim(v->as_string());
  if (!multiline && has_line_break(s)) invalid(key, key + " must not contain a line break");
  if (s.find('\0') != std::string::npos) invalid(key, key + " must not contain a NUL character");
  if (s.size() > max_length) invalid(key, key + " is longer than " + std::to_string(max_length) + " bytes");
  if (required && s.empty()) invalid(key, key + " must not be empty", "required");
  return s;
}

std::optional<std::string> JsonInput::email(const std::string& key, bool required) const {
  auto s = text(key, required, 254);
  if (!s || (s->empty() && !required)) return s;
  auto n = normalize_email(*s);
  if (auto* e = std::get_if<AddressError>(&n)) invalid(key, key + ": " + e->reason, "invalid_address");
  return std::get<std::string>(n);
}

std::optional<bool> JsonInput::boolean(const std::string& key) const {
  const json::value* v = raw(key);
  if (!v || v->is_null()) return std::nullopt;
  if (!v->is_bool()) invalid(key, key + " must be true or false");
  return v->as_bool();
}

std::optional<std::int64_t> JsonInput::integer(const std::string& key, std::int64_t min, std::int64_t max, bool required) const {
  const json::value* v = raw(key);
  if (!v || v->is_null()) {
    if (required) invalid(key, key + " is required", "required");
    return std::nullopt;
  }
  std::int64_t n;
  if (v->is_int64())
    n = v->as_int64();
  else if (v->is_uint64() && v->as_uint64() <= static_cast<std::uint64_t>(INT64_MAX))
    n = static_cast<std::int64_t>(v->as_uint64());
  else
    invalid(key, key + " must be an integer");
  if (n < min || n > max) invalid(key, key + " must be between " + std::to_string(min) + " and " + std::to_string(max));
  return n;
}

std::optional<std::vector<std::string>> JsonInput::text_list(const std::string& key, std::size_t max_items, bool required) const {
  const json::value* v = raw(key);
  if (!v || v->is_null()) {
    if (required) invalid(key, key + " is required", "required");
    return std::nullopt;
  }
  if (!v->is_array()) invalid(key, key + " must be a list of strings");
  if (v->as_array().size() > max_items) invalid(key, key + " has more than " + std::to_string(max_items) + " items");
  std::vector<std::string> out;
  for (std::size_t i = 0; i < v->as_array().size(); ++i) {
    const auto& item = v->as_array()[i];
    const std::string field = key + "[" + std::to_string(i) + "]";
    if (!item.is_string()) invalid(field, field + " must be a string");
    std::string s = trim(item.as_string());
    if (has_line_break(s)) invalid(field, field + " must not contain a line break");
    if (s.size() > 254) invalid(field, field + " is too long");
    out.push_back(std::move(s));
  }
  return out;
}

std::optional<std::vector<std::int64_t>> JsonInput::id_list(const std::string& key, bool required) const {
  const json::value* v = raw(key);
  if (!v || v->is_null()) {
    if (required) invalid(key, key + " is required", "required");
    return std::nullopt;
  }
  if (!v->is_array()) invalid(key, key + " must be a list of ids");
  std::vector<std::int64_t> out;
  for (std::size_t i = 0; i < v->as_array().size(); ++i) {
    const auto& item = v->as_array()[i];
    if (!item.is_int64() || item.as_int64() <= 0)
      invalid(key + "[" + std::to_string(i) + "]", key + "[" + std::to_string(i) + "] must be a positive integer id");
    out.push_back(item.as_int64());
  }
  return out;
}

void JsonInput::only(const std::set<std::string>& known) const {
  for (const auto& [k, v] : object_)
    if (!known.count(std::string(k))) invalid(std::string(k), "unknown field " + std::string(k), "unknown_field");
}

std::int64_t path_id(const HttpRequest& req, const std::string& name) {
  auto it = req.params.find(name);
  if (it == req.params.end() || it->second.empty() || it->second.size() > 18 ||
      it->second.find_first_not_of("0123456789") != std::string::npos || it->second == "0")
    throw ApiError(404, "not_found", "no such resource");
  return std::stoll(it->second);
}

// --- query parameters ---------------------------------------------------------------------

std::string query_param(const HttpRequest& req, const std::string& key, std::size_t max_length) {
  auto it = req.query.find(key);
  if (it == req.query.end()) return {};
  std::string v = trim(it->second);
  if (has_line_break(v) || v.size() > max_length) invalid(key, key + " is not a valid filter value");
  return v;
}

std::string escape_like(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '%' || c == '_') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

std::string query_bool(const HttpRequest& req, const std::string& key) {
  auto it = req.query.find(key);
  if (it == req.query.end() || it->second.empty()) return {};
  if (it->second != "true" && it->second != "false") invalid(key, key + " must be true or false");
  return it->second;
}

std::int64_t query_id(const HttpRequest& req, const std::string& key) {
  const std::string v = query_param(req, key);
  if (v.empty()) return 0;
  if (v.size() > 18 || v.find_first_not_of("0123456789") != std::string::npos || std::stoll(v) == 0)
    invalid(key, key + " must be an id");
  return std::stoll(v);
}

// --- pagination ----------------------------------------------------------------------------

Page page_of(const HttpRequest& req) {
  Page p;
  if (auto it = req.query.find("limit"); it != req.query.end()) {
    const auto& v = it->second;
    if (v.empty() || v.size() > 4 || v.find_first_not_of("0123456789") != std::string::npos || std::stoll(v) < 1 ||
        std::stoll(v) > 200)
      throw ApiError(422, "invalid", "limit must be an integer from 1 to 200", "limit");
    p.limit = std::stoll(v);
  }
  if (auto it = req.query.find("cursor"); it != req.query.end() && !it->second.empty()) {
    try {
      std::string c = it->second;
      for (auto& ch : c) ch = ch == '-' ? '+' : ch == '_' ? '/' : ch;
      while (c.size() % 4) c.push_back('=');
      std::string decoded = base64_decode(c);
      if (decoded.rfind("id:", 0) != 0) throw std::invalid_argument("cursor");
      p.after_id = std::stoll(decoded.substr(3));
    } catch (const std::exception&) {
      throw ApiError(422, "invalid", "cursor is not one this server handed out", "cursor");
    }
  }
  return p;
}

HttpResponse page_response(json::array items, const Page& page, const std::function<std::int64_t(const json::value&)>& id_of) {
  json::value next = nullptr;
  if (static_cast<std::int64_t>(items.size()) > page.limit) {
    items.resize(page.limit);
    std::string c = base64_encode("id:" + std::to_string(id_of(items.back())));
    for (auto& ch : c) ch = ch == '+' ? '-' : ch == '/' ? '_' : ch;
    while (!c.empty() && c.back() == '=') c.pop_back();
    next = json::string(c);
  }
  return json_response(200, json::object{{"items", std::move(items)}, {"next_cursor", next}});
}

std::vector<std::string> pg_text_array(const pqxx::field& f) { return sql_text_list(f); }

json::array json_text_array(const pqxx::field& f) {
  json::array out;
  for (auto& s : pg_text_array(f)) out.emplace_back(json::string(s));
  return out;
}

json::array json_id_array(const pqxx::field& f) {
  json::array out;
  for (auto& s : pg_text_array(f)) out.emplace_back(std::stoll(s));
  return out;
}

json::value json_nullable_id(const pqxx::field& f) { return f.is_null() ? json::value(nullptr) : json::value(f.as<std::int64_t>()); }
json::value json_nullable_text(const pqxx::field& f) { return f.is_null() ? json::value(nullptr) : json::value(f.c_str()); }

std::string sql_iso_time(const std::string& column) {
  return "to_char(" + column + " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";
}

HttpResponse json_response(int status, const json::value& v) { return HttpResponse::json(status, json::serialize(v)); }

std::vector<FieldChange> diff_objects(const json::object& before, const json::object& after, const std::set<std::string>& secrets) {
  std::vector<FieldChange> out;
  auto text = [](const json::value* v) -> std::optional<std::string> {
    if (!v || v->is_null()) return std::nullopt;
    if (v->is_string()) return std::string(v->as_string());
    return json::serialize(*v);
  };
  std::set<std::string> keys;
  for (const auto& [k, v] : before) keys.insert(std::string(k));
  for (const auto& [k, v] : after) keys.insert(std::string(k));
  for (const auto& k : keys) {
    const json::value* b = before.if_contains(k);
    const json::value* a = after.if_contains(k);
    if (b && a && *a == *b) continue;
    if (!a && !b) continue;
    out.push_back({k, text(b), text(a), secrets.count(k) > 0});
  }
  return out;
}

}  // namespace mailgate
