// store/ingest: the durable step of the one ingest pipeline (DESIGN.md):
//     source -> parse -> policy -> ingest_message(tx) -> commit -> acknowledge the source
// ingest_message() writes, in the caller's transaction, the message (raw bytes and parsed
// fields), its attachments, its addresses and its contact links. The caller adds its cursor
// (IMAP UID, Graph delta link, Mailgun token) and any outbox rows to the same transaction and
// acknowledges the source only after the commit.
//
// ingest_messages() does the same for a batch (an IMAP FETCH of 100 messages) in a fixed number
// of statements whatever the batch's size (about eight: look-ups by key and content, one multi-row
// INSERT each for messages, attachments, addresses and links), instead of five or six per
// message; the outcome is the same as ingesting the items one after the other, in order.
//
// Idempotency: (mailbox, source, source_key) is unique; delivering the same key again returns the
// existing row with duplicate = true and changes nothing. With `dedupe_by_content` (an IMAP
// resync after a UIDVALIDITY change) a message whose raw bytes (SHA-256) the mailbox already has
// is also a duplicate: never decided on Message-ID, which the sender controls.
//
// Attachments are stored once. An attachment whose bytes can be recovered exactly from the raw
// message (a base64 or unencoded part: IngestItem::attachment_spans) keeps only where they lie in
// `messages.raw`; the `attachments` view decodes them when read (migration 0009). Others keep
// their decoded bytes. Readers see the same `attachments.data` either way.
//
// Errors: pqxx exceptions; the caller's transaction is then unusable and nothing was written.
#pragma once
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "rules/linking.hpp"
#include "rules/message.hpp"

namespace pqxx {
class dbtransaction;
}

namespace mailgate {

struct InboundMessage {
  std::optional<std::int64_t> mailbox_id;
  std::string source;      // imap | ms365 | mailgun | smtp | sent
  std::string source_key;  // unique per mailbox and source
  std::string raw;
  std::string folder = "inbox";
  std::optional<bool> transport_tls;
  std::string peer_address;
  bool dedupe_by_content = false;
  // The source_key was made for this message just now (the SMTP receiver's queue id): it cannot
  // be stored yet, so it is not looked up. The unique index still refuses it if it were.
  bool new_key = false;
  bool read = false;  // stored as read: a sent copy (nobody needs to be told about mail the mailbox sent)
  // Mail a trusted receiver took: which receiver, and what sender authentication found.
  struct Received {
    std::int64_t receiver_id = 0;
    std::string envelope_from, authentication_results, auth_json;
  };
  std::optional<Received> received;
};

struct IngestOutcome {
  std::int64_t message_id = 0;
  bool duplicate = false;
  std::set<std::int64_t> contacts;
};

IngestOutcome ingest_message(pqxx::dbtransaction& tx, const InboundMessage& in, const ParsedMessage& parsed,
                             const LinkPolicy& policy);

// Where an attachment's content lies in the raw message: `length` bytes from `offset`, to be
// decoded as `encoding` ("base64": RFC 2045 base64 that any decoder reads alike, line breaks
// allowed; "identity": the bytes themselves). The caller vouches that decoding gives exactly the
// attachment's `data` (protocol/mime checks that before it offers a span).
struct RawSpan {
  std::int64_t offset = 0, length = 0;
  std::string encoding;  // base64 | identity
};

struct IngestItem {
  InboundMessage in;
  ParsedMessage parsed;
  // Parallel to parsed.attachments, or empty: the attachments that need not be stored twice.
  std::vector<std::optional<RawSpan>> attachment_spans;
};

// Ingests `items` in order, all under `policy` (they belong to one mailbox or receiver); one
// outcome per item, as ingest_message() would give.
std::vector<IngestOutcome> ingest_messages(pqxx::dbtransaction& tx, const std::vector<IngestItem>& items, const LinkPolicy& policy);

// The same for items that live elsewhere (the SMTP receiver's deliveries) and may belong to
// different receivers or mailboxes, each linked under its own policy. Nothing is copied.
struct IngestRef {
  const InboundMessage* in;
  const ParsedMessage* parsed;
  const std::vector<std::optional<RawSpan>>* spans;  // may be null: every attachment stored decoded
  const LinkPolicy* policy;
};
std::vector<IngestOutcome> ingest_messages(pqxx::dbtransaction& tx, const std::vector<IngestRef>& items);

// The linking policy of a mailbox: its own address and its exclusions.
LinkPolicy load_link_policy(pqxx::dbtransaction& tx, std::int64_t mailbox_id);

}  // namespace mailgate
