// store/ingest: the durable step of the ingest pipeline, against a real PostgreSQL.
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include "protocol/mime.hpp"
#include "store/ingest.hpp"
#include "tests/support/pg_harness.hpp"

namespace mailgate {
namespace {

class Ingest : public ::testing::Test {
 protected:
  void SetUp() override {
    pqxx::work tx(conn);
    mailbox = tx.exec1("INSERT INTO mailboxes (display_name, address, is_primary) VALUES ('Info', 'info@coop.nl', true) RETURNING id")[0]
                  .as<std::int64_t>();
    tx.exec_params("INSERT INTO mailbox_exclusions (mailbox_id, kind, value) VALUES ($1, 'domain', 'nieuwsbrief.nl')", mailbox);
    jan = add_contact(tx, "Jan", "jan@klant.nl");
    bedrijf = add_contact(tx, "Bedrijf", "Info@Bedrijf.nl");
    nieuws = add_contact(tx, "Nieuws", "redactie@nieuwsbrief.nl");
    tx.commit();
  }
  static std::int64_t add_contact(pqxx::work& tx, const std::string& name, const std::string& email) {
    auto id = tx.exec_params1("INSERT INTO contacts (type, first_name) VALUES ('person', $1) RETURNING id", name)[0].as<std::int64_t>();
    tx.exec_params("INSERT INTO contact_emails (contact_id, address, email_match_key, is_primary, position) VALUES ($1, $2, lower($2), true, 0)", id, email);
    return id;
  }
  IngestOutcome ingest(const std::string& raw, const std::string& key, bool by_content = false) {
    pqxx::work tx(conn);
    InboundMessage in;
    in.mailbox_id = mailbox;
    in.source = "imap";
    in.source_key = key;
    in.raw = raw;
    in.dedupe_by_content = by_content;
    auto out = ingest_message(tx, in, parse_message(raw), load_link_policy(tx, mailbox));
    tx.commit();
    return out;
  }
  int count(const std::string& sql) { return pqxx::work(conn).exec1(sql)[0].as<int>(); }

  pqxx::connection conn{test::fresh_migrated_database()};
  std::int64_t mailbox = 0, jan = 0, bedrijf = 0, nieuws = 0;
};

const std::string kInvoice =
    "Message-ID: <f1@klant.nl>\r\nFrom: Jan <jan@klant.nl>\r\nTo: info@coop.nl\r\nCc: redactie@nieuwsbrief.nl\r\n"
    "Subject: Factuur\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n\r\nZie bijlage.\r\n--b\r\nContent-Type: application/pdf\r\n"
    "Content-Disposition: attachment; filename=factuur.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n";

TEST_F(Ingest, StoresRawFieldsAttachmentsAndLinks) {
  auto out = ingest(kInvoice, "7:1");
  EXPECT_FALSE(out.duplicate);
  EXPECT_EQ(out.contacts, (std::set<std::int64_t>{jan})) << "own address and excluded domain are not linked";
  pqxx::work tx(conn);
  auto m = tx.exec_params1("SELECT raw, subject, from_address, header_message_id, text_body, raw_size FROM messages WHERE id = $1", out.message_id);
  EXPECT_EQ(pqxx::binarystring(m[0]).str(), kInvoice) << "byte-exact";
  EXPECT_EQ(m[1].as<std::string>(), "Factuur");
  EXPECT_EQ(m[2].as<std::string>(), "jan@klant.nl");
  EXPECT_EQ(m[3].as<std::string>(), "f1@klant.nl");
  EXPECT_EQ(m[4].as<std::string>(), "Zie bijlage.") << "the CRLF before a boundary belongs to the boundary";
  EXPECT_EQ(m[5].as<std::size_t>(), kInvoice.size());
  auto a = tx.exec_params1("SELECT filename, content_type, size, data FROM attachments WHERE message_id = $1", out.message_id);
  EXPECT_EQ(a[0].as<std::string>(), "factuur.pdf");
  EXPECT_EQ(a[1].as<std::string>(), "application/pdf");
  EXPECT_EQ(pqxx::binarystring(a[3]).str(), "%PDF-1.4\n");
  EXPECT_EQ(tx.exec_params1("SELECT count(*) FROM message_addresses WHERE message_id = $1", out.message_id)[0].as<int>(), 3)
      << "every address is recorded, linked or not";
}

TEST_F(Ingest, SameSourceKeyTwiceIsStoredOnce) {
  auto first = ingest(kInvoice, "7:1");
  auto again = ingest(kInvoice, "7:1");
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(again.message_id, first.message_id);
  EXPECT_EQ(again.contacts, first.contacts);
  EXPECT_EQ(count("SELECT count(*) FROM messages"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM attachments"), 1);
}

TEST_F(Ingest, ResyncDedupesOnContentNotOnMessageId) {
  ingest(kInvoice, "7:1");
  auto resynced = ingest(kInvoice, "8:1", /*by_content=*/true);
  EXPECT_TRUE(resynced.duplicate) << "same bytes under a new UIDVALIDITY";
  std::string other = kInvoice;
  other.replace(other.find("Zie bijlage."), 12, "Andere tekst");
  auto different = ingest(other, "8:2", true);
  EXPECT_FALSE(different.duplicate) << "same Message-ID, different message: both kept";
  EXPECT_EQ(count("SELECT count(*) FROM messages"), 2);
  EXPECT_EQ(count("SELECT count(DISTINCT header_message_id) FROM messages"), 1);
}

TEST_F(Ingest, SeveralContactsAndCaseInsensitiveMatch) {
  auto out = ingest("From: JAN@KLANT.NL\r\nTo: info@coop.nl, info@bedrijf.NL\r\nSubject: x\r\n\r\nx\r\n", "7:3");
  EXPECT_EQ(out.contacts, (std::set<std::int64_t>{jan, bedrijf}));
  EXPECT_EQ(count("SELECT count(*) FROM message_contacts WHERE linked_by = 'auto'"), 2);
}

TEST_F(Ingest, BrokenMessageIsStoredRawWithWarnings) {
  const std::string broken = std::string("Content-Type: multipart/mixed\r\n\r\n\0\xff garbage", 41);
  auto out = ingest(broken, "7:4");
  pqxx::work tx(conn);
  auto m = tx.exec_params1("SELECT raw, array_length(parse_warnings, 1) FROM messages WHERE id = $1", out.message_id);
  EXPECT_EQ(pqxx::binarystring(m[0]).str(), broken);
  EXPECT_GE(m[1].as<int>(0), 1);
}

}  // namespace
}  // namespace mailgate
