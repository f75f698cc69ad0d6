// protocol/sender_auth and protocol/dns against a DNS server of our own on 127.0.0.1
// (tests/support/dns_server.py): SPF, DKIM (signed here with python3-dkim, an implementation
// independent of libopendkim) and DMARC, one table row per case. No question leaves 127.0.0.1.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "protocol/dns.hpp"
#include "protocol/sender_auth.hpp"
#include "tests/support/dns_server.hpp"
#include "tests/support/pg_harness.hpp"

namespace mailgate::auth {
namespace {

namespace fs = std::filesystem;
using test::DnsRecord;
using test::DnsServer;
using test::DnsZone;

std::string message(const std::string& from_fields, const std::string& body = "Invoice 42 attached.\r\n") {
  return from_fields + "To: invoices@receiver.test\r\nSubject: Invoice 42\r\nDate: Tue, 24 Nov 2026 10:00:00 +0100\r\n"
         "Message-ID: <42@sender.test>\r\n\r\n" + body;
}

// A UDP port on 127.0.0.1 that nobody listens on (bound, then closed).
std::uint16_t closed_udp_port() {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  close(s);
  return ntohs(a.sin_port);
}

class SenderAuth : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(test::temp_dir("sender-auth"));
    const std::string d = dir_->string();
    if (test::run_command("openssl genrsa -out '" + d + "/key.pem' 2048 2>/dev/null") != 0) throw std::runtime_error("openssl genrsa failed");
    std::string pub;
    if (test::run_command("openssl rsa -in '" + d + "/key.pem' -pubout -outform DER 2>/dev/null | base64 -w0", &pub) != 0)
      throw std::runtime_error("openssl rsa failed");
    const std::string key = "v=DKIM1; k=rsa; p=" + pub;  // ~400 bytes: served as two strings
    zone_ = new DnsZone{
        {
            // trusted.test: SPF for 192.0.2.0/24 and 2001:db8::/32, DMARC reject, a DKIM key.
            {"trusted.test", "TXT", {"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"}},
            {"trusted.test", "TXT", {"google-site-verification=unrelated"}},
            {"_dmarc.trusted.test", "TXT", {"v=DMARC1; p=reject; rua=mailto:dmarc@trusted.test"}},
            {"sel._domainkey.trusted.test", "TXT", {key}},
            {"sel._domainkey.mail.trusted.test", "TXT", {key}},
            {"helo.trusted.test", "TXT", {"v=spf1 ip4:192.0.2.10 -all"}},
            {"soft.test", "TXT", {"v=spf1 ip4:198.51.100.0/24 ~all"}},
            {"neutral.test", "TXT", {"v=spf1 ?all"}},
            {"bare.test", "TXT", {"v=spf1"}},
            {"nospf.test", "A", {"192.0.2.99"}},
            {"split.test", "TXT", {"v=spf1 ip4:192.0.2.0", "/24 -all"}},
            {"include.test", "TXT", {"v=spf1 include:trusted.test -all"}},
            {"mxspf.test", "TXT", {"v=spf1 mx a:host.mxspf.test -all"}},
            {"mxspf.test", "MX", {"10 mail.mxspf.test"}},
            {"mail.mxspf.test", "A", {"203.0.113.25"}},
            {"host.mxspf.test", "A", {"203.0.113.26"}},
            {"badsyntax.test", "TXT", {"v=spf1 ip4:999.1.1.1 -all"}},
            {"tworecords.test", "TXT", {"v=spf1 -all"}},
            {"tworecords.test", "TXT", {"v=spf1 +all"}},
            {"loopback.test", "TXT", {"v=spf1 -all"}},
            // An unrelated signer with its own key and SPF.
            {"other.test", "TXT", {"v=spf1 ip4:198.51.100.0/24 -all"}},
            {"sel._domainkey.other.test", "TXT", {key}},
            // No DMARC record, SPF for 192.0.2.0/24.
            {"nodmarc.test", "TXT", {"v=spf1 ip4:192.0.2.0/24 -all"}},
            // DMARC with strict alignment, a subdomain signer.
            {"strict.test", "TXT", {"v=spf1 -all"}},
            {"_dmarc.strict.test", "TXT", {"v=DMARC1; p=reject; adkim=s; aspf=s"}},
            {"sel._domainkey.mail.strict.test", "TXT", {key}},
            // The organisational domain's record applies to its subdomains, with sp=.
            {"_dmarc.orgsp.test", "TXT", {"v=DMARC1; p=none; sp=quarantine"}},
            {"sub.orgsp.test", "TXT", {"v=spf1 -all"}},
            {"baddmarc.test", "TXT", {"v=spf1 ip4:192.0.2.0/24 -all"}},
            {"_dmarc.baddmarc.test", "TXT", {"v=DMARC1; p=bogus"}},
            {"dmarctmp.test", "TXT", {"v=spf1 ip4:192.0.2.0/24 -all"}},
            // A one-letter domain: libopendmarc 1.4.2 aligns it with any sibling (see sender_auth.cpp).
            {"q.example", "TXT", {"v=spf1 -all"}},
            {"_dmarc.q.example", "TXT", {"v=DMARC1; p=reject"}},
            {"evil.example", "TXT", {"v=spf1 ip4:203.0.113.0/24 -all"}},
        },
        {"broken.test", "_dmarc.dmarctmp.test", "sel._domainkey.broken-key.test"},
        {"silent.test"},
    };
    server_ = new DnsServer(*zone_);
  }
  static void TearDownTestSuite() {
    delete server_;
    delete zone_;
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
  }

  static DnsSettings settings() { return DnsSettings{{server_->address()}, std::chrono::milliseconds(2000), 1}; }

  // The message with a DKIM-Signature by d=`domain` s=`selector` prepended (python3-dkim).
  static std::string sign(const std::string& msg, const std::string& domain, const std::string& selector = "sel", bool length = false) {
    static int n = 0;
    const fs::path file = *dir_ / ("msg" + std::to_string(++n) + ".eml");
    std::ofstream(file, std::ios::binary) << msg;
    std::string sig;
    const std::string py =
        "import dkim,sys; m=open(sys.argv[1],'rb').read(); k=open(sys.argv[2],'rb').read(); "
        "sys.stdout.buffer.write(dkim.sign(m, sys.argv[3].encode(), sys.argv[4].encode(), k, "
        "include_headers=[b'from', b'to', b'subject', b'date', b'message-id'], length=sys.argv[5] == '1'))";
    if (test::run_command("/usr/bin/python3 -c \"" + py + "\" '" + file.string() + "' '" + (*dir_ / "key.pem").string() + "' " + selector +
                              " " + domain + " " + (length ? "1" : "0"),
                          &sig) != 0 ||
        sig.rfind("DKIM-Signature:", 0) != 0)
      throw std::runtime_error("python3-dkim could not sign: " + sig);
    return sig + msg;
  }

  static Input input(std::string mail_from, std::string raw, std::string ip = "192.0.2.1", std::string helo = "mx1.sender.test") {
    return Input{std::move(ip), std::move(helo), std::move(mail_from), std::move(raw), "mx.receiver.test"};
  }

  static std::string notes(const Verdict& v) {
    std::string s;
    for (const auto& n : v.notes) s += "\n  note: " + n;
    return s + "\n  A-R: " + v.authentication_results;
  }

  static fs::path* dir_;
  static DnsZone* zone_;
  static DnsServer* server_;
};

fs::path* SenderAuth::dir_ = nullptr;
DnsZone* SenderAuth::zone_ = nullptr;
DnsServer* SenderAuth::server_ = nullptr;

// ---------------------------------------------------------------------------------------------

struct SpfCase {
  const char* name;
  const char* client_ip;
  const char* helo;
  const char* mail_from;
  const char* spf;
  const char* spf_domain;
};

TEST_F(SenderAuth, SpfTable) {
  const SpfCase cases[] = {
      {"ip4 pass", "192.0.2.1", "mx1.sender.test", "billing@trusted.test", "pass", "trusted.test"},
      {"ip4 fail", "203.0.113.5", "mx1.sender.test", "billing@trusted.test", "fail", "trusted.test"},
      {"ip4 softfail", "192.0.2.1", "mx1.sender.test", "billing@soft.test", "softfail", "soft.test"},
      {"?all neutral", "192.0.2.1", "mx1.sender.test", "billing@neutral.test", "neutral", "neutral.test"},
      {"bare v=spf1 is a record (neutral)", "192.0.2.1", "mx1.sender.test", "billing@bare.test", "neutral", "bare.test"},
      {"no record", "192.0.2.1", "mx1.sender.test", "billing@nospf.test", "none", "nospf.test"},
      {"no such domain", "192.0.2.1", "mx1.sender.test", "billing@nowhere.test", "none", "nowhere.test"},
      {"TXT strings joined without space", "192.0.2.77", "mx1.sender.test", "billing@split.test", "pass", "split.test"},
      {"include", "192.0.2.1", "mx1.sender.test", "billing@include.test", "pass", "include.test"},
      {"include, not listed", "203.0.113.5", "mx1.sender.test", "billing@include.test", "fail", "include.test"},
      {"mx mechanism", "203.0.113.25", "mx1.sender.test", "billing@mxspf.test", "pass", "mxspf.test"},
      {"a mechanism", "203.0.113.26", "mx1.sender.test", "billing@mxspf.test", "pass", "mxspf.test"},
      {"mx/a, not listed", "203.0.113.27", "mx1.sender.test", "billing@mxspf.test", "fail", "mxspf.test"},
      {"ip6 pass", "2001:db8::25", "mx1.sender.test", "billing@trusted.test", "pass", "trusted.test"},
      {"ip6 fail", "2001:db9::25", "mx1.sender.test", "billing@trusted.test", "fail", "trusted.test"},
      {"v4-mapped v6 is v4", "::ffff:192.0.2.1", "mx1.sender.test", "billing@trusted.test", "pass", "trusted.test"},
      {"null sender uses HELO: pass", "192.0.2.10", "helo.trusted.test", "", "pass", "helo.trusted.test"},
      {"null sender uses HELO: fail", "192.0.2.11", "helo.trusted.test", "", "fail", "helo.trusted.test"},
      {"null sender, HELO an address literal", "192.0.2.10", "[192.0.2.10]", "", "none", ""},
      {"record does not compile", "192.0.2.1", "mx1.sender.test", "billing@badsyntax.test", "permerror", "badsyntax.test"},
      {"two records", "192.0.2.1", "mx1.sender.test", "billing@tworecords.test", "permerror", "tworecords.test"},
      {"SERVFAIL", "192.0.2.1", "mx1.sender.test", "billing@broken.test", "temperror", "broken.test"},
      {"loopback gets no free ride", "127.0.0.1", "localhost", "billing@loopback.test", "fail", "loopback.test"},
      {"domain case and IDN form", "192.0.2.1", "mx1.sender.test", "billing@TRUSTED.Test", "pass", "trusted.test"},
  };
  Checker checker(settings());
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const Verdict v = checker.check(input(c.mail_from, message("From: billing@trusted.test\r\n"), c.client_ip, c.helo));
    EXPECT_EQ(v.spf, c.spf) << notes(v);
    EXPECT_EQ(v.spf_domain, c.spf_domain);
  }
  // The obsolete SPF RR type (99) is never asked for.
  for (const auto& q : server_->queries()) EXPECT_EQ(q.find(" SPF"), std::string::npos) << q;
}

// ---------------------------------------------------------------------------------------------

struct AuthCase {
  const char* name;
  std::string mail_from;
  std::string raw;
  const char* client_ip;
  // expectations
  const char* spf;
  std::vector<std::pair<std::string, std::string>> dkim;  // result, domain
  const char* dmarc;
  const char* dmarc_policy;
  const char* header_from;
  bool spf_aligned, dkim_aligned, from_authenticated;
};

TEST_F(SenderAuth, AuthenticationTable) {
  const std::string from_trusted = "From: Billing <billing@trusted.test>\r\n";
  const std::string signed_trusted = sign(message(from_trusted), "trusted.test");
  std::string altered = signed_trusted;
  altered.replace(altered.find("Invoice 42 attached."), 20, "Invoice 99 attached.");
  const std::string signed_other = sign(message(from_trusted), "other.test");
  const std::string signed_sub = sign(message(from_trusted), "mail.trusted.test");
  const std::string signed_strict = sign(message("From: boss@strict.test\r\n"), "mail.strict.test");
  const std::string with_length = sign(message(from_trusted), "trusted.test", "sel", true) + "PS: pay to NL00EVIL0123456789 instead.\r\n";
  // A broken signature by the From domain, then a good one by an unrelated domain.
  std::string broken_then_other = sign(message(from_trusted), "trusted.test");
  broken_then_other.replace(broken_then_other.find("Invoice 42 attached."), 20, "Invoice 77 attached.");
  broken_then_other = sign(broken_then_other, "other.test");
  const std::string two_froms = sign(message("From: billing@trusted.test\r\n"), "trusted.test");
  const std::string two_froms_spoof = "From: boss@evil.example\r\n" + two_froms;
  const std::string display_spoof = message("From: \"=?utf-8?q?boss=40trusted.nl?=\" <x@evil.example>\r\n");
  const std::string no_from = "To: invoices@receiver.test\r\nSubject: x\r\n\r\nbody\r\n";
  const std::string group_from = message("From: Billing: billing@trusted.test, boss@trusted.test;\r\n");
  const std::string unknown_key = sign(message("From: billing@nodmarc.test\r\n"), "nodmarc.test", "missing");

  const AuthCase cases[] = {
      {"SPF and DKIM pass, aligned", "billing@trusted.test", signed_trusted, "192.0.2.1",
       "pass", {{"pass", "trusted.test"}}, "pass", "reject", "billing@trusted.test", true, true, true},
      {"DKIM pass alone authenticates", "bounce@other.test", signed_trusted, "203.0.113.5",
       "fail", {{"pass", "trusted.test"}}, "pass", "reject", "billing@trusted.test", false, true, true},
      {"body altered: DKIM fail", "bounce@other.test", altered, "203.0.113.5",
       "fail", {{"fail", "trusted.test"}}, "fail", "reject", "billing@trusted.test", false, false, false},
      {"DKIM by an unrelated domain, SPF fail", "billing@trusted.test", signed_other, "203.0.113.5",
       "fail", {{"pass", "other.test"}}, "fail", "reject", "billing@trusted.test", false, false, false},
      {"SPF pass for an unrelated envelope domain", "bounce@other.test", message(from_trusted), "198.51.100.7",
       "pass", {}, "fail", "reject", "billing@trusted.test", false, false, false},
      {"DKIM by a subdomain: relaxed alignment", "bounce@other.test", signed_sub, "203.0.113.5",
       "fail", {{"pass", "mail.trusted.test"}}, "pass", "reject", "billing@trusted.test", false, true, true},
      {"DKIM by a subdomain under adkim=s", "boss@strict.test", signed_strict, "203.0.113.5",
       "fail", {{"pass", "mail.strict.test"}}, "fail", "reject", "boss@strict.test", false, false, false},
      {"p=reject, SPF and DKIM fail", "billing@trusted.test", altered, "203.0.113.5",
       "fail", {{"fail", "trusted.test"}}, "fail", "reject", "billing@trusted.test", false, false, false},
      {"no DMARC record, aligned SPF pass", "billing@nodmarc.test", message("From: billing@nodmarc.test\r\n"), "192.0.2.1",
       "pass", {}, "none", "", "billing@nodmarc.test", true, false, true},
      {"no DMARC record, SPF fail", "billing@nodmarc.test", message("From: billing@nodmarc.test\r\n"), "203.0.113.5",
       "fail", {}, "none", "", "billing@nodmarc.test", false, false, false},
      {"organisational domain's record, sp=", "x@sub.orgsp.test", message("From: x@sub.orgsp.test\r\n"), "192.0.2.1",
       "fail", {}, "fail", "quarantine", "x@sub.orgsp.test", false, false, false},
      {"DMARC record does not parse", "billing@baddmarc.test", message("From: billing@baddmarc.test\r\n"), "192.0.2.1",
       "pass", {}, "permerror", "", "billing@baddmarc.test", true, false, true},
      {"DMARC lookup SERVFAIL", "billing@dmarctmp.test", message("From: billing@dmarctmp.test\r\n"), "192.0.2.1",
       "pass", {}, "temperror", "", "billing@dmarctmp.test", true, false, true},
      {"one-letter domain is not aligned with a sibling", "x@evil.example", message("From: ceo@q.example\r\n"), "203.0.113.9",
       "pass", {}, "fail", "reject", "ceo@q.example", false, false, false},
      {"spoofed display name", "billing@trusted.test", display_spoof, "192.0.2.1",
       "pass", {}, "none", "", "x@evil.example", false, false, false},
      {"two From fields", "billing@trusted.test", two_froms_spoof, "192.0.2.1",
       "pass", {{"pass", "trusted.test"}}, "permerror", "", "", false, false, false},
      {"no From field", "billing@trusted.test", no_from, "192.0.2.1",
       "pass", {}, "permerror", "", "", false, false, false},
      {"an address with two @ is not read as its first part", "billing@trusted.test",
       message("From: \"a\" <billing@trusted.test@evil.example>\r\n"), "192.0.2.1",
       "pass", {}, "permerror", "", "", false, false, false},
      {"a group is not one From address", "billing@trusted.test", group_from, "192.0.2.1",
       "pass", {}, "permerror", "", "", false, false, false},
      {"l= leaves an appended part unsigned", "bounce@other.test", with_length, "203.0.113.5",
       "fail", {{"policy", "trusted.test"}}, "fail", "reject", "billing@trusted.test", false, false, false},
      {"broken From-domain signature beside a good unrelated one", "bounce@other.test", broken_then_other, "203.0.113.5",
       "fail", {{"pass", "other.test"}, {"fail", "trusted.test"}}, "fail", "reject", "billing@trusted.test", false, false, false},
      {"key not in DNS", "billing@nodmarc.test", unknown_key, "203.0.113.5",
       "fail", {{"permerror", "nodmarc.test"}}, "none", "", "billing@nodmarc.test", false, false, false},
  };
  Checker checker(settings());
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const Verdict v = checker.check(input(c.mail_from, c.raw, c.client_ip));
    EXPECT_EQ(v.spf, c.spf) << notes(v);
    std::vector<std::pair<std::string, std::string>> dkim;
    for (const auto& d : v.dkim) dkim.emplace_back(d.result, d.domain);
    EXPECT_EQ(dkim, c.dkim) << notes(v);
    EXPECT_EQ(v.dmarc, c.dmarc) << notes(v);
    EXPECT_EQ(v.dmarc_policy, c.dmarc_policy);
    EXPECT_EQ(v.header_from, c.header_from);
    EXPECT_EQ(v.spf_aligned, c.spf_aligned) << notes(v);
    EXPECT_EQ(v.dkim_aligned, c.dkim_aligned) << notes(v);
    EXPECT_EQ(v.from_authenticated, c.from_authenticated) << notes(v);
  }
}

TEST_F(SenderAuth, AuthenticationResultsText) {
  Checker checker(settings());
  const std::string raw = sign(message("From: Billing <billing@trusted.test>\r\n"), "trusted.test");
  Verdict v = checker.check(input("billing@trusted.test", raw));
  EXPECT_EQ(v.authentication_results,
            "mx.receiver.test; spf=pass smtp.mailfrom=billing@trusted.test; dkim=pass header.d=trusted.test header.s=sel; "
            "dmarc=pass header.from=trusted.test");
  v = checker.check(input("", message("From: billing@nodmarc.test\r\n"), "192.0.2.10", "helo.trusted.test"));
  EXPECT_EQ(v.authentication_results,
            "mx.receiver.test; spf=pass smtp.helo=helo.trusted.test; dkim=none; dmarc=none header.from=nodmarc.test");
  // Values that are not tokens are quoted; nothing from the message can break the header.
  v = checker.check(input("\"odd; local\"@trusted.test", message("To: x@y.test\r\n"), "203.0.113.5"));
  EXPECT_EQ(v.authentication_results, "mx.receiver.test; spf=fail smtp.mailfrom=\"\\\"odd; local\\\"@trusted.test\"; dkim=none; dmarc=permerror");
  // A signature whose d= and s= carry control characters and a quote.
  const std::string forged =
      "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=ev\x01il.test; s=s\"el\x7f; h=from; bh=AAAA; b=AAAA\r\n" +
      message("From: billing@trusted.test\r\n");
  v = checker.check(input("billing@trusted.test", forged));
  ASSERT_EQ(v.dkim.size(), 1u) << notes(v);
  EXPECT_NE(v.dkim[0].result, "pass");
  auto printable = [](const std::string& s) {
    return std::none_of(s.begin(), s.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; });
  };
  EXPECT_TRUE(printable(v.authentication_results)) << v.authentication_results;
  for (const auto& n : v.notes) EXPECT_TRUE(printable(n)) << n;
}

TEST_F(SenderAuth, DnsServerDownIsTemperrorNotPassNorException) {
  const std::string raw = sign(message("From: billing@trusted.test\r\n"), "trusted.test");
  Checker checker(DnsSettings{{"127.0.0.1:" + std::to_string(closed_udp_port())}, std::chrono::milliseconds(1000), 1});
  Verdict v;
  ASSERT_NO_THROW(v = checker.check(input("billing@trusted.test", raw)));
  EXPECT_EQ(v.spf, "temperror") << notes(v);
  ASSERT_EQ(v.dkim.size(), 1u);
  EXPECT_EQ(v.dkim[0].result, "temperror") << notes(v);
  EXPECT_EQ(v.dmarc, "temperror");
  EXPECT_FALSE(v.from_authenticated);
  EXPECT_FALSE(v.notes.empty());
}

TEST_F(SenderAuth, SilentServerStopsAtTheCheckBudget) {
  // Every question goes unanswered and waits 1 s: SPF, four DKIM keys and DMARC would take 6 s;
  // the check may spend 2.5 s (the question running when it ends is rounded up to a second).
  DnsServer silent(DnsZone{{}, {}, {"trusted.test", "_dmarc.trusted.test", "sel._domainkey.s1.test", "sel._domainkey.s2.test",
                                    "sel._domainkey.s3.test", "sel._domainkey.s4.test"}});
  Checker checker(DnsSettings{{silent.address()}, std::chrono::milliseconds(1000), 1, std::chrono::milliseconds(2500)});
  const std::string raw = sign(sign(sign(sign(message("From: billing@trusted.test\r\n"), "s1.test"), "s2.test"), "s3.test"), "s4.test");
  const auto t0 = std::chrono::steady_clock::now();
  const Verdict v = checker.check(input("billing@trusted.test", raw));
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(v.spf, "temperror");
  ASSERT_EQ(v.dkim.size(), 4u);
  for (const auto& d : v.dkim) EXPECT_EQ(d.result, "temperror") << d.domain;
  EXPECT_EQ(v.dmarc, "temperror");
  EXPECT_FALSE(v.from_authenticated);
  EXPECT_LT(took, std::chrono::milliseconds(4000)) << notes(v);
  EXPECT_GE(took, std::chrono::milliseconds(2500));
  EXPECT_LE(silent.queries().size(), 4u);
}

TEST_F(SenderAuth, ConcurrentChecksAgree) {
  Checker checker(settings());
  const std::string good = sign(message("From: billing@trusted.test\r\n"), "trusted.test");
  const std::string spoof = message("From: \"boss@trusted.test\" <x@evil.example>\r\n");
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const bool g = (t + i) % 2 == 0;
        const Verdict v = checker.check(input("billing@trusted.test", g ? good : spoof, g ? "192.0.2.1" : "203.0.113.5"));
        if (v.from_authenticated != g || v.spf != (g ? "pass" : "fail")) ++wrong;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST_F(SenderAuth, BrokenMessagesAreResultsNotExceptions) {
  Checker checker(settings());
  std::string noise;
  for (int i = 0; i < 4096; ++i) noise += static_cast<char>((i * 7919) % 256);
  const std::string cases[] = {
      "",
      "\r\n\r\n",
      "From: billing@trusted.test",  // no line end, no body
      "DKIM-Signature: v=1; a=rsa-sha256; d=trusted.test; s=sel; h=from; bh=; b=\r\nFrom: billing@trusted.test\r\n\r\nx\r\n",
      "DKIM-Signature: garbage\r\nFrom: billing@trusted.test\r\n\r\nx\r\n",
      "From: " + std::string(100000, 'a') + "@trusted.test\r\n\r\n",
      "From:\r\n \r\n\r\n",
      noise,
  };
  for (const auto& raw : cases) {
    Verdict v;
    ASSERT_NO_THROW(v = checker.check(input("billing@trusted.test", raw))) << raw.substr(0, 80);
    EXPECT_EQ(v.spf, "pass");
    EXPECT_FALSE(v.authentication_results.empty());
    for (const auto& d : v.dkim) EXPECT_NE(d.result, "pass");
  }
}

TEST_F(SenderAuth, OrganizationalDomainFollowsThePublicSuffixList) {
  Checker checker(settings());
  const std::pair<const char*, const char*> cases[] = {
      {"mail.example.co.uk", "example.co.uk"}, {"example.co.uk", "example.co.uk"}, {"co.uk", ""},
      {"x.com", "x.com"},                      {"a.x.com", "x.com"},             {"com", ""},
      {"foo.bar.ck", "foo.bar.ck"},            {"bar.ck", ""},                   {"www.ck", "www.ck"},  // *.ck, !www.ck
      {"a.www.ck", "www.ck"},                  {"x.github.io", "x.github.io"},   {"github.io", ""},
      {"a.b.example.test", "example.test"},    {"test", ""},                     {"a.b.c.xn--p1ai", "c.xn--p1ai"},  // .рф
  };
  for (const auto& [domain, org] : cases) EXPECT_EQ(checker.organizational_domain(domain), org) << domain;
}

TEST_F(SenderAuth, SettingsThatDoNotParseThrow) {
  EXPECT_THROW(Checker(DnsSettings{{"127.0.0.1:99999"}}), std::invalid_argument);
  EXPECT_THROW(Checker(DnsSettings{{"::1"}}), std::invalid_argument);
  EXPECT_THROW(Checker(DnsSettings{{"dns.example"}}), std::invalid_argument);
  EXPECT_THROW(Checker(DnsSettings{{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"}}), std::invalid_argument);
  EXPECT_THROW(Checker(DnsSettings{{"127.0.0.1"}, std::chrono::milliseconds(1000), 1, std::chrono::milliseconds(0)}), std::invalid_argument);
  EXPECT_THROW(Checker(settings(), "/nonexistent/public_suffix_list.dat"), std::runtime_error);
  EXPECT_THROW(Checker(settings()).check(input("a@trusted.test", message("From: a@trusted.test\r\n"), "not-an-ip")), std::invalid_argument);
}

// protocol/dns on its own.
TEST_F(SenderAuth, ResolverAnswers) {
  const dns::Resolver r(dns::Settings{{server_->address()}, std::chrono::milliseconds(2000), 1});
  auto a = r.query("split.test", dns::type::txt);
  ASSERT_EQ(a.status, dns::Status::ok);
  EXPECT_EQ(a.records, std::vector<std::string>{"v=spf1 ip4:192.0.2.0/24 -all"});
  a = r.query("nowhere.test", dns::type::txt);
  EXPECT_EQ(a.status, dns::Status::nxdomain);
  a = r.query("nospf.test", dns::type::txt);  // the name exists, no TXT
  EXPECT_EQ(a.status, dns::Status::ok);
  EXPECT_TRUE(a.records.empty());
  a = r.query("mxspf.test", dns::type::mx);
  EXPECT_EQ(a.records, std::vector<std::string>{"mail.mxspf.test"});
  a = r.query("mail.mxspf.test", dns::type::a);
  EXPECT_EQ(a.records, std::vector<std::string>{std::string("\xcb\x00\x71\x19", 4)});
  a = r.query("broken.test", dns::type::txt);
  EXPECT_EQ(a.status, dns::Status::temporary);
  EXPECT_NE(a.error.find("SERVFAIL"), std::string::npos) << a.error;
  a = r.query("bad..name", dns::type::txt);
  EXPECT_EQ(a.status, dns::Status::nxdomain);
  // Larger than the 1232-byte EDNS0 payload: truncated over UDP, asked again over TCP.
  server_->clear_queries();
  DnsZone zone = *zone_;
  zone.records.push_back({"huge.test", "TXT", {std::string(3000, 'y')}});
  server_->set_zone(zone);
  a = r.query("huge.test", dns::type::txt);
  ASSERT_EQ(a.status, dns::Status::ok) << a.error;
  EXPECT_EQ(a.records, std::vector<std::string>{std::string(3000, 'y')});
  const auto q = server_->queries();
  EXPECT_NE(std::find(q.begin(), q.end(), "tcp huge.test TXT"), q.end()) << "a truncated UDP reply is asked again over TCP";
  server_->set_zone(*zone_);
}

// The resolver's cache: an answer is kept for its TTL (copies of a resolver share it), names
// compared without case or trailing dot; temporary failures, TTL 0 and negative answers without
// an SOA are not kept.
TEST(DnsCache, KeepsAnswersForTheirTtlAndNothingElse) {
  DnsZone zone;
  zone.records = {{"kept.test", "TXT", {"v=spf1 -all"}}, {"kept.test", "A", {"192.0.2.7"}}};
  zone.servfail = {"broken.test"};
  zone.ttl = 2;
  DnsServer server(zone);
  dns::Settings settings{{server.address()}, std::chrono::milliseconds(2000), 1};
  settings.cache_entries = 16;
  const dns::Resolver r(settings);
  const dns::Resolver copy = r;
  auto asked = [&](const std::string& question) {
    const auto q = server.queries();
    return std::count(q.begin(), q.end(), question);
  };
  for (const auto* who : {&r, &r, &copy})
    for (const char* name : {"kept.test", "KEPT.Test."}) {
      const auto a = who->query(name, dns::type::txt);
      ASSERT_EQ(a.status, dns::Status::ok) << a.error;
      EXPECT_EQ(a.records, std::vector<std::string>{"v=spf1 -all"});
    }
  EXPECT_EQ(server.queries().size(), 1u) << "one question for six askings";
  EXPECT_EQ(r.query("kept.test", dns::type::a).records, std::vector<std::string>{std::string("\xc0\x00\x02\x07", 4)});
  EXPECT_EQ(asked("udp kept.test A"), 1) << "another type is another question";
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(r.query("broken.test", dns::type::txt).status, dns::Status::temporary);
    EXPECT_EQ(r.query("nowhere.test", dns::type::txt).status, dns::Status::nxdomain);
  }
  EXPECT_EQ(asked("udp broken.test TXT"), 2) << "a SERVFAIL is not kept";
  EXPECT_EQ(asked("udp nowhere.test TXT"), 2) << "an NXDOMAIN without an SOA is not kept";
  std::this_thread::sleep_for(std::chrono::milliseconds(2200));
  EXPECT_EQ(r.query("kept.test", dns::type::txt).status, dns::Status::ok);
  EXPECT_EQ(asked("udp kept.test TXT"), 2) << "asked again once the TTL is over";
}

TEST(DnsCache, NegativeAnswersByTheSoaZeroTtlsNeverTheCapsHold) {
  DnsZone zone;
  zone.records = {{"zero.test", "TXT", {"v=spf1 -all"}}, {"a.test", "TXT", {"a"}}, {"b.test", "TXT", {"b"}}};
  zone.ttl = 0;
  zone.negative_ttl = 60;
  DnsServer server(zone);
  dns::Settings settings{{server.address()}, std::chrono::milliseconds(2000), 1};
  settings.cache_entries = 16;
  const dns::Resolver r(settings);
  auto asked = [&](const std::string& question) {
    const auto q = server.queries();
    return std::count(q.begin(), q.end(), question);
  };
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(r.query("nowhere.test", dns::type::txt).status, dns::Status::nxdomain);
    const auto nodata = r.query("zero.test", dns::type::mx);  // the name exists, no MX
    EXPECT_EQ(nodata.status, dns::Status::ok);
    EXPECT_TRUE(nodata.records.empty());
    EXPECT_EQ(r.query("zero.test", dns::type::txt).records, std::vector<std::string>{"v=spf1 -all"});
  }
  EXPECT_EQ(asked("udp nowhere.test TXT"), 1) << "NXDOMAIN kept for the SOA's minimum";
  EXPECT_EQ(asked("udp zero.test MX"), 1) << "no data kept for the SOA's minimum";
  EXPECT_EQ(asked("udp zero.test TXT"), 2) << "TTL 0 is never kept";

  // At most cache_entries answers, none longer than cache_max_ttl.
  zone.ttl = 300;
  server.set_zone(zone);
  settings.cache_entries = 1;
  settings.cache_max_ttl = std::chrono::seconds(1);
  const dns::Resolver small(settings);
  for (const char* name : {"a.test", "a.test", "b.test", "a.test"}) EXPECT_EQ(small.query(name, dns::type::txt).status, dns::Status::ok);
  EXPECT_EQ(asked("udp a.test TXT"), 2) << "b.test took a.test's place";
  EXPECT_EQ(asked("udp b.test TXT"), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  EXPECT_EQ(small.query("a.test", dns::type::txt).status, dns::Status::ok);
  EXPECT_EQ(asked("udp a.test TXT"), 3) << "kept for cache_max_ttl, not the record's 300 s";
}

// 1000 checks of a DKIM-signed message (SPF, DKIM, DMARC: 3 questions) against the loopback
// server. Run with --gtest_also_run_disabled_tests --gtest_filter='*Timing*'.
TEST_F(SenderAuth, DISABLED_Timing) {
  Checker checker(settings());
  const std::string raw = sign(message("From: billing@trusted.test\r\n"), "trusted.test");
  const int n = 1000;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) ASSERT_TRUE(checker.check(input("billing@trusted.test", raw)).from_authenticated);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("sender_auth timing: %d checks in %.0f ms: %.3f ms per check\n", n, ms, ms / n);
}

}  // namespace
}  // namespace mailgate::auth
