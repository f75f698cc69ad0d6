// Inbound Microsoft 365 end to end: the real daemon syncs tests/support/graph_fake.py (Graph and the
// token endpoint, HTTPS on 127.0.0.1) into PostgreSQL.
#include <gtest/gtest.h>

#include <signal.h>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include <fstream>
#include <set>
#include <thread>

#include "tests/support/api_client.hpp"
#include "tests/support/dovecot.hpp"
#include "tests/support/graph_fake.hpp"
#include "tests/support/pg_harness.hpp"
#include "tests/support/smtp_servers.hpp"

namespace mailgate {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

std::string message(int i) {
  return "From: Klant " + std::to_string(i) + " <klant" + std::to_string(i % 7) + "@example.nl>\r\nTo: info@coop.nl\r\n"
         "Subject: =?utf-8?q?bericht_=E2=82=AC_" + std::to_string(i) + "?=\r\nMessage-ID: <g" + std::to_string(i) +
         "@example.nl>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nInhoud " + std::to_string(i) + "\r\n";
}

std::vector<std::string> messages_from(int first, int count) {
  std::vector<std::string> out;
  for (int i = first; i < first + count; ++i) out.push_back(message(i));
  return out;
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

// The end of a daemon log without its request lines (the tests poll the API many times a second).
std::string tail(const std::string& log, std::size_t n = 6000) {
  std::string kept;
  std::size_t start = 0;
  while (start < log.size()) {
    std::size_t end = log.find('\n', start);
    if (end == std::string::npos) end = log.size();
    const std::string_view line(log.data() + start, end - start);
    if (line.find("event=http_request ") == std::string_view::npos) kept.append(line).push_back('\n');
    start = end + 1;
  }
  return kept.size() > n ? kept.substr(kept.size() - n) : kept;
}

int occurrences(const std::string& text, const std::string& needle) {
  int n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++n;
  return n;
}

class GraphSync : public ::testing::Test {
 protected:
  GraphSync() : api(graph.daemon_toml(4, 100)) {}

  std::int64_t add_mailbox(json::object extra = {}) {
    const auto& o = graph.options();
    json::object m{{"display_name", "Info"}, {"address", "info@coop.nl"}, {"incoming_type", "ms365"},
                   {"outgoing_type", "ms365"}, {"ms365_tenant_id", o.tenant}, {"ms365_client_id", o.client_id},
                   {"ms365_client_secret", o.client_secret}, {"ms365_user_id", o.user}, {"poll_interval_seconds", 10}};
    for (const auto& [k, v] : extra) m[k] = v;
    auto r = api.call("admin", "POST", "/api/v1/mailboxes", json::serialize(m));
    EXPECT_EQ(r.status, 201) << r.body;
    return r.json.is_object() ? r.json.at("id").as_int64() : 0;
  }
  int query_int(const std::string& sql, std::int64_t mailbox) {
    pqxx::connection c(api.database_url());
    return pqxx::work(c).exec_params1(sql, mailbox)[0].as<int>();
  }
  int messages(std::int64_t mailbox) { return query_int("SELECT count(*) FROM messages WHERE mailbox_id = $1", mailbox); }
  int distinct_keys(std::int64_t mailbox) {
    return query_int("SELECT count(DISTINCT source_key) FROM messages WHERE mailbox_id = $1 AND source = 'ms365'", mailbox);
  }
  json::value mailbox(std::int64_t id) { return api.call("admin", "GET", "/api/v1/mailboxes/" + std::to_string(id)).json; }
  std::string health(std::int64_t id) {
    auto m = mailbox(id);
    return m.is_object() ? std::string(m.at("health").at("state").as_string()) : "";
  }
  std::int64_t stat(const char* name) { return graph.stats().at(name).as_int64(); }
  int requests_matching(const std::string& needle) {
    int n = 0;
    for (const auto& e : graph.request_log())
      if (std::string(e.at("path").as_string()).find(needle) != std::string::npos) ++n;
    return n;
  }

  test::GraphFake graph;
  test::ApiFixture api;
};

TEST_F(GraphSync, ThousandMessagesOverTenPagesThenNewOnesAtTheNextPoll) {
  const auto ids = graph.add_messages("info@coop.nl", messages_from(0, 1000));
  std::string soon;
  {
    pqxx::connection c(api.database_url());
    soon = pqxx::work(c).exec1("SELECT to_char(current_date + 3, 'YYYY-MM-DD')")[0].as<std::string>();
  }
  const auto started = std::chrono::steady_clock::now();
  const auto id = add_mailbox(json::object{{"ms365_secret_expires_on", soon}});
  ASSERT_TRUE(eventually([&] { return messages(id) == 1000; }, 40s)) << messages(id) << "\n" << tail(api.daemon().log());
  std::cout << "1000 messages imported in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count() << " ms\n";
  EXPECT_EQ(distinct_keys(id), 1000);
  {
    pqxx::connection c(api.database_url());
    pqxx::work tx(c);
    auto r = tx.exec_params1("SELECT subject, raw, source_key, from_address FROM messages WHERE mailbox_id = $1 AND header_message_id = 'g777@example.nl'", id);
    EXPECT_EQ(r[0].as<std::string>(), "bericht € 777");
    EXPECT_EQ(pqxx::binarystring(r[1]).str(), message(777));
    EXPECT_EQ(r[2].as<std::string>(), ids[777]) << "the source key is the Graph id";
    EXPECT_EQ(r[3].as<std::string>(), "klant0@example.nl");
    auto state = tx.exec_params1("SELECT round_complete, link, rounds FROM graph_sync_state WHERE mailbox_id = $1", id);
    EXPECT_TRUE(state[0].as<bool>());
    EXPECT_NE(state[1].as<std::string>().find("$deltatoken="), std::string::npos) << state[1].as<std::string>();
  }
  EXPECT_EQ(health(id), "ok");
  // Ten delta pages (every nextLink followed), each message fetched once, four at a time at most.
  EXPECT_EQ(requests_matching("/messages/delta"), 10);
  EXPECT_EQ(requests_matching("/$value"), 1000);
  const auto stats = graph.stats();
  EXPECT_LE(stats.at("max_concurrent").at("info@coop.nl").as_int64(), 4);
  EXPECT_EQ(stats.at("token_requests").as_int64(), 1) << "one token for the whole round";

  // The secret expires in 3 days (< 14): warned in the log and audited once.
  EXPECT_NE(api.daemon().log().find("event=ms365_secret_expiring mailbox=" + std::to_string(id)), std::string::npos);
  auto audit = api.call("admin", "GET", "/api/v1/audit?entity=mailbox&entity_id=" + std::to_string(id) + "&actor_kind=daemon");
  EXPECT_EQ(occurrences(audit.body, "ms365_secret_expiring"), 1) << audit.body;

  // The next poll (10 s) brings what arrived since; a token Graph refuses (revoked) is replaced.
  graph.control("POST", "/_control/revoke_tokens");
  const auto added = graph.add_messages("info@coop.nl", messages_from(1000, 3));
  ASSERT_TRUE(eventually([&] { return messages(id) == 1003; }, 15s)) << messages(id) << "\n" << tail(api.daemon().log());
  EXPECT_EQ(requests_matching("/$value"), 1003) << "only the new ones fetched";
  EXPECT_EQ(stat("token_requests"), 2) << "a new token after the 401 only";
  EXPECT_EQ(occurrences(api.call("admin", "GET", "/api/v1/audit?entity=mailbox&entity_id=" + std::to_string(id) + "&actor_kind=daemon").body,
                        "ms365_secret_expiring"),
            1);
  EXPECT_EQ(api.daemon().log().find("s3cret~value"), std::string::npos) << "the secret is never logged";
}

TEST_F(GraphSync, KilledMidImportRestartsWithoutLossOrDuplicates) {
  graph.add_messages("info@coop.nl", messages_from(0, 600));
  graph.set_value_delay_ms(8);  // slow enough to be caught mid-round
  const auto id = add_mailbox();
  ASSERT_TRUE(eventually([&] { return messages(id) >= 100; }, 30s)) << tail(api.daemon().log());
  EXPECT_EQ(api.daemon().stop(SIGKILL, 5s), 128 + SIGKILL);
  const int at_kill = messages(id);
  EXPECT_LT(at_kill, 600) << "killed mid-import";
  {
    pqxx::connection c(api.database_url());
    auto r = pqxx::work(c).exec_params1("SELECT round_complete FROM graph_sync_state WHERE mailbox_id = $1", id);
    EXPECT_FALSE(r[0].as<bool>()) << "the cursor is a nextLink";
  }
  graph.set_value_delay_ms(0);
  ASSERT_NO_THROW(api.daemon().start());
  ASSERT_TRUE(eventually([&] { return messages(id) == 600; }, 30s)) << messages(id) << "\n" << tail(api.daemon().log());
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(messages(id), 600);
  EXPECT_EQ(distinct_keys(id), 600);
  // Resumed from the stored nextLink: the first pages were not listed again.
  EXPECT_LT(requests_matching("/messages/delta"), 6 + 2) << "at most one page listed twice";
  EXPECT_LE(requests_matching("/$value"), 600 + 100) << "at most the page in flight fetched twice";
}

TEST_F(GraphSync, ThrottlingWaitsForRetryAfter) {
  graph.add_messages("info@coop.nl", messages_from(0, 5));
  graph.throttle(1, 429, 2, "/$value");
  const auto id = add_mailbox();
  ASSERT_TRUE(eventually([&] { return messages(id) == 5; }, 20s)) << tail(api.daemon().log());
  // The throttled request is tried again after Retry-After, and nothing new is sent meanwhile
  // (requests already on their way when the 429 came are not counted: 0.5 s of slack).
  const auto log = graph.request_log();
  double throttled_at = 0, retried_at = 0;
  std::string throttled_path;
  for (const auto& e : log)
    if (e.at("status").as_int64() == 429) {
      throttled_at = e.at("time").as_double();
      throttled_path = e.at("path").as_string();
    }
  ASSERT_GT(throttled_at, 0);
  int sent_meanwhile = 0;
  for (const auto& e : log) {
    const double start = e.at("start").as_double();
    if (e.at("path").as_string() == throttled_path && start > throttled_at && retried_at == 0) retried_at = start;
    if (start > throttled_at + 0.5 && start < throttled_at + 1.95) ++sent_meanwhile;
  }
  ASSERT_GT(retried_at, 0);
  std::cout << "retried " << (retried_at - throttled_at) << " s after the 429\n";
  EXPECT_GE(retried_at - throttled_at, 2.0) << "not retried before Retry-After";
  EXPECT_EQ(sent_meanwhile, 0) << "no request of the mailbox before Retry-After";
  EXPECT_EQ(health(id), "ok");
  EXPECT_NE(api.daemon().log().find("event=graph_throttled"), std::string::npos);
}

TEST_F(GraphSync, ExpiredSecretFailsWithMicrosoftsReasonUntilFixed) {
  graph.add_messages("info@coop.nl", messages_from(0, 3));
  graph.set_expired(true);
  const auto id = add_mailbox();
  ASSERT_TRUE(eventually([&] { return health(id) == "failed"; }, 15s)) << tail(api.daemon().log());
  const auto m = mailbox(id);
  const std::string reason(m.at("health").at("reason").as_string());
  EXPECT_NE(reason.find("AADSTS7000222"), std::string::npos) << reason;
  EXPECT_NE(reason.find("expired"), std::string::npos) << reason;
  EXPECT_EQ(messages(id), 0);
  // It stops: no more token requests while failed; a reconnect tries again (and fails again).
  const auto asked = stat("token_requests");
  std::this_thread::sleep_for(3s);
  EXPECT_EQ(stat("token_requests"), asked);
  auto reconnect = api.call("admin", "POST", "/api/v1/mailboxes/" + std::to_string(id) + "/reconnect");
  ASSERT_EQ(reconnect.status, 200) << reconnect.body;
  ASSERT_TRUE(eventually([&] { return stat("token_requests") > asked && health(id) == "failed"; }, 10s)) << tail(api.daemon().log());

  // The admin makes a new secret and saves it.
  graph.set_expired(false);
  graph.set_client_secret("n1euw~geheim");
  auto fixed = api.call("admin", "PATCH", "/api/v1/mailboxes/" + std::to_string(id), R"({"ms365_client_secret": "n1euw~geheim"})");
  ASSERT_EQ(fixed.status, 200) << fixed.body;
  ASSERT_TRUE(eventually([&] { return messages(id) == 3; }, 15s)) << tail(api.daemon().log());
  EXPECT_EQ(health(id), "ok");
  auto audit = api.call("admin", "GET", "/api/v1/audit?entity=mailbox&entity_id=" + std::to_string(id) + "&actor_kind=daemon");
  EXPECT_NE(audit.body.find("AADSTS7000222"), std::string::npos) << audit.body;
  EXPECT_EQ(api.daemon().log().find("n1euw~geheim"), std::string::npos) << "the secret is never logged";
}

// Graph counts a mailbox's concurrent requests over everything it does (at most 4): the inbound
// sync's $value fetches and the outbox's sendMail of one mailbox share that count instead of each
// using four. Both run at once here (slow answers from the fake), and the fake sees at most 4.
TEST_F(GraphSync, InboundAndSendMailShareTheMailboxsConcurrentRequests) {
  graph.control("POST", "/_control/delay", R"({"value_ms": 200, "send_ms": 300})");
  graph.add_messages("info@coop.nl", messages_from(0, 80));
  const auto id = add_mailbox(json::object{{"send_max_connections", 4}});
  for (int i = 0; i < 24; ++i) {
    auto q = api.call("admin", "POST", "/api/v1/mail",
                      R"({"to": ["jan@example.nl"], "subject": "Post )" + std::to_string(i) + R"(", "text": "x", "mailbox_id": )" +
                          std::to_string(id) + "}");
    ASSERT_EQ(q.status, 202) << q.body;
  }
  const auto imported = [&] { return query_int("SELECT count(*) FROM messages WHERE mailbox_id = $1 AND source = 'ms365'", id); };
  ASSERT_TRUE(eventually([&] { return imported() == 80 && graph.control("GET", "/_control/sent").as_array().size() == 24; }, 60s))
      << imported() << "\n" << tail(api.daemon().log());
  EXPECT_EQ(graph.stats().at("max_concurrent").at("info@coop.nl").as_int64(), 4);
  // The two directions did overlap: some sendMail was in flight while a $value was.
  std::vector<std::pair<double, double>> values, sends;
  for (const auto& e : graph.request_log()) {
    const std::string path(e.at("path").as_string());
    const std::pair<double, double> span{e.at("start").to_number<double>(), e.at("time").to_number<double>()};
    if (path.find("/$value") != std::string::npos) values.push_back(span);
    if (path.find("/sendMail") != std::string::npos) sends.push_back(span);
  }
  int overlapping = 0;
  for (const auto& sm : sends)
    for (const auto& v : values)
      if (sm.first < v.second && v.first < sm.second) {
        ++overlapping;
        break;
      }
  EXPECT_GT(overlapping, 0) << "sendMail and $value never ran at the same time: the test proves nothing";
}

// The daemon's configuration for the Office 365 tests: Graph's base URLs at the fake, and a CA
// file (written into `dir`) trusting both the fake's test CA and the mail server's.
std::string office365_toml(const test::GraphFake& graph, const std::filesystem::path& server_ca, const std::filesystem::path& dir) {
  const auto file = dir / "both-cas.pem";
  {
    std::ofstream out(file);
    out << std::ifstream(graph.ca_file()).rdbuf() << std::ifstream(server_ca).rdbuf();
  }
  return "[security]\nallow_private_hosts = true\n[tls]\nca_file = \"" + file.string() + "\"\n[graph]\napi_base = \"" + graph.api_base() +
         "\"\nlogin_base = \"" + graph.login_base() + "\"\n";
}

// Office 365 over IMAP with XOAUTH2 (imap_auth = 'xoauth2'): a token for the Outlook scope from
// the same token source, checked by Dovecot's oauth2 passdb against the fake's introspection.
class Office365Imap : public ::testing::Test {
 protected:
  Office365Imap() : dovecot(graph.introspection_url()), api(office365_toml(graph, dovecot.ca_file(), dovecot.dir())) {}

  test::GraphFake graph;
  test::Dovecot dovecot;
  test::ApiFixture api;
};

TEST_F(Office365Imap, SyncsWithAnXoauth2Token) {
  dovecot.add_user("info", "not-the-way-in");  // (the test Dovecot takes plain user names)
  for (int i = 0; i < 3; ++i) dovecot.deliver("info", "INBOX", message(i));
  graph.control("POST", "/_control/credentials", R"({"imap_user": "info"})");
  const auto& o = graph.options();
  json::object m{{"display_name", "Info"}, {"address", "info@coop.nl"}, {"incoming_type", "imap"}, {"imap_auth", "xoauth2"},
                 {"imap_host", "127.0.0.1"}, {"imap_port", dovecot.imaps_port()}, {"imap_security", "tls"}, {"imap_username", "info"},
                 {"outgoing_type", "ms365"}, {"ms365_tenant_id", o.tenant}, {"ms365_client_id", o.client_id},
                 {"ms365_client_secret", o.client_secret}};
  auto r = api.call("admin", "POST", "/api/v1/mailboxes", json::serialize(m));
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.json.at("imap_auth").as_string(), "xoauth2");
  const auto id = r.json.at("id").as_int64();
  const auto count = [&] {
    pqxx::connection c(api.database_url());
    return pqxx::work(c).exec_params1("SELECT count(*) FROM messages WHERE mailbox_id = $1", id)[0].as<int>();
  };
  ASSERT_TRUE(eventually([&] { return count() == 3; }, 20s)) << tail(api.daemon().log()) << "\n" << dovecot.log();
  const auto stats = graph.stats();
  EXPECT_EQ(stats.at("token_requests").as_int64(), 1);
  EXPECT_GE(stats.at("introspections").as_int64(), 1) << "Dovecot checked the token";

  // XOAUTH2 needs the ms365 credentials instead of a password.
  json::object bad{{"display_name", "X"}, {"address", "x@coop.nl"}, {"imap_auth", "xoauth2"}, {"imap_host", "127.0.0.1"},
                   {"outgoing_type", "smtp"}, {"smtp_host", "127.0.0.1"}, {"smtp_password", "x"}};
  auto refused = api.call("admin", "POST", "/api/v1/mailboxes", json::serialize(bad));
  EXPECT_EQ(refused.status, 422) << refused.body;
  EXPECT_NE(refused.body.find("ms365_"), std::string::npos) << refused.body;
}

// Office 365 over SMTP with XOAUTH2 (smtp_auth = 'xoauth2'): the outbox's SMTP transport logs in
// with AUTH XOAUTH2 and an Outlook-scope token from the same source; the SMTP server (aiosmtpd,
// XOAUTH2 only) checks it at the fake's introspection endpoint, as Office 365 does. A token the
// server refuses (revoked) is replaced once, without failing the mail.
class Office365Smtp : public ::testing::Test {
 protected:
  static test::PySmtpOptions smtp_options(const test::GraphFake& graph) {
    test::PySmtpOptions o;
    o.tls = true;
    o.require_tls = true;
    o.xoauth2_introspect = graph.introspection_url();
    return o;
  }
  Office365Smtp() : smtp(smtp_options(graph)), api(office365_toml(graph, smtp.ca_file(), test::temp_dir("o365-smtp"))) {}

  test::GraphFake graph;
  test::PySmtpServer smtp;
  test::ApiFixture api;
};

TEST_F(Office365Smtp, SendsWithAnXoauth2TokenAndReplacesARefusedOne) {
  graph.control("POST", "/_control/credentials", R"({"imap_user": "info@coop.nl"})");
  const auto& o = graph.options();
  json::object m{{"display_name", "Info"}, {"address", "info@coop.nl"}, {"incoming_type", "none"}, {"outgoing_type", "smtp"},
                 {"smtp_auth", "xoauth2"}, {"smtp_host", "127.0.0.1"}, {"smtp_port", smtp.port()}, {"smtp_security", "starttls"},
                 {"ms365_tenant_id", o.tenant}, {"ms365_client_id", o.client_id}, {"ms365_client_secret", o.client_secret}};
  auto r = api.call("admin", "POST", "/api/v1/mailboxes", json::serialize(m));
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.json.at("smtp_auth").as_string(), "xoauth2");
  const auto id = r.json.at("id").as_int64();
  const std::string test_path = "/api/v1/mailboxes/" + std::to_string(id) + "/test";

  auto first = api.call("admin", "POST", test_path);
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_TRUE(first.json.at("ok").as_bool()) << first.body << tail(api.daemon().log()) << smtp.log();
  ASSERT_EQ(smtp.received().size(), 1u) << smtp.log();
  EXPECT_EQ(smtp.received()[0].login, "info@coop.nl");
  EXPECT_TRUE(smtp.received()[0].tls);
  auto stats = graph.stats();
  EXPECT_EQ(stats.at("token_requests").as_int64(), 1);
  EXPECT_EQ(stats.at("introspections").as_int64(), 1);

  // The outbox keeps the daemon's one token source: its first mail asks for a token (the mailbox
  // test used a fresh source of its own), the token is cached.
  const auto send = [&](const std::string& subject) {
    auto q = api.call("admin", "POST", "/api/v1/mail",
                      R"({"to": ["jan@example.nl"], "subject": ")" + subject + R"(", "text": "x", "mailbox_id": )" + std::to_string(id) + "}");
    EXPECT_EQ(q.status, 202) << q.body;
    return q.json.is_object() ? q.json.at("id").as_int64() : 0;
  };
  const auto state = [&](std::int64_t row) {
    auto q = api.call("admin", "GET", "/api/v1/outbox/" + std::to_string(row));
    return q.json.is_object() ? std::string(q.json.at("state").as_string()) : q.body;
  };
  const auto a = send("Eerste");
  ASSERT_TRUE(eventually([&] { return state(a) == "sent"; }, 20s)) << state(a) << tail(api.daemon().log()) << smtp.log();
  EXPECT_EQ(smtp.received().size(), 2u);
  EXPECT_EQ(graph.stats().at("token_requests").as_int64(), 2);

  // Every token issued so far stops working: the cached one is refused with 535, dropped, and a
  // fresh one (a third token request) gets the mail through on a new connection, not failed.
  graph.control("POST", "/_control/revoke_tokens", "{}");
  const auto b = send("Tweede");
  ASSERT_TRUE(eventually([&] { return state(b) == "sent"; }, 20s)) << state(b) << tail(api.daemon().log()) << smtp.log();
  EXPECT_EQ(smtp.received().size(), 3u);
  stats = graph.stats();
  EXPECT_EQ(stats.at("token_requests").as_int64(), 3);
  EXPECT_EQ(stats.at("introspections").as_int64(), 4) << "test mail, first mail, the refused token, its replacement";

  // A token the server never accepts (it names a user other than the SASL user): the failing
  // step is auth, with the server's 535; nothing is sent.
  graph.control("POST", "/_control/credentials", R"({"imap_user": "someone-else@coop.nl"})");
  auto third = api.call("admin", "POST", test_path);
  ASSERT_TRUE(third.json.is_object()) << third.status << " " << third.body;
  EXPECT_FALSE(third.json.at("ok").as_bool()) << third.body;
  EXPECT_EQ(third.json.at("step").as_string(), "auth") << third.body;
  EXPECT_NE(third.body.find("535"), std::string::npos) << third.body;
  EXPECT_EQ(smtp.received().size(), 3u);
  EXPECT_EQ(api.daemon().log().find(o.client_secret), std::string::npos) << "the secret is never logged";
}

}  // namespace
}  // namespace mailgate
