// store/outbox: outbox_lock_due() takes the due rows of one mailbox oldest first, up to the row
// limit and the byte budget (at least one row), loads what composing needs (From from the mailbox
// when the row has none, attachments, Auto-Submitted by kind), and skips rows another worker holds.
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include "store/outbox.hpp"
#include "tests/support/pg_harness.hpp"

namespace mailgate {
namespace {

struct Fixture {
  std::string url = test::fresh_migrated_database();
  std::int64_t mailbox = 0, other = 0;

  Fixture() {
    pqxx::connection c(url);
    pqxx::work tx(c);
    mailbox = tx.exec1("INSERT INTO mailboxes (display_name, address, is_primary) VALUES ('Coöp Zon', 'info@coop.nl', true) RETURNING id")[0]
                  .as<std::int64_t>();
    other = tx.exec1("INSERT INTO mailboxes (display_name, address) VALUES ('Andere', 'andere@coop.nl') RETURNING id")[0].as<std::int64_t>();
    tx.commit();
  }

  // A queued row of `body_bytes` of text; returns its id.
  std::int64_t queue(pqxx::work& tx, std::int64_t to_mailbox, std::size_t body_bytes, const std::string& kind = "message",
                     const std::string& state = "queued", const std::string& from = "") {
    static int n = 0;
    ++n;
    return tx.exec_params1("INSERT INTO outbox (kind, mailbox_id, from_address, to_addresses, subject, text_body, message_id, state) "
                           "VALUES ($1, $2, nullif($3, ''), ARRAY['jan@klant.nl'], 'Onderwerp', $4, $5, $6) RETURNING id",
                           kind, to_mailbox, from, std::string(body_bytes, 'x'), "<row" + std::to_string(n) + "@coop.nl>", state)[0]
        .as<std::int64_t>();
  }
};

std::vector<std::int64_t> ids_of(const std::vector<OutboxRow>& rows) {
  std::vector<std::int64_t> ids;
  for (const auto& r : rows) ids.push_back(r.id);
  return ids;
}

TEST(OutboxLockDue, TakesDueRowsOldestFirstWithinTheLimitAndTheBudget) {
  Fixture f;
  pqxx::connection c(f.url);
  std::vector<std::int64_t> queued;
  {
    pqxx::work tx(c);
    queued.push_back(f.queue(tx, f.mailbox, 1000));
    f.queue(tx, f.other, 10);                                // another mailbox's
    f.queue(tx, f.mailbox, 10, "message", "sent");           // not due
    queued.push_back(f.queue(tx, f.mailbox, 1000));
    queued.push_back(f.queue(tx, f.mailbox, 1000));
    queued.push_back(f.queue(tx, f.mailbox, 5000));
    tx.exec_params("UPDATE outbox SET next_attempt_at = now() + interval '1 hour', state = 'retrying' WHERE id = $1",
                   f.queue(tx, f.mailbox, 10));  // due later
    tx.commit();
  }
  struct Case {
    int limit;
    std::size_t budget;
    std::vector<std::int64_t> expected;
  };
  const std::vector<Case> cases = {
      {10, 1'000'000, queued},
      {2, 1'000'000, {queued[0], queued[1]}},
      {10, 2500, {queued[0], queued[1]}},                                   // the third would pass the budget
      {10, 3000, {queued[0], queued[1], queued[2]}},
      {10, 10, {queued[0]}},                                                // at least one row
  };
  for (const auto& k : cases) {
    pqxx::work tx(c);
    EXPECT_EQ(ids_of(outbox_lock_due(tx, f.mailbox, k.limit, k.budget)), k.expected) << k.limit << " " << k.budget;
  }
}

TEST(OutboxLockDue, LoadsWhatComposingNeedsAndSkipsRowsHeldElsewhere) {
  Fixture f;
  pqxx::connection c(f.url);
  std::int64_t plain = 0, notification = 0, password = 0, own_from = 0;
  {
    pqxx::work tx(c);
    plain = f.queue(tx, f.mailbox, 10);
    notification = f.queue(tx, f.mailbox, 10, "receiver_notification");
    password = f.queue(tx, f.mailbox, 10, "password_mail");
    own_from = f.queue(tx, f.mailbox, 10, "message", "queued", "factuur@coop.nl");
    tx.exec_params("INSERT INTO outbox_attachments (outbox_id, position, filename, content_type, data) VALUES "
                   "($1, 0, 'a.pdf', 'application/pdf', '\\x25504446'::bytea), ($1, 1, 'b.txt', 'text/plain', '\\x6869'::bytea)",
                   notification);
    tx.commit();
  }
  pqxx::connection holder(f.url);
  pqxx::work held(holder);
  held.exec_params("SELECT 1 FROM outbox WHERE id = $1 FOR UPDATE", plain);

  pqxx::work tx(c);
  const auto rows = outbox_lock_due(tx, f.mailbox, 10, 1'000'000);
  ASSERT_EQ(ids_of(rows), (std::vector<std::int64_t>{notification, password, own_from})) << "the row held by another transaction is skipped";
  EXPECT_EQ(rows[0].message.from.address, "info@coop.nl");
  EXPECT_EQ(rows[0].message.from.name, "Coöp Zon");
  ASSERT_EQ(rows[0].message.attachments.size(), 2u);
  EXPECT_EQ(rows[0].message.attachments[0].filename, "a.pdf");
  EXPECT_EQ(rows[0].message.attachments[0].data, "%PDF");
  EXPECT_EQ(rows[0].message.attachments[1].data, "hi");
  EXPECT_TRUE(rows[1].message.attachments.empty());
  EXPECT_EQ(rows[0].message.extra_headers, (std::vector<std::pair<std::string, std::string>>{{"Auto-Submitted", "auto-replied"}}));
  EXPECT_EQ(rows[1].message.extra_headers, (std::vector<std::pair<std::string, std::string>>{{"Auto-Submitted", "auto-generated"}}));
  EXPECT_TRUE(rows[2].message.extra_headers.empty());
  EXPECT_EQ(rows[2].message.from.address, "factuur@coop.nl");
  EXPECT_EQ(rows[2].message.to.at(0).address, "jan@klant.nl");
  EXPECT_EQ(rows[2].message.message_id.find('<'), std::string::npos);
}

}  // namespace
}  // namespace mailgate
