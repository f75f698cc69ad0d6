// The outbox end to end: the real daemon sends through real SMTP peers on loopback (an aiosmtpd
// server with STARTTLS and AUTH, checking the bytes received), retries, fails with the server's
// reply, keeps the per-connection limit, survives SIGKILL without losing a row, and files a copy
// of what it sent in the mailbox's "sent" folder.
#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include <algorithm>
#include <csignal>
#include <map>
#include <set>
#include <thread>

#include "protocol/mime.hpp"
#include "store/outbox.hpp"
#include "tests/support/api_client.hpp"
#include "tests/support/smtp_servers.hpp"

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

const char* kPassword = "Smtp \"wacht\" \\ é";

class Outbox : public ::testing::Test {
 protected:
  explicit Outbox(test::PySmtpOptions options = {.tls = true, .require_tls = true, .user = "info@coop.nl", .password = kPassword},
                  const std::string& extra = "", int poll_ms = 100)
      : server(options),
        api("[security]\nallow_private_hosts = true\n[tls]\nca_file = \"" + server.ca_file().string() +
            "\"\n[outbox]\npoll_interval_ms = " + std::to_string(poll_ms) + "\nretry_base_seconds = 1\nlease_seconds = 5\ncommand_timeout_seconds = 5\nhelo_name = \"mailgate.test\"\n" +
            extra) {
    json::object m{{"display_name", "Coöperatie Zon"}, {"address", "info@coop.nl"}, {"incoming_type", "none"},
                   {"smtp_host", "127.0.0.1"}, {"smtp_port", server.port()}, {"smtp_security", options.tls ? "starttls" : "plain"},
                   {"smtp_password", kPassword}};
    auto r = api.call("admin", "POST", "/api/v1/mailboxes", json::serialize(m));
    EXPECT_EQ(r.status, 201) << r.body;
    mailbox = r.json.is_object() ? r.json.at("id").as_int64() : 0;
  }
  int count(const std::string& sql) {
    pqxx::connection c(api.database_url());
    return pqxx::work(c).exec(sql)[0][0].as<int>();
  }
  test::ApiResult send(const std::string& body, const std::string& who = "admin") { return api.call(who, "POST", "/api/v1/mail", body); }
  // Changes the mailbox (its limits, mostly); true when the API took it.
  bool patch_mailbox(const std::string& body) {
    return api.call("admin", "PATCH", "/api/v1/mailboxes/" + std::to_string(mailbox), body).status == 200;
  }
  // n rows queued in one transaction, as a mailing queues them.
  void queue_rows(int n, const std::string& tag) {
    pqxx::connection c(api.database_url());
    pqxx::work tx(c);
    tx.exec_params(
        "INSERT INTO outbox (kind, mailbox_id, to_addresses, subject, text_body, message_id) "
        "SELECT 'message', $1, ARRAY['lid' || n || '@example.nl'], 'Bericht ' || n, 'Inhoud ' || n, '<' || $3 || '-' || n || '@coop.nl>' "
        "FROM generate_series(1, $2) n",
        mailbox, n, tag);
    tx.commit();
  }
  std::string state(std::int64_t id) {
    auto r = api.call("admin", "GET", "/api/v1/outbox/" + std::to_string(id));
    return r.json.is_object() ? std::string(r.json.at("state").as_string()) : "?";
  }

  test::PySmtpServer server;
  test::ApiFixture api;
  std::int64_t mailbox = 0;
};

TEST_F(Outbox, SendsOverStartTlsWithAuthAndFilesASentCopy) {
  auto contact = api.call("admin", "POST", "/api/v1/contacts", R"({"type": "person", "first_name": "Jan", "emails": [{"address": "jan@example.nl"}]})");
  ASSERT_EQ(contact.status, 201) << contact.body;
  auto r = send(R"({"to": [" Jan@Example.NL "], "bcc": ["archief@coop.nl"], "subject": "Factuur € 12", "text": "Beste Jan,\n.punt\n",
                    "html": "<p>Beste Jan</p>", "attachments": [{"filename": "factuur 12.pdf", "content_type": "application/pdf",
                    "content_base64": "JVBERi0xLjQK"}]})");
  ASSERT_EQ(r.status, 202) << r.body << api.daemon().log();
  const auto id = r.json.at("id").as_int64();
  EXPECT_EQ(r.json.at("to").as_array()[0].as_string(), "Jan@example.nl") << "trimmed, domain lower-cased";
  ASSERT_TRUE(eventually([&] { return state(id) == "sent"; }, 15s)) << state(id) << "\n" << api.daemon().log() << server.log();

  auto got = server.received();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].tls);
  EXPECT_EQ(got[0].login, "info@coop.nl");
  EXPECT_EQ(got[0].from, "info@coop.nl");
  EXPECT_EQ(got[0].to, (std::vector<std::string>{"Jan@example.nl", "archief@coop.nl"}));
  EXPECT_EQ(got[0].raw.find("archief@coop.nl"), std::string::npos) << "Bcc never in the headers";
  const ParsedMessage p = parse_message(got[0].raw);
  EXPECT_EQ(p.subject, "Factuur € 12");
  ASSERT_EQ(p.from.size(), 1u);
  EXPECT_EQ(p.from[0].name, "Coöperatie Zon");
  EXPECT_EQ(p.message_id, std::string(r.json.at("message_id").as_string()).substr(1, r.json.at("message_id").as_string().size() - 2));
  ASSERT_EQ(p.attachments.size(), 1u);
  EXPECT_EQ(p.attachments[0].data, "%PDF-1.4\n");

  auto row = api.call("admin", "GET", "/api/v1/outbox/" + std::to_string(id));
  const auto copy = row.json.at("sent_message_id").as_int64();
  auto m = api.call("admin", "GET", "/api/v1/messages/" + std::to_string(copy));
  ASSERT_EQ(m.status, 200) << m.body;
  EXPECT_EQ(m.json.at("folder").as_string(), "sent");
  EXPECT_EQ(m.json.at("source").as_string(), "sent");
  EXPECT_EQ(m.json.at("contacts").as_array().size(), 1u) << "the sent copy is linked to the recipient contact";
  auto raw = api.call("admin", "GET", "/api/v1/messages/" + std::to_string(copy) + "/raw");
  EXPECT_EQ(raw.body, got[0].raw) << "the copy is the bytes that were sent";

  auto audit = api.call("admin", "GET", "/api/v1/audit?entity=outbox&entity_id=" + std::to_string(id));
  EXPECT_EQ(audit.json.at("items").as_array().size(), 1u) << audit.body;
}

TEST_F(Outbox, BadInputIsRefusedAndQueuesNothing) {
  struct Bad {
    std::string body, field;
  };
  for (const auto& b : std::vector<Bad>{
           {R"({"to": ["jan@example.nl"], "subject": "Hoi\r\nBcc: x@evil.nl", "text": "x"})", "subject"},
           {R"({"to": ["jan@example.nl>\r\nRCPT TO:<x@evil.nl"], "subject": "Hoi", "text": "x"})", "to[0]"},
           {R"({"to": ["jan"], "subject": "Hoi", "text": "x"})", "to[0]"},
           {R"({"subject": "Hoi", "text": "x"})", "to"},
           {R"({"to": ["jan@example.nl"], "subject": "Hoi"})", "text"},
           {R"({"to": ["jan@example.nl"], "subject": "Hoi", "text": "x", "attachments": [{"filename": "a\nb.pdf", "content_type": "application/pdf", "content_base64": ""}]})",
            "attachments[0].filename"},
           {R"({"to": ["jan@example.nl"], "subject": "Hoi", "text": "x", "attachments": [{"filename": "a.pdf", "content_type": "application/pdf", "content_base64": "***"}]})",
            "attachments[0].content_base64"},
           {R"({"to": ["jan@example.nl"], "subject": "Hoi", "text": "x", "mailbox_id": 999999})", "mailbox_id"},
           {R"({"to": ["jan@example.nl"], "subject": "Hoi", "text": "x", "x-header": "y"})", "x-header"}}) {
    auto r = send(b.body);
    EXPECT_EQ(r.status, 422) << b.body << " -> " << r.body;
    if (r.json.is_object() && r.json.as_object().contains("error")) {
      EXPECT_EQ(r.json.at("error").at("field").as_string(), b.field) << b.body;
    }
  }
  EXPECT_EQ(count("SELECT count(*) FROM outbox WHERE kind <> 'password_set'"), 0);
  // A user may send only from mailboxes linked to them.
  auto staff = send(R"({"to": ["jan@example.nl"], "subject": "Hoi", "text": "x"})", "staff");
  EXPECT_EQ(staff.status, 403) << staff.body;
  EXPECT_EQ(api.call("readonly", "POST", "/api/v1/mail", R"({"to": ["jan@example.nl"], "subject": "Hoi", "text": "x"})").status, 403);
}

TEST_F(Outbox, TemplatesEscapeMergeFieldsAndGroupMailingsSkipContactsWithoutAddress) {
  auto t = api.call("admin", "POST", "/api/v1/templates", R"({"name": "Nieuwsbrief", "subject": "Hallo {contact_voornaam}",
      "html_body": "<p>Beste {contact_naam},</p>", "text_body": "Beste {contact_naam}"})");
  ASSERT_EQ(t.status, 201) << t.body;
  std::vector<std::int64_t> contacts;
  for (const char* c : {R"({"type": "person", "first_name": "<b>Jan & co</b>", "emails": [{"address": "jan@example.nl"}]})",
                        R"({"type": "person", "first_name": "Piet", "emails": [{"address": "piet@example.nl"}]})",
                        R"({"type": "person", "first_name": "Klaas"})"}) {
    auto r = api.call("admin", "POST", "/api/v1/contacts", c);
    ASSERT_EQ(r.status, 201) << r.body;
    contacts.push_back(r.json.at("id").as_int64());
  }
  auto g = api.call("admin", "POST", "/api/v1/groups",
                    R"({"name": "Leden", "kind": "static", "members": [)" + std::to_string(contacts[0]) + "," + std::to_string(contacts[1]) + "," +
                        std::to_string(contacts[2]) + "]}");
  ASSERT_EQ(g.status, 201) << g.body;
  auto mailing = api.call("admin", "POST", "/api/v1/groups/" + std::to_string(g.json.at("id").as_int64()) + "/mailing",
                          R"({"template_id": )" + std::to_string(t.json.at("id").as_int64()) + "}");
  ASSERT_EQ(mailing.status, 202) << mailing.body;
  EXPECT_EQ(mailing.json.at("queued").as_int64(), 2);
  ASSERT_EQ(mailing.json.at("skipped").as_array().size(), 1u);
  EXPECT_EQ(mailing.json.at("skipped").as_array()[0].at("contact_id").as_int64(), contacts[2]);
  EXPECT_EQ(mailing.json.at("skipped").as_array()[0].at("reason").as_string(), "no e-mail address");
  ASSERT_TRUE(eventually([&] { return server.received().size() == 2; }, 15s)) << api.daemon().log();
  std::map<std::string, ParsedMessage> by_rcpt;
  for (const auto& m : server.received()) by_rcpt[m.to.at(0)] = parse_message(m.raw);
  EXPECT_EQ(by_rcpt["jan@example.nl"].subject, "Hallo <b>Jan & co</b>");
  EXPECT_NE(by_rcpt["jan@example.nl"].html_body.find("<p>Beste &lt;b&gt;Jan &amp; co&lt;/b&gt;,</p>"), std::string::npos)
      << by_rcpt["jan@example.nl"].html_body;
  EXPECT_NE(by_rcpt["jan@example.nl"].text_body.find("Beste <b>Jan & co</b>"), std::string::npos);
  EXPECT_EQ(by_rcpt["piet@example.nl"].subject, "Hallo Piet");
}

TEST_F(Outbox, TestMailReportsTheFailingStep) {
  auto ok = api.call("admin", "POST", "/api/v1/mailboxes/" + std::to_string(mailbox) + "/test");
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_TRUE(ok.json.at("ok").as_bool()) << ok.body;
  ASSERT_EQ(server.received().size(), 1u);
  EXPECT_EQ(server.received()[0].to, (std::vector<std::string>{"info@coop.nl"}));

  ASSERT_TRUE(patch_mailbox(R"({"smtp_password": "fout"})"));
  auto bad = api.call("admin", "POST", "/api/v1/mailboxes/" + std::to_string(mailbox) + "/test");
  EXPECT_FALSE(bad.json.at("ok").as_bool()) << bad.body;
  EXPECT_EQ(bad.json.at("step").as_string(), "auth") << bad.body;
  EXPECT_NE(std::string(bad.json.at("reply").as_string()).find("535"), std::string::npos) << bad.body;
}

TEST_F(Outbox, ThePasswordMailOfANewUserIsSent) {
  auto u = api.call("admin", "POST", "/api/v1/users", R"({"email": "nieuw@coop.nl", "first_name": "Nieuw", "last_name": "Lid", "roles": ["staff"]})");
  ASSERT_EQ(u.status, 201) << u.body;
  ASSERT_TRUE(eventually([&] { return server.received().size() == 1; }, 15s)) << api.daemon().log();
  EXPECT_EQ(server.received()[0].to, (std::vector<std::string>{"nieuw@coop.nl"}));
  EXPECT_EQ(parse_message(server.received()[0].raw).from.at(0).address, "info@coop.nl") << "from the primary mailbox";
}

TEST_F(Outbox, InvoiceMailUsesTheAdministrationsTemplateSenderAndBcc) {
  json::object box{{"display_name", "Facturen"}, {"address", "facturen@coop.nl"}, {"incoming_type", "none"}, {"smtp_host", "127.0.0.1"},
                   {"smtp_port", server.port()}, {"smtp_security", "starttls"}, {"smtp_username", "info@coop.nl"}, {"smtp_password", kPassword}};
  auto facturen = api.call("admin", "POST", "/api/v1/mailboxes", json::serialize(box));
  ASSERT_EQ(facturen.status, 201) << facturen.body;
  auto t = api.call("admin", "POST", "/api/v1/templates", R"({"name": "Eerste nota", "subject": "Nota {nota_nummer} van {administratie_naam}",
      "text_body": "Beste {contact_voornaam}, het bedrag is {nota_bedrag}, te betalen voor {nota_vervaldatum}."})");
  ASSERT_EQ(t.status, 201) << t.body;
  auto a = api.call("admin", "POST", "/api/v1/administrations",
                    R"({"name": "Zon BV", "bcc_self": true, "sender_mailbox_id": )" + std::to_string(facturen.json.at("id").as_int64()) +
                        R"(, "invoice_transfer_template_id": )" + std::to_string(t.json.at("id").as_int64()) + "}");
  ASSERT_EQ(a.status, 201) << a.body;
  auto c = api.call("admin", "POST", "/api/v1/contacts", R"({"type": "person", "first_name": "Jan", "emails": [{"address": "jan@example.nl"}]})");
  const std::string ids = R"("administration_id": )" + std::to_string(a.json.at("id").as_int64()) + R"(, "contact_id": )" +
                          std::to_string(c.json.at("id").as_int64());
  auto none = api.call("admin", "POST", "/api/v1/mail/invoice", "{" + ids + R"(, "kind": "dunning", "number": "2026-7"})");
  EXPECT_EQ(none.status, 409) << "no dunning template: " << none.body;
  auto r = api.call("admin", "POST", "/api/v1/mail/invoice",
                    "{" + ids + R"(, "kind": "first_transfer", "number": "2026-7", "amount": "€ 12,50", "due_date": "2026-12-14",
                    "attachments": [{"filename": "nota 2026-7.pdf", "content_type": "application/pdf", "content_base64": "JVBERi0xLjQK"}]})");
  ASSERT_EQ(r.status, 202) << r.body;
  ASSERT_TRUE(eventually([&] { return state(r.json.at("id").as_int64()) == "sent"; }, 15s)) << api.daemon().log();
  auto got = server.received();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].from, "facturen@coop.nl") << "the administration's sender";
  EXPECT_EQ(got[0].to, (std::vector<std::string>{"jan@example.nl", "facturen@coop.nl"})) << "BCC to the sender (administration setting)";
  const ParsedMessage p = parse_message(got[0].raw);
  EXPECT_EQ(p.subject, "Nota 2026-7 van Zon BV");
  EXPECT_NE(p.text_body.find("het bedrag is € 12,50, te betalen voor 2026-12-14."), std::string::npos) << p.text_body;
  ASSERT_EQ(p.attachments.size(), 1u);
  EXPECT_EQ(p.attachments[0].filename, "nota 2026-7.pdf");
}

TEST_F(Outbox, AUsersDefaultSenderIsUsedWhenLinkedToThem) {
  json::object box{{"display_name", "Ledenadministratie"}, {"address", "leden@coop.nl"}, {"incoming_type", "none"}, {"smtp_host", "127.0.0.1"},
                   {"smtp_port", server.port()}, {"smtp_security", "starttls"}, {"smtp_username", "info@coop.nl"}, {"smtp_password", kPassword}};
  auto leden = api.call("admin", "POST", "/api/v1/mailboxes", json::serialize(box));
  ASSERT_EQ(leden.status, 201) << leden.body;
  const std::string leden_id = std::to_string(leden.json.at("id").as_int64());
  const std::string staff = std::to_string(api.user_id("staff"));
  ASSERT_EQ(api.call("admin", "PATCH", "/api/v1/users/" + staff, R"({"default_mailbox_id": )" + leden_id + "}").status, 200);
  auto refused = send(R"({"to": ["jan@example.nl"], "subject": "Hoi", "text": "x"})", "staff");
  EXPECT_EQ(refused.status, 403) << "the default sender is not linked to the user yet: " << refused.body;
  ASSERT_EQ(api.call("admin", "PUT", "/api/v1/mailboxes/" + leden_id + "/users", R"({"users": [)" + staff + "]}").status, 200);
  auto r = send(R"({"to": ["jan@example.nl"], "subject": "Hoi", "text": "x"})", "staff");
  ASSERT_EQ(r.status, 202) << r.body;
  EXPECT_EQ(r.json.at("mailbox_id").as_int64(), leden.json.at("id").as_int64());
  EXPECT_EQ(send(R"({"to": ["jan@example.nl"], "subject": "Hoi", "text": "x", "mailbox_id": )" + std::to_string(mailbox) + "}", "staff").status, 403)
      << "nor from a mailbox that is not linked to them";
  ASSERT_TRUE(eventually([&] { return server.received().size() == 1; }, 15s)) << api.daemon().log();
  EXPECT_EQ(server.received()[0].from, "leden@coop.nl");
}

TEST_F(Outbox, TheMailboxsBccToSelf) {
  ASSERT_TRUE(patch_mailbox(R"({"bcc_self": true})"));
  auto r = send(R"({"to": ["jan@example.nl"], "subject": "Met kopie", "text": "x"})");
  ASSERT_EQ(r.status, 202) << r.body;
  EXPECT_EQ(r.json.at("bcc").as_array().size(), 1u) << r.body;
  ASSERT_TRUE(eventually([&] { return server.received().size() == 1; }, 15s)) << api.daemon().log();
  EXPECT_EQ(server.received()[0].to, (std::vector<std::string>{"jan@example.nl", "info@coop.nl"}));
  EXPECT_EQ(parse_message(server.received()[0].raw).cc.size(), 0u);
  EXPECT_EQ(server.received()[0].raw.find("Bcc:"), std::string::npos);
}

class OutboxFailures : public Outbox {
 protected:
  OutboxFailures() : Outbox({.fail_first = 1, .reject = {"weg@example.nl"}, .pipelining = true}) {}
};

// The server offers PIPELINING, so each row's envelope goes with the content of the row before
// (RFC 2920). The first content is refused (451): that row alone is retried, the rows announced
// behind it go through on the same connection.
TEST_F(OutboxFailures, APipelinedRefusalFailsOnlyItsRow) {
  queue_rows(3, "rij");
  ASSERT_TRUE(eventually([&] { return count("SELECT count(*) FROM outbox WHERE state = 'sent'") == 3; }, 20s)) << api.daemon().log();
  pqxx::connection c(api.database_url());
  const auto rows = pqxx::work(c).exec("SELECT subject, attempts FROM outbox ORDER BY id");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0][1].as<int>(), 2) << "the refused one, retried";
  EXPECT_EQ(rows[1][1].as<int>(), 1);
  EXPECT_EQ(rows[2][1].as<int>(), 1);
  const auto got = server.received();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(parse_message(got[0].raw).subject, "Bericht 2");
  EXPECT_EQ(parse_message(got[1].raw).subject, "Bericht 3");
  EXPECT_EQ(parse_message(got[2].raw).subject, "Bericht 1");
  EXPECT_EQ(got[0].client_port, got[1].client_port) << "the connection went on after the refusal";
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE folder = 'sent'"), 3) << "one sent copy each";
}

TEST_F(OutboxFailures, TransientIsRetriedPermanentFailsWithTheReply) {
  auto r = send(R"({"to": ["jan@example.nl"], "subject": "Eerst 451", "text": "x"})");
  ASSERT_EQ(r.status, 202) << r.body;
  const auto id = r.json.at("id").as_int64();
  ASSERT_TRUE(eventually([&] { return state(id) == "sent"; }, 20s)) << state(id) << api.daemon().log();
  auto row = api.call("admin", "GET", "/api/v1/outbox/" + std::to_string(id));
  EXPECT_EQ(row.json.at("attempts").as_int64(), 2);

  auto bad = send(R"({"to": ["weg@example.nl"], "subject": "Bestaat niet", "text": "x"})");
  const auto bad_id = bad.json.at("id").as_int64();
  ASSERT_TRUE(eventually([&] { return state(bad_id) == "failed"; }, 15s)) << state(bad_id);
  row = api.call("admin", "GET", "/api/v1/outbox/" + std::to_string(bad_id));
  EXPECT_EQ(row.json.at("failed_step").as_string(), "rcpt");
  EXPECT_NE(std::string(row.json.at("last_error").as_string()).find("550 5.1.1"), std::string::npos) << row.body;
  EXPECT_EQ(row.json.at("attempts").as_int64(), 1) << "a permanent failure is not retried";

  // Cancel and retry by hand.
  EXPECT_EQ(api.call("admin", "POST", "/api/v1/outbox/" + std::to_string(id) + "/cancel").status, 409) << "a sent row cannot be cancelled";
  auto again = api.call("admin", "POST", "/api/v1/outbox/" + std::to_string(bad_id) + "/retry");
  ASSERT_EQ(again.status, 200) << again.body;
  ASSERT_TRUE(eventually([&] { return state(bad_id) == "failed"; }, 15s));
  EXPECT_EQ(api.call("admin", "POST", "/api/v1/outbox/" + std::to_string(bad_id) + "/cancel").json.at("state").as_string(), "cancelled");
}

class OutboxPlain : public Outbox {
 protected:
  explicit OutboxPlain(int poll_ms = 100) : Outbox({.pipelining = true}, "", poll_ms) {}
};

TEST_F(OutboxPlain, AtMostTwentyPerConnectionAndNothingLostWhenKilled) {
  // 500 rows queued at once (one transaction, as a mailing would), then the daemon is killed
  // while it sends them, and started again. (The per-minute limit is lifted for this.)
  ASSERT_TRUE(patch_mailbox(R"({"send_max_per_minute": 100000})"));
  queue_rows(500, "bulk");
  ASSERT_TRUE(eventually([&] { return server.received().size() >= 60; }, 30s)) << api.daemon().log();
  ASSERT_EQ(api.daemon().stop(SIGKILL), 128 + SIGKILL);
  const auto at_kill = server.received().size();
  ASSERT_LT(at_kill, 500u) << "killed too late to prove anything";
  api.daemon().start();
  ASSERT_TRUE(eventually([&] { return count("SELECT count(*) FROM outbox WHERE state NOT IN ('sent', 'failed')") == 0; }, 90s))
      << count("SELECT count(*) FROM outbox WHERE state NOT IN ('sent', 'failed')") << "\n" << api.daemon().log();
  EXPECT_EQ(count("SELECT count(*) FROM outbox WHERE state = 'sent'"), 500);

  const auto got = server.received();
  std::set<std::string> ids;
  std::map<int, int> per_connection;
  for (const auto& m : got) {
    ids.insert(parse_message(m.raw).message_id);
    ++per_connection[m.client_port];
  }
  EXPECT_EQ(ids.size(), 500u) << "every row arrived";
  // The documented window (store/outbox.hpp, "Duplicates"): messages the server accepted whose
  // chunk had not committed at the kill are sent again; per connection slot (2 by default) at
  // most two chunks: the one committing, which may be the last of the connection before in the
  // chain, and the one sent meanwhile.
  const std::size_t window = 2 * 2 * outbox_chunk_rows;
  EXPECT_LE(got.size() - ids.size(), window);
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE source = 'sent'"), 500) << "one sent copy per row";
  for (const auto& [port, n] : per_connection) EXPECT_LE(n, 20) << "connection from port " << port;
  if (HasFailure())  // one unexplained failure in an ASan run (2026-12-01): keep what it needs
    ADD_FAILURE() << "at the kill " << at_kill << " received, in all " << got.size() << " on " << per_connection.size()
                  << " connections; the daemon's log:\n" << api.daemon().log();
}

// A row claimed by an earlier version kept its composed bytes in `raw`: they are sent as they are,
// and the sent copy is their parse (not the composition's), in the same chunk as rows composed now.
TEST_F(OutboxPlain, ARowComposedByAnEarlierVersionSendsItsStoredBytes) {
  const std::string stored =
      "From: Info <info@coop.nl>\r\nTo: oud@example.nl\r\nSubject: Eerder samengesteld\r\nMessage-Id: <oud-1@coop.nl>\r\n"
      "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nOude tekst\r\n"
      "--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=oud.pdf\r\n"
      "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n";
  {
    pqxx::connection c(api.database_url());
    pqxx::work tx(c);
    tx.exec_params("INSERT INTO outbox (kind, mailbox_id, to_addresses, subject, text_body, message_id, raw) "
                   "VALUES ('message', $1, ARRAY['oud@example.nl'], 'Eerder samengesteld', 'niet gebruikt', '<oud-1@coop.nl>', $2)",
                   mailbox, pqxx::binarystring(stored));
    tx.commit();
  }
  queue_rows(3, "nu");
  ASSERT_TRUE(eventually([&] { return count("SELECT count(*) FROM outbox WHERE state = 'sent'") == 4; }, 30s)) << api.daemon().log();
  int found = 0;
  for (const auto& m : server.received())
    if (m.raw.find("oud-1@coop.nl") != std::string::npos) {
      ++found;
      EXPECT_EQ(m.raw, stored) << "the stored bytes, not a new composition";
    }
  EXPECT_EQ(found, 1);
  pqxx::connection c(api.database_url());
  pqxx::work tx(c);
  const auto copy = tx.exec1("SELECT m.subject, m.text_body, convert_from(m.raw, 'UTF8'), "
                             "(SELECT count(*) FROM attachment_parts a WHERE a.message_id = m.id AND a.filename = 'oud.pdf' AND a.raw_offset IS NOT NULL) "
                             "FROM messages m WHERE m.source = 'sent' AND m.header_message_id = 'oud-1@coop.nl'");
  EXPECT_EQ(copy[0].as<std::string>(), "Eerder samengesteld");
  EXPECT_EQ(copy[1].as<std::string>(), "Oude tekst");
  EXPECT_EQ(copy[2].as<std::string>(), stored);
  EXPECT_EQ(copy[3].as<int>(), 1) << "its attachment kept as a span of the copy's bytes";
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM messages WHERE source = 'sent' AND subject LIKE 'Bericht %'")[0].as<int>(), 3);
}

TEST_F(OutboxPlain, KilledWhileAChunkCommitsEveryAcceptedMessageIsSentAgainWithItsMessageId) {
  // A chunk's outcomes commit in one transaction while the next chunk is sent. Here that
  // transaction is held (a lock on messages, where the sent copies go), the daemon is killed while
  // it waits, and started again: every message the server accepted without a committed outcome
  // is sent again with the same bytes and Message-ID, and every row ends 'sent' with one copy.
  ASSERT_TRUE(patch_mailbox(R"({"send_max_per_minute": 100000, "send_max_per_connection": 1000, "send_max_connections": 1})"));
  pqxx::connection blocker(api.database_url());
  pqxx::work hold(blocker);
  hold.exec("LOCK TABLE messages IN SHARE MODE");  // INSERT waits for it; reading does not
  queue_rows(100, "chunk");
  const std::size_t in_flight = 2 * outbox_chunk_rows;  // the chunk committing and the one sent meanwhile
  ASSERT_TRUE(eventually([&] { return server.received().size() >= in_flight; }, 30s)) << api.daemon().log();
  std::this_thread::sleep_for(500ms);
  const auto at_kill = server.received().size();
  EXPECT_EQ(at_kill, in_flight) << "the connection waits for the first chunk's commit before a third chunk";
  EXPECT_EQ(count("SELECT count(*) FROM outbox WHERE state = 'sent'"), 0);
  ASSERT_EQ(api.daemon().stop(SIGKILL), 128 + SIGKILL);
  hold.abort();
  api.daemon().start();
  ASSERT_TRUE(eventually([&] { return count("SELECT count(*) FROM outbox WHERE state = 'sent'") == 100; }, 60s))
      << count("SELECT count(*) FROM outbox WHERE state = 'sent'") << "\n" << api.daemon().log();

  std::map<std::string, std::vector<std::string>> by_id;  // Message-ID -> the bytes of each delivery
  for (const auto& m : server.received()) by_id[parse_message(m.raw).message_id].push_back(m.raw);
  EXPECT_EQ(by_id.size(), 100u) << "every row arrived";
  std::size_t twice = 0;
  for (const auto& [id, copies] : by_id) {
    EXPECT_LE(copies.size(), 2u) << id;
    if (copies.size() == 2) {
      ++twice;
      EXPECT_EQ(copies[0], copies[1]) << id << ": a resend is the same message";
    }
  }
  EXPECT_EQ(twice, at_kill) << "exactly the messages accepted before the kill, whose chunk never committed";
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE source = 'sent'"), 100) << "one sent copy per row";
  EXPECT_EQ(count("SELECT count(*) FROM outbox WHERE state = 'sent' AND sent_message_id IS NULL"), 0);
}

TEST_F(OutboxPlain, ConnectionsTakeChunksUpToTheirLimit) {
  // 30 per connection: a chunk of 20 and one of 10 on each connection, never more.
  ASSERT_TRUE(patch_mailbox(R"({"send_max_per_minute": 100000, "send_max_per_connection": 30})"));
  queue_rows(75, "thirty");
  ASSERT_TRUE(eventually([&] { return count("SELECT count(*) FROM outbox WHERE state = 'sent'") == 75; }, 30s)) << api.daemon().log();
  std::map<int, int> per_connection;
  for (const auto& m : server.received()) ++per_connection[m.client_port];
  EXPECT_EQ(server.received().size(), 75u);
  for (const auto& [port, n] : per_connection) EXPECT_LE(n, 30) << "connection from port " << port;
  EXPECT_GE(per_connection.size(), 3u);
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE source = 'sent' AND status = 'read'"), 75);
}

TEST_F(OutboxPlain, PerMinuteLimitHoldsTheRest) {
  ASSERT_TRUE(patch_mailbox(R"({"send_max_per_minute": 5})"));
  queue_rows(8, "rate");
  ASSERT_TRUE(eventually([&] { return server.received().size() == 5; }, 10s)) << api.daemon().log();
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(server.received().size(), 5u) << "the other three wait for the next minute";
  EXPECT_EQ(count("SELECT count(*) FROM outbox WHERE state = 'sent'"), 5);
}

TEST_F(OutboxPlain, NewSettingsOfAMailboxAreUsedFromItsNextConnectionDuringAMailing) {
  // A connection at its limit is followed by the next one without a new look at the queue; the
  // mailbox's settings are still read again for each, so a server changed during a mailing is
  // used from the next connection on.
  test::PySmtpServer other(test::PySmtpOptions{});
  json::object m{{"display_name", "Facturen"}, {"address", "facturen@coop.nl"}, {"incoming_type", "none"},
                 {"smtp_host", "127.0.0.1"}, {"smtp_port", server.port()}, {"smtp_security", "plain"}, {"smtp_password", "x"},
                 {"send_max_per_minute", 100000}, {"send_max_per_connection", 20}, {"send_max_connections", 1}};
  auto created = api.call("admin", "POST", "/api/v1/mailboxes", json::serialize(m));
  ASSERT_EQ(created.status, 201) << created.body;
  const auto facturen = created.json.at("id").as_int64();
  {
    pqxx::connection c(api.database_url());
    pqxx::work tx(c);
    tx.exec_params("INSERT INTO outbox (kind, mailbox_id, to_addresses, subject, text_body, message_id) "
                   "SELECT 'message', $1, ARRAY['lid' || n || '@example.nl'], 'Factuur ' || n, 'Inhoud ' || n, '<verhuisd-' || n || '@coop.nl>' "
                   "FROM generate_series(1, 1000) n",
                   facturen);
    tx.commit();
  }
  const auto end = std::chrono::steady_clock::now() + 30s;
  while (server.received().size() < 30 && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(2ms);
  ASSERT_GE(server.received().size(), 30u) << api.daemon().log();
  const auto patched = api.call("admin", "PATCH", "/api/v1/mailboxes/" + std::to_string(facturen),
                                json::serialize(json::object{{"smtp_port", other.port()}}));
  ASSERT_EQ(patched.status, 200) << patched.body;
  const auto at_patch = server.received().size();
  ASSERT_LT(at_patch, 960u) << "the mailing was nearly through before the change: nothing to prove";

  ASSERT_TRUE(eventually([&] { return count("SELECT count(*) FROM outbox WHERE state = 'sent'") == 1000; }, 60s)) << api.daemon().log();
  // What may still go to the old server after the PATCH committed: the rest of the connection
  // then open (at most 20), and one more if its settings were read just before the commit (20).
  EXPECT_LE(server.received().size(), at_patch + 40);
  EXPECT_GE(other.received().size(), 1000 - (at_patch + 40));
  EXPECT_EQ(server.received().size() + other.received().size(), 1000u);
}

// A row stays due until the claim that takes it commits. Looks at the queue meanwhile (the poll
// runs every 100 ms here) count the connection already open for it and open no other: each one
// would log in, find nothing and say QUIT. The claim is held back by a lock it waits for.
TEST_F(OutboxPlain, AConnectionStillClaimingIsCountedByTheNextLookAtTheQueue) {
  pqxx::connection blocker(api.database_url());
  pqxx::work hold(blocker);
  hold.exec("LOCK TABLE outbox_attachments IN ACCESS EXCLUSIVE MODE");  // the claim reads it; the look at the queue does not
  queue_rows(1, "wacht");
  ASSERT_TRUE(eventually([&] { return server.log().find("ehlo from port") != std::string::npos; }, 10s)) << server.log();
  std::this_thread::sleep_for(1s);  // ten polls while the claim waits
  hold.commit();
  ASSERT_TRUE(eventually([&] { return count("SELECT count(*) FROM outbox WHERE state = 'sent'") == 1; }, 10s)) << api.daemon().log();
  const std::string log = server.log();
  std::size_t ehlos = 0;
  for (auto at = log.find("ehlo from port"); at != std::string::npos; at = log.find("ehlo from port", at + 1)) ++ehlos;
  EXPECT_EQ(ehlos, 1u) << "one connection for one row:\n" << log;
}

class OutboxHangUp : public Outbox {
 protected:
  OutboxHangUp() : Outbox({.pipelining = true, .hang_up_at = 3}) {}
};

// The server drops the first connection at the third message's end of data. That message is
// retried, the one announced behind it and the rest of the session go back untried, and so do the
// rows already taken for the next session: nothing waits for a lease to run out.
TEST_F(OutboxHangUp, ABrokenSessionGivesBackWhatItTookForTheNext) {
  ASSERT_TRUE(patch_mailbox(R"({"send_max_per_minute": 100000, "send_max_per_connection": 5, "send_max_connections": 1})"));
  queue_rows(12, "breuk");
  ASSERT_TRUE(eventually([&] { return count("SELECT count(*) FROM outbox WHERE state = 'sent'") == 12; }, 30s)) << api.daemon().log();
  const std::string log = api.daemon().log();
  EXPECT_NE(log.find("event=outbox_send_failed"), std::string::npos) << log;
  EXPECT_EQ(log.find("event=outbox_recovered"), std::string::npos) << "rows were left to their lease:\n" << log;
  std::set<std::string> ids;
  for (const auto& m : server.received()) ids.insert(parse_message(m.raw).message_id);
  EXPECT_EQ(server.received().size(), 12u);
  EXPECT_EQ(ids.size(), 12u) << "each once: the dropped one was not kept by the server";
  EXPECT_EQ(count("SELECT count(*) FROM outbox WHERE attempts > 1"), 1) << "only the dropped one was tried twice";
}

// Rows another process queues (a second daemon, a script) wake the outbox at their commit
// (store/listener, migration 0014), not at the next poll, which is a minute here.
class OutboxSlowPoll : public OutboxPlain {
 protected:
  OutboxSlowPoll() : OutboxPlain(60000) {}
};

TEST_F(OutboxSlowPoll, RowsQueuedByAnotherProcessAreSentAtOnce) {
  std::this_thread::sleep_for(1s);  // the worker's first look is over: from here on only a wake finds rows
  const auto queued = std::chrono::steady_clock::now();
  queue_rows(3, "elders");
  ASSERT_TRUE(eventually([&] { return count("SELECT count(*) FROM outbox WHERE state = 'sent'") == 3; }, 10s)) << api.daemon().log();
  EXPECT_LT(std::chrono::steady_clock::now() - queued, 5s);
  EXPECT_EQ(server.received().size(), 3u);
}

// A mailing larger than the messages per connection goes on from session to session without a
// new look at the queue (only the poll, a minute away, would give one): each session that ends at
// the limit claims the next one's rows, also when its QUIT went out with its last message.
TEST_F(OutboxSlowPoll, SessionsAtTheLimitChainWithoutWaitingForThePoll) {
  ASSERT_TRUE(patch_mailbox(R"({"send_max_per_minute": 100000, "send_max_per_connection": 5, "send_max_connections": 1})"));
  std::this_thread::sleep_for(1s);
  const auto queued = std::chrono::steady_clock::now();
  queue_rows(23, "keten");
  ASSERT_TRUE(eventually([&] { return count("SELECT count(*) FROM outbox WHERE state = 'sent'") == 23; }, 20s)) << api.daemon().log();
  EXPECT_LT(std::chrono::steady_clock::now() - queued, 10s);
  std::map<int, int> per_connection;
  for (const auto& m : server.received()) ++per_connection[m.client_port];
  EXPECT_EQ(per_connection.size(), 5u) << "five sessions: 5, 5, 5, 5 and 3";
  for (const auto& [port, n] : per_connection) EXPECT_LE(n, 5) << port;
  const std::string log = api.daemon().log();
  std::size_t chained = 0;
  for (auto at = log.find("chained=true"); at != std::string::npos; at = log.find("chained=true", at + 1)) ++chained;
  EXPECT_EQ(chained, 4u) << "each session after the first was started by the one before it:\n" << log;
}

}  // namespace
}  // namespace mailgate
