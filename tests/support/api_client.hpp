// API test support: a running mailgated on a fresh database, with one signed-in user per role.
//
//   test::ApiFixture api;                       // starts the daemon (fresh migrated database)
//   auto r = api.call("admin", "POST", "/api/v1/users", R"({"email": ...})");
//   EXPECT_EQ(r.status, 201); r.json.at("id")...
//
// Users "admin@example.nl", "staff@example.nl" and "readonly@example.nl" exist with password
// kTestPassword; call() with role "" sends no token.
#pragma once
#include <map>
#include <memory>
#include <string>

#include <boost/json/value.hpp>

#include "tests/support/daemon_process.hpp"

namespace mailgate::test {

inline constexpr const char* kTestPassword = "Test-Passw0rd";

struct ApiResult {
  int status = 0;
  std::string headers;
  std::string body;
  boost::json::value json;  // null when the body is not JSON
};

class ApiFixture {
 public:
  explicit ApiFixture(std::string extra_toml = {});
  ApiResult call(const std::string& role, const std::string& method, const std::string& path, const std::string& body = {});
  // Same, with an explicit bearer token (sessions of other users, API keys).
  ApiResult call_token(const std::string& token, const std::string& method, const std::string& path, const std::string& body = {});
  // Signs in and returns the token (fails the test if that does not work).
  std::string login(const std::string& email, const std::string& password = kTestPassword);

  std::int64_t user_id(const std::string& role) const { return user_ids_.at(role); }
  const std::string& database_url() const { return url_; }
  DaemonProcess& daemon() { return *daemon_; }

 private:
  std::string url_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::map<std::string, std::string> tokens_;
  std::map<std::string, std::int64_t> user_ids_;
};

}  // namespace mailgate::test
