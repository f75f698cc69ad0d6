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

// --- a varied mailbox ------------------------------------------------------------------------

struct ExpectedAttachment {
  std::string filename, content_type, content_id, data;
  bool inline_part = false;
};

struct Expected {
  std::string raw, subject, from_name, from_address, text_contains, html_contains;
  std::vector<ExpectedAttachment> attachments;
  bool broken = false;
};

constexpr int kBrokenIndex = 777;

// Message i of five shapes (plain; HTML + text; attachment with an RFC 2231 UTF-8 name; HTML +
// text + RFC 2231 Latin-1 name in continuations + an inline image; Latin-1 quoted-printable),
// with RFC 2047 subjects in UTF-8 and ISO-8859-1; one deliberately broken MIME message.
Expected varied(int i) {
  Expected e;
  const std::string n = std::to_string(i);
  e.from_address = "leverancier" + std::to_string(i % 13) + "@example.nl";
  std::string head = "To: Info <info@coop.nl>\r\nDate: Tue, 24 Nov 2026 10:" + std::to_string(10 + i % 50) +
                     ":00 +0100\r\nMessage-ID: <v" + n + "@example.nl>\r\nMIME-Version: 1.0\r\n";
  if (i == kBrokenIndex) {
    e.broken = true;
    e.subject = "kapot bericht";
    e.from_name = "Kapot";
    e.from_address = "kapot@example.nl";
    e.raw = "From: Kapot <kapot@example.nl>\r\n" + head +
            "Subject: kapot bericht\r\nContent-Type: multipart/mixed\r\n\r\nno boundary at all\r\n--x\r\n"
            "Content-Type: text/plain\r\n\r\nhalf\r\n";
    return e;
  }
  switch (i % 5) {
    case 0:
      e.subject = "Bestelling € " + n + " café";
      e.from_name = "Leverancier " + n;
      e.text_contains = "Regel één van bericht " + n + ".\r\n";
      e.raw = "From: Leverancier " + n + " <" + e.from_address + ">\r\n" + head + "Subject: =?utf-8?q?Bestelling_=E2=82=AC_" + n +
              "_caf=C3=A9?=\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + e.text_contains;
      break;
    case 1:
      e.subject = "Réunion à Genève " + n;
      e.from_name = "José";
      e.text_contains = "Tot ziens in Genève " + n;
      e.html_contains = "<p>Tot ziens in <b>Genève</b> " + n + "</p>";
      e.raw = "From: =?iso-8859-1?q?Jos=E9?= <" + e.from_address + ">\r\n" + head + "Subject: =?iso-8859-1?b?" +
              base64_encode("R\xe9union \xe0 Gen\xe8ve " + n) + "?=\r\n"
              "Content-Type: multipart/alternative; boundary=\"alt" + n + "\"\r\n\r\n"
              "--alt" + n + "\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
              "Tot ziens in Gen=E8ve " + n + "\r\n"
              "--alt" + n + "\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + e.html_contains + "\r\n--alt" + n + "--\r\n";
      break;
    case 2: {
      e.subject = "Factuur " + n;
      e.from_name = "Facturatie";
      e.text_contains = "Bijgaand de factuur " + n + ".";
      ExpectedAttachment a{"factuur " + n + " € été.pdf", "application/pdf", "", bytes(500 + (i * 37) % 3000, i), false};
      e.raw = "From: Facturatie <" + e.from_address + ">\r\n" + head + "Subject: Factuur " + n +
              "\r\nContent-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n"
              "--mix\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + e.text_contains + "\r\n"
              "--mix\r\nContent-Type: application/pdf\r\n"
              "Content-Disposition: attachment; filename*=utf-8''factuur%20" + n + "%20%E2%82%AC%20%C3%A9t%C3%A9.pdf\r\n"
              "Content-Transfer-Encoding: base64\r\n\r\n" + base64_lines(a.data) + "--mix--\r\n";
      e.attachments.push_back(std::move(a));
      break;
    }
    case 3: {
      e.subject = "Offerte " + n + " – überprüft";
      e.from_name = "Offertes";
      e.text_contains = "Zie de bijlage " + n + ".";
      e.html_contains = "<p>Zie de <i>bijlage</i> " + n + ".<img src=\"cid:logo" + n + "@example.nl\"></p>";
      ExpectedAttachment logo{"", "image/png", "logo" + n + "@example.nl", bytes(200 + i % 97, 50000 + i), true};
      ExpectedAttachment cv{"résumé à " + n + ".txt", "text/plain", "", "CV " + n, false};
      e.raw = "From: Offertes <" + e.from_address + ">\r\n" + head + "Subject: =?utf-8?b?" + base64_encode("Offerte " + n + " – überprüft") +
              "?=\r\nContent-Type: multipart/mixed; boundary=\"out\"\r\n\r\n"
              "--out\r\nContent-Type: multipart/related; boundary=\"rel\"\r\n\r\n"
              "--rel\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n"
              "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + e.text_contains + "\r\n"
              "--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
              "<p>Zie de <i>bijlage</i> " + n + ".<img src=3D\"cid:logo" + n + "@example.nl\"></p>\r\n--alt--\r\n"
              "--rel\r\nContent-Type: image/png\r\nContent-ID: <logo" + n + "@example.nl>\r\nContent-Disposition: inline\r\n"
              "Content-Transfer-Encoding: base64\r\n\r\n" + base64_lines(logo.data) + "--rel--\r\n"
              "--out\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
              "Content-Disposition: attachment;\r\n filename*0*=iso-8859-1''r%E9sum%E9;\r\n filename*1*=%20%E0%20" + n + ".txt\r\n\r\n" +
              cv.data + "\r\n--out--\r\n";  // (the line break before a boundary belongs to the boundary)
      e.attachments.push_back(std::move(logo));
      e.attachments.push_back(std::move(cv));
      break;
    }
    default:
      e.subject = "Vraag over levering 📦 " + n;
      e.from_name = "Klantenservice";
      e.text_contains = "Wanneer komt de crème brûlée " + n + "?";
      e.raw = "From: \"Klantenservice\" <" + e.from_address + ">\r\n" + head + "Subject: =?utf-8?q?Vraag_over_levering_=F0=9F=93=A6_" + n +
              "?=\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
              "Wanneer komt de cr=E8me br=FBl=E9e " + n + "?\r\n";
  }
  return e;
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
  dovecot.add_user("info", "Wacht \"woord\" \\ é");
  for (int i = 0; i < 45; ++i) dovecot.deliver("info", "INBOX", message(i));
  const auto id = add_mailbox("info", "Wacht \"woord\" \\ é");
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

// A mailbox saved through the API starts syncing at once, not at the supervisors' next look for
// new mailboxes (set to an hour here: a mailbox written only by SQL would wait that long).
TEST_F(ImapSync, AMailboxSavedThroughTheApiStartsAtOnce) {
  ASSERT_EQ(api.daemon().stop(SIGTERM, 20s), 0);
  api.daemon().edit_config("shutdown_grace_seconds = 10", "shutdown_grace_seconds = 10\nmailbox_watch_seconds = 3600");
  ASSERT_NO_THROW(api.daemon().start());
  dovecot.add_user("info", "Welkom-1");
  for (int i = 0; i < 5; ++i) dovecot.deliver("info", "INBOX", message(i));
  const auto id = add_mailbox("info", "Welkom-1");
  ASSERT_TRUE(eventually([&] { return messages(id) == 5; }, 30s)) << messages(id) << "\n" << tail(api.daemon().log());
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

TEST_F(ImapSync, InitialSyncOfAThousandVariedMessages) {
  constexpr int kTotal = 1000;
  dovecot.add_user("inkoop", "Inkoop-1");
  std::vector<Expected> expected;
  for (int i = 0; i < kTotal; ++i) {
    expected.push_back(varied(i));
    dovecot.deliver("inkoop", "INBOX", expected.back().raw);
  }
  const auto started = std::chrono::steady_clock::now();
  const auto id = add_mailbox("inkoop", "Inkoop-1");
  // About 4 s in a release build, 10 s or more with sanitizers on a busy machine.
  ASSERT_TRUE(eventually([&] { return messages(id) >= kTotal; }, 60s, 200ms))
      << messages(id) << " messages\n" << tail(api.daemon().log());
  std::cout << "[ timing ] " << kTotal << " messages synced in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count() << " ms\n";
  EXPECT_EQ(messages(id), kTotal);
  EXPECT_EQ(std::get<2>(cursor(id)), kTotal);
  EXPECT_EQ(health(id), "ok");

  pqxx::connection c(api.database_url());
  pqxx::work tx(c);
  std::map<std::string, int> index;  // Message-ID -> i
  for (int i = 0; i < kTotal; ++i) index["v" + std::to_string(i) + "@example.nl"] = i;
  std::set<int> seen;
  for (const auto& r : tx.exec_params(
           "SELECT id, header_message_id, subject, from_name, from_address, text_body, html_body, raw, raw_size, raw_sha256, "
           "cardinality(parse_warnings), array_to_string(parse_warnings, '; ') FROM messages WHERE mailbox_id = $1",
           id)) {
    const std::string mid = r[1].as<std::string>();
    ASSERT_TRUE(index.count(mid)) << "unexpected message " << mid;
    const int i = index[mid];
    EXPECT_TRUE(seen.insert(i).second) << "stored twice: " << mid;
    const Expected& e = expected[i];
    SCOPED_TRACE("message " + std::to_string(i));
    EXPECT_EQ(r[2].as<std::string>(), e.subject);
    EXPECT_EQ(r[3].as<std::string>(), e.from_name);
    EXPECT_EQ(r[4].as<std::string>(), e.from_address);
    EXPECT_NE(r[5].as<std::string>().find(e.text_contains), std::string::npos) << r[5].as<std::string>();
    if (e.html_contains.empty())
      EXPECT_EQ(r[6].as<std::string>(), "");
    else
      EXPECT_NE(r[6].as<std::string>().find(e.html_contains), std::string::npos) << r[6].as<std::string>();
    EXPECT_TRUE(pqxx::binarystring(r[7]).str() == e.raw) << "the raw message is kept byte-exact";
    EXPECT_EQ(r[8].as<std::size_t>(), e.raw.size());
    EXPECT_EQ(r[9].as<std::string>(), sha256_hex(e.raw));
    if (e.broken)
      EXPECT_GT(r[10].as<int>(), 0) << "a broken message is stored with its parse warnings";
    else
      EXPECT_EQ(r[10].as<int>(), 0) << r[11].as<std::string>();

    auto atts = tx.exec_params(
        "SELECT filename, content_type, content_id, inline_part, size, sha256, data FROM attachments WHERE message_id = $1 "
        "ORDER BY position",
        r[0].as<std::int64_t>());
    ASSERT_EQ(atts.size(), e.attachments.size());
    for (std::size_t k = 0; k < atts.size(); ++k) {
      const auto& a = e.attachments[k];
      EXPECT_EQ(atts[k][0].as<std::string>(), a.filename);
      EXPECT_EQ(atts[k][1].as<std::string>(), a.content_type);
      EXPECT_EQ(atts[k][2].as<std::string>(), a.content_id);
      EXPECT_EQ(atts[k][3].as<bool>(), a.inline_part);
      EXPECT_EQ(atts[k][4].as<std::size_t>(), a.data.size());
      EXPECT_EQ(atts[k][5].as<std::string>(), sha256_hex(a.data));
      EXPECT_TRUE(pqxx::binarystring(atts[k][6]).str() == a.data) << "attachment " << k << " decoded byte-exact";
    }
    if (::testing::Test::HasFailure()) return;  // one message's story is enough
  }
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kTotal));
}

// A mailbox in a non-ASCII folder (modified UTF-7 on the wire), moving what it imported into
// another non-ASCII folder.
TEST_F(ImapSync, NonAsciiFolderSyncedAndMovedToNonAsciiFolder) {
  const std::string source = "Facturen/Ontvangen é", target = "Inkomend € post/Verwerkt";
  dovecot.add_user("facturen", "Facturen-1");
  for (int i = 0; i < 12; ++i) dovecot.deliver("facturen", source, message(i));
  for (int i = 100; i < 103; ++i) dovecot.deliver("facturen", "INBOX", message(i));
  dovecot.create_folder("facturen", target);
  const auto id = add_mailbox("facturen", "Facturen-1",
                              {{"imap_folder", source}, {"imap_after_import", "move"}, {"imap_move_folder", target}});
  ASSERT_TRUE(eventually([&] { return messages(id) == 12 && dovecot.count("facturen", target) == 12 && dovecot.count("facturen", source) == 0; },
                         30s))
      << messages(id) << " stored, " << dovecot.count("facturen", target) << " moved\n" << tail(api.daemon().log());
  EXPECT_EQ(dovecot.count("facturen", "INBOX"), 3) << "the inbox is not this mailbox's folder";
  EXPECT_EQ(std::get<0>(cursor(id)), source);
  EXPECT_EQ(std::get<2>(cursor(id)), 12);
  {
    pqxx::connection c(api.database_url());
    auto r = pqxx::work(c).exec_params1(
        "SELECT count(*) FILTER (WHERE header_message_id ~ '^m([0-9]|1[01])@example.nl$') FROM messages WHERE mailbox_id = $1", id);
    EXPECT_EQ(r[0].as<int>(), 12) << "exactly the folder's messages";
  }
  EXPECT_EQ(health(id), "ok");
  // Later mail in the folder follows the same way.
  dovecot.deliver("facturen", source, message(12));
  // (Dovecot's MOVE links the file into the target before it unlinks it from the source: wait for both.)
  ASSERT_TRUE(eventually([&] { return messages(id) == 13 && dovecot.count("facturen", target) == 13 && dovecot.count("facturen", source) == 0; },
                         10s))
      << messages(id) << " stored, " << dovecot.count("facturen", source) << " left in the source\n" << tail(api.daemon().log());
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

// mailgated killed with SIGKILL in the middle of a sync, restarted on the same database.
class ImapSyncSmallBatches : public ::testing::Test, protected SyncEnv {
 protected:
  ImapSyncSmallBatches() : SyncEnv(5) {}
};

TEST_F(ImapSyncSmallBatches, KilledMidBatchThenRestartedEndsExactlyOnce) {
  constexpr int kTotal = 300;
  dovecot.add_user("post", "Post-1");
  std::set<std::string> hashes;
  for (int i = 0; i < kTotal; ++i) {
    const std::string raw = large_message(i, 20'000);
    hashes.insert(sha256_hex(raw));
    dovecot.deliver("post", "INBOX", raw);
  }
  const auto id = add_mailbox("post", "Post-1");
  int at_kill = 0;
  {
    pqxx::connection c(api.database_url());
    const auto count = [&] {
      pqxx::nontransaction tx(c);
      return tx.exec_params1("SELECT count(*) FROM messages WHERE mailbox_id = $1", id)[0].as<int>();
    };
    ASSERT_TRUE(eventually([&] { return count() >= 3 * 5; }, 30s, 2ms)) << tail(api.daemon().log());
    EXPECT_EQ(api.daemon().stop(SIGKILL, 5s), 128 + SIGKILL);
    // Its database sessions end (a COMMIT already sent still lands) before the count is final.
    ASSERT_TRUE(eventually([&] {
      pqxx::nontransaction tx(c);
      return tx.exec("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                     "AND backend_type = 'client backend'")[0][0]
                 .as<int>() == 0;
    }, 10s));
    at_kill = count();
  }
  EXPECT_EQ(std::get<2>(cursor(id)), at_kill) << "the cursor commits with its batch";
  ASSERT_GT(at_kill, 0);
  ASSERT_LT(at_kill, kTotal) << "killed before the sync was done";
  const auto log_before = api.daemon().log().size();
  ASSERT_NO_THROW(api.daemon().start());
  ASSERT_TRUE(eventually([&] { return messages(id) == kTotal; }, 40s))
      << messages(id) << " messages\n" << tail(api.daemon().log());
  EXPECT_EQ(distinct_contents(id), kTotal);
  EXPECT_EQ(std::get<2>(cursor(id)), kTotal);
  {
    pqxx::connection c(api.database_url());
    pqxx::work tx(c);
    std::set<std::string> stored;
    for (const auto& r : tx.exec_params("SELECT raw_sha256 FROM messages WHERE mailbox_id = $1", id)) stored.insert(r[0].as<std::string>());
    EXPECT_EQ(stored, hashes);
  }
  EXPECT_EQ(health(id), "ok");
  // The restarted daemon resumed from its cursor: it fetched only what was not committed.
  const std::string second_run = api.daemon().log().substr(log_before);
  int fetched = 0;
  for (std::size_t at = second_run.find("event=mailbox_batch"); at != std::string::npos; at = second_run.find("event=mailbox_batch", at + 1)) {
    const auto f = second_run.find("fetched=", at);
    fetched += std::stoi(second_run.substr(f + 8));
  }
  EXPECT_EQ(fetched, kTotal - at_kill) << tail(second_run);
}

// A server that offers no AUTHENTICATE PLAIN (the proxy hides it from Dovecot's capabilities, on a
// plain-text connection: mailbox security "plain"): the daemon logs in with the LOGIN command, so
// passwords travel as IMAP quoted strings (with escapes) or as literals (non-ASCII).
TEST_F(ImapSync, LoginCommandPasswordsWithQuotesBackslashesSpacesAndAccents) {
  test::TcpProxy proxy(dovecot.imap_port());
  proxy.rewrite_from_server(" AUTH=PLAIN", "");
  const std::map<std::string, std::string> users = {
      {"quoted", "a \"b\" \\c\\ d"},        // a quoted string with escapes
      {"literal", "é \"wacht\" \\ woord"},  // non-ASCII: a literal
  };
  std::map<std::string, std::int64_t> ids;
  for (const auto& [user, password] : users) {
    dovecot.add_user(user, password);
    for (int i = 0; i < 3; ++i) dovecot.deliver(user, "INBOX", message(i));
    ids[user] = add_mailbox(user, password, {{"imap_security", "plain"}}, proxy.port());
  }
  for (const auto& [user, id] : ids) {
    ASSERT_TRUE(eventually([&] { return messages(id) == 3; }, 30s))
        << user << ": " << health(id) << "\n" << tail(api.daemon().log()) << "\n" << tail(dovecot.log());
    EXPECT_EQ(health(id), "ok") << user;
  }
  // What went over the wire: LOGIN, never AUTHENTICATE; escapes in a quoted string; a literal.
  const std::string sent = proxy.client_transcript();
  EXPECT_EQ(sent.find("AUTHENTICATE"), std::string::npos) << sent.substr(0, 2000);
  EXPECT_NE(sent.find(R"(LOGIN quoted "a \"b\" \\c\\ d")" "\r\n"), std::string::npos) << sent.substr(0, 2000);
  EXPECT_NE(sent.find("LOGIN literal {" + std::to_string(users.at("literal").size()) + "+}\r\n" + users.at("literal") + "\r\n"),
            std::string::npos)
      << sent.substr(0, 2000);
  EXPECT_EQ(dovecot.log().find("auth failed"), std::string::npos) << dovecot.log();
  EXPECT_EQ(api.daemon().log().find("event=mailbox_sync_failed"), std::string::npos) << tail(api.daemon().log());
}

}  // namespace
}  // namespace mailgate
