// The trusted-receiver SMTP server end to end: the real daemon on loopback, a private DNS server
// with the senders' SPF, DKIM and DMARC records, a private SMTP server that takes the mail the
// daemon sends (invitations, rejections, notifications), and real clients: a raw socket for exact
// bytes, Debian's swaks for STARTTLS, Postfix's smtp-source for load.
//
// The transcripts in tests/transcripts/smtp/*.txt (format: tests/support/smtp_transcript.hpp) are
// replayed against the running daemon here; {receiver}, {inactive} and {tls_only} stand for
// receiver addresses made by the test.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include <atomic>
#include <csignal>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "tests/support/api_client.hpp"
#include "tests/support/dkim_signer.hpp"
#include "tests/support/dns_server.hpp"
#include "tests/support/pg_harness.hpp"
#include "tests/support/smtp_servers.hpp"
#include "tests/support/smtp_transcript.hpp"

namespace mailgate {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

template <class F>
bool eventually(F probe, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (probe()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return probe();
}

// A blocking SMTP client on a raw socket: exact bytes out, whole replies in.
class RawSmtp {
 public:
  explicit RawSmtp(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a = test::loopback(port);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("connect failed");
  }
  ~RawSmtp() { ::close(fd_); }
  void send(const std::string& bytes) {
    for (std::size_t at = 0; at < bytes.size();) {
      const auto n = ::send(fd_, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
      if (n <= 0) return;  // the server closed: the replies read so far tell what happened
      at += static_cast<std::size_t>(n);
    }
  }
  // One reply line (without CRLF); "" on EOF or timeout.
  std::string line(std::chrono::milliseconds timeout = 15s) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto eol = buf_.find("\r\n"); eol != std::string::npos) {
        std::string l = buf_.substr(0, eol);
        buf_.erase(0, eol + 2);
        return l;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return {};
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return {};
      char tmp[4096];
      const auto n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n <= 0) return {};
      buf_.append(tmp, static_cast<std::size_t>(n));
    }
  }
  // A whole reply (multi-line joined with "\n").
  std::string reply(std::chrono::milliseconds timeout = 15s) {
    std::string out;
    for (;;) {
      std::string l = line(timeout);
      out += (out.empty() ? "" : "\n") + l;
      if (l.size() < 4 || l[3] != '-') return out;
    }
  }
  std::string command(const std::string& c) {
    send(c + "\r\n");
    return reply();
  }
  bool closed_by_server(std::chrono::milliseconds timeout = 5s) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char c;
    return ::recv(fd_, &c, 1, MSG_PEEK) == 0;
  }

 private:
  int fd_ = -1;
  std::string buf_;
};

std::string message(const std::string& from, const std::string& subject = "Factuur 2026-001", bool pdf = true,
                    const std::string& extra_headers = "") {
  std::string m = "From: " + from + "\r\nTo: facturen@coop.test\r\nSubject: " + subject +
                  "\r\nDate: Mon, 30 Nov 2026 10:00:00 +0100\r\nMessage-ID: <" + std::to_string(std::rand()) + "@sender.test>\r\n" +
                  extra_headers + "MIME-Version: 1.0\r\n";
  if (!pdf) return m + "Content-Type: text/plain; charset=utf-8\r\n\r\nGeen bijlage.\r\n";
  return m +
         "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nIn de bijlage de "
         "factuur.\r\n.regel die met een punt begint\r\n--b1\r\nContent-Type: application/pdf; name=\"factuur.pdf\"\r\n"
         "Content-Disposition: attachment; filename=\"factuur.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcOkw7zDtsOfCg==\r\n"
         "--b1--\r\n";
}

// The DATA form of a message: dot-stuffed, ended with CRLF.CRLF.
std::string data_of(const std::string& m) {
  std::string out;
  std::size_t at = 0;
  while (at < m.size()) {
    auto eol = m.find("\r\n", at);
    std::string l = m.substr(at, eol == std::string::npos ? std::string::npos : eol + 2 - at);
    if (!l.empty() && l[0] == '.') out += '.';
    out += l;
    at = eol == std::string::npos ? m.size() : eol + 2;
  }
  return out + ".\r\n";
}

class SmtpReceiver : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { signer_ = new test::DkimSigner(); }
  static void TearDownTestSuite() { delete signer_; }

  explicit SmtpReceiver(const std::string& extra = "")
      : certs_dir_(test::temp_dir("smtp-receiver")),
        certs_(test::make_test_certs(certs_dir_, "mx", "localhost")),
        dns_(zone()),
        smtp_port_(test::free_port()),
        outgoing_(test::PySmtpOptions{}),
        api_("[security]\nallow_private_hosts = true\n"
             "[outbox]\npoll_interval_ms = 100\nretry_base_seconds = 1\n"
             "[smtp_receiver]\nlisten = [\"127.0.0.1:" + std::to_string(smtp_port_) + "\"]\nhostname = \"mx.mailgate.test\"\n"
             "receive_domain = \"ontvang.mailgate.test\"\ntls_certificate = \"" + certs_.cert.string() + "\"\ntls_key = \"" +
             certs_.key.string() + "\"\ndns_servers = [\"" + dns_.address() + "\"]\ndns_timeout_ms = 2000\nmax_message_bytes = 200000\n" +
             extra) {
    // The mailbox the daemon's own mails leave from: the private SMTP server.
    json::object m{{"display_name", "Coöperatie Zon"}, {"address", "info@coop.test"}, {"incoming_type", "none"},
                   {"smtp_host", "127.0.0.1"},         {"smtp_port", outgoing_.port()}, {"smtp_security", "plain"},
                   {"smtp_password", "not-asked"}};
    auto r = api_.call("admin", "POST", "/api/v1/mailboxes", json::serialize(m));
    EXPECT_EQ(r.status, 201) << r.body;
    auto a = api_.call("admin", "POST", "/api/v1/administrations", R"({"name": "Energiecoöperatie Zon & Wind"})");
    EXPECT_EQ(a.status, 201) << a.body;
    administration_ = a.json.is_object() ? a.json.at("id").as_int64() : 0;
  }

  static test::DnsZone zone() {
    test::DnsZone z;
    z.records = {
        {"leverancier.test", "TXT", {"v=spf1 ip4:127.0.0.0/8 -all"}},
        {"_dmarc.leverancier.test", "TXT", {"v=DMARC1; p=reject"}},
        // Whitelisted, but its SPF does not cover loopback: only its DKIM signature can vouch.
        {"spoofed.test", "TXT", {"v=spf1 ip4:192.0.2.1 -all"}},
        {"_dmarc.spoofed.test", "TXT", {"v=DMARC1; p=reject"}},
        {"sel._domainkey.spoofed.test", "TXT", {signer_->record()}},
        {"evil.test", "TXT", {"v=spf1 ip4:127.0.0.0/8 -all"}},
    };
    return z;
  }

  // A receiver of the administration; returns {id, address}.
  std::pair<std::int64_t, std::string> make_receiver(const std::string& status = "active", const std::string& extra = "") {
    const std::string body = R"({"administration_id": )" + std::to_string(administration_) +
                             R"(, "document_type": "purchase_invoice", "supplier_name": "Leverancier BV", "contact_email": "contact@leverancier.test",
          "status": ")" + status + R"(", "whitelist": [{"kind": "domain", "value": "@Leverancier.test"}, {"kind": "domain", "value": "spoofed.test"}])" +
                             extra + "}";
    auto r = api_.call("admin", "POST", "/api/v1/receivers", body);
    EXPECT_EQ(r.status, 201) << r.body;
    if (!r.json.is_object()) return {0, ""};
    return {r.json.at("id").as_int64(), std::string(r.json.at("address").as_string())};
  }

  // One whole transaction on a new connection; returns the reply to the end of DATA (or the first
  // failing reply).
  std::string deliver(const std::string& rcpt, const std::string& msg, const std::string& mail_from = "piet@leverancier.test") {
    RawSmtp c(smtp_port_);
    if (auto g = c.reply(); g.rfind("220", 0) != 0) return g;
    if (auto r = c.command("EHLO client.leverancier.test"); r.rfind("250", 0) != 0) return r;
    if (auto r = c.command("MAIL FROM:<" + mail_from + ">"); r.rfind("250", 0) != 0) return r;
    if (auto r = c.command("RCPT TO:<" + rcpt + ">"); r.rfind("250", 0) != 0) return r;
    if (auto r = c.command("DATA"); r.rfind("354", 0) != 0) return r;
    c.send(data_of(msg));
    auto r = c.reply();
    c.command("QUIT");
    return r;
  }

  // The daemon's log lines about deliveries it deferred.
  std::string deferrals() {
    std::string out, line;
    std::istringstream log(api_.daemon().log());
    while (std::getline(log, line))
      if (line.find("event=smtp_deferred") != std::string::npos) out += line + "\n";
    return out;
  }
  int count(const std::string& sql) {
    pqxx::connection c(api_.database_url());
    return pqxx::work(c).exec(sql)[0][0].as<int>();
  }
  std::string value(const std::string& sql) {
    pqxx::connection c(api_.database_url());
    auto r = pqxx::work(c).exec(sql);
    return r.empty() || r[0][0].is_null() ? "" : r[0][0].as<std::string>();
  }

  // swaks over STARTTLS (Debian's swaks: a real, independent SMTP client); returns its transcript.
  std::string swaks_tls(const std::string& rcpt, const std::string& msg, const std::string& from = "piet@leverancier.test") {
    const fs::path file = certs_dir_ / ("swaks-" + std::to_string(++swaks_n_) + ".eml");
    std::ofstream(file, std::ios::binary) << msg;
    std::string out;
    test::run_command("swaks --server 127.0.0.1:" + std::to_string(smtp_port_) + " --tls --ehlo client.leverancier.test --from " + from +
                          " --to " + rcpt + " --data @" + file.string() + " 2>&1",
                      &out);
    return out;
  }

  static test::DkimSigner* signer_;
  fs::path certs_dir_;
  test::TestCerts certs_;
  test::DnsServer dns_;
  std::uint16_t smtp_port_;
  test::PySmtpServer outgoing_;
  test::ApiFixture api_;
  std::int64_t administration_ = 0;
  int swaks_n_ = 0;
};

test::DkimSigner* SmtpReceiver::signer_ = nullptr;

TEST_F(SmtpReceiver, AcceptsAuthenticatedWhitelistedPdfOverTlsStoresLinksAndLatchesTls) {
  auto contact = api_.call("admin", "POST", "/api/v1/contacts",
                           R"({"type": "organisation", "organisation_name": "Leverancier BV", "emails": [{"address": "piet@leverancier.test"}]})");
  ASSERT_EQ(contact.status, 201) << contact.body;
  ASSERT_EQ(api_.call("admin", "PUT", "/api/v1/administrations/" + std::to_string(administration_) + "/members",
                      "{\"user_ids\": [" + std::to_string(api_.user_id("staff")) + "]}")
                .status,
            200);
  auto [id, address] = make_receiver("active", R"(, "notify_members": true)");
  EXPECT_TRUE(address.rfind("energiecooperatie-zon-wind-", 0) == 0 && address.size() > 40) << address;
  EXPECT_TRUE(address.ends_with("@ontvang.mailgate.test")) << address;

  const std::string msg = message("\"Piet Leverancier\" <piet@leverancier.test>");
  const std::string transcript = swaks_tls(address, msg);
  ASSERT_NE(transcript.find("<~  250 2.0.0 Ok: queued as"), std::string::npos) << transcript << api_.daemon().log();
  EXPECT_NE(transcript.find("STARTTLS"), std::string::npos);

  ASSERT_EQ(count("SELECT count(*) FROM messages WHERE receiver_id = " + std::to_string(id)), 1);
  const auto message_id = value("SELECT id FROM messages WHERE receiver_id = " + std::to_string(id));
  auto m = api_.call("admin", "GET", "/api/v1/messages/" + message_id);
  ASSERT_EQ(m.status, 200) << m.body;
  EXPECT_EQ(m.json.at("source").as_string(), "smtp");
  EXPECT_EQ(m.json.at("transport_tls").as_bool(), true);
  EXPECT_EQ(m.json.at("envelope_from").as_string(), "piet@leverancier.test");
  EXPECT_EQ(m.json.at("auth").at("spf").as_string(), "pass");
  EXPECT_EQ(m.json.at("auth").at("dmarc").as_string(), "pass");
  EXPECT_TRUE(m.json.at("auth").at("from_authenticated").as_bool());
  const std::string ar(m.json.at("authentication_results").as_string());
  EXPECT_EQ(ar.rfind("mx.mailgate.test; ", 0), 0u) << ar;
  EXPECT_NE(ar.find("spf=pass smtp.mailfrom=piet@leverancier.test"), std::string::npos) << ar;
  EXPECT_EQ(m.json.at("contacts").as_array().size(), 1u) << "linked to the supplier's contact";
  ASSERT_EQ(m.json.at("attachments").as_array().size(), 1u);
  EXPECT_EQ(m.json.at("attachments").as_array()[0].at("filename").as_string(), "factuur.pdf");

  // Stored: our trace fields on top, then the message byte-exact (dot-stuffing undone).
  auto raw = api_.call("admin", "GET", "/api/v1/messages/" + message_id + "/raw");
  EXPECT_EQ(raw.body.rfind("Authentication-Results: " + ar + "\r\nReceived: from client.leverancier.test ([127.0.0.1])", 0), 0u) << raw.body;
  EXPECT_NE(raw.body.find(" +0000\r\n" + msg), std::string::npos) << "the message follows our fields byte for byte:\n" << raw.body;

  // The first delivery over TLS latched "accept only over TLS", audited.
  auto r = api_.call("admin", "GET", "/api/v1/receivers/" + std::to_string(id));
  EXPECT_TRUE(r.json.at("require_tls").as_bool()) << r.body;
  auto audit = api_.call("admin", "GET", "/api/v1/audit?entity=receiver&entity_id=" + std::to_string(id));
  EXPECT_NE(audit.body.find("first accepted delivery over TLS"), std::string::npos) << audit.body;

  // The invitation went to the supplier contact, the notification to the member; both automatic.
  ASSERT_TRUE(eventually([&] { return outgoing_.received().size() == 2; }, 15s)) << outgoing_.log() << api_.daemon().log();
  std::map<std::string, std::string> by_rcpt;
  for (const auto& got : outgoing_.received()) by_rcpt[got.to.at(0)] = got.raw;
  ASSERT_TRUE(by_rcpt.count("contact@leverancier.test"));
  EXPECT_NE(by_rcpt["contact@leverancier.test"].find(address), std::string::npos) << "the invitation names the address";
  EXPECT_NE(by_rcpt["contact@leverancier.test"].find("Auto-Submitted: auto-replied"), std::string::npos);
  ASSERT_TRUE(by_rcpt.count("staff@example.nl"));
  EXPECT_NE(by_rcpt["staff@example.nl"].find("Auto-Submitted: auto-replied"), std::string::npos);

  // A staff member of the administration sees the message; a read-only user who is not, does not.
  EXPECT_EQ(api_.call("staff", "GET", "/api/v1/messages/" + message_id).status, 200);
  EXPECT_EQ(api_.call("readonly", "GET", "/api/v1/messages/" + message_id).status, 404);
  auto listed = api_.call("admin", "GET", "/api/v1/receivers/" + std::to_string(id) + "/messages");
  EXPECT_EQ(listed.json.at("items").as_array().size(), 1u) << listed.body;
}

TEST_F(SmtpReceiver, UnknownInactiveDraftAndRelayAddressesGetTheSameRefusal) {
  const auto draft = make_receiver("draft").second;
  auto [inactive_id, inactive] = make_receiver("active");
  ASSERT_EQ(api_.call("admin", "PATCH", "/api/v1/receivers/" + std::to_string(inactive_id), R"({"status": "inactive"})").status, 200);
  std::set<std::string> replies;
  for (const std::string& rcpt : {draft, inactive, std::string("nobody@ontvang.mailgate.test"), std::string("someone@gmail.com"),
                                  std::string("\"quoted@x\"@ontvang.mailgate.test")}) {
    RawSmtp c(smtp_port_);
    c.reply();
    c.command("EHLO client.test");
    c.command("MAIL FROM:<piet@leverancier.test>");
    std::string r = c.command("RCPT TO:<" + rcpt + ">");
    EXPECT_EQ(r.rfind("550 5.1.1 ", 0), 0u) << rcpt << ": " << r;
    replies.insert(r.substr(r.find(">:")));
  }
  EXPECT_EQ(replies.size(), 1u) << "nothing tells an inactive address from an unknown one";
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE source = 'smtp'"), 0);
}

TEST_F(SmtpReceiver, NotWhitelistedIsRefusedWithoutMailBack) {
  auto [id, address] = make_receiver();
  const std::string r = deliver(address, message("baas@evil.test"), "baas@evil.test");
  EXPECT_EQ(r.rfind("550 5.7.1 ", 0), 0u) << r;
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE receiver_id IS NOT NULL"), 0);
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(count("SELECT count(*) FROM outbox WHERE kind = 'receiver_rejection'"), 0) << "no backscatter";
}

TEST_F(SmtpReceiver, SpoofedFromIsJudgedOnAuthenticationNotOnTheHeader) {
  auto [id, address] = make_receiver();
  // spoofed.test is whitelisted, but 127.0.0.1 is not in its SPF and nothing signs the message.
  std::string r = deliver(address, message("boekhouding@spoofed.test"), "boekhouding@spoofed.test");
  EXPECT_EQ(r.rfind("550 5.7.1 ", 0), 0u) << r;
  EXPECT_NE(r.find("not authenticated"), std::string::npos) << r << value("SELECT authentication_results FROM messages WHERE source = 'smtp'");
  // The same message signed by spoofed.test's key is accepted (aligned DKIM pass).
  const std::string signed_msg = signer_->sign(message("boekhouding@spoofed.test"), "spoofed.test");
  r = deliver(address, signed_msg, "boekhouding@spoofed.test");
  EXPECT_EQ(r.rfind("250 ", 0), 0u) << r << api_.daemon().log();
  EXPECT_EQ(value("SELECT auth->>'dkim_aligned' FROM messages WHERE receiver_id = " + std::to_string(id)), "true");
  // A display name that imitates a whitelisted address is judged on the real address.
  r = deliver(address, message("\"=?utf-8?q?piet=40leverancier.test?=\" <x@evil.test>"), "x@evil.test");
  EXPECT_EQ(r.rfind("550 5.7.1 ", 0), 0u) << r;
  EXPECT_NE(r.find("x@evil.test"), std::string::npos) << r;
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE source = 'smtp'"), 1);
}

TEST_F(SmtpReceiver, ReceiverRulesRejectWithAMailToTheSupplierUnlessItWouldLoop) {
  // Unauthenticated senders allowed, so that a bounce and an auto-reply pass the whitelist and
  // meet the TLS rule: they are refused too, but never answered.
  auto [id, address] = make_receiver("active", R"(, "require_tls": true, "allow_unauthenticated": true)");
  // Plain SMTP to a TLS-only receiver: refused with the reason, and the supplier is told.
  std::string r = deliver(address, message("piet@leverancier.test"));
  EXPECT_EQ(r.rfind("550 5.7.10 ", 0), 0u) << r;
  // No accepted attachment (over TLS): refused, told.
  const std::string t = swaks_tls(address, message("piet@leverancier.test", "Zonder bijlage", false));
  EXPECT_NE(t.find("<~* 550 5.7.1 the message has no attachment of an accepted type"), std::string::npos) << t;
  // A bounce (null sender) and an auto-submitted message are refused without a mail back.
  r = deliver(address, message("piet@leverancier.test"), "");
  EXPECT_EQ(r.rfind("550 ", 0), 0u) << r;
  r = deliver(address, message("piet@leverancier.test", "Afwezig", true, "Auto-Submitted: auto-replied\r\n"));
  EXPECT_EQ(r.rfind("550 ", 0), 0u) << r;
  ASSERT_TRUE(eventually([&] { return outgoing_.received().size() >= 3; }, 15s)) << outgoing_.log();  // invitation + 2 rejections
  std::this_thread::sleep_for(1s);
  int rejections = 0;
  for (const auto& got : outgoing_.received())
    if (got.raw.find("Niet verwerkt") != std::string::npos) {
      ++rejections;
      EXPECT_EQ(got.to, std::vector<std::string>{"contact@leverancier.test"});
      EXPECT_NE(got.raw.find("Auto-Submitted: auto-replied"), std::string::npos);
    }
  EXPECT_EQ(rejections, 2);
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE source = 'smtp'"), 0);
}

TEST_F(SmtpReceiver, RejectionMailsAreLimitedPerHour) {
  auto [id, address] = make_receiver("active", R"(, "require_tls": true)");
  for (int i = 0; i < 7; ++i) EXPECT_EQ(deliver(address, message("piet@leverancier.test")).rfind("550 5.7.10", 0), 0u);
  EXPECT_EQ(count("SELECT count(*) FROM outbox WHERE kind = 'receiver_rejection'"), 5) << "[smtp_receiver] rejections_per_hour = 5";
}

TEST_F(SmtpReceiver, TranscriptsAgainstTheRunningDaemon) {
  const auto receiver = make_receiver().second;
  auto [inactive_id, inactive] = make_receiver();
  api_.call("admin", "PATCH", "/api/v1/receivers/" + std::to_string(inactive_id), R"({"status": "inactive"})");
  const auto tls_only = make_receiver("active", R"(, "require_tls": true)").second;
  const auto files = test::smtp_transcripts();
  ASSERT_GE(files.size(), 8u);
  const std::map<std::string, std::string> vars = {{"{receiver}", receiver}, {"{inactive}", inactive}, {"{tls_only}", tls_only}};
  for (const auto& file : files) {
    const auto steps = test::load_transcript(file, vars);
    RawSmtp c(smtp_port_);
    std::string log, pending;
    bool ok = true;
    for (std::size_t i = 0; i < steps.size() && ok; ++i) {
      if (steps[i].client) {
        pending += steps[i].text;
        continue;
      }
      if (!pending.empty()) {
        log += "C: " + pending;
        c.send(pending);
        pending.clear();
      }
      const std::string& expected = steps[i].text;
      const std::string got = expected == "<closed>" ? (c.closed_by_server() ? "<closed>" : "<open>") : c.line();
      log += "S: " + got + "\n";
      if (!test::transcript_line_matches(expected, got)) {
        ok = false;
        log += "   expected: " + expected + "\n";
      }
    }
    EXPECT_TRUE(ok) << file.filename() << "\n" << log;
  }
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE subject LIKE 'smuggled%'"), 0) << "nothing after a false end of data is a message";
}

TEST_F(SmtpReceiver, PlaintextPipelinedAfterStartTlsIsThrownAway) {
  const auto receiver = make_receiver().second;
  // A client that sends a command behind STARTTLS in the same packet, then talks TLS: the server
  // must not answer it (CVE-2011-0411).
  const std::string py =
      "import socket,ssl,sys\n"
      "s=socket.create_connection(('127.0.0.1'," + std::to_string(smtp_port_) + "))\n"
      "f=s.makefile('rb')\n"
      "def reply():\n"
      "  out=[]\n"
      "  while True:\n"
      "    l=f.readline().decode()\n"
      "    out.append(l.strip())\n"
      "    if len(l)<4 or l[3]!='-': return out\n"
      "reply(); s.sendall(b'EHLO a.test\\r\\n'); reply()\n"
      "s.sendall(b'STARTTLS\\r\\nMAIL FROM:<evil@evil.test>\\r\\n')\n"
      "print('starttls', reply()[-1])\n"
      "c=ssl.create_default_context(); c.check_hostname=False; c.verify_mode=ssl.CERT_NONE\n"
      "t=c.wrap_socket(s, server_hostname='localhost'); tf=t.makefile('rb')\n"
      "t.sendall(b'RCPT TO:<" + receiver + ">\\r\\n'); print('rcpt', tf.readline().decode().strip())\n";
  const fs::path file = certs_dir_ / "starttls.py";
  std::ofstream(file) << py;
  std::string out;
  ASSERT_EQ(test::run_command("/usr/bin/python3 " + file.string() + " 2>&1", &out), 0) << out;
  EXPECT_NE(out.find("starttls 220 2.0.0 Ready to start TLS"), std::string::npos) << out;
  EXPECT_NE(out.find("rcpt 503 5.5.1"), std::string::npos) << "the plaintext MAIL was thrown away, so RCPT has no MAIL: " << out;
}

TEST_F(SmtpReceiver, ManyRecipientsAndOtherReceiversInOneTransaction) {
  const auto a = make_receiver().second;
  const auto b = make_receiver().second;
  RawSmtp c(smtp_port_);
  c.reply();
  c.command("EHLO client.test");
  c.command("MAIL FROM:<piet@leverancier.test>");
  EXPECT_EQ(c.command("RCPT TO:<" + a + ">").rfind("250 ", 0), 0u);
  EXPECT_EQ(c.command("RCPT TO:<" + b + ">").rfind("452 4.5.3 ", 0), 0u) << "one receiver per transaction";
  for (int i = 2; i <= 100; ++i) EXPECT_EQ(c.command("RCPT TO:<" + a + ">").rfind("250 ", 0), 0u) << i;
  EXPECT_EQ(c.command("RCPT TO:<" + a + ">").rfind("452 4.5.3 ", 0), 0u) << "the 101st recipient";
  EXPECT_EQ(c.command("DATA").rfind("354", 0), 0u);
  c.send(data_of(message("piet@leverancier.test")));
  EXPECT_EQ(c.reply().rfind("250 ", 0), 0u);
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE source = 'smtp'"), 1) << "one message however many recipients";
}

TEST_F(SmtpReceiver, ShutdownAnswersIdleSessionsWith421AndExitsCleanly) {
  RawSmtp c(smtp_port_);
  c.reply();
  EXPECT_EQ(c.command("EHLO client.test").rfind("250-", 0), 0u);
  int status = -2;
  std::thread stopper([&] { status = api_.daemon().stop(SIGTERM); });
  EXPECT_EQ(c.reply(15s).rfind("421 4.3.2 mx.mailgate.test Service shutting down", 0), 0u);
  EXPECT_TRUE(c.closed_by_server());
  stopper.join();
  EXPECT_EQ(status, 0) << api_.daemon().log();
}

class SmtpReceiverTimeouts : public SmtpReceiver {
 protected:
  SmtpReceiverTimeouts() : SmtpReceiver("command_timeout_seconds = 1\ndata_timeout_seconds = 2\nmax_sessions_per_ip = 3\n") {}
};

TEST_F(SmtpReceiverTimeouts, SlowClientsAreCutOffAndSessionsPerAddressLimited) {
  const auto address = make_receiver().second;
  {
    RawSmtp c(smtp_port_);
    c.reply();
    EXPECT_EQ(c.reply(3s).rfind("421 4.4.2 ", 0), 0u) << "no command within the timeout";
    EXPECT_TRUE(c.closed_by_server());
  }
  {
    RawSmtp c(smtp_port_);
    c.reply();
    c.command("EHLO client.test");
    c.command("MAIL FROM:<piet@leverancier.test>");
    c.command("RCPT TO:<" + address + ">");
    c.command("DATA");
    const auto start = std::chrono::steady_clock::now();
    std::string r;
    for (int i = 0; i < 8 && r.empty(); ++i) {  // a line every 0.5 s: never idle for the command timeout, but DATA takes too long
      c.send("X-Slow: " + std::to_string(i) + "\r\n");
      r = c.line(500ms);
    }
    if (r.empty()) r = c.line(3s);
    EXPECT_EQ(r.rfind("421 4.4.2 ", 0), 0u) << r;
    EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
  }
  std::vector<std::unique_ptr<RawSmtp>> open;
  for (int i = 0; i < 3; ++i) {
    open.push_back(std::make_unique<RawSmtp>(smtp_port_));
    EXPECT_EQ(open.back()->reply().rfind("220 ", 0), 0u);
  }
  RawSmtp fourth(smtp_port_);
  EXPECT_EQ(fourth.reply().rfind("421 4.7.0 ", 0), 0u) << "max_sessions_per_ip = 3";
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE source = 'smtp'"), 0);
}

// 20 concurrent senders; the daemon is killed with SIGKILL while they send. Every message that
// got 250 must be in the store exactly once; none may be there twice.
TEST_F(SmtpReceiver, SigkillDuringDataLosesNothingThatGot250) {
  const auto address = make_receiver().second;
  std::mutex mutex;
  std::vector<std::string> accepted;  // queue ids from "250 2.0.0 Ok: queued as <id>"
  std::atomic<bool> stop{false};
  std::vector<std::thread> senders;
  for (int t = 0; t < 20; ++t)
    senders.emplace_back([&, t] {
      for (int i = 0; !stop; ++i) {
        std::string r;
        try {
          r = deliver(address, message("piet@leverancier.test", "kill " + std::to_string(t) + "-" + std::to_string(i)));
        } catch (const std::exception&) {
          return;  // connection refused: the daemon is gone
        }
        if (r.rfind("250 2.0.0 Ok: queued as ", 0) == 0) {
          std::lock_guard lock(mutex);
          accepted.push_back(r.substr(24));
        }
      }
    });
  ASSERT_TRUE(eventually([&] { std::lock_guard lock(mutex); return accepted.size() >= 30; }, 30s)) << api_.daemon().log();
  ::kill(api_.daemon().pid(), SIGKILL);
  stop = true;
  for (auto& s : senders) s.join();
  api_.daemon().stop(SIGKILL);
  std::lock_guard lock(mutex);
  pqxx::connection c(api_.database_url());
  pqxx::work tx(c);
  for (const auto& q : accepted)
    EXPECT_EQ(tx.exec_params1("SELECT count(*) FROM messages WHERE source = 'smtp' AND source_key = $1", q)[0].as<int>(), 1) << q;
  const int stored = tx.exec("SELECT count(*) FROM messages WHERE source = 'smtp'")[0][0].as<int>();
  EXPECT_GE(stored, static_cast<int>(accepted.size()));
  EXPECT_LE(stored, static_cast<int>(accepted.size()) + 20) << "at most one committed-but-unanswered message per sender";
  EXPECT_EQ(tx.exec("SELECT count(*) FROM (SELECT subject FROM messages WHERE source = 'smtp' GROUP BY subject HAVING count(*) > 1) d")[0][0].as<int>(), 0);
}

// The group commit stores a batch of deliveries in one transaction; one the database refuses (a
// trigger here) gets 451 alone, and every other delivery of its batch is stored once with 250.
TEST_F(SmtpReceiver, ADeliveryTheDatabaseRefusesFailsAloneInItsBatch) {
  const auto address = make_receiver().second;
  {
    pqxx::connection c(api_.database_url());
    pqxx::work tx(c);
    tx.exec("CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.subject LIKE 'weiger%' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$");
    tx.exec("CREATE TRIGGER test_refuse BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION test_refuse()");
    tx.commit();
  }
  std::mutex mutex;
  std::map<std::string, std::string> replies;  // subject -> reply to the end of DATA
  std::vector<std::thread> senders;
  for (int t = 0; t < 10; ++t)
    senders.emplace_back([&, t] {
      for (int i = 0; i < 4; ++i) {
        const std::string subject = (t % 3 == 0 ? "weiger " : "factuur ") + std::to_string(t) + "-" + std::to_string(i);
        const std::string r = deliver(address, message("piet@leverancier.test", subject));
        std::lock_guard lock(mutex);
        replies[subject] = r;
      }
    });
  for (auto& s : senders) s.join();
  ASSERT_EQ(replies.size(), 40u);
  int refused = 0;
  for (const auto& [subject, reply] : replies) {
    if (subject.rfind("weiger", 0) == 0) {
      ++refused;
      EXPECT_EQ(reply.rfind("451 4.3.0", 0), 0u) << subject << ": " << reply;
    } else {
      EXPECT_EQ(reply.rfind("250 ", 0), 0u) << subject << ": " << reply << "\n" << deferrals();
      EXPECT_EQ(count("SELECT count(*) FROM messages WHERE source = 'smtp' AND subject = '" + subject + "'"), 1) << subject;
    }
  }
  EXPECT_EQ(refused, 16);
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE source = 'smtp'"), 24);
}

TEST(SmtpReceiverDatabase, PostgresStoppedMidSessionDefersAndTheRetryIsStoredOnce) {
  const fs::path dir = test::temp_dir("smtp-pg");
  test::PgCluster cluster(dir / "pg");
  {
    pqxx::connection c(cluster.url());
    pqxx::work tx(c);
    tx.exec("SELECT 1");
  }
  const std::uint16_t port = test::free_port();
  test::DnsZone zone;
  zone.records = {{"leverancier.test", "TXT", {"v=spf1 ip4:127.0.0.0/8 -all"}}};
  test::DnsServer dns(zone);
  test::DaemonProcess daemon(cluster.url(), "[smtp_receiver]\nlisten = [\"127.0.0.1:" + std::to_string(port) +
                                                "\"]\nreceive_domain = \"ontvang.mailgate.test\"\ndns_servers = [\"" + dns.address() +
                                                "\"]\n");
  daemon.edit_config("connect_timeout_seconds = 2\n", "connect_timeout_seconds = 2\nquery_timeout_seconds = 3\n");
  daemon.start();
  {
    pqxx::connection c(cluster.url());
    pqxx::work tx(c);
    tx.exec("INSERT INTO administrations (id, name) VALUES (1, 'Coop')");
    tx.exec("INSERT INTO receivers (id, administration_id, document_type, address, status, contact_email) "
            "VALUES (1, 1, 'purchase_invoice', 'coop-abcdefghijkl@ontvang.mailgate.test', 'active', 'c@leverancier.test')");
    tx.exec("INSERT INTO receivers (id, administration_id, document_type, address, status, contact_email) "
            "VALUES (2, 1, 'purchase_invoice', 'coop-mnopqrstuvwx@ontvang.mailgate.test', 'active', 'c@leverancier.test')");
    tx.exec("INSERT INTO receiver_whitelist (receiver_id, kind, value) VALUES (1, 'domain', 'leverancier.test')");
    tx.commit();
  }
  const std::string msg = message("piet@leverancier.test");
  {
    RawSmtp c(port);
    c.reply();
    c.command("EHLO client.test");
    c.command("MAIL FROM:<piet@leverancier.test>");
    ASSERT_EQ(c.command("RCPT TO:<coop-abcdefghijkl@ontvang.mailgate.test>").rfind("250 ", 0), 0u) << daemon.log();
    ASSERT_EQ(c.command("DATA").rfind("354", 0), 0u);
    cluster.stop();  // in the middle of the session
    c.send(data_of(msg));
    const std::string r = c.reply(30s);
    EXPECT_EQ(r.rfind("451 4.3.0 ", 0), 0u) << r << daemon.log();
    // A new transaction meanwhile: looking up a recipient the daemon has not seen in the last
    // seconds (the RCPT cache holds only recent hits) is deferred too, not refused.
    EXPECT_EQ(c.command("MAIL FROM:<piet@leverancier.test>").rfind("250", 0), 0u);
    const std::string rcpt = c.command("RCPT TO:<coop-mnopqrstuvwx@ontvang.mailgate.test>");
    EXPECT_EQ(rcpt.rfind("451 4.3.0 ", 0), 0u) << rcpt;
  }
  const std::string url_before = cluster.url();
  cluster.start();
  ASSERT_EQ(cluster.url(), url_before) << "PostgreSQL came back on another port: the daemon cannot find it";
  // The client's retry once PostgreSQL is back: stored once.
  std::string r;
  ASSERT_TRUE(eventually(
      [&] {
        RawSmtp c(port);
        c.reply();
        c.command("EHLO client.test");
        c.command("MAIL FROM:<piet@leverancier.test>");
        if (c.command("RCPT TO:<coop-abcdefghijkl@ontvang.mailgate.test>").rfind("250", 0) != 0) return false;
        c.command("DATA");
        c.send(data_of(msg));
        r = c.reply(30s);
        return r.rfind("250 ", 0) == 0;
      },
      60s))
      << r << daemon.log();
  pqxx::connection c(cluster.url());
  EXPECT_EQ(pqxx::work(c).exec("SELECT count(*) FROM messages")[0][0].as<int>(), 1);
  daemon.stop(SIGTERM);
}

}  // namespace
}  // namespace mailgate
