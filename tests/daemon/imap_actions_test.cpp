// Inbound IMAP, what happens on the server after an import: the after-import action survives a
// daemon that dies between the commit and the action, and a server that refuses LOGIN
// (LOGINDISABLED) fails the mailbox with a clear reason instead of being retried.
#include <gtest/gtest.h>

#include <signal.h>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include <filesystem>
#include <thread>

#include "tests/support/api_client.hpp"
#include "tests/support/dovecot.hpp"
#include "tests/support/tcp_proxy.hpp"

namespace mailgate {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

std::string message(int i) {
  return "From: Klant <klant" + std::to_string(i) + "@example.nl>\r\nTo: info@coop.nl\r\nSubject: actie " + std::to_string(i) +
         "\r\nMessage-ID: <actie" + std::to_string(i) + "@example.nl>\r\n\r\nInhoud " + std::to_string(i) + "\r\n";
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

int occurrences(const std::string& text, const std::string& needle) {
  int n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++n;
  return n;
}

std::string tail(const std::string& log, std::size_t n = 6000) { return log.size() > n ? log.substr(log.size() - n) : log; }

class ImapActions : public ::testing::Test {
 protected:
  ImapActions()
      : api("[security]\nallow_private_hosts = true\n[tls]\nca_file = \"" + dovecot.ca_file().string() + "\"\n[imap]\nbatch_size = 2\n") {}

  std::int64_t add_mailbox(const std::string& user, const std::string& password, json::object extra = {}, std::uint16_t port = 0) {
    json::object m{{"display_name", "Info"}, {"address", "info@coop.nl"}, {"imap_host", "127.0.0.1"},
                   {"imap_port", port ? port : dovecot.imaps_port()}, {"imap_security", "tls"}, {"imap_username", user},
                   {"imap_password", password}, {"outgoing_type", "smtp"}, {"smtp_host", "127.0.0.1"}, {"smtp_password", "x"}};
    for (const auto& [k, v] : extra) m[k] = v;
    auto r = api.call("admin", "POST", "/api/v1/mailboxes", json::serialize(m));
    EXPECT_EQ(r.status, 201) << r.body;
    return r.json.is_object() ? r.json.at("id").as_int64() : 0;
  }
  int sql_int(const std::string& sql) {
    pqxx::connection c(api.database_url());
    return pqxx::work(c).exec1(sql)[0].as<int>();
  }
  std::string health(std::int64_t mailbox, std::string* reason = nullptr) {
    auto r = api.call("admin", "GET", "/api/v1/mailboxes/" + std::to_string(mailbox));
    if (!r.json.is_object()) return "";
    const auto& h = r.json.at("health");
    if (reason && h.at("reason").is_string()) *reason = std::string(h.at("reason").as_string());
    return std::string(h.at("state").as_string());
  }
  // Messages of the user's INBOX that Dovecot has marked \Seen (Maildir: ":2,<flags>" with S).
  int seen(const std::string& user) {
    int n = 0;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dovecot.dir() / "home" / user / "Maildir" / "cur", ec)) {
      const std::string name = e.path().filename().string();
      const auto info = name.find(":2,");
      if (info != std::string::npos && name.find('S', info) != std::string::npos) ++n;
    }
    return n;
  }

  test::Dovecot dovecot;
  test::ApiFixture api;
};

TEST_F(ImapActions, ActionCommittedButNotDoneIsDoneOnTheNextConnection) {
  dovecot.add_user("acties", "Acties-1");
  for (int i = 1; i <= 3; ++i) dovecot.deliver("acties", "INBOX", message(i));
  const auto id = add_mailbox("acties", "Acties-1", {{"imap_after_import", "seen"}});
  const std::string of_box = " WHERE mailbox_id = " + std::to_string(id);
  ASSERT_TRUE(eventually([&] { return sql_int("SELECT count(*) FROM messages" + of_box) == 3 && seen("acties") == 3; }, 30s))
      << tail(api.daemon().log());
  ASSERT_TRUE(eventually([&] { return sql_int("SELECT count(*) FROM imap_pending_actions") == 0; }, 5s))
      << "a done action leaves no pending row";

  // The daemon dies after committing a batch (UIDs 4 and 5, the cursor moved past them) and
  // before marking it \Seen: what it leaves behind is the cursor and the pending action.
  ASSERT_EQ(api.daemon().stop(SIGKILL, 5s), 128 + SIGKILL);
  dovecot.deliver("acties", "INBOX", message(4));
  dovecot.deliver("acties", "INBOX", message(5));
  {
    pqxx::connection c(api.database_url());
    pqxx::work tx(c);
    tx.exec("UPDATE imap_cursors SET last_uid = 5" + of_box);
    tx.exec("INSERT INTO imap_pending_actions (mailbox_id, folder, uidvalidity, uids, action) "
            "SELECT mailbox_id, folder, uidvalidity, '{4,5}', 'seen' FROM imap_cursors" + of_box);
    // One from before a UIDVALIDITY change: its UIDs mean other messages now; dropped, not done.
    tx.exec("INSERT INTO imap_pending_actions (mailbox_id, folder, uidvalidity, uids, action) "
            "SELECT mailbox_id, folder, uidvalidity - 1, '{1}', 'delete' FROM imap_cursors" + of_box);
    tx.commit();
  }
  const auto log_before = api.daemon().log().size();
  ASSERT_NO_THROW(api.daemon().start());
  ASSERT_TRUE(eventually([&] { return seen("acties") == 5 && sql_int("SELECT count(*) FROM imap_pending_actions") == 0; }, 30s))
      << "seen=" << seen("acties") << "\n" << tail(api.daemon().log());
  EXPECT_EQ(dovecot.count("acties", "INBOX"), 5) << "the stale delete was not done";
  const std::string log = api.daemon().log().substr(log_before);
  EXPECT_EQ(occurrences(log, "event=mailbox_action_replayed mailbox=" + std::to_string(id) + " action=seen uids=2"), 1) << tail(log);
  EXPECT_EQ(occurrences(log, "event=mailbox_action_dropped mailbox=" + std::to_string(id) + " action=delete"), 1) << tail(log);
  EXPECT_EQ(health(id), "ok");
}

TEST_F(ImapActions, MoveAfterImportLeavesNoPendingRows) {
  dovecot.add_user("verplaats", "Verplaats-1");
  dovecot.create_folder("verplaats", "Verwerkt");
  for (int i = 1; i <= 5; ++i) dovecot.deliver("verplaats", "INBOX", message(i));
  const auto id = add_mailbox("verplaats", "Verplaats-1", {{"imap_after_import", "move"}, {"imap_move_folder", "Verwerkt"}});
  ASSERT_TRUE(eventually([&] { return dovecot.count("verplaats", "Verwerkt") == 5 && dovecot.count("verplaats", "INBOX") == 0; }, 30s))
      << tail(api.daemon().log());
  EXPECT_EQ(sql_int("SELECT count(*) FROM messages WHERE mailbox_id = " + std::to_string(id)), 5);
  ASSERT_TRUE(eventually([&] { return sql_int("SELECT count(*) FROM imap_pending_actions") == 0; }, 5s));
}

// Dovecot's plain-text port behind a proxy that replaces AUTH=PLAIN by LOGINDISABLED in what the
// server says: the client may neither LOGIN nor AUTHENTICATE PLAIN.
TEST_F(ImapActions, LoginDisabledFailsTheMailboxWithAClearReason) {
  test::TcpProxy proxy(dovecot.imap_port());
  proxy.rewrite_from_server(" AUTH=PLAIN", " LOGINDISABLED");
  dovecot.add_user("klartekst", "Klartekst-1");
  const auto id = add_mailbox("klartekst", "Klartekst-1", {{"imap_security", "plain"}}, proxy.port());
  std::string reason;
  ASSERT_TRUE(eventually([&] { return health(id, &reason) == "failed"; }, 15s)) << tail(api.daemon().log());
  EXPECT_NE(reason.find("LOGINDISABLED"), std::string::npos) << reason;
  EXPECT_NE(reason.find("choose TLS or STARTTLS"), std::string::npos) << reason;
  std::this_thread::sleep_for(3s);
  EXPECT_EQ(occurrences(api.daemon().log(), "event=mailbox_sync_failed mailbox=" + std::to_string(id) + " "), 1)
      << "failed, not retried\n" << tail(api.daemon().log());
  EXPECT_EQ(proxy.client_transcript().find("LOGIN "), std::string::npos) << "never sent LOGIN";
}

}  // namespace
}  // namespace mailgate
