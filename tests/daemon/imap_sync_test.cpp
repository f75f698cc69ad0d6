// Inbound IMAP end to end: the real daemon syncs a private Dovecot into PostgreSQL.
#include <gtest/gtest.h>

#include <signal.h>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "tests/support/api_client.hpp"
#include "tests/support/dovecot.hpp"
#include "tests/support/tcp_proxy.hpp"
#include "util/crypto.hpp"

namespace mailgate {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

std::string message(int i) {
  return "From: Klant " + std::to_string(i) + " <klant" + std::to_string(i % 7) + "@example.nl>\r\nTo: info@coop.nl\r\n"
         "Subject: =?utf-8?q?bericht_=E2=82=AC_" + std::to_string(i) + "?=\r\nMessage-ID: <m" + std::to_string(i) +
         "@example.nl>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nInhoud " + std::to_string(i) + "\r\n";
}

// Deterministic bytes (all 256 values occur) for attachments.
std::string bytes(std::size_t size, std::uint32_t seed) {
  std::mt19937 random(seed);
  std::string out(size, '\0');
  for (auto& c : out) c = static_cast<char>(random() & 0xff);
  return out;
}

// Base64 in 76-character lines, as MIME wants it.
std::string base64_lines(std::string_view data) {
  const std::string b = base64_encode(data);
  std::string out;
  for (std::size_t i = 0; i < b.size(); i += 76) out += b.substr(i, 76) + "\r\n";
  return out;
}

// A message with one large binary attachment (about `size` bytes of raw message).
std::string large_message(int i, std::size_t size) {
  return "From: Archief <archief@example.nl>\r\nTo: info@coop.nl\r\nSubject: scan " + std::to_string(i) +
         "\r\nMessage-ID: <groot" + std::to_string(i) + "@example.nl>\r\nMIME-Version: 1.0\r\n"
         "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nscan " +
         std::to_string(i) + "\r\n--b\r\nContent-Type: application/octet-stream\r\n"
         "Content-Disposition: attachment; filename=\"scan" + std::to_string(i) + ".bin\"\r\n"
         "Content-Transfer-Encoding: base64\r\n\r\n" + base64_lines(bytes(size * 3 / 4, 1000 + i)) + "--b--\r\n";
}

template <class F>
bool eventually(F probe, std::chrono::milliseconds limit, std::chrono::milliseconds step = 50ms) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (probe()) return true;
    std::this_thread::sleep_for(step);
  }
  return probe();
}

int occurrences(const std::string& text, const std::string& needle) {
  int n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++n;
  return n;
}

std::string tail(const std::string& log, std::size_t n = 6000) { return log.size() > n ? log.substr(log.size() - n) : log; }

// A private Dovecot and the real daemon on a fresh database.
class SyncEnv {
 public:
  explicit SyncEnv(int batch_size)
      : api("[security]\nallow_private_hosts = true\n[tls]\nca_file = \"" + dovecot.ca_file().string() +
            "\"\n[imap]\nbatch_size = " + std::to_string(batch_size) + "\n") {}

  // An IMAP mailbox (implicit TLS to 127.0.0.1:port, Dovecot's by default); `extra` adds fields.
  std::int64_t add_mailbox(const std::string& user, const std::string& password, json::object extra = {}, std::uint16_t port = 0) {
    json::object m{{"display_name", "Info"}, {"address", "info@coop.nl"}, {"imap_host", "127.0.0.1"},
                   {"imap_port", port ? port : dovecot.imaps_port()}, {"imap_security", "tls"}, {"imap_username", user},
                   {"imap_password", password}, {"outgoing_type", "smtp"}, {"smtp_host", "127.0.0.1"}, {"smtp_password", "x"}};
    for (const auto& [k, v] : extra) m[k] = v;
    auto r = api.call("admin", "POST", "/api/v1/mailboxes", json::serialize(m));
    EXPECT_EQ(r.status, 201) << r.body;
    return r.json.is_object() ? r.json.at("id").as_int64() : 0;
  }
  int messages(std::int64_t mailbox) {
    pqxx::connection c(api.database_url());
    return pqxx::work(c).exec_params1("SELECT count(*) FROM messages WHERE mailbox_id = $1", mailbox)[0].as<int>();
  }
  int distinct_contents(std::int64_t mailbox) {
    pqxx::connection c(api.database_url());
    return pqxx::work(c).exec_params1("SELECT count(DISTINCT raw_sha256) FROM messages WHERE mailbox_id = $1", mailbox)[0].as<int>();
  }
  // (folder, uidvalidity, last_uid) of the mailbox's cursor; last_uid -1 when there is none.
  std::tuple<std::string, std::int64_t, std::int64_t> cursor(std::int64_t mailbox) {
    pqxx::connection c(api.database_url());
    auto r = pqxx::work(c).exec_params("SELECT folder, uidvalidity, last_uid FROM imap_cursors WHERE mailbox_id = $1", mailbox);
    if (r.empty()) return {"", 0, -1};
    return {r[0][0].as<std::string>(), r[0][1].as<std::int64_t>(), r[0][2].as<std::int64_t>()};
  }
  std::string health(std::int64_t mailbox) {
    auto r = api.call("admin", "GET", "/api/v1/mailboxes/" + std::to_string(mailbox));
    return r.json.is_object() ? std::string(r.json.at("health").at("state").as_string()) : "";
  }
  // The health states the daemon moved the mailbox through (from its audit trail), with reasons.
  std::vector<std::pair<std::string, std::string>> health_changes(std::int64_t mailbox) {
    pqxx::connection c(api.database_url());
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& r : pqxx::work(c).exec_params(
             "SELECT changes->'health'->>'new', coalesce(changes->'health_reason'->>'new', '') FROM audit_log "
             "WHERE entity = 'mailbox' AND entity_id = $1 AND actor_kind = 'daemon' ORDER BY id",
             std::to_string(mailbox)))
      out.emplace_back(r[0].as<std::string>(), r[1].as<std::string>());
    return out;
  }

  test::Dovecot dovecot;
  test::ApiFixture api;
};

class ImapSync : public ::testing::Test, protected SyncEnv {
 protected:
  ImapSync() : SyncEnv(20) {}
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
  const auto validity = [&] { return std::get<1>(cursor(id)); };
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
      << "running=" << api.daemon().running() << "\n" << tail(api.daemon().log());
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

// The server's connection is cut in the middle of the FETCH of a batch of large messages: the
// daemon reconnects, resumes after the last committed batch and ends with every message once.
class ImapSyncLargeBatches : public ::testing::Test, protected SyncEnv {
 protected:
  ImapSyncLargeBatches() : SyncEnv(4) {}
};

TEST_F(ImapSyncLargeBatches, ConnectionCutMidFetchResumesWithoutLossOrDuplicates) {
  constexpr int kTotal = 12, kBatch = 4;
  dovecot.add_user("scans", "Scans-1");
  std::vector<std::string> raws;
  for (int i = 0; i < kTotal; ++i) {
    raws.push_back(large_message(i, 300'000 + 1000 * i));
    dovecot.deliver("scans", "INBOX", raws.back());
  }
  std::uint64_t total_bytes = 0, first_batch = 0, second_batch = 0;
  for (int i = 0; i < kTotal; ++i) {
    total_bytes += raws[i].size();
    if (i < kBatch) first_batch += raws[i].size();
    else if (i < 2 * kBatch) second_batch += raws[i].size();
  }
  test::TcpProxy proxy(dovecot.imaps_port());
  // Past the first batch, halfway through the second: the first is committed by then (a batch is
  // committed before the next FETCH), the second is not.
  const std::uint64_t cut_at = first_batch + second_batch / 2;
  proxy.cut_after_server_bytes(cut_at);
  const auto id = add_mailbox("scans", "Scans-1", {}, proxy.port());

  ASSERT_TRUE(eventually([&] { return proxy.cut_done(); }, 30s)) << tail(api.daemon().log());
  ASSERT_TRUE(eventually([&] { return messages(id) == kTotal; }, 30s)) << messages(id) << "\n" << tail(api.daemon().log());
  EXPECT_GE(proxy.connections(), 2) << "the daemon reconnected";
  EXPECT_EQ(distinct_contents(id), kTotal) << "no message stored twice";
  EXPECT_EQ(std::get<2>(cursor(id)), kTotal);
  EXPECT_EQ(std::get<0>(cursor(id)), "INBOX");
  {
    pqxx::connection c(api.database_url());
    pqxx::work tx(c);
    std::set<std::string> stored;
    for (const auto& r : tx.exec_params("SELECT encode(sha256(raw), 'hex') FROM messages WHERE mailbox_id = $1", id))
      stored.insert(r[0].as<std::string>());
    for (int i = 0; i < kTotal; ++i) EXPECT_TRUE(stored.count(sha256_hex(raws[i]))) << "message " << i << " byte-exact";
  }
  // It resumed after the committed first batch instead of fetching everything again.
  const std::uint64_t after_cut = proxy.server_bytes() - cut_at;
  EXPECT_LT(after_cut, total_bytes - first_batch / 2) << "bytes fetched after the cut: " << after_cut;
  EXPECT_GT(after_cut, total_bytes - first_batch - second_batch) << "the cut batch was fetched again";

  ASSERT_TRUE(eventually([&] { return health(id) == "ok"; }, 10s));
  const auto changes = health_changes(id);
  ASSERT_GE(changes.size(), 2u);
  EXPECT_EQ(changes[changes.size() - 2].first, "retrying");
  EXPECT_FALSE(changes[changes.size() - 2].second.empty()) << "the reason of the failure is kept";
  EXPECT_EQ(changes.back().first, "ok");

  // Dropped while idle: it reconnects and picks up what arrived meanwhile.
  const int before = proxy.connections();
  ASSERT_TRUE(eventually([&] { return proxy.open_connections() == 1; }, 5s));
  EXPECT_EQ(proxy.drop_all(), 1);
  for (int i = kTotal; i < kTotal + 3; ++i) {
    raws.push_back(large_message(i, 50'000));
    dovecot.deliver("scans", "INBOX", raws.back());
  }
  ASSERT_TRUE(eventually([&] { return messages(id) == kTotal + 3; }, 20s)) << tail(api.daemon().log());
  EXPECT_GT(proxy.connections(), before);
  EXPECT_EQ(distinct_contents(id), kTotal + 3);
  EXPECT_EQ(std::get<2>(cursor(id)), kTotal + 3);
  ASSERT_TRUE(eventually([&] { return health(id) == "ok"; }, 10s));
  // Two incidents with a successful sync between them: each starts the backoff (and the clock
  // towards giving up) afresh, instead of counting on from the first.
  const std::string log = api.daemon().log();
  const std::string failed = "event=mailbox_sync_failed mailbox=" + std::to_string(id) + " ";
  EXPECT_EQ(occurrences(log, failed), 2) << tail(log);
  EXPECT_EQ(occurrences(log, failed + "attempt=0 "), 2) << tail(log);
}

}  // namespace
}  // namespace mailgate
