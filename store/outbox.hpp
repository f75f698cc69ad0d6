// store/outbox: the durable queue every outgoing mail goes through (DESIGN.md, "one way out").
//
// Rows are written by outbox_queue() in the transaction of their cause. Workers (daemon/outbox)
// claim due rows of one mailbox with FOR UPDATE SKIP LOCKED, marking them 'sending' with a lease,
// so several workers and several daemons never take one row twice; a row whose lease passed
// (its daemon died mid-send) is given back by outbox_recover(). The outcome of an attempt is
// recorded by outbox_mark_sent() (with the copy in the mailbox's "sent" folder, through the one
// ingest pipeline) or outbox_mark_failed() (retry with backoff until the row is too old, or fail).
//
// States: queued -> sending -> sent | retrying (-> sending ...) | failed; queued/retrying/failed
// -> cancelled by a user; failed/cancelled -> queued again by a retry.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "rules/message.hpp"

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

// Claims up to `limit` due rows of the mailbox: 'sending', lease set, attempts + 1; oldest first.
std::vector<std::int64_t> outbox_claim(pqxx::dbtransaction& tx, std::int64_t mailbox_id, int limit, std::chrono::seconds lease);
// Extends the lease of rows still claimed by a live connection.
void outbox_extend(pqxx::dbtransaction& tx, const std::vector<std::int64_t>& ids, std::chrono::seconds lease);

// A claimed row: the message to compose (From filled from the mailbox when the row has none),
// the Bcc recipients, and the bytes when it was composed before (a retry sends those).
struct OutboxRow {
  std::int64_t id = 0, mailbox_id = 0;
  OutgoingMessage message;
  std::vector<std::string> bcc;
  std::optional<std::string> raw;

  std::vector<std::string> recipients() const;  // To, Cc and Bcc addresses
};
OutboxRow outbox_load(pqxx::dbtransaction& tx, std::int64_t id);
void outbox_set_raw(pqxx::dbtransaction& tx, std::int64_t id, const std::string& raw);

struct RefusedRecipient {
  std::string address, reply;
};
// Sent: the row becomes 'sent' and a copy is stored in the mailbox's "sent" folder (linked to
// contacts like any message). Only acts on a row still 'sending'.
// `parsed` is the parse of the row's raw bytes (protocol/mime), for the sent copy.
void outbox_mark_sent(pqxx::dbtransaction& tx, std::int64_t id, const std::vector<RefusedRecipient>& refused,
                      const ParsedMessage& parsed);
// Failed attempt: permanent -> 'failed'; transient -> 'retrying' after the backoff, or 'failed'
// once the row is older than max_age.
void outbox_mark_failed(pqxx::dbtransaction& tx, std::int64_t id, bool permanent, const std::string& step, const std::string& reason,
                        std::chrono::seconds retry_base, std::chrono::seconds max_age);

}  // namespace mailgate
