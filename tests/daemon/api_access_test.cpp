// /api/v1 sessions, users, API keys, settings, TOTP and the audit trail, against the real daemon.
#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "rules/totp.hpp"
#include "tests/support/api_client.hpp"
#include "util/crypto.hpp"

namespace mailgate {
namespace {

namespace json = boost::json;
using test::ApiFixture;

std::string body(const json::object& o) { return json::serialize(o); }

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The token of the newest password mail queued for `email` (from the outbox row's text).
std::string password_token_from_outbox(const std::string& url, const std::string& email) {
  pqxx::connection c(url);
  auto r = pqxx::work(c).exec_params1(
      "SELECT text_body FROM outbox WHERE kind = 'password_set' AND $1 = ANY (to_addresses) ORDER BY id DESC LIMIT 1", email);
  std::string text = r[0].as<std::string>();
  auto at = text.find("\n\n    ");
  return text.substr(at + 6, text.find('\n', at + 6) - at - 6);
}

TEST(ApiSession, LoginGivesAWorkingTokenAndLogoutRevokesIt) {
  ApiFixture api;
  const std::string token = api.login("staff@example.nl");
  ASSERT_EQ(token.rfind("mgs_", 0), 0u);
  auto me = api.call_token(token, "GET", "/api/v1/me");
  ASSERT_EQ(me.status, 200) << me.body;
  EXPECT_EQ(me.json.at("email").as_string(), "staff@example.nl");
  EXPECT_EQ(me.json.at("roles").as_array().at(0).as_string(), "staff");
  EXPECT_EQ(api.call_token(token, "DELETE", "/api/v1/session").status, 204);
  EXPECT_EQ(api.call_token(token, "GET", "/api/v1/me").status, 401);

  pqxx::connection c(api.database_url());
  EXPECT_EQ(pqxx::work(c).exec1("SELECT count(*) FROM sessions WHERE token_hash = '" + sha256_hex(token) + "'")[0].as<int>(), 1)
      << "only the hash of the token is stored";
  EXPECT_EQ(pqxx::work(c).exec("SELECT 1 FROM sessions WHERE token_hash LIKE 'mgs_%'").size(), 0u);
}

TEST(ApiSession, ExpiredSessionsAndKeysAreRefused) {
  ApiFixture api;
  const std::string token = api.login("staff@example.nl");
  auto key = api.call("admin", "POST", "/api/v1/api-keys", body({{"name", "kort"}, {"scopes", json::array{"read"}}, {"expires_in_days", 1}}));
  ASSERT_EQ(key.status, 201) << key.body;
  const std::string api_key(key.json.at("key").as_string());
  EXPECT_EQ(api.call_token(token, "GET", "/api/v1/me").status, 200);
  EXPECT_EQ(api.call_token(api_key, "GET", "/api/v1/roles").status, 200);
  {
    pqxx::connection c(api.database_url());
    pqxx::work tx(c);
    tx.exec_params("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE token_hash = $1", sha256_hex(token));
    tx.exec_params("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE key_hash = $1", sha256_hex(api_key));
    tx.commit();
  }
  EXPECT_EQ(api.call_token(token, "GET", "/api/v1/me").status, 401);
  EXPECT_EQ(api.call_token(api_key, "GET", "/api/v1/roles").status, 401);
}

TEST(ApiSession, WrongCredentialsAllLookTheSame) {
  ApiFixture api;
  for (auto [email, password] : {std::pair{"staff@example.nl", "wrong"}, std::pair{"nobody@example.nl", test::kTestPassword}}) {
    auto r = api.call("", "POST", "/api/v1/session", body({{"email", email}, {"password", password}}));
    EXPECT_EQ(r.status, 401) << r.body;
    EXPECT_EQ(r.body, R"({"error":{"code":"invalid_credentials","message":"e-mail address or password is wrong"}})");
  }
  auto missing = api.call("", "POST", "/api/v1/session", body({{"password", "x"}}));
  EXPECT_EQ(missing.status, 422);
  EXPECT_EQ(missing.json.at("error").at("field").as_string(), "email");
  EXPECT_EQ(api.call("", "POST", "/api/v1/session", "{not json").status, 400);
}

TEST(ApiSession, ThrottlesPerAccountThenPerAddress) {
  ApiFixture api;
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(api.call("", "POST", "/api/v1/session", body({{"email", "staff@example.nl"}, {"password", "nope"}})).status, 401);
  auto r = api.call("", "POST", "/api/v1/session", body({{"email", "staff@example.nl"}, {"password", test::kTestPassword}}));
  EXPECT_EQ(r.status, 429) << "even the right password waits once the account is throttled";
  EXPECT_NE(r.headers.find("Retry-After: 900"), std::string::npos) << r.headers;
  // Another account from the same address still works until the address limit (20) is reached.
  EXPECT_EQ(api.call("", "POST", "/api/v1/session", body({{"email", "readonly@example.nl"}, {"password", test::kTestPassword}})).status, 201);
  for (int i = 0; i < 15; ++i)
    api.call("", "POST", "/api/v1/session", body({{"email", "x" + std::to_string(i) + "@example.nl"}, {"password", "nope"}}));
  EXPECT_EQ(api.call("", "POST", "/api/v1/session", body({{"email", "readonly@example.nl"}, {"password", test::kTestPassword}})).status, 429);
}

TEST(ApiUsers, CreateQueuesAPasswordMailWhoseTokenWorksOnce) {
  ApiFixture api;
  auto created = api.call("admin", "POST", "/api/v1/users",
                          body({{"email", "  Nieuw@Example.NL "}, {"first_name", " Piet "}, {"infix", "van der"},
                                {"last_name", "Berg"}, {"roles", json::array{"staff"}}}));
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(created.json.at("email").as_string(), "nieuw@example.nl");
  EXPECT_EQ(created.json.at("first_name").as_string(), "Piet");
  EXPECT_EQ(created.json.at("infix").as_string(), "van der");

  const std::string token = password_token_from_outbox(api.database_url(), "nieuw@example.nl");
  ASSERT_GT(token.size(), 30u);
  auto weak = api.call("", "POST", "/api/v1/password-tokens/redeem", body({{"token", token}, {"new_password", "short"}}));
  EXPECT_EQ(weak.status, 422);
  EXPECT_EQ(weak.json.at("error").at("field").as_string(), "new_password");
  EXPECT_EQ(api.call("", "POST", "/api/v1/password-tokens/redeem", body({{"token", token}, {"new_password", "Nieuw-wachtw00rd"}})).status, 204);
  EXPECT_EQ(api.call("", "POST", "/api/v1/password-tokens/redeem", body({{"token", token}, {"new_password", "Ander-wachtw00rd"}})).status, 422)
      << "single use";
  EXPECT_FALSE(api.login("nieuw@example.nl", "Nieuw-wachtw00rd").empty());
}

TEST(ApiUsers, ValidationNamesTheField) {
  ApiFixture api;
  struct Row {
    json::object input;
    int status;
    const char* field;
  };
  const Row rows[] = {
      {{{"email", "geen-adres"}, {"roles", json::array{"staff"}}}, 422, "email"},
      {{{"roles", json::array{"staff"}}}, 422, "email"},
      {{{"email", "a@example.nl"}}, 422, "roles"},
      {{{"email", "a@example.nl"}, {"roles", json::array{"wizard"}}}, 422, "roles"},
      {{{"email", "a@example.nl"}, {"roles", json::array{}}}, 422, "roles"},
      {{{"email", "a@example.nl"}, {"roles", json::array{"staff"}}, {"first_name", "Jan\r\nBcc: x@evil.example"}}, 422, "first_name"},
      {{{"email", "a@example.nl"}, {"roles", json::array{"staff"}}, {"last_name", 5}}, 422, "last_name"},
      {{{"email", "a@example.nl"}, {"roles", json::array{"staff"}}, {"colour", "blue"}}, 422, "colour"},
      {{{"email", "staff@example.nl"}, {"roles", json::array{"staff"}}}, 409, "email"},
  };
  for (const auto& row : rows) {
    auto r = api.call("admin", "POST", "/api/v1/users", body(row.input));
    EXPECT_EQ(r.status, row.status) << body(row.input) << " -> " << r.body;
    if (r.json.is_object() && r.json.as_object().contains("error")) {
      EXPECT_EQ(r.json.at("error").at("field").as_string(), row.field) << body(row.input);
    }
  }
  pqxx::connection c(api.database_url());
  EXPECT_EQ(pqxx::work(c).exec1("SELECT count(*) FROM users")[0].as<int>(), 3) << "refused input changes nothing";
}

TEST(ApiUsers, DeactivatedUserLosesSessionsAndCannotLogIn) {
  ApiFixture api;
  const std::string token = api.login("staff@example.nl");
  const auto id = api.user_id("staff");
  auto r = api.call("admin", "PATCH", "/api/v1/users/" + std::to_string(id), body({{"active", false}}));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(r.json.at("active").as_bool());
  EXPECT_EQ(api.call_token(token, "GET", "/api/v1/me").status, 401);
  EXPECT_EQ(api.call("", "POST", "/api/v1/session", body({{"email", "staff@example.nl"}, {"password", test::kTestPassword}})).status, 401);
  EXPECT_EQ(api.call("admin", "DELETE", "/api/v1/users/" + std::to_string(id)).status, 405) << "users are never deleted";
  auto self = api.call("admin", "PATCH", "/api/v1/users/" + std::to_string(api.user_id("admin")), body({{"active", false}}));
  EXPECT_EQ(self.status, 422);
}

TEST(ApiUsers, ListPaginatesAndFilters) {
  ApiFixture api;
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(api.call("admin", "POST", "/api/v1/users",
                       body({{"email", "u" + std::to_string(i) + "@example.nl"}, {"roles", json::array{"readonly"}}})).status,
              201);
  std::vector<std::string> seen;
  std::string cursor;
  for (int page = 0; page < 10; ++page) {
    auto r = api.call("staff", "GET", "/api/v1/users?limit=3" + (cursor.empty() ? "" : "&cursor=" + cursor));
    ASSERT_EQ(r.status, 200) << r.body;
    for (const auto& u : r.json.at("items").as_array()) seen.emplace_back(u.at("email").as_string());
    if (r.json.at("next_cursor").is_null()) break;
    cursor = std::string(r.json.at("next_cursor").as_string());
  }
  EXPECT_EQ(seen.size(), 8u);
  auto staff = api.call("staff", "GET", "/api/v1/users?role=readonly&q=u3");
  ASSERT_EQ(staff.json.at("items").as_array().size(), 1u) << staff.body;
  EXPECT_EQ(api.call("staff", "GET", "/api/v1/users?limit=0").status, 422);
  EXPECT_EQ(api.call("staff", "GET", "/api/v1/users?cursor=garbage").status, 422);
}

TEST(ApiKeys, CreateUseRevoke) {
  ApiFixture api;
  auto created = api.call("admin", "POST", "/api/v1/api-keys", body({{"name", "webformulier"}, {"scopes", json::array{"read"}}}));
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string key(created.json.at("key").as_string());
  EXPECT_EQ(key.rfind("mgk_", 0), 0u);
  EXPECT_EQ(api.call_token(key, "GET", "/api/v1/roles").status, 200);
  EXPECT_EQ(api.call_token(key, "POST", "/api/v1/api-keys", body({{"name", "x"}, {"scopes", json::array{"read"}}})).status, 403);
  auto list = api.call("admin", "GET", "/api/v1/api-keys");
  EXPECT_EQ(list.body.find(key), std::string::npos) << "the key is shown once";
  EXPECT_EQ(api.call("admin", "DELETE", "/api/v1/api-keys/" + std::to_string(created.json.at("id").as_int64())).status, 204);
  EXPECT_EQ(api.call_token(key, "GET", "/api/v1/roles").status, 401);
  EXPECT_EQ(api.call("admin", "POST", "/api/v1/api-keys", body({{"name", "x"}, {"scopes", json::array{"admin"}}})).status, 422);
}

TEST(ApiTotp, EnrolThenLoginNeedsTheCodeOncePerStep) {
  ApiFixture api;
  const std::string token = api.login("staff@example.nl");
  auto start = api.call_token(token, "POST", "/api/v1/me/totp");
  ASSERT_EQ(start.status, 201) << start.body;
  const std::string secret = base32_decode(std::string(start.json.at("secret").as_string()));
  EXPECT_EQ(std::string(start.json.at("otpauth_uri").as_string()).rfind("otpauth://totp/", 0), 0u);
  EXPECT_EQ(api.call_token(token, "POST", "/api/v1/me/totp/confirm", body({{"code", "000000"}})).status, 422);
  const std::int64_t now = unix_now();
  // Confirm with the previous step's code, so that the current one is still unused for login.
  ASSERT_EQ(api.call_token(token, "POST", "/api/v1/me/totp/confirm", body({{"code", totp_code(secret, now - 30)}})).status, 204);

  auto no_code = api.call("", "POST", "/api/v1/session", body({{"email", "staff@example.nl"}, {"password", test::kTestPassword}}));
  EXPECT_EQ(no_code.status, 401);
  EXPECT_EQ(no_code.json.at("error").at("code").as_string(), "totp_required");
  const std::string code = totp_code(secret, unix_now());
  auto ok = api.call("", "POST", "/api/v1/session",
                     body({{"email", "staff@example.nl"}, {"password", test::kTestPassword}, {"totp_code", code}}));
  EXPECT_EQ(ok.status, 201) << ok.body;
  auto replay = api.call("", "POST", "/api/v1/session",
                         body({{"email", "staff@example.nl"}, {"password", test::kTestPassword}, {"totp_code", code}}));
  EXPECT_EQ(replay.status, 401) << "a code is used once";

  pqxx::connection c(api.database_url());
  auto sealed = pqxx::work(c).exec1("SELECT totp_secret FROM users WHERE email = 'staff@example.nl'");
  EXPECT_EQ(pqxx::binarystring(sealed[0]).str().find(secret), std::string::npos) << "sealed at rest";
}

TEST(ApiTotp, OrganisationCanRequireIt) {
  ApiFixture api;
  ASSERT_EQ(api.call("admin", "PATCH", "/api/v1/settings", body({{"totp_required", true}})).status, 204);
  const std::string token = api.login("readonly@example.nl");
  auto blocked = api.call_token(token, "GET", "/api/v1/users");
  EXPECT_EQ(blocked.status, 403);
  EXPECT_EQ(blocked.json.at("error").at("code").as_string(), "totp_enrolment_required");
  EXPECT_EQ(api.call_token(token, "GET", "/api/v1/me").status, 200) << "enrolment itself stays possible";
  auto start = api.call_token(token, "POST", "/api/v1/me/totp");
  const std::string secret = base32_decode(std::string(start.json.at("secret").as_string()));
  ASSERT_EQ(api.call_token(token, "POST", "/api/v1/me/totp/confirm", body({{"code", totp_code(secret, unix_now())}})).status, 204);
  EXPECT_EQ(api.call_token(token, "GET", "/api/v1/users").status, 200);
  EXPECT_EQ(api.call_token(token, "DELETE", "/api/v1/me/totp").status, 409);
}

TEST(ApiAudit, ChangesAreAuditedWithBeforeAndAfterAndSearchable) {
  ApiFixture api;
  const auto id = api.user_id("staff");
  ASSERT_EQ(api.call("admin", "PATCH", "/api/v1/users/" + std::to_string(id), body({{"last_name", "Jansen"}})).status, 200);
  auto r = api.call("admin", "GET", "/api/v1/audit?entity=user&entity_id=" + std::to_string(id));
  ASSERT_EQ(r.status, 200) << r.body;
  const auto& items = r.json.at("items").as_array();
  ASSERT_EQ(items.size(), 1u) << r.body;
  EXPECT_EQ(items[0].at("action").as_string(), "update");
  EXPECT_EQ(items[0].at("actor_label").as_string(), "admin@example.nl");
  EXPECT_EQ(items[0].at("changes").at("last_name").at("old").as_string(), "");
  EXPECT_EQ(items[0].at("changes").at("last_name").at("new").as_string(), "Jansen");
  auto by_actor = api.call("admin", "GET", "/api/v1/audit?actor_kind=user&actor_id=" + std::to_string(api.user_id("admin")) +
                                               "&from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00Z");
  EXPECT_GE(by_actor.json.at("items").as_array().size(), 2u) << by_actor.body;  // login + update
  EXPECT_EQ(api.call("admin", "GET", "/api/v1/audit?from=not-a-time").status, 422);
  EXPECT_EQ(api.call("staff", "GET", "/api/v1/audit").status, 403);
}

TEST(ApiSecrets, PasswordsNeverReachResponsesLogsOrAudit) {
  ApiFixture api;
  const std::string secret_password = "Zeer-Geheim-Wachtw00rd";
  auto created = api.call("admin", "POST", "/api/v1/users", body({{"email", "geheim@example.nl"}, {"roles", json::array{"staff"}}}));
  const std::string token = password_token_from_outbox(api.database_url(), "geheim@example.nl");
  ASSERT_EQ(api.call("", "POST", "/api/v1/password-tokens/redeem", body({{"token", token}, {"new_password", secret_password}})).status, 204);
  const std::string session = api.login("geheim@example.nl", secret_password);
  auto me = api.call_token(session, "GET", "/api/v1/me");
  auto audit = api.call("admin", "GET", "/api/v1/audit?limit=200");
  for (const auto* text : {&created.body, &me.body, &audit.body}) {
    EXPECT_EQ(text->find(secret_password), std::string::npos);
    EXPECT_EQ(text->find("argon2"), std::string::npos);
  }
  const std::string log = api.daemon().log();
  EXPECT_EQ(log.find(secret_password), std::string::npos);
  EXPECT_EQ(log.find(session), std::string::npos) << "tokens are secrets too";
  EXPECT_EQ(log.find(token), std::string::npos);
}

}  // namespace
}  // namespace mailgate
