// rules/receiver_policy: what a trusted receiver does with a message at the end of DATA, and
// whether a rejection may be mailed back. Pure, table-tested (tests/rules/receiver_policy_test).
//
// Order of the checks (issue 6):
// 1. Whitelist. The sender is the address of the single header From -- never the display name,
//    never the envelope sender, which is only used for SPF. Unless the receiver allows
//    unauthenticated senders, that From must be authenticated (aligned SPF or DKIM pass, see
//    protocol/sender_auth). Entries: a domain (the From's domain equals it exactly: a supplier
//    that sends from a subdomain lists that subdomain), one address (case-insensitive), or the
//    administration's verified users (their addresses). Not whitelisted -> 550 5.7.1 and no mail
//    back: answering forged mail would be backscatter.
// 2. Receiver rules, for whitelisted senders only: TLS required but not used; larger than the
//    receiver's limit; no attachment of an accepted type. -> 550 with the reason, and a rejection
//    mail to the supplier contact (subject to rejection_allowed()).
// 3. Accepted. The first accepted delivery over TLS latches "accept only over TLS" on.
#pragma once
#include <cstddef>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace mailgate {

struct WhitelistEntry {
  std::string kind;   // domain | address | verified_users
  std::string value;  // lower-case domain or address; "" for verified_users
};

struct ReceiverRules {
  bool require_tls = false;
  bool allow_unauthenticated = false;
  std::vector<std::string> accepted_types;      // lower-case MIME types; empty: any message
  std::optional<std::size_t> max_message_bytes;
  std::vector<WhitelistEntry> whitelist;
  std::set<std::string> verified_user_addresses;  // lower-case; used by a verified_users entry
};

struct ReceivedAttachment {
  std::string content_type;  // as parsed, any case
  std::string filename;
};

struct ReceivedFacts {
  std::string header_from;  // the real address of the single header From ("" when missing or several)
  bool from_authenticated = false;
  bool tls = false;
  std::size_t size = 0;
  std::vector<ReceivedAttachment> attachments;
};

struct ReceiverVerdict {
  enum class Action { accept, reject_not_whitelisted, reject_rule };
  Action action = Action::accept;
  int code = 250;
  std::string enhanced = "2.0.0";
  std::string reason;          // the SMTP reply text, and the reason in the rejection mail
  bool latch_tls = false;      // accept: switch require_tls on (first delivery over TLS)
  std::string matched_entry;   // accept: "domain:example.nl", "address:a@b", "verified_users"
};

ReceiverVerdict judge_received_message(const ReceiverRules& rules, const ReceivedFacts& facts);

// May a rejection be mailed to `supplier_contact` about a message from `envelope_from` with
// these headers? Never to a bounce (null sender), to auto-submitted mail (RFC 3834), to list or
// bulk mail, to mailer-daemon / postmaster / noreply-style senders, nor beyond the hourly limit.
struct RejectionFacts {
  std::string envelope_from;       // "" for the null reverse-path
  bool auto_submitted = false;     // Auto-Submitted other than "no"
  std::string precedence;          // the Precedence header, if any
  bool list_headers = false;       // List-Id or List-Unsubscribe present
  int sent_last_hour = 0;          // rejections already queued for this receiver in the last hour
  int limit_per_hour = 5;
};
struct RejectionDecision {
  bool send = false;
  std::string why_not;  // for the log: "null sender", "auto-submitted", "rate limit", ...
};
RejectionDecision rejection_allowed(const RejectionFacts& facts);

// An attachment is of an accepted type when its MIME type is in the list, or when it is sent as
// application/octet-stream with a file name whose extension belongs to an accepted type (.pdf,
// .xml): mail clients often label PDFs that way.
bool attachment_accepted(const ReceivedAttachment& a, const std::vector<std::string>& accepted_types);

// The local part of a receiver address: <slug of the organisation's name>-<random>, where the
// slug keeps a-z and 0-9 (accents folded: "Coöperatie" -> "cooperatie"), other runs become one
// "-", at most 30 characters, "org" when nothing is left. `random` is supplied by the caller.
std::string receiver_local_part(const std::string& organisation_name, const std::string& random);

}  // namespace mailgate
