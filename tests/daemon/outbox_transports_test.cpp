// The outbox's retry and failure semantics are the same whichever way a mailbox sends: one set
// of tests run by the real daemon against each transport's peer on 127.0.0.1 -- SMTP (aiosmtpd,
// tests/support/smtp_server.py), Mailgun's API (tests/support/mailgun_api_fake.py) and Microsoft
// Graph sendMail with its token endpoint (tests/support/graph_fake.py): sent byte-identical,
// transient failure retried, permanent failure kept with the reply, Retry-After honoured. Then
// what only one transport has: Graph's size limit, Mailgun's EU/US API host, and the mailbox
// test (POST /api/v1/mailboxes/{id}/test) for Mailgun and Microsoft 365.
#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include <memory>
#include <thread>

#include "tests/support/api_client.hpp"
#include "tests/support/graph_fake.hpp"
#include "tests/support/https_fake.hpp"
#include "tests/support/smtp_servers.hpp"
#include "util/crypto.hpp"

namespace mailgate {
namespace {

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

enum class Kind { smtp, mailgun, graph };
std::string name_of(Kind k) { return k == Kind::smtp ? "smtp" : k == Kind::mailgun ? "mailgun" : "graph"; }

// What the peer does to the first message(s) it is given.
enum class Script { accept, transient_once, permanent, retry_after_3 };

const char* kMailgunKey = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";

// One transport's peer: its daemon configuration, the mailbox that sends through it, and what it
// accepted and when it was asked.
class Peer {
 public:
  virtual ~Peer() = default;
  virtual std::string toml() const = 0;
  virtual json::object mailbox() const = 0;
  virtual std::vector<std::string> delivered() const = 0;  // accepted messages, byte-exact, in order
  virtual std::vector<double> attempts() const = 0;        // when each send request came (HTTP peers)
  virtual std::string log() const = 0;
};

class SmtpPeer final : public Peer {
 public:
  explicit SmtpPeer(Script s)
      : server(test::PySmtpOptions{.fail_first = s == Script::transient_once ? 1 : 0,
                                   .reject = s == Script::permanent ? std::vector<std::string>{"jan@example.nl"} : std::vector<std::string>{}}) {}
  std::string toml() const override { return "[security]\nallow_private_hosts = true\n"; }
  json::object mailbox() const override {
    return {{"display_name", "Coöperatie Zon"}, {"address", "info@coop.nl"}, {"incoming_type", "none"}, {"smtp_host", "127.0.0.1"},
            {"smtp_port", server.port()},       {"smtp_security", "plain"},   {"smtp_password", "geheim"}};
  }
  std::vector<std::string> delivered() const override {
    std::vector<std::string> out;
    for (const auto& m : server.received()) out.push_back(m.raw);
    return out;
  }
  std::vector<double> attempts() const override { return {}; }
  std::string log() const override { return server.log(); }
  test::PySmtpServer server;
};

class MailgunPeer final : public Peer {
 public:
  explicit MailgunPeer(Script s)
      : fake("mailgun_api_fake.py", {"--api-key", kMailgunKey, "--domain", "mg.coop.nl", "--fail",
                                     s == Script::transient_once ? "500" : s == Script::permanent ? "400" : s == Script::retry_after_3 ? "429:3" : ""}) {}
  std::string toml() const override {
    return "[tls]\nca_file = \"" + fake.ca_file().string() + "\"\n[mailgun]\napi_base_eu = \"" + fake.url() + "/eu\"\napi_base_us = \"" +
           fake.url() + "/us\"\n";
  }
  json::object mailbox() const override {
    return {{"display_name", "Coöperatie Zon"}, {"address", "info@coop.nl"}, {"incoming_type", "none"}, {"outgoing_type", "mailgun"},
            {"mailgun_domain", "mg.coop.nl"},   {"mailgun_region", "eu"},     {"mailgun_api_key", kMailgunKey}};
  }
  std::vector<std::string> delivered() const override {
    std::vector<std::string> out;
    for (const auto& r : fake.records())
      if (r.at("status").as_int64() == 200) out.push_back(base64_decode(std::string(r.at("message_base64").as_string())));
    return out;
  }
  std::vector<double> attempts() const override {
    std::vector<double> out;
    for (const auto& r : fake.records()) out.push_back(r.at("time").to_number<double>());
    return out;
  }
  std::string log() const override { return fake.log(); }
  test::HttpsFake fake;
};

class GraphPeer final : public Peer {
 public:
  GraphPeer(Script s, std::string extra) : extra(std::move(extra)) {
    if (s == Script::transient_once) fake.throttle(1, 503, 1, "sendMail");
    if (s == Script::retry_after_3) fake.throttle(1, 429, 3, "sendMail");
    if (s == Script::permanent) fake.set_expired(true);
  }
  std::string toml() const override { return fake.daemon_toml() + extra; }  // extra: more [graph] keys
  json::object mailbox() const override {
    const auto& o = fake.options();
    return {{"display_name", "Coöperatie Zon"}, {"address", "info@coop.nl"},    {"incoming_type", "none"},
            {"outgoing_type", "ms365"},         {"ms365_tenant_id", o.tenant},  {"ms365_client_id", o.client_id},
            {"ms365_client_secret", o.client_secret}, {"ms365_user_id", o.user}};
  }
  std::vector<std::string> delivered() const override {
    std::vector<std::string> out;
    for (const auto& s : fake.sent()) out.push_back(s.mime);
    return out;
  }
  std::vector<double> attempts() const override {
    std::vector<double> out;
    for (const auto& r : fake.request_log())
      if (std::string(r.at("path").as_string()).find("sendMail") != std::string::npos)
        out.push_back((r.as_object().contains("start") ? r.at("start") : r.at("time")).to_number<double>());
    return out;
  }
  std::string log() const override { return fake.log(); }
  test::GraphFake fake;
  std::string extra;
};

class OutboxTransports : public ::testing::TestWithParam<Kind> {
 protected:
  void start(Script script, const std::string& graph_extra = "") {
    switch (GetParam()) {
      case Kind::smtp: peer = std::make_unique<SmtpPeer>(script); break;
      case Kind::mailgun: peer = std::make_unique<MailgunPeer>(script); break;
      case Kind::graph: peer = std::make_unique<GraphPeer>(script, graph_extra); break;
    }
    api = std::make_unique<test::ApiFixture>(peer->toml() +
                                             "[outbox]\npoll_interval_ms = 100\nretry_base_seconds = 1\nlease_seconds = 5\n"
                                             "command_timeout_seconds = 5\nhelo_name = \"mailgate.test\"\n");
    auto r = api->call("admin", "POST", "/api/v1/mailboxes", json::serialize(peer->mailbox()));
    ASSERT_EQ(r.status, 201) << r.body;
    mailbox = r.json.at("id").as_int64();
  }
  std::int64_t send(const std::string& body) {
    auto r = api->call("admin", "POST", "/api/v1/mail", body);
    EXPECT_EQ(r.status, 202) << r.body;
    return r.json.is_object() ? r.json.at("id").as_int64() : 0;
  }
  json::value row(std::int64_t id) { return api->call("admin", "GET", "/api/v1/outbox/" + std::to_string(id)).json; }
  std::string state(std::int64_t id) {
    auto r = row(id);
    return r.is_object() ? std::string(r.at("state").as_string()) : "?";
  }
  double sql_number(const std::string& sql) {
    pqxx::connection c(api->database_url());
    return pqxx::work(c).exec(sql)[0][0].as<double>();
  }
  std::string diagnostics() { return api->daemon().log() + "\n--- peer ---\n" + peer->log(); }

  std::unique_ptr<Peer> peer;
  std::unique_ptr<test::ApiFixture> api;
  std::int64_t mailbox = 0;
};

TEST_P(OutboxTransports, SentBytesArriveIdentical) {
  start(Script::accept);
  const auto id = send(R"({"to": ["jan@example.nl"], "bcc": ["archief@coop.nl"], "subject": "Factuur € 12", "text": "Beste Jan,\n.punt\n",
                          "attachments": [{"filename": "factuur.pdf", "content_type": "application/pdf", "content_base64": "JVBERi0xLjQK"}]})");
  ASSERT_TRUE(eventually([&] { return state(id) == "sent"; }, 15s)) << state(id) << diagnostics();
  const auto copy = row(id).at("sent_message_id").as_int64();
  const std::string raw = api->call("admin", "GET", "/api/v1/messages/" + std::to_string(copy) + "/raw").body;
  ASSERT_FALSE(raw.empty());
  const auto got = peer->delivered();
  ASSERT_EQ(got.size(), 1u);
  if (GetParam() == Kind::graph) {
    // sendMail takes its recipients from the MIME: the Bcc recipient is named in a Bcc header
    // before the composed message (Exchange removes it on delivery).
    EXPECT_EQ(got[0], "Bcc: archief@coop.nl\r\n" + raw);
  } else {
    EXPECT_TRUE(got[0] == raw) << "the bytes sent are the bytes stored";
  }
  if (GetParam() == Kind::mailgun) {
    const auto rec = static_cast<MailgunPeer&>(*peer).fake.records().at(0);
    EXPECT_EQ(json::serialize(rec.at("to")), R"(["jan@example.nl","archief@coop.nl"])") << "every envelope recipient a `to` field";
    EXPECT_EQ(rec.at("prefix").as_string(), "/eu");
  }
}

TEST_P(OutboxTransports, TransientFailureIsRetried) {
  start(Script::transient_once);
  const auto id = send(R"({"to": ["jan@example.nl"], "subject": "Eerst mislukt", "text": "x"})");
  ASSERT_TRUE(eventually([&] { return state(id) == "sent"; }, 20s)) << state(id) << diagnostics();
  EXPECT_EQ(row(id).at("attempts").as_int64(), 2);
  EXPECT_EQ(peer->delivered().size(), 1u);
}

TEST_P(OutboxTransports, PermanentFailureKeepsTheReply) {
  start(Script::permanent);
  const auto id = send(R"({"to": ["jan@example.nl"], "subject": "Mislukt", "text": "x"})");
  ASSERT_TRUE(eventually([&] { return state(id) == "failed"; }, 15s)) << state(id) << diagnostics();
  const auto r = row(id);
  EXPECT_EQ(r.at("attempts").as_int64(), 1) << "a permanent failure is not retried";
  const std::string error(r.at("last_error").as_string()), step(r.at("failed_step").as_string());
  switch (GetParam()) {
    case Kind::smtp:
      EXPECT_EQ(step, "rcpt");
      EXPECT_NE(error.find("550"), std::string::npos) << error;
      break;
    case Kind::mailgun:
      EXPECT_EQ(step, "send");
      EXPECT_NE(error.find("400: 'to' parameter is not a valid address"), std::string::npos) << error;
      break;
    case Kind::graph:  // the app's secret expired: Microsoft's own words
      EXPECT_EQ(step, "auth");
      EXPECT_NE(error.find("AADSTS7000222"), std::string::npos) << error;
      EXPECT_EQ(error.find(static_cast<GraphPeer&>(*peer).fake.options().client_secret), std::string::npos) << "no secret in the text";
      break;
  }
  EXPECT_TRUE(peer->delivered().empty());
}

TEST_P(OutboxTransports, RetryAfterIsHonoured) {
  if (GetParam() == Kind::smtp) GTEST_SKIP() << "SMTP has no Retry-After";
  start(Script::retry_after_3);
  const auto id = send(R"({"to": ["jan@example.nl"], "subject": "Even wachten", "text": "x"})");
  ASSERT_TRUE(eventually([&] { return state(id) == "retrying"; }, 15s)) << state(id) << diagnostics();
  EXPECT_GE(sql_number("SELECT extract(epoch FROM next_attempt_at - updated_at) FROM outbox WHERE id = " + std::to_string(id)), 2.99)
      << "the next attempt not before Retry-After (the backoff alone would be 1 s)";
  ASSERT_TRUE(eventually([&] { return state(id) == "sent"; }, 15s)) << state(id) << diagnostics();
  const auto times = peer->attempts();
  ASSERT_EQ(times.size(), 2u);
  EXPECT_GE(times[1] - times[0], 2.9) << "asked again only after Retry-After: 3";
  EXPECT_EQ(row(id).at("attempts").as_int64(), 2);
}

INSTANTIATE_TEST_SUITE_P(Outbox, OutboxTransports, ::testing::Values(Kind::smtp, Kind::mailgun, Kind::graph),
                         [](const auto& info) { return name_of(info.param); });

class OutboxGraph : public OutboxTransports {};

TEST_P(OutboxGraph, AMessageOverTheSendMailLimitIsRefusedAtOnce) {
  start(Script::accept, "max_send_bytes = 2048\n");
  const std::string big(3000, 'x');
  const auto id = send(R"({"to": ["jan@example.nl"], "subject": "Te groot", "text": "x", "attachments": [{"filename": "groot.bin",
      "content_type": "application/octet-stream", "content_base64": ")" + base64_encode(big) + R"("}]})");
  ASSERT_TRUE(eventually([&] { return state(id) == "failed"; }, 15s)) << state(id) << diagnostics();
  const auto r = row(id);
  EXPECT_EQ(r.at("attempts").as_int64(), 1);
  const std::string error(r.at("last_error").as_string());
  EXPECT_NE(error.find("too large for Microsoft Graph's sendMail"), std::string::npos) << error;
  EXPECT_NE(error.find("2048"), std::string::npos) << error;
  EXPECT_TRUE(peer->attempts().empty()) << "nothing was sent to Graph";

  // The mailbox test: a token and a sendMail; then with the app's secret expired.
  auto ok = api->call("admin", "POST", "/api/v1/mailboxes/" + std::to_string(mailbox) + "/test");
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_TRUE(ok.json.at("ok").as_bool()) << ok.body;
  ASSERT_EQ(peer->delivered().size(), 1u);
  EXPECT_NE(peer->delivered()[0].find("Subject: mailgate: test message"), std::string::npos);
  static_cast<GraphPeer&>(*peer).fake.set_expired(true);
  auto bad = api->call("admin", "POST", "/api/v1/mailboxes/" + std::to_string(mailbox) + "/test");
  EXPECT_FALSE(bad.json.at("ok").as_bool()) << bad.body;
  EXPECT_EQ(bad.json.at("step").as_string(), "auth") << bad.body;
  EXPECT_NE(std::string(bad.json.at("reply").as_string()).find("AADSTS7000222"), std::string::npos) << bad.body;
}

INSTANTIATE_TEST_SUITE_P(Outbox, OutboxGraph, ::testing::Values(Kind::graph), [](const auto& info) { return name_of(info.param); });

class OutboxMailgun : public OutboxTransports {};

TEST_P(OutboxMailgun, TheRegionChoosesTheApiHostAndTheMailboxTestSends) {
  start(Script::accept);
  auto m = peer->mailbox();
  m["address"] = "us@coop.nl";
  m["mailgun_region"] = "us";
  auto us = api->call("admin", "POST", "/api/v1/mailboxes", json::serialize(m));
  ASSERT_EQ(us.status, 201) << us.body;
  const auto us_id = us.json.at("id").as_int64();
  const auto a = send(R"({"to": ["jan@example.nl"], "subject": "EU", "text": "x"})");
  const auto b = send(R"({"to": ["jan@example.nl"], "subject": "US", "text": "x", "mailbox_id": )" + std::to_string(us_id) + "}");
  ASSERT_TRUE(eventually([&] { return state(a) == "sent" && state(b) == "sent"; }, 15s)) << diagnostics();
  std::map<std::string, std::string> prefix_of;  // subject -> API base prefix
  for (const auto& r : static_cast<MailgunPeer&>(*peer).fake.records()) {
    const std::string mime = base64_decode(std::string(r.at("message_base64").as_string()));
    prefix_of[mime.find("Subject: US") != std::string::npos ? "US" : "EU"] = std::string(r.at("prefix").as_string());
  }
  EXPECT_EQ(prefix_of["EU"], "/eu");
  EXPECT_EQ(prefix_of["US"], "/us");
  EXPECT_NE(std::string(row(a).at("state").as_string()), "failed");

  auto ok = api->call("admin", "POST", "/api/v1/mailboxes/" + std::to_string(mailbox) + "/test");
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_TRUE(ok.json.at("ok").as_bool()) << ok.body;
  EXPECT_NE(std::string(ok.json.at("reply").as_string()).find("Queued. Thank you."), std::string::npos) << ok.body;
  EXPECT_EQ(peer->delivered().size(), 3u);
  ASSERT_EQ(api->call("admin", "PATCH", "/api/v1/mailboxes/" + std::to_string(mailbox), R"({"mailgun_api_key": "key-fout"})").status, 200);
  auto bad = api->call("admin", "POST", "/api/v1/mailboxes/" + std::to_string(mailbox) + "/test");
  EXPECT_FALSE(bad.json.at("ok").as_bool()) << bad.body;
  EXPECT_EQ(bad.json.at("step").as_string(), "auth") << bad.body;
  EXPECT_NE(std::string(bad.json.at("reply").as_string()).find("401: Forbidden"), std::string::npos) << bad.body;
  EXPECT_EQ(bad.body.find("key-fout"), std::string::npos) << "the key is never returned";
}

INSTANTIATE_TEST_SUITE_P(Outbox, OutboxMailgun, ::testing::Values(Kind::mailgun), [](const auto& info) { return name_of(info.param); });

}  // namespace
}  // namespace mailgate
