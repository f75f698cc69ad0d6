// /api/v1: sessions, the signed-in user (password, TOTP), users, API keys, roles, settings and
// the audit trail. Every change is audited in its own transaction.
//
// Login throttling: more than 5 failed logins for one account, or 20 from one client address,
// within 15 minutes answer 429 with Retry-After, before the password is even checked. Unknown
// account, wrong password, inactive user and wrong TOTP code all get the same 401 text.
#include <chrono>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "daemon/api.hpp"
#include "rules/address.hpp"
#include "rules/password_policy.hpp"
#include "rules/totp.hpp"
#include "store/run.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {

constexpr int kSessionHours = 12;
constexpr int kPasswordTokenHours = 72;
constexpr int kAccountFailures = 5, kAddressFailures = 20, kThrottleMinutes = 15;

constexpr const char* kUserColumns =
    "u.id, u.email, u.first_name, u.infix, u.last_name, u.title, u.phone, u.mobile, u.function, u.active, "
    "u.totp_enabled, u.password_must_change, u.default_mailbox_id, "
    "to_char(u.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "to_char(u.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "coalesce((SELECT array_agg(role ORDER BY role) FROM user_roles WHERE user_id = u.id), '{}')";


json::object user_json(const pqxx::row& r) {
  return {{"id", r[0].as<std::int64_t>()},
          {"email", r[1].c_str()},
          {"first_name", r[2].c_str()},
          {"infix", r[3].c_str()},
          {"last_name", r[4].c_str()},
          {"title", r[5].c_str()},
          {"phone", r[6].c_str()},
          {"mobile", r[7].c_str()},
          {"function", r[8].c_str()},
          {"active", r[9].as<bool>()},
          {"totp_enabled", r[10].as<bool>()},
          {"password_must_change", r[11].as<bool>()},
          {"default_mailbox_id", json_nullable_id(r[12])},
          {"created_at", r[13].c_str()},
          {"updated_at", r[14].c_str()},
          {"roles", json_text_array(r[15])}};
}

json::object load_user(pqxx::work& tx, std::int64_t id) {
  auto r = tx.exec_params(std::string("SELECT ") + kUserColumns + " FROM users u WHERE u.id = $1", id);
  if (r.empty()) throw ApiError(404, "not_found", "no user with id " + std::to_string(id));
  return user_json(r[0]);
}

// The fields of a user that the API sets, validated. `creating` makes email required.
struct UserFields {
  std::optional<std::string> email, first_name, infix, last_name, title, phone, mobile, function;
  std::optional<std::vector<std::string>> roles;
  std::optional<bool> active;
  std::optional<std::int64_t> default_mailbox_id;
};

UserFields read_user_fields(const JsonInput& in, bool creating) {
  in.only({"email", "first_name", "infix", "last_name", "title", "phone", "mobile", "function", "roles", "active",
           "default_mailbox_id"});
  UserFields f;
  f.email = in.email("email", creating);
  if (f.email) f.email = email_match_key(*f.email);
  f.first_name = in.text("first_name");
  f.infix = in.text("infix", false, 30);
  f.last_name = in.text("last_name");
  f.title = in.text("title", false, 50);
  f.phone = in.text("phone", false, 40);
  f.mobile = in.text("mobile", false, 40);
  f.function = in.text("function");
  f.roles = in.text_list("roles", 3, creating);
  if (f.roles) {
    if (f.roles->empty()) invalid("roles", "a user needs at least one role (admin, staff, readonly)");
    for (const auto& r : *f.roles)
      if (r != "admin" && r != "staff" && r != "readonly") invalid("roles", "no role named '" + r + "' (admin, staff, readonly)");
  }
  f.active = in.boolean("active");
  f.default_mailbox_id = in.integer("default_mailbox_id", 1, INT64_MAX);
  return f;
}

// Queues the "set your password" mail with a single-use token; same transaction as its cause.
void queue_password_mail(pqxx::work& tx, std::int64_t user_id, const std::string& email, const std::string& reason) {
  const std::string token = random_token();
  tx.exec_params("INSERT INTO password_tokens (user_id, token_hash, expires_at) VALUES ($1, $2, now() + $3 * interval '1 hour')",
                 user_id, sha256_hex(token), kPasswordTokenHours);
  const std::string org = tx.exec1("SELECT value #>> '{}' FROM settings WHERE key = 'organisation_name'")[0].as<std::string>();
  const std::string body = "Hello,\n\n" + reason + "\n\nChoose your password with this code within " +
                           std::to_string(kPasswordTokenHours) + " hours; it works once:\n\n    " + token +
                           "\n\n(POST /api/v1/password-tokens/redeem, or the link in the admin UI.)\n\n-- " + org + "\n";
  tx.exec_params(
      "INSERT INTO outbox (kind, to_addresses, subject, text_body, message_id, cause_entity, cause_id) "
      "VALUES ('password_set', ARRAY[$1], $2, $3, $4, 'user', $5)",
      email, "Choose your password for " + org, body, "<" + random_token(18) + "@mailgate.invalid>", std::to_string(user_id));
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

HttpResponse login(const Services& s, const JsonInput& in, const std::string& remote, pqxx::work& tx) {
  const std::string email = email_match_key(trim(in.text("email", true, 254).value()));
  const std::string password = in.raw("password") && in.raw("password")->is_string() ? std::string(in.raw("password")->as_string()) : "";
  const auto totp = in.text("totp_code", false, 10);

  auto failures = tx.exec_params(
      "SELECT (SELECT count(*) FROM login_failures WHERE email = $1 AND at > now() - $3 * interval '1 minute'), "
      "       (SELECT count(*) FROM login_failures WHERE remote_address = $2 AND at > now() - $3 * interval '1 minute')",
      email, remote, kThrottleMinutes);
  if (failures[0][0].as<int>() >= kAccountFailures || failures[0][1].as<int>() >= kAddressFailures) {
    HttpResponse r = HttpResponse::error(429, "too_many_attempts", "too many failed logins; try again in 15 minutes");
    r.headers.emplace_back("Retry-After", std::to_string(kThrottleMinutes * 60));
    return r;
  }
  auto fail = [&](const char* code, const char* message) {
    tx.exec_params("INSERT INTO login_failures (email, remote_address) VALUES ($1, $2)", email, remote);
    tx.commit();
    return HttpResponse::error(401, code, message);
  };
  auto r = tx.exec_params("SELECT id, password_hash, totp_enabled, totp_secret, totp_last_step FROM users WHERE email = $1 AND active",
                          email);
  if (r.empty() || r[0][1].is_null() || !password_verify(password, r[0][1].as<std::string>()))
    return fail("invalid_credentials", "e-mail address or password is wrong");
  const auto user_id = r[0][0].as<std::int64_t>();
  if (r[0][2].as<bool>()) {
    if (!totp || totp->empty()) return fail("totp_required", "this account needs its authenticator code (totp_code)");
    const std::string secret = s.secrets.open(pqxx::binarystring(r[0][3]).str());
    std::int64_t step = 0;
    if (!totp_verify(secret, *totp, unix_now(), 1, &step) || (!r[0][4].is_null() && step <= r[0][4].as<std::int64_t>()))
      return fail("invalid_credentials", "e-mail address or password is wrong");
    tx.exec_params("UPDATE users SET totp_last_step = $2 WHERE id = $1", user_id, step);
  }
  const std::string token = "mgs_" + random_token();
  auto session = tx.exec_params1(
      "INSERT INTO sessions (user_id, token_hash, expires_at, remote_address) VALUES ($1, $2, now() + $3 * interval '1 hour', $4) "
      "RETURNING id, to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
      user_id, sha256_hex(token), kSessionHours, remote);
  tx.exec_params("DELETE FROM login_failures WHERE email = $1", email);
  audit_write(tx, Actor{"user", user_id, email}, "session", std::to_string(session[0].as<std::int64_t>()), "login",
              {{"remote_address", std::nullopt, remote}});
  auto user = load_user(tx, user_id);
  tx.commit();
  return json_response(201, json::object{{"token", token}, {"expires_at", session[1].c_str()}, {"user", user}});
}

void set_password(pqxx::work& tx, std::int64_t user_id, const std::string& password, const Actor& actor, const char* action) {
  tx.exec_params("UPDATE users SET password_hash = $2, password_must_change = false, updated_at = now() WHERE id = $1", user_id,
                 password_hash(password));
  audit_write(tx, actor, "user", std::to_string(user_id), action, {{"password", "***", "***", true}});
}

void check_password_policy(const std::string& field, const JsonInput& in, std::string& out) {
  const json::value* v = in.raw(field);
  if (!v || !v->is_string()) invalid(field, field + " is required", "required");
  out = std::string(v->as_string());
  if (auto why = password_policy_violation(out)) invalid(field, *why, "weak_password");
}

}  // namespace

void register_access_routes(Api& api) {
  Services& s = api.services();

  // --- sessions --------------------------------------------------------------------------
  api.add("POST", "/api/v1/session", kPublic, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    auto in = std::make_shared<JsonInput>(req.body);
    in->only({"email", "password", "totp_code"});
    in->text("email", true, 254);
    const std::string remote = req.remote_address;
    auto op = store_run(s.store, [&s, in, remote](pqxx::connection_base& c) {
      pqxx::work tx(c);
      return login(s, *in, remote, tx);
    });
    co_return co_await std::move(op);
  });

  api.add("DELETE", "/api/v1/session", kSelf, [&s](HttpRequest&, const Principal& p) -> awaitable<HttpResponse> {
    const auto session = p.session_id;
    const Actor actor = p.actor();
    if (p.kind != "user") throw ApiError(422, "not_a_session", "an API key is revoked with DELETE /api/v1/api-keys/{id}");
    auto op = store_transact(s.store, [session, actor](pqxx::work& tx) {
      tx.exec_params("UPDATE sessions SET revoked_at = now() WHERE id = $1", session);
      audit_write(tx, actor, "session", std::to_string(session), "logout");
    });
    co_await std::move(op);
    co_return HttpResponse{204, "application/json", "", {}};
  });

  // --- the signed-in user ------------------------------------------------------------------
  api.add("GET", "/api/v1/me", kSelf, [&s](HttpRequest&, const Principal& p) -> awaitable<HttpResponse> {
    if (p.kind != "user") co_return json_response(200, json::object{{"api_key", p.label}});
    const auto id = p.id;
    auto op = store_transact(s.store, [id](pqxx::work& tx) { return load_user(tx, id); });
    co_return json_response(200, co_await std::move(op));
  });

  api.add("POST", "/api/v1/me/password", kSelf, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    JsonInput in(req.body);
    in.only({"current_password", "new_password"});
    std::string current = in.raw("current_password") && in.raw("current_password")->is_string()
                              ? std::string(in.raw("current_password")->as_string()) : "";
    std::string next;
    check_password_policy("new_password", in, next);
    const auto id = p.id, session = p.session_id;
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      auto hash = tx.exec_params1("SELECT password_hash FROM users WHERE id = $1", id)[0];
      if (hash.is_null() || !password_verify(current, hash.as<std::string>()))
        throw ApiError(422, "wrong_password", "current_password is not your password", "current_password");
      set_password(tx, id, next, actor, "password_change");
      // Other sessions end: whoever knew the old password is signed out.
      tx.exec_params("UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL", id, session);
    });
    co_await std::move(op);
    co_return HttpResponse{204, "application/json", "", {}};
  });

  api.add("POST", "/api/v1/password-tokens/redeem", kPublic, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    JsonInput in(req.body);
    in.only({"token", "new_password"});
    const std::string token = in.text("token", true, 100).value();
    std::string next;
    check_password_policy("new_password", in, next);
    auto op = store_transact(s.store, [token, next](pqxx::work& tx) {
      auto r = tx.exec_params(
          "UPDATE password_tokens t SET used_at = now() FROM users u "
          "WHERE t.token_hash = $1 AND t.used_at IS NULL AND t.expires_at > now() AND u.id = t.user_id AND u.active "
          "RETURNING u.id, u.email",
          sha256_hex(token));
      if (r.empty()) throw ApiError(422, "invalid_token", "this code is unknown, used or expired; ask for a new one", "token");
      const auto id = r[0][0].as<std::int64_t>();
      set_password(tx, id, next, Actor{"user", id, r[0][1].as<std::string>()}, "password_set");
      tx.exec_params("UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", id);
    });
    co_await std::move(op);
    co_return HttpResponse{204, "application/json", "", {}};
  });

  api.add("POST", "/api/v1/me/totp", kSelf, [&s](HttpRequest&, const Principal& p) -> awaitable<HttpResponse> {
    if (p.kind != "user") throw ApiError(422, "not_a_user", "API keys have no second factor");
    const std::string secret = random_bytes(20);
    const auto id = p.id;
    const std::string sealed = s.secrets.seal(secret);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      auto enabled = tx.exec_params1("SELECT totp_enabled FROM users WHERE id = $1", id)[0].as<bool>();
      if (enabled) throw ApiError(409, "totp_enabled", "a second factor is active already; remove it first");
      tx.exec_params("UPDATE users SET totp_secret = $2, totp_last_step = NULL WHERE id = $1", id, pqxx::binarystring(sealed));
      audit_write(tx, actor, "user", std::to_string(id), "totp_enrol_started", {{"totp_secret", std::nullopt, "***", true}});
    });
    co_await std::move(op);
    co_return json_response(201, json::object{{"secret", base32_encode(secret)},
                                              {"otpauth_uri", totp_provisioning_uri("mailgate", p.label, secret)}});
  });

  api.add("POST", "/api/v1/me/totp/confirm", kSelf, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    JsonInput in(req.body);
    in.only({"code"});
    const std::string code = in.text("code", true, 10).value();
    const auto id = p.id;
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [&s, id, code, actor](pqxx::work& tx) {
      auto r = tx.exec_params1("SELECT totp_secret, totp_enabled FROM users WHERE id = $1", id);
      if (r[0].is_null()) throw ApiError(409, "totp_not_started", "start with POST /api/v1/me/totp");
      if (r[1].as<bool>()) throw ApiError(409, "totp_enabled", "the second factor is active already");
      std::int64_t step = 0;
      if (!totp_verify(s.secrets.open(pqxx::binarystring(r[0]).str()), code, unix_now(), 1, &step))
        throw ApiError(422, "invalid_code", "the code does not match; check the time on your device", "code");
      tx.exec_params("UPDATE users SET totp_enabled = true, totp_last_step = $2, updated_at = now() WHERE id = $1", id, step);
      audit_write(tx, actor, "user", std::to_string(id), "totp_enabled", {{"totp_enabled", "false", "true"}});
    });
    co_await std::move(op);
    co_return HttpResponse{204, "application/json", "", {}};
  });

  api.add("DELETE", "/api/v1/me/totp", kSelf, [&s](HttpRequest&, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = p.id;
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [id, actor](pqxx::work& tx) {
      if (tx.exec1("SELECT value = 'true'::jsonb FROM settings WHERE key = 'totp_required'")[0].as<bool>())
        throw ApiError(409, "totp_required", "the organisation requires a second factor for every user");
      tx.exec_params("UPDATE users SET totp_enabled = false, totp_secret = NULL, totp_last_step = NULL, updated_at = now() WHERE id = $1", id);
      audit_write(tx, actor, "user", std::to_string(id), "totp_disabled", {{"totp_enabled", "true", "false"}});
    });
    co_await std::move(op);
    co_return HttpResponse{204, "application/json", "", {}};
  });

  // --- users -------------------------------------------------------------------------------
  api.add("GET", "/api/v1/users", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const Page page = page_of(req);
    const std::string q = req.query.count("q") ? req.query["q"] : "";
    const std::string role = req.query.count("role") ? req.query["role"] : "";
    const std::string active = req.query.count("active") ? req.query["active"] : "";
    if (!active.empty() && active != "true" && active != "false") invalid("active", "active must be true or false");
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      auto r = tx.exec_params(std::string("SELECT ") + kUserColumns +
                                  " FROM users u WHERE u.id > $1"
                                  " AND ($2 = '' OR u.email ILIKE '%' || $2 || '%' OR (u.first_name || ' ' || u.last_name) ILIKE '%' || $2 || '%')"
                                  " AND ($3 = '' OR EXISTS (SELECT 1 FROM user_roles WHERE user_id = u.id AND role = $3))"
                                  " AND ($4 = '' OR u.active = ($4 = 'true'))"
                                  " ORDER BY u.id LIMIT $5",
                              page.after_id, q, role, active, page.limit + 1);
      json::array a;
      for (const auto& row : r) a.emplace_back(user_json(row));
      return a;
    });
    auto items = co_await std::move(op);
    co_return page_response(std::move(items), page, [](const json::value& v) { return v.at("id").as_int64(); });
  });

  api.add("GET", "/api/v1/users/{id}", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto op = store_transact(s.store, [id](pqxx::work& tx) { return load_user(tx, id); });
    co_return json_response(200, co_await std::move(op));
  });

  api.add("POST", "/api/v1/users", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    auto f = read_user_fields(JsonInput(req.body), true);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [f, actor](pqxx::work& tx) {
      if (!tx.exec_params("SELECT 1 FROM users WHERE email = $1", *f.email).empty())
        throw ApiError(409, "email_taken", "a user with this e-mail address exists already", "email");
      auto id = tx.exec_params1(
          "INSERT INTO users (email, first_name, infix, last_name, title, phone, mobile, function, password_must_change) "
          "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, false) RETURNING id",
          *f.email, f.first_name.value_or(""), f.infix.value_or(""), f.last_name.value_or(""), f.title.value_or(""),
          f.phone.value_or(""), f.mobile.value_or(""), f.function.value_or(""))[0].as<std::int64_t>();
      for (const auto& r : *f.roles) tx.exec_params("INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING", id, r);
      auto user = load_user(tx, id);
      audit_write(tx, actor, "user", std::to_string(id), "create", diff_objects({}, user));
      queue_password_mail(tx, id, *f.email, "An account was made for you.");
      return user;
    });
    auto user = co_await std::move(op);
    co_return json_response(201, user);
  });

  api.add("PATCH", "/api/v1/users/{id}", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto f = read_user_fields(JsonInput(req.body), false);
    const Actor actor = p.actor();
    const bool self = p.kind == "user" && p.id == id;
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      auto before = load_user(tx, id);
      if (f.email && *f.email != before.at("email").as_string() &&
          !tx.exec_params("SELECT 1 FROM users WHERE email = $1", *f.email).empty())
        throw ApiError(409, "email_taken", "a user with this e-mail address exists already", "email");
      if (self && f.active == false) throw ApiError(422, "invalid", "you cannot deactivate yourself", "active");
      if (f.default_mailbox_id && tx.exec_params("SELECT 1 FROM mailboxes WHERE id = $1", *f.default_mailbox_id).empty())
        invalid("default_mailbox_id", "no mailbox with this id");
      tx.exec_params(
          "UPDATE users SET email = coalesce($2, email), first_name = coalesce($3, first_name), infix = coalesce($4, infix), "
          "last_name = coalesce($5, last_name), title = coalesce($6, title), phone = coalesce($7, phone), "
          "mobile = coalesce($8, mobile), function = coalesce($9, function), active = coalesce($10, active), "
          "default_mailbox_id = coalesce($11, default_mailbox_id), updated_at = now() WHERE id = $1",
          id, f.email, f.first_name, f.infix, f.last_name, f.title, f.phone, f.mobile, f.function, f.active, f.default_mailbox_id);
      if (f.roles) {
        if (self && std::find(f.roles->begin(), f.roles->end(), "admin") == f.roles->end())
          throw ApiError(422, "invalid", "you cannot take the admin role from yourself", "roles");
        tx.exec_params("DELETE FROM user_roles WHERE user_id = $1", id);
        for (const auto& r : *f.roles) tx.exec_params("INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING", id, r);
      }
      if (f.active == false) tx.exec_params("UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", id);
      auto after = load_user(tx, id);
      auto changes = diff_objects(before, after);
      std::erase_if(changes, [](const FieldChange& c) { return c.field == "updated_at"; });
      if (!changes.empty()) audit_write(tx, actor, "user", std::to_string(id), f.active == false ? "deactivate" : "update", changes);
      return after;
    });
    auto user = co_await std::move(op);
    co_return json_response(200, user);
  });

  api.add("POST", "/api/v1/users/{id}/sessions/revoke", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [id, actor](pqxx::work& tx) {
      load_user(tx, id);
      auto r = tx.exec_params("UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", id);
      audit_write(tx, actor, "user", std::to_string(id), "sessions_revoked", {{"sessions", std::nullopt, std::to_string(r.affected_rows())}});
      return static_cast<std::int64_t>(r.affected_rows());
    });
    auto n = co_await std::move(op);
    co_return json_response(200, json::object{{"revoked", n}});
  });

  api.add("POST", "/api/v1/users/{id}/password-mail", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [id, actor](pqxx::work& tx) {
      auto u = load_user(tx, id);
      if (!u.at("active").as_bool()) throw ApiError(409, "inactive", "the user is deactivated");
      queue_password_mail(tx, id, std::string(u.at("email").as_string()), "A new password was requested for your account.");
      audit_write(tx, actor, "user", std::to_string(id), "password_mail_queued");
    });
    co_await std::move(op);
    co_return HttpResponse{202, "application/json", R"({"queued":true})", {}};
  });

  api.add("GET", "/api/v1/roles", kRead, [&s](HttpRequest&, const Principal&) -> awaitable<HttpResponse> {
    auto op = store_transact(s.store, [](pqxx::work& tx) {
      json::array a;
      for (const auto& r : tx.exec("SELECT name, description FROM roles ORDER BY name")) {
        std::set<std::string> one{r[0].as<std::string>()};
        json::array perms;
        for (const auto& p : permissions_of_roles(one)) perms.emplace_back(json::string(p));
        a.emplace_back(json::object{{"name", r[0].c_str()}, {"description", r[1].c_str()}, {"permissions", perms}});
      }
      return a;
    });
    auto items = co_await std::move(op);
    co_return json_response(200, json::object{{"items", items}});
  });

  // --- API keys ----------------------------------------------------------------------------
  api.add("GET", "/api/v1/api-keys", kAdmin, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const Page page = page_of(req);
    auto op = store_transact(s.store, [page](pqxx::work& tx) {
      json::array a;
      for (const auto& r : tx.exec_params(
               "SELECT id, name, scopes, created_by, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
               "to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), revoked_at IS NOT NULL, "
               "to_char(last_used_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
               "FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2",
               page.after_id, page.limit + 1))
        a.emplace_back(json::object{{"id", r[0].as<std::int64_t>()}, {"name", r[1].c_str()}, {"scopes", json_text_array(r[2])},
                                    {"created_by", r[3].as<std::int64_t>()}, {"created_at", r[4].c_str()},
                                    {"expires_at", r[5].is_null() ? json::value(nullptr) : json::value(r[5].c_str())},
                                    {"revoked", r[6].as<bool>()},
                                    {"last_used_at", r[7].is_null() ? json::value(nullptr) : json::value(r[7].c_str())}});
      return a;
    });
    auto items = co_await std::move(op);
    co_return page_response(std::move(items), page, [](const json::value& v) { return v.at("id").as_int64(); });
  });

  api.add("POST", "/api/v1/api-keys", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    JsonInput in(req.body);
    in.only({"name", "scopes", "expires_in_days"});
    const std::string name = in.text("name", true, 100).value();
    const auto scopes = in.text_list("scopes", 4, true).value();
    if (scopes.empty()) invalid("scopes", "a key needs at least one scope (read, crm.write, mail.send, webform)");
    for (const auto& sc : scopes)
      if (sc != kRead && sc != kCrmWrite && sc != kMailSend && sc != kWebform)
        invalid("scopes", "no scope named '" + sc + "' (read, crm.write, mail.send, webform)");
    const auto days = in.integer("expires_in_days", 1, 3650);
    if (p.kind != "user") throw ApiError(403, "forbidden", "only a user can create API keys");
    const std::string key = "mgk_" + random_token();
    const Actor actor = p.actor();
    const auto creator = p.id;
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      std::string array = "{";
      for (std::size_t i = 0; i < scopes.size(); ++i) array += (i ? "," : "") + scopes[i];
      array += "}";
      auto id = tx.exec_params1(
          "INSERT INTO api_keys (name, key_hash, scopes, created_by, expires_at) "
          "VALUES ($1, $2, $3::text[], $4, CASE WHEN $5::int IS NULL THEN NULL ELSE now() + $5::int * interval '1 day' END) RETURNING id",
          name, sha256_hex(key), array, creator, days)[0].as<std::int64_t>();
      audit_write(tx, actor, "api_key", std::to_string(id), "create",
                  {{"name", std::nullopt, name}, {"scopes", std::nullopt, array}, {"key", std::nullopt, "***", true}});
      return id;
    });
    auto id = co_await std::move(op);
    co_return json_response(201, json::object{{"id", id}, {"name", name}, {"key", key},
                                              {"note", "the key is shown once; store it now"}});
  });

  api.add("DELETE", "/api/v1/api-keys/{id}", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [id, actor](pqxx::work& tx) {
      auto r = tx.exec_params("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING id", id);
      if (r.empty()) throw ApiError(404, "not_found", "no API key with id " + std::to_string(id));
      audit_write(tx, actor, "api_key", std::to_string(id), "revoke");
    });
    co_await std::move(op);
    co_return HttpResponse{204, "application/json", "", {}};
  });

  // --- settings ----------------------------------------------------------------------------
  api.add("GET", "/api/v1/settings", kAdmin, [&s](HttpRequest&, const Principal&) -> awaitable<HttpResponse> {
    auto op = store_transact(s.store, [](pqxx::work& tx) {
      json::object o;
      for (const auto& r : tx.exec("SELECT key, value::text FROM settings ORDER BY key")) o[r[0].c_str()] = json::parse(r[1].c_str());
      return o;
    });
    auto o = co_await std::move(op);
    co_return json_response(200, o);
  });

  api.add("PATCH", "/api/v1/settings", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    JsonInput in(req.body);
    in.only({"totp_required", "organisation_name"});
    json::object changes;
    if (auto v = in.boolean("totp_required")) changes["totp_required"] = *v;
    if (auto v = in.text("organisation_name", false, 200)) {
      if (v->empty()) invalid("organisation_name", "organisation_name must not be empty", "required");
      changes["organisation_name"] = *v;
    }
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [changes, actor](pqxx::work& tx) {
      json::object before, after;
      for (const auto& [k, v] : changes) {
        auto old = tx.exec_params1("SELECT value::text FROM settings WHERE key = $1", std::string(k));
        before[k] = json::parse(old[0].c_str());
        after[k] = v;
        tx.exec_params("UPDATE settings SET value = $2::jsonb, updated_at = now() WHERE key = $1", std::string(k), json::serialize(v));
      }
      auto diff = diff_objects(before, after);
      if (!diff.empty()) audit_write(tx, actor, "settings", "organisation", "update", diff);
    });
    co_await std::move(op);
    co_return HttpResponse{204, "application/json", "", {}};
  });

  // --- audit trail -------------------------------------------------------------------------
  api.add("GET", "/api/v1/audit", kAdmin, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const Page page = page_of(req);
    auto q = [&](const char* k) { return req.query.count(k) ? trim(req.query[k]) : std::string(); };
    const std::string entity = q("entity"), entity_id = q("entity_id"), actor_kind = q("actor_kind"), actor_id = q("actor_id"),
                      from = q("from"), to = q("to");
    if (!actor_id.empty() && actor_id.find_first_not_of("0123456789") != std::string::npos) invalid("actor_id", "actor_id must be an id");
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      pqxx::result r;
      try {
        r = tx.exec_params(
            "SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), actor_kind, actor_id, actor_label, "
            "entity, entity_id, action, changes::text FROM audit_log WHERE id > $1 "
            "AND ($2 = '' OR entity = $2) AND ($3 = '' OR entity_id = $3) AND ($4 = '' OR actor_kind = $4) "
            "AND ($5 = '' OR actor_id = $5::bigint) AND ($6 = '' OR at >= $6::timestamptz) AND ($7 = '' OR at < $7::timestamptz) "
            "ORDER BY id LIMIT $8",
            page.after_id, entity, entity_id, actor_kind, actor_id, from, to, page.limit + 1);
      } catch (const pqxx::data_exception&) {
        throw ApiError(422, "invalid", "from and to must be ISO 8601 times (2026-11-24T10:00:00Z)", from.empty() ? "to" : "from");
      }
      json::array a;
      for (const auto& row : r)
        a.emplace_back(json::object{{"id", row[0].as<std::int64_t>()}, {"at", row[1].c_str()}, {"actor_kind", row[2].c_str()},
                                    {"actor_id", json_nullable_id(row[3])}, {"actor_label", row[4].c_str()}, {"entity", row[5].c_str()},
                                    {"entity_id", row[6].c_str()}, {"action", row[7].c_str()}, {"changes", json::parse(row[8].c_str())}});
      return a;
    });
    auto items = co_await std::move(op);
    co_return page_response(std::move(items), page, [](const json::value& v) { return v.at("id").as_int64(); });
  });
}

}  // namespace mailgate
