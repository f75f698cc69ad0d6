// store/ingest: a batch (ingest_messages) gives what the same items ingested one by one give,
// and attachments kept as spans of the raw message read back byte-exact through `attachments`.
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include <pqxx/pqxx>

#include "protocol/mime.hpp"
#include "store/ingest.hpp"
#include "store/messages.hpp"
#include "tests/support/pg_harness.hpp"
#include "util/crypto.hpp"

namespace mailgate {
namespace {

std::string bytes(std::size_t size, std::uint32_t seed) {
  std::mt19937 random(seed);
  std::string out(size, '\0');
  for (auto& c : out) c = static_cast<char>(random() & 0xff);
  return out;
}

std::string base64_lines(std::string_view data) {
  const std::string b = base64_encode(data);
  std::string out;
  for (std::size_t i = 0; i < b.size(); i += 76) out += b.substr(i, 76) + "\r\n";
  return out;
}

// A message from `from` with a base64 attachment of `size` random bytes, an unencoded one and a
// quoted-printable one.
std::string with_attachments(const std::string& from, std::size_t size, std::uint32_t seed) {
  return "From: " + from + "\r\nTo: info@coop.nl\r\nSubject: bijlagen " + std::to_string(seed) +
         "\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
         "--b\r\nContent-Type: text/plain\r\n\r\nzie bijlagen\r\n"
         "--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\n"
         "Content-Transfer-Encoding: base64\r\n\r\n" + base64_lines(bytes(size, seed)) +
         "--b\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename=\"b.csv\"\r\n\r\nnr;bedrag\r\n1;12,50\r\n"
         "--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Disposition: attachment; filename=\"c.txt\"\r\n"
         "Content-Transfer-Encoding: quoted-printable\r\n\r\nregel =E2=82=AC\r\n--b--\r\n";
}

class IngestBatch : public ::testing::Test {
 protected:
  void SetUp() override {
    pqxx::work tx(conn);
    mailbox = tx.exec1("INSERT INTO mailboxes (display_name, address, is_primary) VALUES ('Info', 'info@coop.nl', true) RETURNING id")[0]
                  .as<std::int64_t>();
    jan = add_contact(tx, "Jan", "jan@klant.nl");
    piet = add_contact(tx, "Piet", "piet@klant.nl");
    tx.commit();
  }
  static std::int64_t add_contact(pqxx::work& tx, const std::string& name, const std::string& email) {
    auto id = tx.exec_params1("INSERT INTO contacts (type, first_name) VALUES ('person', $1) RETURNING id", name)[0].as<std::int64_t>();
    tx.exec_params("INSERT INTO contact_emails (contact_id, address, email_match_key, is_primary, position) VALUES ($1, $2, lower($2), true, 0)", id, email);
    return id;
  }
  IngestItem item(const std::string& raw, const std::string& key, bool by_content = false, bool spans = true) {
    IngestItem it;
    it.in.mailbox_id = mailbox;
    it.in.source = "imap";
    it.in.source_key = key;
    it.in.raw = raw;
    it.in.dedupe_by_content = by_content;
    std::vector<std::optional<ContentSpan>> found;
    it.parsed = parse_message(raw, found);
    if (spans)
      for (const auto& s : found)
        it.attachment_spans.push_back(s ? std::optional<RawSpan>(RawSpan{static_cast<std::int64_t>(s->offset),
                                                                         static_cast<std::int64_t>(s->length), s->base64 ? "base64" : "identity"})
                                        : std::nullopt);
    return it;
  }
  std::vector<IngestOutcome> ingest(const std::vector<IngestItem>& items) {
    pqxx::work tx(conn);
    auto out = ingest_messages(tx, items, load_link_policy(tx, mailbox));
    tx.commit();
    return out;
  }
  int count(const std::string& sql) { return pqxx::work(conn).exec1(sql)[0].as<int>(); }

  pqxx::connection conn{test::fresh_migrated_database()};
  std::int64_t mailbox = 0, jan = 0, piet = 0;
};

TEST_F(IngestBatch, DuplicatesWithinTheBatchAndAgainstStoredRows) {
  const std::string a = "From: jan@klant.nl\r\nSubject: a\r\n\r\na\r\n", b = "From: piet@klant.nl\r\nSubject: b\r\n\r\nb\r\n";
  auto first = ingest({item(a, "1:1")});
  ASSERT_FALSE(first[0].duplicate);
  EXPECT_EQ(first[0].contacts, (std::set<std::int64_t>{jan}));

  // Stored before; new; the same key again within the batch; same content under a new key
  // (resync) within the batch and against the stored row.
  auto out = ingest({item(a, "1:1"), item(b, "1:2"), item(b, "1:2"), item(b, "2:2", true), item(a, "2:1", true),
                     item("From: x@y.nl\r\n\r\nc\r\n", "1:3")});
  ASSERT_EQ(out.size(), 6u);
  EXPECT_TRUE(out[0].duplicate);
  EXPECT_EQ(out[0].message_id, first[0].message_id);
  EXPECT_EQ(out[0].contacts, (std::set<std::int64_t>{jan}));
  EXPECT_FALSE(out[1].duplicate);
  EXPECT_EQ(out[1].contacts, (std::set<std::int64_t>{piet}));
  EXPECT_TRUE(out[2].duplicate);
  EXPECT_EQ(out[2].message_id, out[1].message_id);
  EXPECT_EQ(out[2].contacts, out[1].contacts);
  EXPECT_TRUE(out[3].duplicate) << "same bytes as an earlier item of the batch";
  EXPECT_EQ(out[3].message_id, out[1].message_id);
  EXPECT_TRUE(out[4].duplicate) << "same bytes as a stored row";
  EXPECT_EQ(out[4].message_id, first[0].message_id);
  EXPECT_FALSE(out[5].duplicate);
  EXPECT_TRUE(out[5].contacts.empty());
  EXPECT_EQ(count("SELECT count(*) FROM messages"), 3);
  EXPECT_EQ(count("SELECT count(*) FROM message_contacts"), 2);
  EXPECT_EQ(count("SELECT count(*) FROM message_addresses"), 3);
}

TEST_F(IngestBatch, MessagesKeepTheirOwnFieldsAndOrder) {
  std::vector<IngestItem> items;
  for (int i = 0; i < 120; ++i)
    items.push_back(item("From: Klant " + std::to_string(i) + " <" + (i % 2 ? "jan" : "piet") + "@klant.nl>\r\nSubject: nr " +
                             std::to_string(i) + "\r\nDate: Tue, 24 Nov 2026 10:00:00 +0100\r\n\r\ntekst " + std::to_string(i) + "\r\n",
                         "5:" + std::to_string(i)));
  items[7].in.transport_tls = false;
  items[8].in.peer_address = "192.0.2.8";
  auto out = ingest(items);
  pqxx::work tx(conn);
  for (int i = 0; i < 120; ++i) {
    auto r = tx.exec_params1("SELECT source_key, subject, text_body, from_name, raw, sent_at = to_timestamp(1795510800), "
                             "transport_tls, peer_address FROM messages WHERE id = $1",
                             out[static_cast<std::size_t>(i)].message_id);
    EXPECT_EQ(r[0].as<std::string>(), "5:" + std::to_string(i));
    EXPECT_EQ(r[1].as<std::string>(), "nr " + std::to_string(i));
    EXPECT_EQ(r[2].as<std::string>(), "tekst " + std::to_string(i) + "\r\n");
    EXPECT_EQ(r[3].as<std::string>(), "Klant " + std::to_string(i));
    EXPECT_EQ(pqxx::binarystring(r[4]).str(), items[static_cast<std::size_t>(i)].in.raw);
    EXPECT_TRUE(r[5].as<bool>());
    EXPECT_EQ(r[6].is_null(), i != 7);
    EXPECT_EQ(r[7].is_null(), i != 8);
    EXPECT_EQ(out[static_cast<std::size_t>(i)].contacts, (std::set<std::int64_t>{i % 2 ? jan : piet}));
  }
}

TEST_F(IngestBatch, AttachmentsKeptAsSpansReadBackByteExact) {
  const std::string raw = with_attachments("jan@klant.nl", 100000, 7);
  auto spanned = item(raw, "1:1");
  ASSERT_EQ(spanned.attachment_spans.size(), 3u);
  EXPECT_TRUE(spanned.attachment_spans[0] && spanned.attachment_spans[0]->encoding == "base64");
  EXPECT_TRUE(spanned.attachment_spans[1] && spanned.attachment_spans[1]->encoding == "identity");
  EXPECT_FALSE(spanned.attachment_spans[2]) << "quoted-printable is stored decoded";
  auto out = ingest({spanned, item(raw, "1:2", false, /*spans=*/false)});
  pqxx::work tx(conn);
  for (const auto& o : out) {
    auto r = tx.exec_params("SELECT filename, size, sha256, data FROM attachments WHERE message_id = $1 ORDER BY position", o.message_id);
    ASSERT_EQ(r.size(), 3u);
    EXPECT_EQ(pqxx::binarystring(r[0][3]).str(), bytes(100000, 7));
    EXPECT_EQ(r[0][1].as<int>(), 100000);
    EXPECT_EQ(r[0][2].as<std::string>(), sha256_hex(bytes(100000, 7)));
    EXPECT_EQ(pqxx::binarystring(r[1][3]).str(), "nr;bedrag\r\n1;12,50");
    EXPECT_EQ(pqxx::binarystring(r[2][3]).str(), "regel €");
  }
  EXPECT_EQ(tx.exec("SELECT count(*) FROM attachment_parts WHERE data IS NULL")[0][0].as<int>(), 2) << "two parts of the first message";
}

TEST_F(IngestBatch, PurgeRemovesAttachmentParts) {
  auto out = ingest({item(with_attachments("jan@klant.nl", 3000, 1), "1:1")});
  {
    pqxx::work tx(conn);
    tx.exec_params("UPDATE messages SET folder = 'removed', removed_at = now() - interval '3 days' WHERE id = $1", out[0].message_id);
    EXPECT_EQ(purge_removed_messages(tx, std::chrono::hours(24)), 1);
    tx.commit();
  }
  EXPECT_EQ(count("SELECT count(*) FROM attachment_parts"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM messages"), 0);
}

// A sent copy removed by a user is purged like any message: its outbox row keeps its outcome and
// loses the link; the copy's addresses and contact links go with it, another message's stay.
TEST_F(IngestBatch, PurgeOfASentCopyClearsItsOutboxLink) {
  const std::string raw = "From: Info <info@coop.nl>\r\nTo: jan@klant.nl\r\nSubject: verstuurd\r\nMessage-ID: <v1@coop.nl>\r\n\r\nHallo\r\n";
  std::int64_t outbox_id = 0;
  {
    pqxx::work tx(conn);
    outbox_id = tx.exec_params1("INSERT INTO outbox (kind, mailbox_id, to_addresses, subject, message_id, state) "
                                "VALUES ('message', $1, ARRAY['jan@klant.nl'], 'verstuurd', '<v1@coop.nl>', 'sent') RETURNING id",
                                mailbox)[0]
                    .as<std::int64_t>();
    tx.commit();
  }
  IngestItem copy = item(raw, "outbox:" + std::to_string(outbox_id));
  copy.in.source = "sent";
  copy.in.folder = "sent";
  const auto out = ingest({copy, item(raw, "1:1")});
  ASSERT_EQ(out.size(), 2u);
  {
    pqxx::work tx(conn);
    tx.exec_params("UPDATE outbox SET sent_message_id = $1 WHERE id = $2", out[0].message_id, outbox_id);
    tx.exec_params("UPDATE messages SET folder = 'removed', removed_at = now() - interval '3 days' WHERE id = $1", out[0].message_id);
    tx.commit();
  }
  ASSERT_EQ(count("SELECT count(*) FROM message_contacts WHERE contact_id = " + std::to_string(jan)), 2) << "both linked to Jan";
  {
    pqxx::work tx(conn);
    EXPECT_EQ(purge_removed_messages(tx, std::chrono::hours(24)), 1);
    tx.commit();
  }
  EXPECT_EQ(count("SELECT count(*) FROM outbox WHERE id = " + std::to_string(outbox_id) + " AND state = 'sent' AND sent_message_id IS NULL"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM messages"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM message_contacts"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM message_addresses WHERE message_id = " + std::to_string(out[0].message_id)), 0);
  EXPECT_GT(count("SELECT count(*) FROM message_addresses WHERE message_id = " + std::to_string(out[1].message_id)), 0);
}

}  // namespace
}  // namespace mailgate
