// store/outbox: the durable queue every outgoing mail goes through (DESIGN.md, "one way out").
//
// Rows are written by outbox_queue() in the transaction of their cause. Workers (daemon/outbox)
// take due rows of one mailbox a chunk at a time: outbox_lock_due() locks them (FOR UPDATE SKIP
// LOCKED, so several workers and several daemons never take one row twice) and loads them, the
// worker composes them, and outbox_start_sending() marks them 'sending' with a lease, all in one
// transaction. The worker commits that claim without waiting for the disk (synchronous_commit
// off): a claim lost with PostgreSQL only makes its rows due again, and whatever was sent on it
// had its outcome lost too (an outcome's commit waits for the disk, and so for every earlier
// commit), so it is sent again within the window below. Composing is deterministic, so the bytes
// are not stored in the outbox: the sent copy keeps them. (`raw` of rows composed by earlier
// versions is still sent as it is.) A row whose lease passed (its daemon died mid-send) is given
// back by outbox_recover(). The outcomes of a chunk are recorded by
// outbox_record() in one transaction: sent rows (each with its copy in the mailbox's "sent"
// folder, through the one ingest pipeline), failed attempts (retry with backoff until the row is
// too old, or fail keeping the server's reply), and rows given back untried.
//
// Duplicates. A message the server accepted is recorded as sent only when the transaction of its
// chunk commits. If the daemon stops (crash, SIGKILL, power loss) or that transaction fails before
// the commit, every message of the chunk stays 'sending', is taken back when its lease passes and
// is sent again -- with the same bytes (composed again from the row: the Message-ID, the Date and
// the multipart boundaries are fixed by the row) and the same Message-ID, so a receiver can
// recognise it.
// The worker sends the next chunk while the previous one commits (across chained connections
// too: a connection's last chunk commits while the next connection sends), so per connection slot
// of a mailbox at most two chunks (2 x outbox_chunk_rows messages) can be accepted by the server
// without their outcome committed; those are the messages that may arrive twice. Nothing is ever lost: a row leaves 'sending' only by a commit
// that records its outcome, by outbox_release() or by outbox_recover().
//
// States: queued -> sending -> sent | retrying (-> sending ...) | failed; queued/retrying/failed
// -> cancelled by a user; failed/cancelled -> queued again by a retry.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "rules/message.hpp"
#include "store/ingest.hpp"

namespace pqxx {
class dbtransaction;
}

namespace mailgate {

struct OutboxRequest {
  std::string kind = "message";  // message, template, group_mailing, password_set, test, notification, ...
  std::optional<std::int64_t> mailbox_id;  // resolved sender mailbox (null: the primary at send time)
  MailAddress from;                        // address empty: the mailbox's address at send time
  std::optional<MailAddress> reply_to;
  std::vector<std::string> to, cc, bcc;    // addresses in normal form
  std::string subject, text_body, html_body;
  std::vector<OutgoingAttachment> attachments;
  std::optional<std::int64_t> contact_id, administration_id, template_id, created_by;
  std::string cause_entity, cause_id;
};

// Inserts the row (and its attachments); the Message-ID is made here, stable for every attempt.
std::int64_t outbox_queue(pqxx::dbtransaction& tx, const OutboxRequest& request, const std::string& message_id_domain);

// Rows left 'sending' past their lease go back to 'retrying' (due now); returns how many.
int outbox_recover(pqxx::dbtransaction& tx);

struct DueMailbox {
  std::int64_t mailbox_id = 0;
  int due = 0;
};
// Mailboxes with due rows (rows without a mailbox are given the primary mailbox first).
std::vector<DueMailbox> outbox_due(pqxx::dbtransaction& tx);

// Rows taken per chunk: the unit of one claim and of one outcome transaction (see Duplicates).
constexpr int outbox_chunk_rows = 20;
// About this many bytes of content (bodies and attachments, or composed bytes) per chunk; a
// chunk always holds at least one row.
constexpr std::size_t outbox_chunk_bytes = 16 << 20;

// Claims up to `limit` due rows of the mailbox: 'sending', lease set, attempts + 1; oldest first.
std::vector<std::int64_t> outbox_claim(pqxx::dbtransaction& tx, std::int64_t mailbox_id, int limit, std::chrono::seconds lease);
// Extends the lease of rows still claimed by a live connection.
void outbox_extend(pqxx::dbtransaction& tx, const std::vector<std::int64_t>& ids, std::chrono::seconds lease);
// Gives claimed rows back untried (shutdown, or the connection broke before their turn): due
// now, the attempt not counted.
void outbox_release(pqxx::dbtransaction& tx, const std::vector<std::int64_t>& ids);

// A due row: the message to compose (From filled from the mailbox when the row has none), the
// Bcc recipients, and the bytes when it was composed before (a retry sends those).
struct OutboxRow {
  std::int64_t id = 0, mailbox_id = 0;
  OutgoingMessage message;
  std::vector<std::string> bcc;
  std::optional<std::string> raw;

  std::vector<std::string> recipients() const;  // To, Cc and Bcc addresses
};
// Locks up to `limit` due rows of the mailbox (FOR UPDATE SKIP LOCKED, oldest first, at most
// about `max_bytes` of content but at least one row) and loads them: one SELECT, and one more for
// the attachments of rows that have any. Nothing changes until outbox_start_sending() in the same
// transaction.
std::vector<OutboxRow> outbox_lock_due(pqxx::dbtransaction& tx, std::int64_t mailbox_id, int limit, std::size_t max_bytes);

// Claims locked rows in one UPDATE: 'sending', lease set, attempts + 1. The composed bytes are
// not stored: composing a row again gives the same bytes (protocol/compose).
void outbox_start_sending(pqxx::dbtransaction& tx, const std::vector<std::int64_t>& ids, std::chrono::seconds lease);

struct RefusedRecipient {
  std::string address, reply;
};

// The outcomes of one chunk.
struct OutboxSent {
  std::int64_t id = 0;
  const std::string* raw = nullptr;        // the bytes the server accepted (the row's raw)
  const ParsedMessage* parsed = nullptr;   // their parse (protocol/mime), for the sent copy
  std::vector<std::optional<RawSpan>> attachment_spans;  // as IngestItem's: attachments kept as spans of raw
  std::vector<RefusedRecipient> refused;
};
struct OutboxFailed {
  std::int64_t id = 0;
  bool permanent = false;
  std::string step, reason;  // reason: the server's reply when it gave one
  std::chrono::seconds not_before{0};  // the server's Retry-After: the next attempt not sooner
};
struct OutboxOutcomes {
  std::vector<OutboxSent> sent;
  std::vector<OutboxFailed> failed;
  std::vector<std::int64_t> untried;  // given back (outbox_release)
};
struct OutboxSentCopy {
  std::int64_t outbox_id = 0, message_id = 0;
};

// Records a chunk's outcomes in the caller's transaction (statements prepared, one UPDATE per
// kind of outcome): sent rows become 'sent' with a copy stored in the mailbox's "sent" folder
// (status read, linked to contacts like any message; all copies of a mailbox through one
// ingest_messages() call), failed ones as outbox_mark_failed() says,
// untried ones go back. Only rows still 'sending' are touched (one taken back after its lease
// and sent by another worker meanwhile keeps that worker's outcome). Returns the rows marked sent.
std::vector<OutboxSentCopy> outbox_record(pqxx::dbtransaction& tx, const OutboxOutcomes& outcomes, std::chrono::seconds retry_base,
                                          std::chrono::seconds max_age);

// Failed attempt: permanent -> 'failed'; transient -> 'retrying' after the backoff (or after
// `not_before`, the server's Retry-After, when that is later), or 'failed' once the next attempt
// would be past max_age.
void outbox_mark_failed(pqxx::dbtransaction& tx, std::int64_t id, bool permanent, const std::string& step, const std::string& reason,
                        std::chrono::seconds retry_base, std::chrono::seconds max_age,
                        std::chrono::seconds not_before = std::chrono::seconds(0));

}  // namespace mailgate
