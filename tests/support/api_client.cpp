#include "tests/support/api_client.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include "store/migrate.hpp"
#include "tests/support/pg_harness.hpp"
#include "util/crypto.hpp"

namespace mailgate::test {

ApiFixture::ApiFixture(std::string extra_toml) : url_(fresh_migrated_database()) {
  {
    pqxx::connection c(url_);
    pqxx::work tx(c);
    const std::string hash = password_hash(kTestPassword);
    for (const char* role : {"admin", "staff", "readonly"}) {
      auto id = tx.exec_params1("INSERT INTO users (email, first_name, password_hash) VALUES ($1, $2, $3) RETURNING id",
                                std::string(role) + "@example.nl", std::string(role), hash)[0].as<std::int64_t>();
      tx.exec_params("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)", id, std::string(role));
      user_ids_[role] = id;
    }
    tx.commit();
  }
  daemon_ = std::make_unique<DaemonProcess>(url_, extra_toml);
  daemon_->start();
  for (const char* role : {"admin", "staff", "readonly"}) tokens_[role] = login(std::string(role) + "@example.nl");
}

std::string ApiFixture::login(const std::string& email, const std::string& password) {
  boost::json::object body{{"email", email}, {"password", password}};
  auto r = call_token("", "POST", "/api/v1/session", boost::json::serialize(body));
  EXPECT_EQ(r.status, 201) << "login of " << email << ": " << r.body;
  if (r.status != 201) return {};
  return std::string(r.json.at("token").as_string());
}

ApiResult ApiFixture::call(const std::string& role, const std::string& method, const std::string& path, const std::string& body) {
  return call_token(role.empty() ? std::string() : tokens_.at(role), method, path, body);
}

ApiResult ApiFixture::call_token(const std::string& token, const std::string& method, const std::string& path,
                                 const std::string& body) {
  std::string headers = "Content-Type: application/json\r\n";
  if (!token.empty()) headers += "Authorization: Bearer " + token + "\r\n";
  auto h = http_request(daemon_->http_port(), method, path, body, headers);
  ApiResult r{h.status, h.headers, h.body, nullptr};
  boost::system::error_code ec;
  auto v = boost::json::parse(h.body, ec);
  if (!ec) r.json = std::move(v);
  return r;
}

}  // namespace mailgate::test
