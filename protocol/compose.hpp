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

#include "protocol/mime.hpp"
#include "rules/message.hpp"

namespace mailgate {

class ComposeError : public std::invalid_argument {
 public:
  ComposeError(std::string field, const std::string& message) : std::invalid_argument(message), field(std::move(field)) {}
  std::string field;
};

std::string compose_message(const OutgoingMessage& m);
// compose_message() has two writers that give the same bytes: GMime's object tree, and for the
// common case of a mailing (no attachments, text parts in plain ASCII that go as they are) its own,
// several times faster, with GMime's header functions. The second gives null for any other
// message. Tests compare the two on a table of messages.
std::string compose_message_with_gmime(const OutgoingMessage& m);
std::optional<std::string> compose_message_direct(const OutgoingMessage& m);

// The composed bytes with their parse: what parse_message(raw, spans) (protocol/mime) gives for
// them. For a message whose text parts went as they are (plain ASCII, 7bit) and whose attachments
// are plain parts, the parse is not run again: the headers are read back from the bytes with
// GMime's own decoders, the text bodies are the bodies in CRLF lines, the attachments are the
// data given, and their base64 is found in the bytes. Anything else is parsed.
// (The outbox files the copy of every message it sends: parsing it again cost as much as composing
// it.) tests/protocol/compose_test.cpp compares both ways on a table of messages.
struct ComposedMessage {
  std::string raw;
  ParsedMessage parsed;
  std::vector<std::optional<ContentSpan>> spans;  // per attachment of `parsed`
  bool reparsed = false;                          // parse_message() was run
};
ComposedMessage compose_and_parse(const OutgoingMessage& m);

}  // namespace mailgate
