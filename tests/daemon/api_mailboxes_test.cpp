// /api/v1/mailboxes against the real daemon: validation, secrets, host policy, primary rules.
#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "tests/support/api_client.hpp"

namespace mailgate {
namespace {

namespace json = boost::json;
using test::ApiFixture;

constexpr const char* kAllowPrivate = "[security]\nallow_private_hosts = true\n";
const std::string kImapSecret = "imap-Geheim \"quoted\" \\ é";
const std::string kSmtpSecret = "smtp-Geheim-42";

json::object imap_smtp(const std::string& address = "info@example.nl") {
  return {{"display_name", " Info "}, {"address", address}, {"imap_host", "127.0.0.1"}, {"imap_password", kImapSecret},
          {"smtp_host", "localhost"}, {"smtp_password", kSmtpSecret}};
}

std::string body(const json::object& o) { return json::serialize(o); }

TEST(MailboxApi, CreateAppliesDefaultsAndNeverReturnsSecrets) {
  ApiFixture api(kAllowPrivate);
  auto r = api.call("admin", "POST", "/api/v1/mailboxes", body(imap_smtp("Info@Example.NL")));
  ASSERT_EQ(r.status, 201) << r.body;
  const auto& m = r.json.as_object();
  EXPECT_EQ(m.at("display_name").as_string(), "Info");
  EXPECT_EQ(m.at("address").as_string(), "Info@example.nl");
  EXPECT_TRUE(m.at("is_primary").as_bool()) << "the first mailbox is the primary one";
  EXPECT_EQ(m.at("imap_port").as_int64(), 993);
  EXPECT_EQ(m.at("imap_security").as_string(), "tls");
  EXPECT_EQ(m.at("smtp_port").as_int64(), 587);
  EXPECT_EQ(m.at("smtp_security").as_string(), "starttls");
  EXPECT_EQ(m.at("imap_username").as_string(), "Info@example.nl");
  EXPECT_TRUE(m.at("imap_password_set").as_bool());
  EXPECT_FALSE(m.at("ms365_client_secret_set").as_bool());
  EXPECT_EQ(m.at("health").at("state").as_string(), "ok");
  EXPECT_FALSE(m.contains("imap_password"));

  const auto id = std::to_string(m.at("id").as_int64());
  auto patched = api.call("admin", "PATCH", "/api/v1/mailboxes/" + id, body({{"imap_password", "Nieuw-geheim-1"}}));
  ASSERT_EQ(patched.status, 200) << patched.body;
  std::string everything = r.body + patched.body + api.call("staff", "GET", "/api/v1/mailboxes").body +
                           api.call("admin", "GET", "/api/v1/mailboxes/" + id).body +
                           api.call("admin", "GET", "/api/v1/audit?entity=mailbox&limit=200").body;
  for (const std::string& secret : {kImapSecret, kSmtpSecret, std::string("Nieuw-geheim-1")}) {
    EXPECT_EQ(everything.find(secret), std::string::npos) << secret << " in an API response";
    EXPECT_EQ(api.daemon().log().find(secret), std::string::npos) << secret << " in the log";
  }

  pqxx::connection c(api.database_url());
  pqxx::work tx(c);
  auto row = tx.exec1("SELECT imap_password, smtp_password FROM mailboxes WHERE id = " + id);
  const std::string imap_sealed = pqxx::binarystring(row[0]).str(), smtp_sealed = pqxx::binarystring(row[1]).str();
  EXPECT_EQ(imap_sealed.rfind("v1", 0), 0u) << "sealed with the secrets key";
  EXPECT_EQ(imap_sealed.find("Nieuw-geheim-1"), std::string::npos);
  EXPECT_EQ(smtp_sealed.find(kSmtpSecret), std::string::npos);
  for (const auto& a : tx.exec("SELECT changes::text FROM audit_log WHERE entity = 'mailbox'"))
    EXPECT_EQ(std::string(a[0].c_str()).find("geheim"), std::string::npos) << a[0].c_str();
  // The admin's create and update (the daemon audits its own health changes beside them: the
  // saved mailbox starts syncing at once, against a server that is not there).
  auto audit = tx.exec("SELECT changes::text FROM audit_log WHERE entity = 'mailbox' AND actor_kind <> 'daemon' ORDER BY id");
  ASSERT_EQ(audit.size(), 2u);
  EXPECT_NE(std::string(audit[1][0].c_str()).find(R"("imap_password": {"new": "***", "old": "***"})"), std::string::npos)
      << audit[1][0].c_str();
}

TEST(MailboxApi, ValidationNamesTheField) {
  ApiFixture api(kAllowPrivate);
  struct Row {
    std::string key;
    json::value value;  // null: remove the key
    const char* field;
  };
  const std::vector<Row> rows = {
      {"display_name", nullptr, "display_name"},
      {"display_name", "Info\r\nBcc: x@evil.example", "display_name"},
      {"address", "geen adres", "address"},
      {"imap_host", "imap host.example.nl", "imap_host"},
      {"imap_host", nullptr, "imap_host"},
      {"imap_port", 70000, "imap_port"},
      {"imap_port", "993", "imap_port"},
      {"imap_security", "ssl", "imap_security"},
      {"imap_password", "", "imap_password"},
      {"imap_password", nullptr, "imap_password"},
      {"incoming_type", "pop3", "incoming_type"},
      {"outgoing_type", "sendmail", "outgoing_type"},
      {"imap_after_import", "move", "imap_move_folder"},
      {"imap_after_import", "archive", "imap_after_import"},
      {"send_max_per_connection", 0, "send_max_per_connection"},
      {"poll_interval_seconds", 5, "poll_interval_seconds"},
      {"colour", "blue", "colour"},
      {"outgoing_type", "ms365", "ms365_tenant_id"},
      {"incoming_type", "mailgun", "mailgun_domain"},
  };
  for (const auto& row : rows) {
    json::object input = imap_smtp();
    if (row.value.is_null())
      input.erase(row.key);
    else
      input[row.key] = row.value;
    auto r = api.call("admin", "POST", "/api/v1/mailboxes", body(input));
    EXPECT_EQ(r.status, 422) << body(input) << " -> " << r.body;
    if (r.status == 422) {
      EXPECT_EQ(r.json.at("error").at("field").as_string(), row.field) << body(input) << " -> " << r.body;
    }
  }
  pqxx::connection c(api.database_url());
  EXPECT_EQ(pqxx::work(c).exec1("SELECT count(*) FROM mailboxes")[0].as<int>(), 0) << "refused input changes nothing";
}

TEST(MailboxApi, HostPolicy) {
  ApiFixture strict;  // no allow_private_hosts
  auto loopback = strict.call("admin", "POST", "/api/v1/mailboxes", body(imap_smtp()));
  EXPECT_EQ(loopback.status, 422);
  EXPECT_EQ(loopback.json.at("error").at("code").as_string(), "host_refused") << loopback.body;
  json::object input = imap_smtp();
  input["imap_host"] = "10.1.2.3";
  input["smtp_host"] = "10.1.2.3";
  EXPECT_EQ(strict.call("admin", "POST", "/api/v1/mailboxes", body(input)).status, 422);

  ApiFixture lenient(kAllowPrivate);
  for (const char* host : {"169.254.169.254", "fe80::1", "0.0.0.0"}) {
    input = imap_smtp();
    input["imap_host"] = host;
    auto r = lenient.call("admin", "POST", "/api/v1/mailboxes", body(input));
    EXPECT_EQ(r.status, 422) << host << ": " << r.body;
    if (r.status == 422) {
      EXPECT_EQ(r.json.at("error").at("field").as_string(), "imap_host");
    }
  }
  input = imap_smtp();
  input["imap_host"] = "10.1.2.3";
  input["active"] = false;  // inactive: the daemon must not try to reach a private address from a test
  EXPECT_EQ(lenient.call("admin", "POST", "/api/v1/mailboxes", body(input)).status, 201) << "private ranges when allowed";
}

TEST(MailboxApi, ExactlyOnePrimaryAndNeverDeleted) {
  ApiFixture api(kAllowPrivate);
  auto a = api.call("admin", "POST", "/api/v1/mailboxes", body(imap_smtp("a@example.nl")));
  auto b = api.call("admin", "POST", "/api/v1/mailboxes", body(imap_smtp("b@example.nl")));
  ASSERT_EQ(b.status, 201) << b.body;
  EXPECT_FALSE(b.json.at("is_primary").as_bool());
  const auto ida = std::to_string(a.json.at("id").as_int64()), idb = std::to_string(b.json.at("id").as_int64());

  auto deactivate_primary = api.call("admin", "PATCH", "/api/v1/mailboxes/" + ida, body({{"active", false}}));
  EXPECT_EQ(deactivate_primary.status, 409) << deactivate_primary.body;
  ASSERT_EQ(api.call("admin", "POST", "/api/v1/mailboxes/" + idb + "/primary").status, 200);
  EXPECT_FALSE(api.call("admin", "GET", "/api/v1/mailboxes/" + ida).json.at("is_primary").as_bool());
  EXPECT_EQ(api.call("admin", "PATCH", "/api/v1/mailboxes/" + ida, body({{"active", false}})).status, 200);
  EXPECT_EQ(api.call("admin", "POST", "/api/v1/mailboxes/" + ida + "/primary").status, 409) << "inactive cannot be primary";
  EXPECT_EQ(api.call("admin", "DELETE", "/api/v1/mailboxes/" + ida).status, 405);

  pqxx::connection c(api.database_url());
  EXPECT_EQ(pqxx::work(c).exec1("SELECT count(*) FILTER (WHERE is_primary), count(*) FROM mailboxes")[0].as<int>(), 1);
}

TEST(MailboxApi, UsersAndExclusions) {
  ApiFixture api(kAllowPrivate);
  auto m = api.call("admin", "POST", "/api/v1/mailboxes", body(imap_smtp()));
  const auto id = std::to_string(m.json.at("id").as_int64());
  auto users = api.call("admin", "PUT", "/api/v1/mailboxes/" + id + "/users",
                        body({{"users", json::array{api.user_id("staff"), api.user_id("readonly")}}}));
  ASSERT_EQ(users.status, 200) << users.body;
  EXPECT_EQ(users.json.at("users").as_array().size(), 2u);
  auto unknown = api.call("admin", "PUT", "/api/v1/mailboxes/" + id + "/users", body({{"users", json::array{api.user_id("staff"), 9999}}}));
  EXPECT_EQ(unknown.status, 422);
  EXPECT_EQ(unknown.json.at("error").at("field").as_string(), "users[1]");

  auto ex = api.call("admin", "PUT", "/api/v1/mailboxes/" + id + "/exclusions",
                     body({{"domains", json::array{" @Nieuwsbrief.NL ", "bücher.de"}}, {"addresses", json::array{"No-Reply@Example.NL"}}}));
  ASSERT_EQ(ex.status, 200) << ex.body;
  EXPECT_EQ(json::serialize(ex.json.at("excluded_domains")), R"(["nieuwsbrief.nl","xn--bcher-kva.de"])");
  EXPECT_EQ(json::serialize(ex.json.at("excluded_addresses")), R"(["no-reply@example.nl"])");
  auto bad = api.call("admin", "PUT", "/api/v1/mailboxes/" + id + "/exclusions", body({{"domains", json::array{"ok.nl", "not a domain"}}}));
  EXPECT_EQ(bad.status, 422);
  EXPECT_EQ(bad.json.at("error").at("field").as_string(), "domains[1]");
  EXPECT_EQ(api.call("staff", "PUT", "/api/v1/mailboxes/" + id + "/exclusions", body({{"domains", json::array{}}})).status, 403);
}

TEST(MailboxApi, MailgunInboundPathOnlyForAdmins) {
  ApiFixture api(kAllowPrivate);
  json::object input{{"display_name", "Facturen"}, {"address", "facturen@example.nl"}, {"incoming_type", "mailgun"},
                     {"outgoing_type", "mailgun"}, {"mailgun_domain", "mg.example.nl"}, {"mailgun_api_key", "key-123"},
                     {"mailgun_webhook_key", "whk-456"}};
  auto r = api.call("admin", "POST", "/api/v1/mailboxes", body(input));
  ASSERT_EQ(r.status, 201) << r.body;
  const std::string path(r.json.at("mailgun_inbound_path").as_string());
  EXPECT_EQ(path.rfind("/webhooks/mailgun/", 0), 0u);
  EXPECT_GT(path.size(), std::string("/webhooks/mailgun//mime").size() + 30) << "unguessable";
  EXPECT_EQ(r.json.at("mailgun_region").as_string(), "eu");
  auto staff = api.call("staff", "GET", "/api/v1/mailboxes/" + std::to_string(r.json.at("id").as_int64()));
  EXPECT_TRUE(staff.json.at("mailgun_inbound_path").is_null());
}

}  // namespace
}  // namespace mailgate
