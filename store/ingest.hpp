// store/ingest: the durable step of the one ingest pipeline (DESIGN.md):
//     source -> parse -> policy -> ingest_message(tx) -> commit -> acknowledge the source
// ingest_message() writes, in the caller's transaction, the message (raw bytes and parsed
// fields), its attachments, its addresses and its contact links. The caller adds its cursor
// (IMAP UID, Graph delta link, Mailgun token) and any outbox rows to the same transaction and
// acknowledges the source only after the commit.
//
// Idempotency: (mailbox, source, source_key) is unique; delivering the same key again returns the
// existing row with duplicate = true and changes nothing. With `dedupe_by_content` (an IMAP
// resync after a UIDVALIDITY change) a message whose raw bytes (SHA-256) the mailbox already has
// is also a duplicate: never decided on Message-ID, which the sender controls.
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
};

struct IngestOutcome {
  std::int64_t message_id = 0;
  bool duplicate = false;
  std::set<std::int64_t> contacts;
};

IngestOutcome ingest_message(pqxx::dbtransaction& tx, const InboundMessage& in, const ParsedMessage& parsed,
                             const LinkPolicy& policy);

// The linking policy of a mailbox: its own address and its exclusions.
LinkPolicy load_link_policy(pqxx::dbtransaction& tx, std::int64_t mailbox_id);

}  // namespace mailgate
