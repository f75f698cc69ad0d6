// /api/v1/mailboxes: configuration of connected mailboxes (IMAP, Microsoft 365, Mailgun in;
// SMTP, Microsoft 365, Mailgun out). The connections themselves come in later issues.
//
// - Secrets (imap_password, smtp_password, ms365_client_secret, mailgun_api_key,
//   mailgun_webhook_key) are write-only: sealed with the secrets key (AES-256-GCM) before they
//   reach the database, shown only as "<name>_set": true, audited as "***", never logged. An
//   absent secret keeps the stored one; an empty one is refused.
// - Server hosts must be valid names or IP literals and are resolved (asynchronously) when saved:
//   link-local and cloud metadata addresses are always refused, loopback and private ranges
//   unless [security] allow_private_hosts is set.
// - Exactly one primary mailbox: the first one created becomes primary; POST .../primary moves
//   the flag; the primary cannot be deactivated (make another primary first). Mailboxes are
//   never deleted, only deactivated.
#include <limits>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "daemon/api.hpp"
#include "rules/address.hpp"
#include "rules/host_policy.hpp"
#include "store/run.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {

const std::vector<std::string> kSecrets = {"imap_password", "smtp_password", "ms365_client_secret", "mailgun_api_key",
                                           "mailgun_webhook_key"};
const std::vector<std::string> kTexts = {"display_name", "address", "incoming_type", "outgoing_type", "imap_host",
                                         "imap_security", "imap_username", "imap_folder", "imap_after_import",
                                         "imap_move_folder", "smtp_host", "smtp_security", "smtp_username",
                                         "ms365_tenant_id", "ms365_client_id", "ms365_user_id", "ms365_secret_expires_on",
                                         "mailgun_domain", "mailgun_region", "imap_auth", "smtp_auth"};
const std::vector<std::string> kInts = {"imap_port", "smtp_port", "poll_interval_seconds", "send_max_connections",
                                        "send_max_per_connection", "send_max_per_minute"};
const std::vector<std::string> kBools = {"active", "bcc_self"};

// The configurable state of a mailbox, as columns. Also the merge of a stored row and a PATCH.
struct MailboxFields {
  std::map<std::string, std::optional<std::string>> text;
  std::map<std::string, std::optional<std::int64_t>> integer;
  std::map<std::string, std::optional<bool>> flag;
  std::map<std::string, std::string> new_secrets;  // plaintext, only those given in this request
  std::set<std::string> stored_secrets;            // secrets the row has already
  std::optional<std::int64_t> mailgun_domain_id;   // a mailgun_domains row: its region and keys
  bool mailgun_domain_given = false;               // this request sets (or clears) it

  const std::optional<std::string>& t(const std::string& k) const { return text.at(k); }
  bool has_secret(const std::string& k) const { return new_secrets.count(k) || stored_secrets.count(k); }
};

std::string column_list() {
  std::string s = "id, is_primary, health, health_reason, "
                  "to_char(last_sync_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), mailgun_inbound_token, "
                  "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                  "to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";
  for (const auto& k : kTexts) s += ", " + (k == "ms365_secret_expires_on" ? "to_char(" + k + ", 'YYYY-MM-DD')" : k);
  for (const auto& k : kInts) s += ", " + k;
  for (const auto& k : kBools) s += ", " + k;
  for (const auto& k : kSecrets) s += ", " + k + " IS NOT NULL";
  s += ", coalesce((SELECT array_agg(user_id ORDER BY user_id) FROM mailbox_users WHERE mailbox_id = m.id), '{}')";
  s += ", coalesce((SELECT array_agg(value ORDER BY value) FROM mailbox_exclusions WHERE mailbox_id = m.id AND kind = 'domain'), '{}')";
  s += ", coalesce((SELECT array_agg(value ORDER BY value) FROM mailbox_exclusions WHERE mailbox_id = m.id AND kind = 'address'), '{}')";
  s += ", mailgun_domain_id";
  return s;
}


MailboxFields fields_of_row(const pqxx::row& r) {
  MailboxFields f;
  pqxx::row::size_type i = 8;
  for (const auto& k : kTexts) {
    f.text[k] = r[i].is_null() ? std::nullopt : std::optional<std::string>(r[i].c_str());
    ++i;
  }
  for (const auto& k : kInts) {
    f.integer[k] = r[i].is_null() ? std::nullopt : std::optional<std::int64_t>(r[i].as<std::int64_t>());
    ++i;
  }
  for (const auto& k : kBools) {
    f.flag[k] = r[i].as<bool>();
    ++i;
  }
  for (const auto& k : kSecrets) {
    if (r[i].as<bool>()) f.stored_secrets.insert(k);
    ++i;
  }
  i += 3;  // users and exclusions
  if (!r[i].is_null()) f.mailgun_domain_id = r[i].as<std::int64_t>();
  return f;
}

json::object mailbox_json(const pqxx::row& r, bool admin) {
  json::object o;
  o["id"] = r[0].as<std::int64_t>();
  o["is_primary"] = r[1].as<bool>();
  pqxx::row::size_type i = 8;
  for (const auto& k : kTexts) {
    o[k] = r[i].is_null() ? json::value(nullptr) : json::value(r[i].c_str());
    ++i;
  }
  for (const auto& k : kInts) {
    o[k] = r[i].is_null() ? json::value(nullptr) : json::value(r[i].as<std::int64_t>());
    ++i;
  }
  for (const auto& k : kBools) {
    o[k] = r[i].as<bool>();
    ++i;
  }
  for (const auto& k : kSecrets) {
    o[k + "_set"] = r[i].as<bool>();
    ++i;
  }
  o["users"] = json_id_array(r[i++]);
  o["excluded_domains"] = json_text_array(r[i++]);
  o["excluded_addresses"] = json_text_array(r[i++]);
  o["mailgun_domain_id"] = json_nullable_id(r[i++]);
  o["health"] = json::object{{"state", r[2].c_str()},
                             {"reason", r[3].is_null() ? json::value(nullptr) : json::value(r[3].c_str())},
                             {"last_sync_at", r[4].is_null() ? json::value(nullptr) : json::value(r[4].c_str())}};
  // The webhook path is how Mailgun reaches this mailbox; only admins configure it.
  o["mailgun_inbound_path"] = admin && !r[5].is_null() ? json::value("/webhooks/mailgun/" + std::string(r[5].c_str()) + "/mime")
                                                       : json::value(nullptr);
  o["created_at"] = r[6].c_str();
  o["updated_at"] = r[7].c_str();
  return o;
}

json::object load_mailbox(pqxx::dbtransaction& tx, std::int64_t id, bool admin, MailboxFields* fields = nullptr) {
  auto r = tx.exec_params("SELECT " + column_list() + " FROM mailboxes m WHERE id = $1", id);
  if (r.empty()) throw ApiError(404, "not_found", "no mailbox with id " + std::to_string(id));
  if (fields) *fields = fields_of_row(r[0]);
  return mailbox_json(r[0], admin);
}

void one_of(const std::optional<std::string>& v, const std::string& field, std::initializer_list<const char*> allowed) {
  if (!v) return;
  for (const char* a : allowed)
    if (*v == a) return;
  std::string list;
  for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
  invalid(field, field + " must be one of " + list);
}

// Reads the request over `base` (empty for create). Validates syntax of each given field.
MailboxFields read_input(const JsonInput& in, MailboxFields base) {
  std::set<std::string> known(kTexts.begin(), kTexts.end());
  known.insert(kInts.begin(), kInts.end());
  known.insert(kBools.begin(), kBools.end());
  known.insert(kSecrets.begin(), kSecrets.end());
  known.insert("mailgun_domain_id");
  in.only(known);
  if (in.has("mailgun_domain_id")) {
    base.mailgun_domain_given = true;
    base.mailgun_domain_id = in.raw("mailgun_domain_id")->is_null()
                                 ? std::nullopt
                                 : in.integer("mailgun_domain_id", 1, std::numeric_limits<std::int64_t>::max());
  }
  for (const auto& k : kTexts) {
    if (!in.has(k)) {
      base.text.try_emplace(k);
      continue;
    }
    auto v = in.text(k, false, k == "display_name" ? 200 : 254);
    base.text[k] = v && v->empty() ? std::nullopt : v;
  }
  if (in.has("address")) {
    auto a = in.email("address", true);
    base.text["address"] = a;
  }
  for (const auto& k : kInts) {
    std::int64_t lo = 1, hi = 65535;
    if (k == "poll_interval_seconds") lo = 10, hi = 86400;
    if (k == "send_max_connections") hi = 50;
    if (k == "send_max_per_connection") hi = 10000;
    if (k == "send_max_per_minute") hi = 100000;
    if (in.has(k))
      base.integer[k] = in.integer(k, lo, hi);
    else
      base.integer.try_emplace(k);
  }
  for (const auto& k : kBools)
    if (in.has(k)) base.flag[k] = in.boolean(k);
  for (const auto& k : kSecrets) {
    if (!in.has(k)) continue;
    const json::value* v = in.raw(k);
    if (!v->is_string()) invalid(k, k + " must be a string");
    std::string secret(v->as_string());
    if (secret.empty()) invalid(k, k + " must not be empty (leave it out to keep the stored one)", "required");
    if (secret.size() > 4096) invalid(k, k + " is longer than 4096 bytes");
    if (has_line_break(secret)) invalid(k, k + " must not contain a line break");
    base.new_secrets[k] = std::move(secret);
  }
  for (const auto& k : {"imap_host", "smtp_host"})
    if (base.t(k))
      if (auto why = hostname_syntax_error(*base.t(k))) invalid(k, std::string(k) + ": " + *why);
  if (base.t("mailgun_domain"))
    if (auto d = normalize_domain(*base.t("mailgun_domain")); std::holds_alternative<AddressError>(d))
      invalid("mailgun_domain", "mailgun_domain: " + std::get<AddressError>(d).reason);
  if (base.t("ms365_secret_expires_on")) {
    const auto& d = *base.t("ms365_secret_expires_on");
    if (d.size() != 10 || d[4] != '-' || d[7] != '-' || d.find_first_not_of("0123456789-") != std::string::npos)
      invalid("ms365_secret_expires_on", "ms365_secret_expires_on must be a date (YYYY-MM-DD)");
  }
  one_of(base.t("incoming_type"), "incoming_type", {"imap", "ms365", "mailgun", "none"});
  one_of(base.t("outgoing_type"), "outgoing_type", {"smtp", "ms365", "mailgun"});
  one_of(base.t("imap_security"), "imap_security", {"tls", "starttls", "plain"});
  one_of(base.t("smtp_security"), "smtp_security", {"tls", "starttls", "plain"});
  one_of(base.t("imap_after_import"), "imap_after_import", {"leave", "seen", "move", "delete"});
  one_of(base.t("mailgun_region"), "mailgun_region", {"eu", "us"});
  one_of(base.t("imap_auth"), "imap_auth", {"password", "xoauth2"});
  one_of(base.t("smtp_auth"), "smtp_auth", {"password", "xoauth2"});
  return base;
}

// Defaults and the fields each connection type needs, on the merged state.
void complete_and_check(MailboxFields& f) {
  auto need = [&](const std::string& k, const std::string& why) {
    bool present = f.text.count(k) ? f.t(k).has_value() : f.integer.count(k) ? f.integer.at(k).has_value() : f.has_secret(k);
    if (!present) invalid(k, k + " is required " + why, "required");
  };
  if (!f.t("display_name")) invalid("display_name", "display_name is required", "required");
  if (!f.t("address")) invalid("address", "address is required", "required");
  if (!f.t("incoming_type")) f.text["incoming_type"] = "imap";
  if (!f.t("outgoing_type")) f.text["outgoing_type"] = "smtp";
  if (!f.t("imap_after_import")) f.text["imap_after_import"] = "leave";
  if (!f.t("imap_auth")) f.text["imap_auth"] = "password";
  if (!f.t("smtp_auth")) f.text["smtp_auth"] = "password";
  const auto in = *f.t("incoming_type"), out = *f.t("outgoing_type");
  // XOAUTH2 (Office 365 over IMAP/SMTP): a token from the ms365_* credentials replaces the password.
  const bool imap_oauth = *f.t("imap_auth") == "xoauth2", smtp_oauth = *f.t("smtp_auth") == "xoauth2";
  if (in == "imap") {
    if (!f.t("imap_security")) f.text["imap_security"] = "tls";
    if (!f.integer["imap_port"]) f.integer["imap_port"] = *f.t("imap_security") == "tls" ? 993 : 143;
    need("imap_host", "for IMAP");
    if (!f.t("imap_username")) f.text["imap_username"] = f.t("address");
    need(imap_oauth ? "ms365_client_secret" : "imap_password", "for IMAP");
    if (*f.t("imap_after_import") == "move") need("imap_move_folder", "when imported mail is moved");
  }
  if (out == "smtp") {
    if (!f.t("smtp_security")) f.text["smtp_security"] = "starttls";
    if (!f.integer["smtp_port"]) f.integer["smtp_port"] = *f.t("smtp_security") == "tls" ? 465 : 587;
    need("smtp_host", "for SMTP");
    if (!f.t("smtp_username")) f.text["smtp_username"] = f.t("address");
    need(smtp_oauth ? "ms365_client_secret" : "smtp_password", "for SMTP");
  }
  if (in == "ms365" || out == "ms365" || (in == "imap" && imap_oauth) || (out == "smtp" && smtp_oauth)) {
    need("ms365_tenant_id", "for Microsoft 365");
    need("ms365_client_id", "for Microsoft 365");
    need("ms365_client_secret", "for Microsoft 365");
    if (!f.t("ms365_user_id")) f.text["ms365_user_id"] = f.t("address");
  }
  // A Mailgun domain (/api/v1/mailgun-domains) brings its region and keys; without one the
  // mailbox carries its own.
  if ((in == "mailgun" || out == "mailgun") && !f.mailgun_domain_id) {
    need("mailgun_domain", "for Mailgun (or choose a mailgun_domain_id)");
    if (!f.t("mailgun_region")) f.text["mailgun_region"] = "eu";
    need("mailgun_api_key", "for Mailgun (or choose a mailgun_domain_id)");
    if (in == "mailgun") need("mailgun_webhook_key", "to verify Mailgun's webhooks (or choose a mailgun_domain_id)");
  }
}

// Resolves each configured server host off the event loop and applies the host policy.
awaitable<void> check_hosts(const MailboxFields& f, bool allow_private) {
  auto ex = co_await boost::asio::this_coro::executor;
  for (const char* k : {"imap_host", "smtp_host"}) {
    const auto& host = f.t(k);
    if (!host) continue;
    boost::asio::ip::tcp::resolver resolver(ex);
    auto [ec, results] = co_await resolver.async_resolve(*host, "", boost::asio::as_tuple(boost::asio::use_awaitable));
    std::vector<std::string> addresses;
    if (!ec)
      for (const auto& e : results) addresses.push_back(e.endpoint().address().to_string());
    if (auto why = mailbox_host_refusal(addresses, allow_private)) invalid(k, std::string(k) + " " + *host + ": " + *why, "host_refused");
  }
}

struct Sealed {
  std::map<std::string, std::string> secrets;  // column -> sealed bytes
};

Sealed seal_secrets(const Services& s, const MailboxFields& f) {
  Sealed out;
  for (const auto& [k, v] : f.new_secrets) out.secrets[k] = s.secrets.seal(v);
  return out;
}

// Writes the merged fields (and new secrets) into row `id`.
void write_fields(pqxx::dbtransaction& tx, std::int64_t id, const MailboxFields& f, const Sealed& sealed) {
  // Saving a mailbox is also how an admin tells a failed one to try again.
  std::string sql = "UPDATE mailboxes SET updated_at = now(), failing_since = NULL, "
                    "health_reason = CASE WHEN health = 'failed' THEN NULL ELSE health_reason END, "
                    "health = CASE WHEN health = 'failed' THEN 'ok' ELSE health END";
  int n = 1;
  std::vector<std::string> order;
  for (const auto& k : kTexts) sql += ", " + k + " = $" + std::to_string(++n) + (k == "ms365_secret_expires_on" ? "::date" : "");
  for (const auto& k : kInts) sql += ", " + k + " = coalesce($" + std::to_string(++n) + "::int, " + k + ")";
  for (const auto& k : kBools) sql += ", " + k + " = coalesce($" + std::to_string(++n) + "::boolean, " + k + ")";
  sql += " WHERE id = $1";
  // libpqxx 6 has no dynamic parameter list: prepare it and feed the values in order.
  pqxx::prepare::invocation inv = (tx.conn().prepare("mailbox_write", sql), tx.prepared("mailbox_write"));
  inv(id);
  for (const auto& k : kTexts) inv(f.t(k));
  for (const auto& k : kInts) inv(f.integer.at(k));
  for (const auto& k : kBools) inv(f.flag.count(k) ? f.flag.at(k) : std::nullopt);
  inv.exec();
  tx.conn().unprepare("mailbox_write");
  for (const auto& [k, v] : sealed.secrets)
    tx.exec_params("UPDATE mailboxes SET " + k + " = $2 WHERE id = $1", id, pqxx::binarystring(v));
  if (f.mailgun_domain_given) {
    if (f.mailgun_domain_id && tx.exec_params("SELECT 1 FROM mailgun_domains WHERE id = $1", *f.mailgun_domain_id).empty())
      invalid("mailgun_domain_id", "no Mailgun domain with id " + std::to_string(*f.mailgun_domain_id));
    tx.exec_params("UPDATE mailboxes SET mailgun_domain_id = $2 WHERE id = $1", id, f.mailgun_domain_id);
  }
}

std::vector<FieldChange> secret_changes(const MailboxFields& f) {
  std::vector<FieldChange> out;
  for (const auto& [k, v] : f.new_secrets) out.push_back({k, f.stored_secrets.count(k) ? std::optional<std::string>("***") : std::nullopt, "***", true});
  return out;
}

std::vector<FieldChange> audit_changes(const json::object& before, const json::object& after, const MailboxFields& f) {
  auto changes = diff_objects(before, after);
  std::erase_if(changes, [](const FieldChange& c) { return c.field == "updated_at" || c.field.ends_with("_set"); });
  auto secrets = secret_changes(f);
  changes.insert(changes.end(), secrets.begin(), secrets.end());
  return changes;
}

}  // namespace

void register_mailbox_routes(Api& api) {
  Services& s = api.services();

  api.add("GET", "/api/v1/mailboxes", kRead, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const Page page = page_of(req);
    const std::string q = req.query.count("q") ? trim(req.query["q"]) : "";
    const std::string active = req.query.count("active") ? req.query["active"] : "";
    if (!active.empty() && active != "true" && active != "false") invalid("active", "active must be true or false");
    const bool admin = p.is_admin();
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      json::array a;
      for (const auto& r : tx.exec_params("SELECT " + column_list() +
                                              " FROM mailboxes m WHERE id > $1 AND ($2 = '' OR active = ($2 = 'true'))"
                                              " AND ($3 = '' OR address ILIKE '%' || $3 || '%' OR display_name ILIKE '%' || $3 || '%')"
                                              " ORDER BY id LIMIT $4",
                                          page.after_id, active, q, page.limit + 1))
        a.emplace_back(mailbox_json(r, admin));
      return a;
    });
    auto items = co_await std::move(op);
    co_return page_response(std::move(items), page, [](const json::value& v) { return v.at("id").as_int64(); });
  });

  api.add("GET", "/api/v1/mailboxes/{id}", kRead, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    const bool admin = p.is_admin();
    auto op = store_transact(s.store, [id, admin](pqxx::work& tx) { return load_mailbox(tx, id, admin); });
    co_return json_response(200, co_await std::move(op));
  });

  api.add("POST", "/api/v1/mailboxes", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    MailboxFields f = read_input(JsonInput(req.body), {});
    complete_and_check(f);
    co_await check_hosts(f, s.config.security.allow_private_hosts);
    const Sealed sealed = seal_secrets(s, f);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [f, sealed, actor](pqxx::work& tx) {
      const bool first = tx.exec("SELECT 1 FROM mailboxes WHERE is_primary").empty();
      const std::string token = f.t("incoming_type") == std::optional<std::string>("mailgun") ? random_token(24) : "";
      auto id = tx.exec_params1(
          "INSERT INTO mailboxes (display_name, address, is_primary, mailgun_inbound_token) VALUES ($1, $2, $3, nullif($4, '')) RETURNING id",
          *f.t("display_name"), *f.t("address"), first, token)[0].as<std::int64_t>();
      write_fields(tx, id, f, sealed);
      auto after = load_mailbox(tx, id, true);
      auto changes = audit_changes({}, after, f);
      audit_write(tx, actor, "mailbox", std::to_string(id), "create", changes);
      return after;
    });
    auto created = co_await std::move(op);
    if (s.mailboxes_changed) s.mailboxes_changed();  // an active mailbox starts syncing now
    co_return json_response(201, std::move(created));
  });

  api.add("PATCH", "/api/v1/mailboxes/{id}", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto in = std::make_shared<JsonInput>(req.body);
    auto load = store_transact(s.store, [id](pqxx::work& tx) {
      MailboxFields stored;
      load_mailbox(tx, id, true, &stored);
      return stored;
    });
    MailboxFields f = read_input(*in, co_await std::move(load));
    complete_and_check(f);
    co_await check_hosts(f, s.config.security.allow_private_hosts);
    const Sealed sealed = seal_secrets(s, f);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [id, f, sealed, actor](pqxx::work& tx) {
      auto before = load_mailbox(tx, id, true);
      if (f.flag.count("active") && f.flag.at("active") == false && before.at("is_primary").as_bool() && before.at("active").as_bool())
        throw ApiError(409, "primary_mailbox", "the primary mailbox cannot be deactivated; make another mailbox primary first", "active");
      if (f.t("incoming_type") == std::optional<std::string>("mailgun"))
        tx.exec_params("UPDATE mailboxes SET mailgun_inbound_token = coalesce(mailgun_inbound_token, $2) WHERE id = $1", id, random_token(24));
      write_fields(tx, id, f, sealed);
      auto after = load_mailbox(tx, id, true);
      auto changes = audit_changes(before, after, f);
      if (!changes.empty())
        audit_write(tx, actor, "mailbox", std::to_string(id), after.at("active").as_bool() ? "update" : "deactivate", changes);
      return after;
    });
    auto updated = co_await std::move(op);
    if (s.mailboxes_changed) s.mailboxes_changed();  // activated, or switched to another incoming type
    co_return json_response(200, std::move(updated));
  });

  api.add("POST", "/api/v1/mailboxes/{id}/primary", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [id, actor](pqxx::work& tx) {
      auto before = load_mailbox(tx, id, true);
      if (!before.at("active").as_bool()) throw ApiError(409, "inactive", "an inactive mailbox cannot be primary");
      if (before.at("is_primary").as_bool()) return before;
      auto old = tx.exec("UPDATE mailboxes SET is_primary = false, updated_at = now() WHERE is_primary RETURNING id");
      tx.exec_params("UPDATE mailboxes SET is_primary = true, updated_at = now() WHERE id = $1", id);
      for (const auto& r : old)
        audit_write(tx, actor, "mailbox", r[0].c_str(), "update", {{"is_primary", "true", "false"}});
      audit_write(tx, actor, "mailbox", std::to_string(id), "update", {{"is_primary", "false", "true"}});
      return load_mailbox(tx, id, true);
    });
    co_return json_response(200, co_await std::move(op));
  });

  api.add("POST", "/api/v1/mailboxes/{id}/reconnect", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [id, actor](pqxx::work& tx) {
      auto before = load_mailbox(tx, id, true);
      tx.exec_params("UPDATE mailboxes SET health = 'ok', health_reason = NULL, failing_since = NULL, updated_at = now() WHERE id = $1", id);
      audit_write(tx, actor, "mailbox", std::to_string(id), "reconnect",
                  {{"health", std::string(before.at("health").at("state").as_string()), "ok"}});
      return load_mailbox(tx, id, true);
    });
    auto reconnected = co_await std::move(op);
    if (s.mailboxes_changed) s.mailboxes_changed();
    co_return json_response(200, std::move(reconnected));
  });

  api.add("PUT", "/api/v1/mailboxes/{id}/users", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    JsonInput in(req.body);
    in.only({"users"});
    const auto users = in.id_list("users", true).value();
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [id, users, actor](pqxx::work& tx) {
      auto before = load_mailbox(tx, id, true);
      for (std::size_t i = 0; i < users.size(); ++i)
        if (tx.exec_params("SELECT 1 FROM users WHERE id = $1", users[i]).empty())
          invalid("users[" + std::to_string(i) + "]", "no user with id " + std::to_string(users[i]));
      tx.exec_params("DELETE FROM mailbox_users WHERE mailbox_id = $1", id);
      for (auto u : users) tx.exec_params("INSERT INTO mailbox_users (mailbox_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", id, u);
      auto after = load_mailbox(tx, id, true);
      auto changes = diff_objects(json::object{{"users", before.at("users")}}, json::object{{"users", after.at("users")}});
      if (!changes.empty()) audit_write(tx, actor, "mailbox", std::to_string(id), "update", changes);
      return after;
    });
    co_return json_response(200, co_await std::move(op));
  });

  api.add("PUT", "/api/v1/mailboxes/{id}/exclusions", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    JsonInput in(req.body);
    in.only({"domains", "addresses"});
    std::set<std::string> domains, addresses;
    const auto d = in.text_list("domains", 1000).value_or(std::vector<std::string>{});
    for (std::size_t i = 0; i < d.size(); ++i) {
      auto n = normalize_domain(d[i]);
      if (auto* e = std::get_if<AddressError>(&n)) invalid("domains[" + std::to_string(i) + "]", d[i] + ": " + e->reason, "invalid_domain");
      domains.insert(std::get<std::string>(n));
    }
    const auto a = in.text_list("addresses", 1000).value_or(std::vector<std::string>{});
    for (std::size_t i = 0; i < a.size(); ++i) {
      auto n = normalize_email(a[i]);
      if (auto* e = std::get_if<AddressError>(&n)) invalid("addresses[" + std::to_string(i) + "]", a[i] + ": " + e->reason, "invalid_address");
      addresses.insert(email_match_key(std::get<std::string>(n)));
    }
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [id, domains, addresses, actor](pqxx::work& tx) {
      auto before = load_mailbox(tx, id, true);
      tx.exec_params("DELETE FROM mailbox_exclusions WHERE mailbox_id = $1", id);
      for (const auto& v : domains) tx.exec_params("INSERT INTO mailbox_exclusions (mailbox_id, kind, value) VALUES ($1, 'domain', $2)", id, v);
      for (const auto& v : addresses) tx.exec_params("INSERT INTO mailbox_exclusions (mailbox_id, kind, value) VALUES ($1, 'address', $2)", id, v);
      auto after = load_mailbox(tx, id, true);
      auto changes = diff_objects(json::object{{"excluded_domains", before.at("excluded_domains")}, {"excluded_addresses", before.at("excluded_addresses")}},
                                  json::object{{"excluded_domains", after.at("excluded_domains")}, {"excluded_addresses", after.at("excluded_addresses")}});
      if (!changes.empty()) audit_write(tx, actor, "mailbox", std::to_string(id), "update", changes);
      return after;
    });
    co_return json_response(200, co_await std::move(op));
  });
}

}  // namespace mailgate
