// Inbound IMAP end to end: the real daemon syncs a private Dovecot into PostgreSQL.
#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include <filesystem>
#include <thread>

#include "tests/support/api_client.hpp"
#include "tests/support/dovecot.hpp"

namespace mailgate {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

std::string message(int i) {
  return "From: Klant " + std::to_string(i) + " <klant" + std::to_string(i % 7) + "@example.nl>\r\nTo: info@coop.nl\r\n"
         "Subject: =?utf-8?q?bericht_=E2=82=AC_" + std::to_string(i) + "?=\r\nMessage-ID: <m" + std::to_string(i) +
         "@example.nl>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nInhoud " + std::to_string(i) + "\r\n";
}

template <class F>
bool eventually(F probe, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (probe()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return probe();
}

class ImapSync : public ::testing::Test {
 protected:
  ImapSync()
      : api("[security]\nallow_private_hosts = true\n[tls]\nca_file = \"" + dovecot.ca_file().string() +
            "\"\n[imap]\nbatch_size = 20\n") {}
  std::int64_t add_mailbox(const std::string& user, const std::string& password) {
    json::object m{{"display_name", "Info"}, {"address", "info@coop.nl"}, {"imap_host", "127.0.0.1"},
                   {"imap_port", dovecot.imaps_port()}, {"imap_security", "tls"}, {"imap_username", user},
                   {"imap_password", password}, {"outgoing_type", "smtp"}, {"smtp_host", "127.0.0.1"}, {"smtp_password", "x"}};
    auto r = api.call("admin", "POST", "/api/v1/mailboxes", json::serialize(m));
    EXPECT_EQ(r.status, 201) << r.body;
    return r.json.is_object() ? r.json.at("id").as_int64() : 0;
  }
  int messages(std::int64_t mailbox) {
    pqxx::connection c(api.database_url());
    return pqxx::work(c).exec_params1("SELECT count(*) FROM messages WHERE mailbox_id = $1", mailbox)[0].as<int>();
  }
  std::string health(std::int64_t mailbox) {
    auto r = api.call("admin", "GET", "/api/v1/mailboxes/" + std::to_string(mailbox));
    return r.json.is_object() ? std::string(r.json.at("health").at("state").as_string()) : "";
  }

  test::Dovecot dovecot;
  test::ApiFixture api;
};

TEST_F(ImapSync, InitialSyncThenIdleDelivery) {
  dovecot.add_user("info", "Wacht \"woord\" é");
  for (int i = 0; i < 45; ++i) dovecot.deliver("info", "INBOX", message(i));
  const auto id = add_mailbox("info", "Wacht \"woord\" é");
  ASSERT_TRUE(eventually([&] { return messages(id) == 45; }, 30s)) << messages(id) << "\n" << api.daemon().log();
  {
    pqxx::connection c(api.database_url());
    pqxx::work tx(c);
    auto r = tx.exec_params1("SELECT subject, raw FROM messages WHERE mailbox_id = $1 AND header_message_id = 'm7@example.nl'", id);
    EXPECT_EQ(r[0].as<std::string>(), "bericht € 7");
    EXPECT_EQ(pqxx::binarystring(r[1]).str(), message(7));
    EXPECT_EQ(tx.exec_params1("SELECT last_uid FROM imap_cursors WHERE mailbox_id = $1", id)[0].as<int>(), 45);
  }
  EXPECT_EQ(health(id), "ok");
  std::this_thread::sleep_for(500ms);  // let it settle into IDLE
  const auto delivered = std::chrono::steady_clock::now();
  dovecot.deliver("info", "INBOX", message(100));
  ASSERT_TRUE(eventually([&] { return messages(id) == 46; }, 5s));
  EXPECT_LT(std::chrono::steady_clock::now() - delivered, 2s) << "a message appended during IDLE is stored within 2 s";
}

TEST_F(ImapSync, UidValidityChangeResyncsWithoutDuplicates) {
  dovecot.add_user("archief", "Archief-1");
  for (int i = 0; i < 10; ++i) dovecot.deliver("archief", "INBOX", message(i));
  const auto id = add_mailbox("archief", "Archief-1");
  ASSERT_TRUE(eventually([&] { return messages(id) == 10; }, 30s)) << api.daemon().log();
  const auto validity = [&] {
    pqxx::connection c(api.database_url());
    return pqxx::work(c).exec_params1("SELECT uidvalidity FROM imap_cursors WHERE mailbox_id = $1", id)[0].as<std::int64_t>();
  };
  const auto before = validity();

  // The server loses its UID list: every message gets a new UID under a new UIDVALIDITY.
  dovecot.stop();
  const auto maildir = dovecot.dir() / "home" / "archief" / "Maildir";
  for (const auto& entry : std::filesystem::directory_iterator(maildir))
    if (entry.path().filename().string().rfind("dovecot", 0) == 0) std::filesystem::remove(entry.path());
  std::this_thread::sleep_for(1100ms);  // UIDVALIDITY is a timestamp in seconds: make sure it moves
  dovecot.deliver("archief", "INBOX", message(50));
  dovecot.deliver("archief", "INBOX", message(51));
  dovecot.start();

  ASSERT_TRUE(eventually([&] { return messages(id) == 12 && validity() != before; }, 40s))
      << messages(id) << " messages\n" << api.daemon().log();
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(messages(id), 12) << "the ten known messages were recognised by content, not stored again";
  EXPECT_NE(api.daemon().log().find("event=mailbox_resync"), std::string::npos);
}

TEST_F(ImapSync, WrongPasswordFailsWithTheServersReasonUntilFixed) {
  dovecot.add_user("boekhouding", "Juist-1");
  dovecot.deliver("boekhouding", "INBOX", message(1));
  const auto id = add_mailbox("boekhouding", "Fout-1");
  ASSERT_TRUE(eventually([&] { return health(id) == "failed"; }, 15s))
      << "running=" << api.daemon().running() << "\n" << api.daemon().log().substr(api.daemon().log().size() > 6000 ? api.daemon().log().size() - 6000 : 0);
  auto m = api.call("admin", "GET", "/api/v1/mailboxes/" + std::to_string(id));
  EXPECT_NE(std::string(m.json.at("health").at("reason").as_string()).find("Authentication failed"), std::string::npos) << m.body;
  EXPECT_EQ(messages(id), 0);
  auto fixed = api.call("admin", "PATCH", "/api/v1/mailboxes/" + std::to_string(id), R"({"imap_password": "Juist-1"})");
  ASSERT_EQ(fixed.status, 200) << fixed.body;
  ASSERT_TRUE(eventually([&] { return messages(id) == 1; }, 45s)) << api.daemon().log();
  EXPECT_EQ(health(id), "ok");
  // The daemon audits the failure; the admin's save that resumed it is audited as theirs.
  auto daemon = api.call("admin", "GET", "/api/v1/audit?entity=mailbox&entity_id=" + std::to_string(id) + "&actor_kind=daemon");
  ASSERT_EQ(daemon.json.at("items").as_array().size(), 1u) << daemon.body;
  EXPECT_EQ(daemon.json.at("items").as_array()[0].at("changes").at("health").at("new").as_string(), "failed");
  auto user = api.call("admin", "GET", "/api/v1/audit?entity=mailbox&entity_id=" + std::to_string(id) + "&actor_kind=user");
  EXPECT_NE(user.body.find(R"("imap_password":{"new":"***","old":"***"})"), std::string::npos) << user.body;
  EXPECT_NE(user.body.find(R"(\"state\":\"failed\")"), std::string::npos) << "the save took it from failed to ok: " << user.body;
}

}  // namespace
}  // namespace mailgate
