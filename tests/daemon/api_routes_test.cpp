// The /api/v1 surface as a whole:
// - the OpenAPI document lists exactly the routes the router serves (method and path);
// - every route × every role answers 401 / 403 / allowed as the table below says. The table is
//   written by hand on purpose: a new route must be added here with the permission it should
//   need, and the test then proves the server enforces it.
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include "daemon/api.hpp"
#include "daemon/mailgun_inbound.hpp"
#include "daemon/metrics.hpp"
#include "store/store.hpp"
#include "tests/support/api_client.hpp"
#include "util/crypto.hpp"

namespace mailgate {
namespace {

namespace json = boost::json;

// "METHOD pattern" -> the permission the route needs.
const std::map<std::string, std::string> kExpected = {
    {"GET /api/v1/openapi.json", kPublic},
    {"POST /api/v1/session", kPublic},
    {"POST /api/v1/password-tokens/redeem", kPublic},
    {"DELETE /api/v1/session", kSelf},
    {"GET /api/v1/me", kSelf},
    {"POST /api/v1/me/password", kSelf},
    {"POST /api/v1/me/totp", kSelf},
    {"POST /api/v1/me/totp/confirm", kSelf},
    {"DELETE /api/v1/me/totp", kSelf},
    {"GET /api/v1/users", kRead},
    {"GET /api/v1/users/{id}", kRead},
    {"POST /api/v1/users", kAdmin},
    {"PATCH /api/v1/users/{id}", kAdmin},
    {"POST /api/v1/users/{id}/sessions/revoke", kAdmin},
    {"POST /api/v1/users/{id}/password-mail", kAdmin},
    {"GET /api/v1/roles", kRead},
    {"GET /api/v1/api-keys", kAdmin},
    {"POST /api/v1/api-keys", kAdmin},
    {"DELETE /api/v1/api-keys/{id}", kAdmin},
    {"GET /api/v1/settings", kAdmin},
    {"PATCH /api/v1/settings", kAdmin},
    {"GET /api/v1/audit", kAdmin},
    {"GET /api/v1/mailboxes", kRead},
    {"GET /api/v1/mailboxes/{id}", kRead},
    {"POST /api/v1/mailboxes", kAdmin},
    {"PATCH /api/v1/mailboxes/{id}", kAdmin},
    {"POST /api/v1/mailboxes/{id}/primary", kAdmin},
    {"POST /api/v1/mailboxes/{id}/reconnect", kAdmin},
    {"PUT /api/v1/mailboxes/{id}/users", kAdmin},
    {"PUT /api/v1/mailboxes/{id}/exclusions", kAdmin},
    {"GET /api/v1/mailgun-domains", kAdmin},
    {"GET /api/v1/mailgun-domains/{id}", kAdmin},
    {"POST /api/v1/mailgun-domains", kAdmin},
    {"PATCH /api/v1/mailgun-domains/{id}", kAdmin},
    {"GET /api/v1/contacts", kRead},
    {"GET /api/v1/contacts/{id}", kRead},
    {"GET /api/v1/groups", kRead},
    {"GET /api/v1/groups/{id}", kRead},
    {"GET /api/v1/groups/{id}/contacts", kRead},
    {"POST /api/v1/contacts", kCrmWrite},
    {"PATCH /api/v1/contacts/{id}", kCrmWrite},
    {"PUT /api/v1/contacts/{id}/emails", kCrmWrite},
    {"POST /api/v1/groups", kCrmWrite},
    {"PATCH /api/v1/groups/{id}", kCrmWrite},
    {"PUT /api/v1/groups/{id}/members", kCrmWrite},
    {"GET /api/v1/administrations", kRead},
    {"GET /api/v1/administrations/{id}", kRead},
    {"POST /api/v1/administrations", kAdmin},
    {"PATCH /api/v1/administrations/{id}", kAdmin},
    {"GET /api/v1/templates", kRead},
    {"GET /api/v1/templates/{id}", kRead},
    {"POST /api/v1/templates", kAdmin},
    {"PATCH /api/v1/templates/{id}", kAdmin},
    {"GET /api/v1/products", kRead},
    {"GET /api/v1/products/{id}", kRead},
    {"POST /api/v1/products", kAdmin},
    {"PATCH /api/v1/products/{id}", kAdmin},
    {"GET /api/v1/orders", kRead},
    {"GET /api/v1/orders/{id}", kRead},
    {"POST /api/v1/orders", kCrmWrite},
    {"PATCH /api/v1/orders/{id}", kCrmWrite},
    {"GET /api/v1/messages", kRead},
    {"GET /api/v1/mailboxes/{id}/messages", kRead},
    {"GET /api/v1/contacts/{id}/messages", kRead},
    {"GET /api/v1/messages/{id}", kRead},
    {"GET /api/v1/messages/{id}/raw", kRead},
    {"GET /api/v1/messages/{id}/attachments/{attachment_id}", kRead},
    {"PATCH /api/v1/messages/{id}", kCrmWrite},
    {"DELETE /api/v1/messages/{id}", kCrmWrite},
    {"POST /api/v1/messages/{id}/contacts", kCrmWrite},
    {"DELETE /api/v1/messages/{id}/contacts/{contact_id}", kCrmWrite},
    {"POST /api/v1/mail", kMailSend},
    {"POST /api/v1/mail/template", kMailSend},
    {"POST /api/v1/mail/invoice", kMailSend},
    {"POST /api/v1/groups/{id}/mailing", kMailSend},
    {"GET /api/v1/outbox", kRead},
    {"GET /api/v1/outbox/{id}", kRead},
    {"POST /api/v1/outbox/{id}/retry", kMailSend},
    {"POST /api/v1/outbox/{id}/cancel", kMailSend},
    {"POST /api/v1/mailboxes/{id}/test", kAdmin},
    {"GET /api/v1/receivers", kRead},
    {"GET /api/v1/receivers/{id}", kRead},
    {"POST /api/v1/receivers", kAdmin},
    {"PATCH /api/v1/receivers/{id}", kAdmin},
    {"GET /api/v1/receivers/{id}/messages", kRead},
    {"GET /api/v1/administrations/{id}/members", kRead},
    {"PUT /api/v1/administrations/{id}/members", kAdmin},
};

// Services good enough to register routes with, without a running daemon.
Services& offline_services() {
  static Config config;
  config.database.url = "postgresql://nobody@127.0.0.1:1/none";
  static Store store(config.database);
  static Metrics metrics;
  static SecretBox secrets(random_bytes(32));
  static std::atomic<bool> stopping{false};
  static Services services{config, store, metrics, secrets, stopping, [] {}};
  return services;
}

// The routes as registered by the real registration code, without a running daemon.
std::vector<ApiRoute> registered_routes() {
  static Router router;
  static Api api(router, offline_services());
  static bool once = (register_api_routes(api), true);
  (void)once;
  return api.routes();
}

// Routes outside /api/v1 that the OpenAPI document describes too: the webhooks, which carry no
// bearer token (so they are not in the permission table) and authenticate by their signature.
std::set<std::string> webhook_routes() {
  Router router;
  register_mailgun_routes(router, offline_services());
  std::set<std::string> out;
  for (const auto& r : router.routes()) out.insert(r.method + " " + r.pattern);
  return out;
}

TEST(ApiRoutes, OpenApiDocumentMatchesTheRouter) {
  std::set<std::string> served, documented;
  for (const auto& r : registered_routes()) served.insert(r.method + " " + r.pattern);
  for (const auto& r : webhook_routes()) served.insert(r);

  test::ApiFixture api;
  auto doc = api.call("", "GET", "/api/v1/openapi.json");
  ASSERT_EQ(doc.status, 200);
  EXPECT_EQ(doc.json.at("openapi").as_string(), "3.0.3");
  for (const auto& [path, item] : doc.json.at("paths").as_object())
    for (const auto& [method, op] : item.as_object()) {
      if (method == "parameters") continue;
      std::string m(method);
      for (auto& c : m) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      documented.insert(m + " " + std::string(path));
      EXPECT_TRUE(op.as_object().contains("summary")) << m << " " << path;
      EXPECT_TRUE(op.as_object().contains("responses")) << m << " " << path;
    }
  for (const auto& r : served) EXPECT_TRUE(documented.count(r)) << "served but not in openapi.json: " << r;
  for (const auto& r : documented) EXPECT_TRUE(served.count(r)) << "in openapi.json but not served: " << r;
}

TEST(ApiRoutes, EveryRouteIsInThePermissionTable) {
  std::set<std::string> served;
  for (const auto& r : registered_routes()) {
    const std::string key = r.method + " " + r.pattern;
    served.insert(key);
    auto it = kExpected.find(key);
    ASSERT_NE(it, kExpected.end()) << "add " << key << " to kExpected with the permission it must need";
    EXPECT_EQ(r.permission, it->second) << key;
  }
  for (const auto& [key, perm] : kExpected) EXPECT_TRUE(served.count(key)) << "no such route: " << key;
}

TEST(ApiRoutes, RouteByRoleTable) {
  test::ApiFixture api;
  auto key = api.call("admin", "POST", "/api/v1/api-keys", R"({"name":"table","scopes":["read"]})");
  ASSERT_EQ(key.status, 201) << key.body;
  const std::string api_key(key.json.at("key").as_string());
  const std::map<std::string, std::set<std::string>> grants = {
      {"readonly", permissions_of_roles({"readonly"})},
      {"staff", permissions_of_roles({"staff"})},
      {"admin", permissions_of_roles({"admin"})},
      {"key:read", {kRead}},
  };
  int checked = 0;
  for (const auto& r : registered_routes()) {
    std::string path = r.pattern;
    for (auto at = path.find('{'); at != std::string::npos; at = path.find('{'))
      path.replace(at, path.find('}', at) - at + 1, "999999");
    const std::string need = kExpected.at(r.method + " " + r.pattern);
    if (r.pattern == "/api/v1/session" && r.method == "DELETE") continue;  // would end the table's own session
    auto anonymous = api.call("", r.method, path, "{}");
    if (need == kPublic) {
      EXPECT_NE(anonymous.status, 401) << r.method << " " << path;
    } else {
      EXPECT_EQ(anonymous.status, 401) << r.method << " " << path << ": " << anonymous.body;
    }
    for (const auto& [who, perms] : grants) {
      if (need == kPublic) continue;
      auto res = who == "key:read" ? api.call_token(api_key, r.method, path, "{}") : api.call(who, r.method, path, "{}");
      const bool allowed = perms.count(need) > 0;
      if (allowed) {
        EXPECT_TRUE(res.status != 401 && res.status != 403) << who << " " << r.method << " " << path << " -> " << res.status << " " << res.body;
      } else {
        EXPECT_EQ(res.status, 403) << who << " " << r.method << " " << path << " -> " << res.body;
      }
      if (allowed && r.method == "GET" && r.pattern.find('{') == std::string::npos) {
        EXPECT_EQ(res.status, 200) << who << " " << path << ": " << res.body;
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 50);
}

}  // namespace
}  // namespace mailgate
