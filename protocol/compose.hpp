// protocol/compose: building an outgoing RFC 5322 message with GMime 3.
//
// From with display name, Reply-To, To and Cc (Bcc recipients go only into the envelope, never
// into the headers), a subject encoded per RFC 2047 when it is not ASCII, a text and/or HTML body
// (multipart/alternative when both), attachments (multipart/mixed, base64, RFC 2231 file names),
// Message-ID and Date given by the caller, and multipart boundaries that follow from the
// Message-ID, so that composing the same message again gives the same bytes (a resend is
// byte-for-byte the same message without the bytes being kept).
// Lines end in CRLF; every body part is 7-bit clean (quoted-printable or base64), so no server
// needs 8BITMIME.
//
// A header value with CR, LF or NUL is refused (std::invalid_argument whose what() names the
// field: "subject", "to[1]", ...): there is no way to inject a header.
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "rules/message.hpp"

namespace mailgate {

class ComposeError : public std::invalid_argument {
 public:
  ComposeError(std::string field, const std::string& message) : std::invalid_argument(message), field(std::move(field)) {}
  std::string field;
};

std::string compose_message(const OutgoingMessage& m);

}  // namespace mailgate
