// rules/message: a received message as mailgate understands it, independent of where it came from
// (IMAP, Graph, Mailgun, the SMTP receiver) and of how it was parsed (protocol/mime.cpp fills it).
// Plain data: the store keeps it, the rules judge it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace mailgate {

struct MailAddress {
  std::string name;     // display name, decoded
  std::string address;  // addr-spec as written (not normalised)
};

struct MailAttachment {
  std::string filename;      // RFC 2231 / RFC 2047 decoded; may be empty
  std::string content_type;  // "application/pdf"
  std::string content_id;    // without <>
  bool inline_part = false;  // Content-Disposition: inline (e.g. an image in the HTML)
  std::string data;          // decoded bytes
  std::string sha256_hex;
};

struct ParsedMessage {
  std::string message_id;          // without <>; empty when absent
  std::optional<std::int64_t> date;  // Unix seconds from the Date header
  std::vector<MailAddress> from, sender, reply_to, to, cc;
  std::string subject;
  std::string text_body, html_body;
  std::vector<MailAttachment> attachments;
  std::vector<std::string> warnings;  // what GMime or mailgate found wrong; empty when clean
  std::string sha256_hex;             // of the raw bytes: the content identity of the message
  bool auto_submitted = false;        // Auto-Submitted other than "no" (RFC 3834)

  // From, To, Cc and Reply-To addresses, for contact linking.
  std::vector<std::string> linkable_addresses() const;
};

// A message to send, before composition (protocol/compose.hpp makes the bytes).
struct OutgoingAttachment {
  std::string filename;
  std::string content_type = "application/octet-stream";
  std::string data;
};

struct OutgoingMessage {
  MailAddress from;
  std::optional<MailAddress> reply_to;
  std::vector<MailAddress> to, cc;  // Bcc recipients are only in the envelope
  std::string subject;
  std::string text_body, html_body;
  std::vector<OutgoingAttachment> attachments;
  std::string message_id;  // without <>
  std::int64_t date = 0;   // Unix seconds
  std::vector<std::pair<std::string, std::string>> extra_headers;  // e.g. {"Auto-Submitted", "auto-generated"}
};

}  // namespace mailgate
