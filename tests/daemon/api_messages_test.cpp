// /api/v1/messages against a running daemon. Messages enter through the real ingest pipeline
// (protocol/mime + store/ingest, as every source uses it) straight into the test's database.
#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include <thread>

#include "protocol/mime.hpp"
#include "store/ingest.hpp"
#include "tests/support/api_client.hpp"

namespace mailgate {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

std::string plain(const std::string& from, const std::string& to, const std::string& subject, const std::string& body = "Hallo\r\n") {
  return "From: " + from + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\nMessage-ID: <" + subject +
         "@example.nl>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body;
}

const std::string kWithAttachment =
    "From: Leverancier <factuur@leverancier.nl>\r\nTo: info@coop.nl\r\nSubject: =?utf-8?q?Factuur_=E2=82=AC_12?=\r\n"
    "Message-ID: <f12@leverancier.nl>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
    "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nZie bijlage.\r\n"
    "--b\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.html\r\n"
    "Content-Transfer-Encoding: base64\r\n\r\nPHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\r\n"
    "--b\r\nContent-Type: application/pdf; name=\"factuur 12.pdf\"\r\nContent-Disposition: attachment; filename=\"factuur 12.pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcOkw7zDtsOfCg==\r\n--b--\r\n";

class ApiMessages : public ::testing::Test {
 protected:
  ApiMessages() {
    pqxx::connection c(api.database_url());
    pqxx::work tx(c);
    mailbox = tx.exec("INSERT INTO mailboxes (display_name, address, is_primary, active) VALUES ('Info', 'info@coop.nl', true, false) RETURNING id")[0][0]
                  .as<std::int64_t>();
    other = tx.exec("INSERT INTO mailboxes (display_name, address, active) VALUES ('Ledenadministratie', 'leden@coop.nl', false) RETURNING id")[0][0]
                .as<std::int64_t>();
    tx.exec_params("INSERT INTO mailbox_exclusions (mailbox_id, kind, value) VALUES ($1, 'domain', 'intern.coop.nl')", mailbox);
    for (auto box : {mailbox, other})  // staff handle the mail of both mailboxes; readonly of none (yet)
      tx.exec_params("INSERT INTO mailbox_users (mailbox_id, user_id) VALUES ($1, $2)", box, api.user_id("staff"));
    tx.commit();
  }

  std::int64_t ingest(std::int64_t box, const std::string& raw, const std::string& key) {
    pqxx::connection c(api.database_url());
    pqxx::work tx(c);
    InboundMessage in;
    in.mailbox_id = box;
    in.source = "imap";
    in.source_key = key;
    in.raw = raw;
    auto id = ingest_message(tx, in, parse_message(raw), load_link_policy(tx, box)).message_id;
    tx.commit();
    return id;
  }
  test::ApiResult get(const std::string& who, const std::string& path) { return api.call(who, "GET", path); }
  std::vector<std::int64_t> ids(const test::ApiResult& r) {
    std::vector<std::int64_t> out;
    EXPECT_EQ(r.status, 200) << r.body;
    if (r.status == 200)
      for (const auto& m : r.json.at("items").as_array()) out.push_back(m.at("id").as_int64());
    return out;
  }
  std::string audit_actions(std::int64_t message) {
    auto r = get("admin", "/api/v1/audit?entity=message&entity_id=" + std::to_string(message));
    std::string out;
    for (const auto& e : r.json.at("items").as_array()) out += std::string(e.at("action").as_string()) + " ";
    return out;
  }

  test::ApiFixture api;
  std::int64_t mailbox = 0, other = 0;
};

TEST_F(ApiMessages, ListGetRawAndAttachments) {
  const auto a = ingest(mailbox, plain("Jan <jan@example.nl>", "info@coop.nl", "eerste"), "1:1");
  const auto b = ingest(mailbox, kWithAttachment, "1:2");
  const auto c = ingest(other, plain("piet@example.nl", "leden@coop.nl", "ander"), "1:1");

  EXPECT_EQ(ids(get("admin", "/api/v1/messages")), (std::vector<std::int64_t>{c, b, a})) << "newest first";
  EXPECT_EQ(ids(get("admin", "/api/v1/mailboxes/" + std::to_string(mailbox) + "/messages")), (std::vector<std::int64_t>{b, a}));
  EXPECT_EQ(ids(get("admin", "/api/v1/messages?q=FACTUUR")), (std::vector<std::int64_t>{b})) << "subject, case-insensitive";
  EXPECT_EQ(ids(get("admin", "/api/v1/messages?q=piet%40")), (std::vector<std::int64_t>{c})) << "sender address";
  EXPECT_EQ(ids(get("admin", "/api/v1/messages?since=2000-01-01T00:00:00Z&until=2001-01-01T00:00:00Z")).size(), 0u);
  EXPECT_EQ(ids(get("admin", "/api/v1/messages?since=2000-01-01T00:00:00Z")).size(), 3u);
  auto bad = get("admin", "/api/v1/messages?since=gisteren");
  EXPECT_EQ(bad.status, 422);
  EXPECT_EQ(bad.json.at("error").at("field").as_string(), "since");
  EXPECT_EQ(get("admin", "/api/v1/messages?folder=trash").json.at("error").at("field").as_string(), "folder");
  EXPECT_EQ(get("admin", "/api/v1/mailboxes/999999/messages").status, 404);

  // Paging: two pages of newest-first ids, no overlap.
  auto first = get("admin", "/api/v1/messages?limit=2");
  EXPECT_EQ(ids(first), (std::vector<std::int64_t>{c, b}));
  const std::string cursor(first.json.at("next_cursor").as_string());
  auto second = get("admin", "/api/v1/messages?limit=2&cursor=" + cursor);
  EXPECT_EQ(ids(second), (std::vector<std::int64_t>{a}));
  EXPECT_TRUE(second.json.at("next_cursor").is_null());

  auto m = get("readonly", "/api/v1/messages/" + std::to_string(b));
  ASSERT_EQ(m.status, 404) << "a user sees only the mailboxes linked to them";
  ASSERT_EQ(api.call("admin", "PUT", "/api/v1/mailboxes/" + std::to_string(mailbox) + "/users",
                     R"({"users": [)" + std::to_string(api.user_id("readonly")) + "]}")
                .status,
            200);
  EXPECT_EQ(ids(get("readonly", "/api/v1/messages")), (std::vector<std::int64_t>{b, a}));
  m = get("readonly", "/api/v1/messages/" + std::to_string(b));
  ASSERT_EQ(m.status, 200) << m.body;
  EXPECT_EQ(m.json.at("subject").as_string(), "Factuur € 12");
  EXPECT_EQ(m.json.at("from").at("address").as_string(), "factuur@leverancier.nl");
  EXPECT_EQ(m.json.at("text_body").as_string(), "Zie bijlage.");
  EXPECT_EQ(m.json.at("folder").as_string(), "inbox");
  EXPECT_EQ(m.json.at("status").as_string(), "unread");
  EXPECT_EQ(m.json.at("attachment_count").as_int64(), 2);
  const auto& attachments = m.json.at("attachments").as_array();
  ASSERT_EQ(attachments.size(), 2u) << m.body;
  EXPECT_EQ(attachments[0].at("filename").as_string(), "résumé.html");
  EXPECT_EQ(attachments[1].at("filename").as_string(), "factuur 12.pdf");
  EXPECT_EQ(attachments[1].at("size").as_int64(), 19);

  auto raw = get("readonly", "/api/v1/messages/" + std::to_string(b) + "/raw");
  EXPECT_EQ(raw.status, 200);
  EXPECT_EQ(raw.body, kWithAttachment) << "byte-exact";
  EXPECT_NE(raw.headers.find("Content-Type: message/rfc822"), std::string::npos) << raw.headers;

  const auto html_id = attachments[0].at("id").as_int64(), pdf_id = attachments[1].at("id").as_int64();
  auto pdf = get("readonly", "/api/v1/messages/" + std::to_string(b) + "/attachments/" + std::to_string(pdf_id));
  EXPECT_EQ(pdf.status, 200);
  EXPECT_EQ(pdf.body, std::string("%PDF-1.4\n%\xc3\xa4\xc3\xbc\xc3\xb6\xc3\x9f\n"));
  EXPECT_NE(pdf.headers.find("Content-Type: application/pdf"), std::string::npos) << pdf.headers;
  EXPECT_NE(pdf.headers.find("filename=\"factuur 12.pdf\""), std::string::npos) << pdf.headers;
  auto html = get("readonly", "/api/v1/messages/" + std::to_string(b) + "/attachments/" + std::to_string(html_id));
  EXPECT_EQ(html.body, "<script>alert(1)</script>");
  EXPECT_NE(html.headers.find("Content-Disposition: attachment; filename=\"r__sum__.html\"; filename*=UTF-8''r%C3%A9sum%C3%A9.html"),
            std::string::npos)
      << html.headers;
  EXPECT_NE(html.headers.find("Content-Security-Policy: sandbox"), std::string::npos) << "an HTML attachment never runs in our origin";
  EXPECT_NE(html.headers.find("X-Content-Type-Options: nosniff"), std::string::npos);
  EXPECT_EQ(get("readonly", "/api/v1/messages/" + std::to_string(a) + "/attachments/" + std::to_string(pdf_id)).status, 404)
      << "an attachment is found only through its own message";
  EXPECT_EQ(get("readonly", "/api/v1/messages/" + std::to_string(c) + "/raw").status, 404);
}

TEST_F(ApiMessages, HandlingIsValidatedAndAudited) {
  const auto id = ingest(mailbox, plain("jan@example.nl", "info@coop.nl", "behandelen"), "1:1");
  const std::string path = "/api/v1/messages/" + std::to_string(id);
  struct Bad {
    std::string body, field;
  };
  for (const auto& bad : std::vector<Bad>{{R"({"status": "gelezen"})", "status"},
                                          {R"({"folder": "sent"})", "folder"},
                                          {R"({"folder": "prullenbak"})", "folder"},
                                          {R"({"responsible_user_id": 999999})", "responsible_user_id"},
                                          {R"({"responsible_user_id": "1"})", "responsible_user_id"},
                                          {R"({"responsible_team": "Team\r\nBcc: x@evil.nl"})", "responsible_team"},
                                          {R"({"colour": "red"})", "colour"}}) {
    auto r = api.call("staff", "PATCH", path, bad.body);
    EXPECT_EQ(r.status, 422) << bad.body << " -> " << r.body;
    if (r.status == 422) {
      EXPECT_EQ(r.json.at("error").at("field").as_string(), bad.field) << bad.body;
    }
  }
  EXPECT_EQ(audit_actions(id), "") << "refused changes change nothing";

  auto r = api.call("staff", "PATCH", path,
                    R"({"status": "in_progress", "responsible_user_id": )" + std::to_string(api.user_id("staff")) +
                        R"(, "responsible_team": "  Backoffice "})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.at("status").as_string(), "in_progress");
  EXPECT_EQ(r.json.at("responsible_user_id").as_int64(), api.user_id("staff"));
  EXPECT_EQ(r.json.at("responsible_team").as_string(), "Backoffice");
  EXPECT_EQ(api.call("readonly", "PATCH", path, R"({"status": "read"})").status, 403);

  // Remove (soft), list it only under folder=removed, restore.
  EXPECT_EQ(api.call("staff", "DELETE", path).status, 204);
  EXPECT_EQ(ids(get("admin", "/api/v1/messages")).size(), 0u);
  auto removed = get("admin", "/api/v1/messages?folder=removed");
  ASSERT_EQ(ids(removed), (std::vector<std::int64_t>{id}));
  EXPECT_FALSE(removed.json.at("items").as_array()[0].at("removed_at").is_null());
  r = api.call("staff", "PATCH", path, R"({"folder": "inbox", "responsible_user_id": null})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(r.json.at("removed_at").is_null());
  EXPECT_TRUE(r.json.at("responsible_user_id").is_null());
  EXPECT_EQ(ids(get("admin", "/api/v1/messages")), (std::vector<std::int64_t>{id}));

  EXPECT_EQ(audit_actions(id), "update remove restore ");
  auto audit = get("admin", "/api/v1/audit?entity=message&entity_id=" + std::to_string(id));
  const auto& first = audit.json.at("items").as_array()[0];
  EXPECT_EQ(first.at("actor_id").as_int64(), api.user_id("staff"));
  EXPECT_EQ(first.at("changes").at("status").at("old").as_string(), "unread");
  EXPECT_EQ(first.at("changes").at("status").at("new").as_string(), "in_progress");
}

TEST_F(ApiMessages, LinkingByHandAndWhenAContactGainsAnAddress) {
  const auto early = ingest(mailbox, plain("Marie <Marie@Example.NL>", "info@coop.nl", "vroeg"), "1:1");
  const auto internal = ingest(mailbox, plain("marie@intern.coop.nl", "info@coop.nl", "intern"), "1:2");
  const auto elsewhere = ingest(other, plain("marie@intern.coop.nl", "leden@coop.nl", "ander"), "1:1");
  EXPECT_EQ(ids(get("admin", "/api/v1/messages?unlinked=true")).size(), 3u);

  auto contact = api.call("staff", "POST", "/api/v1/contacts", R"({"type": "person", "first_name": "Marie", "last_name": "Jansen",
      "emails": [{"address": "marie@example.nl"}]})");
  ASSERT_EQ(contact.status, 201) << contact.body;
  const auto cid = contact.json.at("id").as_int64();
  const std::string contact_path = "/api/v1/contacts/" + std::to_string(cid) + "/messages";
  EXPECT_EQ(ids(get("admin", contact_path)), (std::vector<std::int64_t>{early})) << "the new contact's address linked the earlier message";

  auto put = api.call("staff", "PUT", "/api/v1/contacts/" + std::to_string(cid) + "/emails",
                      R"({"emails": [{"address": "marie@example.nl", "primary": true}, {"address": "MARIE@intern.coop.nl"}]})");
  ASSERT_EQ(put.status, 200) << put.body;
  EXPECT_EQ(ids(get("admin", contact_path)), (std::vector<std::int64_t>{elsewhere, early}))
      << "a gained address links, except where the message's mailbox excludes its domain";
  EXPECT_EQ(ids(get("admin", "/api/v1/messages?unlinked=true")), (std::vector<std::int64_t>{internal}));

  // By hand: link the excluded one, unlink it again; both audited.
  const std::string path = "/api/v1/messages/" + std::to_string(internal);
  auto linked = api.call("staff", "POST", path + "/contacts", R"({"contact_id": )" + std::to_string(cid) + "}");
  ASSERT_EQ(linked.status, 200) << linked.body;
  ASSERT_EQ(linked.json.at("links").as_array().size(), 1u);
  EXPECT_EQ(linked.json.at("links").as_array()[0].at("linked_by").as_string(), "user");
  EXPECT_EQ(linked.json.at("links").as_array()[0].at("name").as_string(), "Marie Jansen");
  EXPECT_EQ(api.call("staff", "POST", path + "/contacts", R"({"contact_id": 999999})").status, 422);
  EXPECT_EQ(api.call("staff", "DELETE", path + "/contacts/" + std::to_string(cid)).status, 200);
  EXPECT_EQ(api.call("staff", "DELETE", path + "/contacts/" + std::to_string(cid)).status, 404);
  EXPECT_EQ(audit_actions(internal), "link unlink ");
}

TEST(ApiMessagesPurge, RemovedMessagesArePurgedAfterTheRetention) {
  test::ApiFixture api("[messages]\nretention_days = 0\npurge_interval_seconds = 1\n");
  std::int64_t keep = 0, gone = 0;
  {
    pqxx::connection c(api.database_url());
    pqxx::work tx(c);
    auto box = tx.exec("INSERT INTO mailboxes (display_name, address, is_primary, active) VALUES ('Info', 'info@coop.nl', true, false) RETURNING id")[0][0]
                   .as<std::int64_t>();
    for (auto* target : {&keep, &gone}) {
      InboundMessage in;
      in.mailbox_id = box;
      in.source = "imap";
      in.source_key = target == &keep ? "1:1" : "1:2";
      in.raw = kWithAttachment + (target == &keep ? "" : " ");
      *target = ingest_message(tx, in, parse_message(in.raw), load_link_policy(tx, box)).message_id;
    }
    tx.commit();
  }
  ASSERT_EQ(api.call("admin", "DELETE", "/api/v1/messages/" + std::to_string(gone)).status, 204);
  const auto count = [&](const std::string& sql) {
    pqxx::connection c(api.database_url());
    return pqxx::work(c).exec(sql)[0][0].as<int>();
  };
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (count("SELECT count(*) FROM messages") != 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(100ms);
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE id = " + std::to_string(keep)), 1);
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE id = " + std::to_string(gone)), 0);
  EXPECT_EQ(count("SELECT count(*) FROM attachments WHERE message_id = " + std::to_string(gone)), 0);
  EXPECT_EQ(count("SELECT count(*) FROM attachments WHERE message_id = " + std::to_string(keep)), 2);
  auto audit = api.call("admin", "GET", "/api/v1/audit?entity=message&entity_id=" + std::to_string(gone) + "&actor_kind=daemon");
  ASSERT_EQ(audit.json.at("items").as_array().size(), 1u) << audit.body;
  EXPECT_EQ(audit.json.at("items").as_array()[0].at("action").as_string(), "purge");
  EXPECT_EQ(api.call("admin", "GET", "/api/v1/messages/" + std::to_string(gone)).status, 404);
}

}  // namespace
}  // namespace mailgate
