// Mailgun inbound end to end: the real mailgated serving HTTPS (a test CA), webhooks posted by
// tests/support/mailgun_routes.py, which builds and signs them as Mailgun documents. Stored once,
// linked, retries idempotent, replays and stale or forged signatures refused with 406, no
// measurable timing difference between wrong signatures, the parsed-fields form stored as the
// same message as the MIME form, per-route body limit (413) over [http] max_body_bytes, field
// limit and malformed forms (400), a broken message stored raw, and 503 while PostgreSQL is down
// followed by the retry stored once.
#include <gtest/gtest.h>

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include <cmath>
#include <csignal>
#include <fstream>
#include <iostream>
#include <thread>

#include "tests/support/api_client.hpp"
#include "tests/support/daemon_process.hpp"
#include "tests/support/pg_harness.hpp"
#include "tests/support/smtp_servers.hpp"
#include "util/crypto.hpp"

namespace mailgate {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

const std::string kKey = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";  // Mailgun's documented format
const std::string kOtherKey = "key-0000000000000000000000000000beef";

// A message as a supplier's mail client would send it: text and HTML alternatives, a PDF and a
// file with a non-ASCII name, an encoded-word subject, folded header lines.
const std::string kMessage =
    "Received: from mail.leverancier.test (mail.leverancier.test [192.0.2.10])\r\n"
    "\tby mxa.eu.mailgun.org with ESMTPS id 123; Mon, 30 Nov 2026 10:00:01 +0000\r\n"
    "From: \"Piet Leverancier\" <piet@leverancier.test>\r\n"
    "To: Coop <info@coop.test>, \"Jan\" <jan@elders.test>\r\n"
    "Cc: boekhouding@coop.test\r\n"
    "Subject: =?UTF-8?Q?Factuur_november_=E2=82=AC_120?=\r\n"
    "Date: Mon, 30 Nov 2026 10:00:00 +0100\r\n"
    "Message-ID: <factuur-2026-11@leverancier.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
    "\r\n"
    "--outer\r\n"
    "Content-Type: multipart/alternative; boundary=\"inner\"\r\n"
    "\r\n"
    "--inner\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "Beste Coop,\r\n"
    "\r\n"
    "Hierbij de factuur van =E2=82=AC 120.\r\n"
    "--inner\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "<p>Beste Coop,</p><p>Hierbij de factuur van \xe2\x82\xac 120.</p>\r\n"
    "--inner--\r\n"
    "\r\n"
    "--outer\r\n"
    "Content-Type: application/pdf; name=\"factuur.pdf\"\r\n"
    "Content-Disposition: attachment; filename=\"factuur.pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "JVBERi0xLjQKJcOkw7zDtsOfCjEgMCBvYmoKPDwvVHlwZS9DYXRhbG9nPj4KZW5kb2JqCnRyYWls\r\n"
    "ZXIKPDwvUm9vdCAxIDAgUj4+CiUlRU9GCg==\r\n"
    "--outer\r\n"
    "Content-Type: text/csv\r\n"
    "Content-Disposition: attachment; filename*=UTF-8''overzicht%20%C3%A9%C3%A9n.csv\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "ZGF0dW07YmVkcmFnCjIwMjYtMTEtMzA7MTIwLDAwCg==\r\n"
    "--outer--\r\n";

std::string simple_message(const std::string& subject) {
  return "From: Piet <piet@leverancier.test>\r\nTo: info@coop.test\r\nSubject: " + subject +
         "\r\nDate: Mon, 30 Nov 2026 11:00:00 +0000\r\nMessage-ID: <" + subject + "@leverancier.test>\r\n"
         "Content-Type: text/plain; charset=utf-8\r\n\r\nHallo,\r\n\r\ngroet, Piet\r\n";
}

struct Sent {
  int status = 0;
  std::string body, token, timestamp;
  std::vector<int> statuses;
};

// mailgated over HTTPS on a database; mailboxes and contacts inserted directly.
class MailgunDaemon {
 public:
  MailgunDaemon(const std::string& url, const fs::path& dir, const std::string& extra_toml = "")
      : dir_(dir), certs_(test::make_test_certs(dir, "web", "localhost")), url_(url),
        daemon_(url, "[mailgun]\nwebhook_max_bytes = 2000000\nwebhook_max_fields = 60\n" + extra_toml) {
    daemon_.edit_config("address = \"127.0.0.1\"\n", "address = \"127.0.0.1\"\nmax_body_bytes = 100000\ntls_certificate = \"" +
                                                         certs_.cert.string() + "\"\ntls_key = \"" + certs_.key.string() + "\"\n");
    daemon_.edit_config("connect_timeout_seconds = 2\n", "connect_timeout_seconds = 2\nquery_timeout_seconds = 3\n");
    daemon_.set_ready_check([this] { return curl("/healthz").first == 200; });
    daemon_.start();
    secrets_ = std::make_unique<SecretBox>(SecretBox::from_file(daemon_.dir() / "secrets.key"));
  }

  // GET (or POST a body file) over HTTPS with the test CA; {status, body}.
  std::pair<int, std::string> curl(const std::string& path, const std::string& extra = "") const {
    std::string out;
    test::run_command("curl -s -m 30 --cacert " + certs_.ca.string() + " -w '\\n%{http_code}' " + extra + " https://127.0.0.1:" +
                          std::to_string(daemon_.http_port()) + path + " 2>/dev/null",
                      &out);
    const auto nl = out.rfind('\n');
    if (nl == std::string::npos) return {0, out};
    return {std::atoi(out.c_str() + nl + 1), out.substr(0, nl)};
  }

  // A mailbox with its own webhook signing key; returns {id, path token}.
  std::pair<std::int64_t, std::string> add_mailbox(const std::string& address, const std::string& key = kKey,
                                                   const std::string& incoming = "mailgun") {
    const std::string token = random_token(24);
    pqxx::connection c(url_);
    pqxx::work tx(c);
    const bool first = tx.exec("SELECT 1 FROM mailboxes").empty();
    auto id = tx.exec_params1(
                    "INSERT INTO mailboxes (display_name, address, incoming_type, is_primary, mailgun_domain, mailgun_region, "
                    "mailgun_api_key, mailgun_webhook_key, mailgun_inbound_token) VALUES ('Coop', $1, $2, $3, 'mg.coop.test', 'eu', "
                    "$4, $5, $6) RETURNING id",
                    address, incoming, first, pqxx::binarystring(secrets_->seal("api-key")), pqxx::binarystring(secrets_->seal(key)),
                    token)[0]
                  .as<std::int64_t>();
    tx.commit();
    return {id, token};
  }

  // A Mailgun domain with its own webhook signing key, chosen by `mailbox`.
  std::int64_t add_domain(std::int64_t mailbox, const std::string& key) {
    pqxx::connection c(url_);
    pqxx::work tx(c);
    auto id = tx.exec_params1("INSERT INTO mailgun_domains (domain, webhook_signing_key) VALUES ('mg' || $1 || '.coop.test', $2) RETURNING id",
                              mailbox, pqxx::binarystring(secrets_->seal(key)))[0]
                  .as<std::int64_t>();
    tx.exec_params("UPDATE mailboxes SET mailgun_domain_id = $2 WHERE id = $1", mailbox, id);
    tx.commit();
    return id;
  }

  void exec(const std::string& sql) {
    pqxx::connection c(url_);
    pqxx::work tx(c);
    tx.exec(sql);
    tx.commit();
  }

  std::int64_t add_contact(const std::string& email) {
    pqxx::connection c(url_);
    pqxx::work tx(c);
    auto id = tx.exec1("INSERT INTO contacts (type, first_name) VALUES ('person', 'Piet') RETURNING id")[0].as<std::int64_t>();
    tx.exec_params("INSERT INTO contact_emails (contact_id, address, email_match_key, is_primary, position) VALUES ($1, $2, $2, true, 0)",
                   id, email);
    tx.commit();
    return id;
  }

  std::string write_eml(const std::string& name, const std::string& content) const {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }

  std::string webhook_url(const std::string& token, const std::string& suffix = "/mime") const {
    return "https://127.0.0.1:" + std::to_string(daemon_.http_port()) + "/webhooks/mailgun/" + token + suffix;
  }

  // mailgun_routes.py with `args`; its JSON answer.
  json::object route(const std::string& command, const std::string& args) const {
    std::string out;
    test::run_command("/usr/bin/python3 " MAILGATE_SOURCE_DIR "/tests/support/mailgun_routes.py " + command + " --cafile " +
                          certs_.ca.string() + " " + args + " 2>&1",
                      &out);
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    const auto nl = out.rfind('\n');
    boost::system::error_code ec;
    auto v = json::parse(nl == std::string::npos ? out : out.substr(nl + 1), ec);
    if (ec || !v.is_object()) {
      ADD_FAILURE() << "mailgun_routes.py said: " << out;
      return {};
    }
    return v.as_object();
  }

  Sent send(const std::string& token, const std::string& eml, const std::string& args = "", const std::string& suffix = "/mime",
            const std::string& key = kKey) const {
    const std::string form = suffix == "/mime" ? "mime" : "fields";
    auto o = route("send", "--url " + webhook_url(token, suffix) + " --key " + key + " --eml " + eml + " --form " + form + " " + args);
    Sent s;
    if (o.empty()) return s;
    s.status = static_cast<int>(o.at("status").as_int64());
    s.body = std::string(o.at("body").as_string());
    s.token = std::string(o.at("token").as_string());
    s.timestamp = std::string(o.at("timestamp").as_string());
    for (const auto& v : o.at("statuses").as_array()) s.statuses.push_back(static_cast<int>(v.as_int64()));
    return s;
  }

  std::int64_t count(const std::string& sql) const {
    pqxx::connection c(url_);
    return pqxx::work(c).exec(sql)[0][0].as<std::int64_t>();
  }
  pqxx::result query(const std::string& sql) const {
    pqxx::connection c(url_);
    pqxx::work tx(c);
    return tx.exec(sql);
  }

  test::DaemonProcess& daemon() { return daemon_; }

 private:
  fs::path dir_;
  test::TestCerts certs_;
  std::string url_;
  test::DaemonProcess daemon_;
  std::unique_ptr<SecretBox> secrets_;
};

class MailgunInbound : public ::testing::Test {
 protected:
  MailgunInbound() : dir_(test::temp_dir("mailgun-inbound")), mg_(test::fresh_migrated_database(), dir_) {
    std::tie(mailbox_, token_) = mg_.add_mailbox("info@coop.test");
    contact_ = mg_.add_contact("piet@leverancier.test");
    eml_ = mg_.write_eml("factuur.eml", kMessage);
  }

  fs::path dir_;
  MailgunDaemon mg_;
  std::int64_t mailbox_ = 0, contact_ = 0;
  std::string token_, eml_;
};

TEST_F(MailgunInbound, StoredOnceLinkedRetriesIdempotentReplaysAndForgeriesRefused) {
  // A valid webhook: stored, linked to the contact, its token recorded.
  const Sent first = mg_.send(token_, eml_);
  ASSERT_EQ(first.status, 200) << first.body << mg_.daemon().log();
  EXPECT_EQ(mg_.count("SELECT count(*) FROM messages WHERE source = 'mailgun' AND mailbox_id = " + std::to_string(mailbox_)), 1);
  EXPECT_EQ(mg_.count("SELECT count(*) FROM message_contacts l JOIN messages m ON m.id = l.message_id WHERE l.contact_id = " +
                      std::to_string(contact_)),
            1);
  auto row = mg_.query("SELECT subject, source_key, raw_sha256 FROM messages WHERE source = 'mailgun'");
  EXPECT_EQ(row[0][0].as<std::string>(), "Factuur november \xe2\x82\xac 120");
  EXPECT_EQ(row[0][1].as<std::string>(), first.token);
  EXPECT_EQ(row[0][2].as<std::string>(), sha256_hex(kMessage)) << "body-mime is stored byte-exact";
  EXPECT_EQ(mg_.count("SELECT count(*) FROM attachments"), 2);

  // Mailgun retrying the same webhook (its 200 got lost): 200 again, nothing doubled.
  const Sent retry = mg_.send(token_, eml_, "--token " + first.token + " --timestamp " + first.timestamp + " --repeat 2");
  EXPECT_EQ(retry.statuses, (std::vector<int>{200, 200})) << retry.body;
  EXPECT_EQ(mg_.count("SELECT count(*) FROM messages"), 1);

  // The same token with another message: a replay.
  const std::string other = mg_.write_eml("other.eml", simple_message("other"));
  const Sent replay = mg_.send(token_, other, "--token " + first.token + " --timestamp " + first.timestamp);
  EXPECT_EQ(replay.status, 406) << replay.body;
  EXPECT_NE(replay.body.find("token_replayed"), std::string::npos) << replay.body;
  // ... also through another mailbox's URL.
  auto [second_mailbox, second_token] = mg_.add_mailbox("sales@coop.test");
  EXPECT_EQ(mg_.send(second_token, eml_, "--token " + first.token + " --timestamp " + first.timestamp).status, 406);
  EXPECT_EQ(mg_.count("SELECT count(*) FROM messages"), 1);

  // The time window: 9 hours old is refused, 2 hours old (a late Mailgun retry) accepted.
  const Sent stale = mg_.send(token_, other, "--age " + std::to_string(9 * 3600));
  EXPECT_EQ(stale.status, 406) << stale.body;
  EXPECT_NE(stale.body.find("stale_timestamp"), std::string::npos) << stale.body;
  EXPECT_EQ(mg_.send(token_, other, "--age " + std::to_string(-9 * 3600)).status, 406) << "from the future";
  const Sent late = mg_.send(token_, other, "--age " + std::to_string(2 * 3600));
  EXPECT_EQ(late.status, 200) << late.body;
  EXPECT_EQ(mg_.count("SELECT count(*) FROM messages"), 2);

  // Forged: a wrong signature, a wrong key, no signature; unknown URLs; a mailbox that is not Mailgun's.
  EXPECT_EQ(mg_.send(token_, other, "--corrupt last").status, 406);
  EXPECT_EQ(mg_.send(token_, other, "--corrupt first").status, 406);
  EXPECT_EQ(mg_.send(token_, other, "", "/mime", kOtherKey).status, 406);
  EXPECT_EQ(mg_.send("NoSuchMailboxToken123456789012", other).status, 406);
  EXPECT_EQ(mg_.send("not.a.token", other).status, 406);
  auto [imap_mailbox, imap_token] = mg_.add_mailbox("imap@coop.test", kKey, "imap");
  EXPECT_EQ(mg_.send(imap_token, other).status, 406);
  EXPECT_EQ(mg_.curl("/webhooks/mailgun/" + token_ + "/mime", "-X POST -H 'Content-Type: application/x-www-form-urlencoded' "
                                                             "--data-binary 'body-mime=x'")
                .first,
            406)
      << "no signature at all";
  EXPECT_EQ(mg_.count("SELECT count(*) FROM messages"), 2);
  EXPECT_EQ(mg_.count("SELECT count(*) FROM mailgun_webhook_tokens"), 2);

  // One log line per webhook, no secrets in it.
  const std::string log = mg_.daemon().log();
  EXPECT_NE(log.find("event=mailgun_webhook"), std::string::npos);
  EXPECT_NE(log.find("result=stored"), std::string::npos);
  EXPECT_NE(log.find("result=duplicate"), std::string::npos);
  EXPECT_NE(log.find("reason=bad_signature"), std::string::npos);
  EXPECT_EQ(log.find(kKey), std::string::npos);
  EXPECT_EQ(log.find(first.token), std::string::npos);
  EXPECT_EQ(log.find(token_), std::string::npos);
  (void)second_mailbox;
  (void)imap_mailbox;
}

TEST_F(MailgunInbound, ParsedFieldsFormGivesTheSameStoredMessageAsTheMimeForm) {
  auto [fields_mailbox, fields_token] = mg_.add_mailbox("fields@coop.test");
  const Sent mime = mg_.send(token_, eml_);
  ASSERT_EQ(mime.status, 200) << mime.body << mg_.daemon().log();
  // The parsed form (multipart: it has attachments), retried once: rebuilt to the same bytes.
  const Sent fields = mg_.send(fields_token, eml_, "--repeat 2", "/messages");
  EXPECT_EQ(fields.statuses, (std::vector<int>{200, 200})) << fields.body << mg_.daemon().log();
  // The route URL without a suffix, urlencoded (no attachments).
  const std::string plain = mg_.write_eml("plain.eml", simple_message("plain"));
  ASSERT_EQ(mg_.send(token_, plain).status, 200);
  ASSERT_EQ(mg_.send(fields_token, plain, "", "").status, 200);
  ASSERT_EQ(mg_.count("SELECT count(*) FROM messages"), 4);

  const std::string columns =
      "subject, from_name, from_address, addresses::text, text_body, html_body, header_message_id, sent_at::text, "
      "array_length(parse_warnings, 1) IS NULL, (SELECT count(*) FROM message_contacts l WHERE l.message_id = m.id), "
      "(SELECT string_agg(concat_ws('|', position, filename, content_type, inline_part, size, sha256), ',' ORDER BY position) "
      "FROM attachments a WHERE a.message_id = m.id)";
  for (const std::string subject_like : {"Factuur%", "plain"}) {
    auto a = mg_.query("SELECT " + columns + " FROM messages m WHERE mailbox_id = " + std::to_string(mailbox_) + " AND subject LIKE '" +
                       subject_like + "'");
    auto b = mg_.query("SELECT " + columns + " FROM messages m WHERE mailbox_id = " + std::to_string(fields_mailbox) +
                       " AND subject LIKE '" + subject_like + "'");
    ASSERT_EQ(a.size(), 1u);
    ASSERT_EQ(b.size(), 1u);
    for (pqxx::row::size_type i = 0; i < a[0].size(); ++i)
      EXPECT_EQ(std::string(a[0][i].is_null() ? "NULL" : a[0][i].c_str()), std::string(b[0][i].is_null() ? "NULL" : b[0][i].c_str()))
          << subject_like << ": column " << a.column_name(i);
  }
  auto attachments = mg_.query("SELECT filename FROM attachments a JOIN messages m ON m.id = a.message_id WHERE m.mailbox_id = " +
                               std::to_string(fields_mailbox) + " ORDER BY position");
  ASSERT_EQ(attachments.size(), 2u);
  EXPECT_EQ(attachments[1][0].as<std::string>(), "overzicht \xc3\xa9\xc3\xa9n.csv");
}

TEST_F(MailgunInbound, BodyLimitOfItsOwnFieldLimitMalformedFormsAndBrokenMessages) {
  // Over [http] max_body_bytes (100 KB here) but within [mailgun] webhook_max_bytes (2 MB).
  EXPECT_EQ(mg_.send(token_, eml_, "--filler 500000").status, 200);
  // Over webhook_max_bytes: 413 as soon as the Content-Length is known, before the body is read.
  const std::string big_file = mg_.write_eml("big.form", std::string(2100000, 'x'));
  auto big = mg_.curl("/webhooks/mailgun/" + token_ + "/mime", "-X POST -H 'Expect: 100-continue' "
                      "-H 'Content-Type: multipart/form-data; boundary=b' --data-binary @" + big_file);
  EXPECT_EQ(big.first, 413) << big.second;
  EXPECT_NE(big.second.find("body_too_large"), std::string::npos);
  // ... and a sender that does not wait for 100 Continue still reads its 413 (the body is drained,
  // not answered with a reset).
  const Sent big_posted = mg_.send(token_, eml_, "--filler 2100000");
  EXPECT_EQ(big_posted.status, 413) << big_posted.body;
  // Other routes keep [http] max_body_bytes.
  const std::string body_file = mg_.write_eml("big.json", "{\"email\": \"" + std::string(200000, 'a') + "\"}");
  EXPECT_EQ(mg_.curl("/api/v1/session", "-X POST -H 'Content-Type: application/json' --data-binary @" + body_file).first, 413);
  // Too many fields: 400.
  const Sent many = mg_.send(token_, eml_, "--extra-fields 70");
  EXPECT_EQ(many.status, 400) << many.body;
  EXPECT_NE(many.body.find("too_many_fields"), std::string::npos);
  // A form that is not one: 400.
  const std::string broken_form = mg_.write_eml("broken.form", "--b\r\nContent-Disposition: form-data; name=\"timestamp\"\r\n\r\n1");
  auto r = mg_.curl("/webhooks/mailgun/" + token_ + "/mime",
                    "-X POST -H 'Content-Type: multipart/form-data; boundary=b' --data-binary @" + broken_form);
  EXPECT_EQ(r.first, 400) << r.second;
  EXPECT_EQ(mg_.curl("/webhooks/mailgun/" + token_ + "/mime", "-X POST -H 'Content-Type: application/json' --data-binary '{}'").first, 400);
  // A message GMime cannot make sense of: stored raw, byte-exact.
  const std::string garbage("\x00\x01\x02 this is no message \xff\xfe\r\n\r\n--", 31);
  const std::string garbage_file = mg_.write_eml("garbage.eml", garbage);
  const Sent g = mg_.send(token_, garbage_file);
  EXPECT_EQ(g.status, 200) << g.body;
  EXPECT_EQ(mg_.count("SELECT count(*) FROM messages WHERE raw_sha256 = '" + sha256_hex(garbage) + "' AND raw = decode('" +
                      hex_encode(garbage) + "', 'hex')"),
            1);
  EXPECT_EQ(mg_.count("SELECT count(*) FROM messages"), 2);
}

TEST_F(MailgunInbound, WrongSignaturesTakeNoMeasurablyDifferentTime) {
  const std::string plain = mg_.write_eml("plain.eml", simple_message("timing"));
  auto o = mg_.route("timing", "--url " + mg_.webhook_url(token_) + " --key " + kKey + " --eml " + plain + " --count 300");
  ASSERT_FALSE(o.empty());
  const double first = o.at("first_ms").to_number<double>(), last = o.at("last_ms").to_number<double>();
  EXPECT_EQ(json::serialize(o.at("statuses")), "[406]");
  std::cout << "median ms, wrong first hex digit: " << first << ", wrong last hex digit: " << last << "\n";
  // What CRYPTO_memcmp could leak is nanoseconds; requests vary by milliseconds. A difference
  // beyond this would be a lookup or comparison that depends on the signature.
  EXPECT_LT(std::abs(first - last), std::max(2.0, 0.5 * std::min(first, last)));
  EXPECT_EQ(mg_.count("SELECT count(*) FROM messages"), 0);
}

TEST_F(MailgunInbound, TheMailboxsMailgunDomainKeyVerifiesFallingBackToItsOwn) {
  const std::string plain = mg_.write_eml("plain.eml", simple_message("domain"));
  const auto domain = mg_.add_domain(mailbox_, kOtherKey);
  EXPECT_EQ(mg_.send(token_, plain, "", "/mime", kKey).status, 406) << "the domain's key, not the mailbox's own";
  EXPECT_EQ(mg_.send(token_, plain, "", "/mime", kOtherKey).status, 200);
  mg_.exec("UPDATE mailgun_domains SET active = false WHERE id = " + std::to_string(domain));
  EXPECT_EQ(mg_.send(token_, plain, "", "/mime", kOtherKey).status, 406) << "an inactive domain's key is not used";
  EXPECT_EQ(mg_.send(token_, plain, "", "/mime", kKey).status, 200) << "the mailbox's own key is the fallback";
  EXPECT_EQ(mg_.count("SELECT count(*) FROM messages"), 2);
}

TEST(MailgunDomains, ConfiguredOnceChosenPerMailboxSecretsWriteOnlyAudited) {
  test::ApiFixture api("[security]\nallow_private_hosts = true\n");
  auto d = api.call("admin", "POST", "/api/v1/mailgun-domains",
                    R"({"domain": "MG.Coop.test", "region": "us", "api_key": "key-geheim-1", "webhook_signing_key": "whk-geheim-2"})");
  ASSERT_EQ(d.status, 201) << d.body;
  EXPECT_EQ(d.json.at("domain").as_string(), "mg.coop.test");
  EXPECT_EQ(d.json.at("region").as_string(), "us");
  EXPECT_TRUE(d.json.at("api_key_set").as_bool());
  EXPECT_TRUE(d.json.at("webhook_signing_key_set").as_bool());
  EXPECT_EQ(d.body.find("geheim"), std::string::npos);
  const std::string id = std::to_string(d.json.at("id").as_int64());
  EXPECT_EQ(api.call("admin", "POST", "/api/v1/mailgun-domains", R"({"domain": "mg.coop.test"})").status, 409);
  EXPECT_EQ(api.call("admin", "POST", "/api/v1/mailgun-domains", R"({"domain": "mg.other.test", "region": "asia"})").status, 422);
  EXPECT_EQ(api.call("admin", "POST", "/api/v1/mailgun-domains", R"({"region": "eu"})").status, 422);
  EXPECT_EQ(api.call("admin", "POST", "/api/v1/mailgun-domains", R"({"domain": "x.test", "api_key": ""})").status, 422);
  EXPECT_EQ(api.call("staff", "GET", "/api/v1/mailgun-domains").status, 403);
  EXPECT_EQ(api.call("staff", "POST", "/api/v1/mailgun-domains", R"({"domain": "s.test"})").status, 403);

  // A mailbox chooses the domain: no Mailgun keys of its own needed.
  auto m = api.call("admin", "POST", "/api/v1/mailboxes",
                    R"({"display_name": "Facturen", "address": "facturen@coop.test", "incoming_type": "mailgun", "outgoing_type": "mailgun",
                        "mailgun_domain_id": )" + id + "}");
  ASSERT_EQ(m.status, 201) << m.body;
  EXPECT_EQ(m.json.at("mailgun_domain_id").as_int64(), d.json.at("id").as_int64());
  EXPECT_EQ(api.call("admin", "POST", "/api/v1/mailboxes",
                     R"({"display_name": "X", "address": "x@coop.test", "incoming_type": "mailgun", "mailgun_domain_id": 999999})")
                .status,
            422);
  EXPECT_EQ(api.call("admin", "POST", "/api/v1/mailboxes", R"({"display_name": "Y", "address": "y@coop.test", "incoming_type": "mailgun"})")
                .status,
            422)
      << "without a domain the mailbox needs its own";
  auto list = api.call("admin", "GET", "/api/v1/mailgun-domains");
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(json::serialize(list.json.at("items").as_array()[0].at("mailboxes")), "[" + std::to_string(m.json.at("id").as_int64()) + "]");

  auto patched = api.call("admin", "PATCH", "/api/v1/mailgun-domains/" + id, R"({"region": "eu", "webhook_signing_key": "whk-geheim-3"})");
  ASSERT_EQ(patched.status, 200) << patched.body;
  EXPECT_EQ(patched.json.at("region").as_string(), "eu");
  EXPECT_EQ(api.call("admin", "GET", "/api/v1/mailgun-domains/999999").status, 404);
  auto off = api.call("admin", "PATCH", "/api/v1/mailgun-domains/" + id, R"({"active": false})");
  EXPECT_EQ(off.status, 200);
  EXPECT_FALSE(off.json.at("active").as_bool());

  pqxx::connection c(api.database_url());
  pqxx::work tx(c);
  auto audit = tx.exec("SELECT action, changes::text FROM audit_log WHERE entity = 'mailgun_domain' ORDER BY id");
  ASSERT_EQ(audit.size(), 3u);
  EXPECT_EQ(audit[0][0].as<std::string>(), "create");
  EXPECT_EQ(audit[2][0].as<std::string>(), "deactivate");
  for (const auto& a : audit) EXPECT_EQ(std::string(a[1].c_str()).find("geheim"), std::string::npos) << a[1].c_str();
  EXPECT_NE(std::string(audit[1][1].c_str()).find(R"("webhook_signing_key": {"new": "***", "old": "***"})"), std::string::npos)
      << audit[1][1].c_str();
  auto sealed = tx.exec1("SELECT api_key, webhook_signing_key FROM mailgun_domains");
  EXPECT_EQ(pqxx::binarystring(sealed[0]).str().find("geheim"), std::string::npos);
  EXPECT_EQ(pqxx::binarystring(sealed[1]).str().find("geheim"), std::string::npos);
}

TEST(MailgunInboundDatabase, PostgresDownGives503ThenTheRetryIsStoredOnce) {
  const fs::path dir = test::temp_dir("mailgun-pg");
  test::PgCluster cluster(dir / "pg");
  MailgunDaemon mg(cluster.url(), dir);
  auto [mailbox, token] = mg.add_mailbox("info@coop.test");
  const std::string eml = mg.write_eml("factuur.eml", kMessage);
  cluster.stop();
  const Sent down = mg.send(token, eml);
  EXPECT_EQ(down.status, 503) << down.body << mg.daemon().log();
  cluster.start();
  // Mailgun's retry: the same request, until it gets its 200.
  int status = 0;
  for (int i = 0; i < 30 && status != 200; ++i) {
    status = mg.send(token, eml, "--token " + down.token + " --timestamp " + down.timestamp).status;
    if (status != 200) std::this_thread::sleep_for(500ms);
  }
  EXPECT_EQ(status, 200) << mg.daemon().log();
  EXPECT_EQ(mg.send(token, eml, "--token " + down.token + " --timestamp " + down.timestamp).status, 200);
  EXPECT_EQ(mg.count("SELECT count(*) FROM messages WHERE mailbox_id = " + std::to_string(mailbox)), 1);
  EXPECT_EQ(mg.daemon().stop(SIGTERM), 0);
}

}  // namespace
}  // namespace mailgate
