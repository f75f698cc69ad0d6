// store/receivers: what the trusted-receiver SMTP server (daemon/smtp_server) and the receivers
// API need from the database.
//
// - receiver_find(): the receiver of an address, for RCPT TO (only status 'active' takes mail;
//   the caller answers an unknown and an inactive address alike).
// - receiver_deliver(): the end of DATA, in the caller's transaction (the group commit runs
//   several in one, each under a savepoint). It judges the message with rules/receiver_policy
//   against the receiver's rules as they are now, and then either stores it through the one
//   ingest pipeline (store/ingest) with its verdicts, latches "accept only over TLS", queues the
//   members' notifications -- or queues a rejection mail when rules/receiver_policy allows one.
//   Nothing is acknowledged to the client before the caller's commit.
// - receiver_queue_invitation(): the invitation to the supplier contact (API, on activation).
// Automatic mails are outbox rows of kind receiver_invitation, receiver_rejection and
// receiver_notification; they carry Auto-Submitted: auto-replied (store/outbox.cpp).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "rules/message.hpp"
#include "rules/receiver_policy.hpp"

namespace pqxx {
class dbtransaction;
}

namespace mailgate {

struct Receiver {
  std::int64_t id = 0, administration_id = 0;
  std::string address, status, document_type, supplier_name, contact_email, administration_name;
  bool notify_members = false;
  ReceiverRules rules;
};

// The receiver with this address (any case), or nothing.
std::optional<Receiver> receiver_find(pqxx::dbtransaction& tx, const std::string& address);
std::optional<Receiver> receiver_load(pqxx::dbtransaction& tx, std::int64_t id);

// One message at the end of DATA, after sender authentication.
struct Delivery {
  std::int64_t receiver_id = 0;
  std::string queue_id;       // unique per accepted message: the source_key
  std::string raw;            // as stored: our trace headers + the data as received
  ParsedMessage parsed;
  std::string envelope_from;  // "" for the null sender
  std::string peer_address;
  bool tls = false;
  ReceivedFacts facts;        // header From, authenticated?, size, attachments
  std::string authentication_results;
  std::string auth_json;      // the verdicts as JSON
  std::string precedence;     // header, for the rejection decision
  bool list_headers = false;
};

struct DeliveryOutcome {
  ReceiverVerdict verdict;
  std::int64_t message_id = 0;     // accepted: the stored message
  bool rejection_queued = false;
  std::string rejection_skipped;   // why no rejection mail went out
  bool receiver_gone = false;      // deactivated meanwhile: answered like an unknown address
  int notifications_queued = 0;    // mails to the organisation's members about this message
};

DeliveryOutcome receiver_deliver(pqxx::dbtransaction& tx, const Delivery& d, int rejections_per_hour);

// The same for a batch, in order, with the outcomes receiver_deliver() would give one after the
// other in one transaction: each receiver loaded once, the accepted messages stored together
// (ingest_messages: a fixed number of statements for the batch), no savepoints. Any database
// error throws, and the transaction is then unusable: the caller starts again one by one, each
// delivery under its own savepoint, so that a delivery the database refuses fails alone.
std::vector<DeliveryOutcome> receiver_deliver_batch(pqxx::dbtransaction& tx, const std::vector<const Delivery*>& batch,
                                                    int rejections_per_hour);

// Queues the invitation to the supplier contact; returns the outbox id.
std::int64_t receiver_queue_invitation(pqxx::dbtransaction& tx, const Receiver& r);

}  // namespace mailgate
