// protocol/mailgun_webhook: the pure parts of Mailgun's inbound webhook (a route's forward()):
// the signature and its time window, and the MIME message rebuilt from the parsed-fields form.
// The endpoint that reads the request and stores the message is daemon/mailgun_inbound.cpp.
//
// Signature (Mailgun's "Securing webhooks"): `signature` is the hex HMAC-SHA256, keyed with the
// HTTP webhook signing key, of `timestamp` followed by `token`. It is compared in constant time
// (CRYPTO_memcmp over the two 64-character hex strings). The timestamp (Unix seconds) must lie
// within `max_age` of now, either way: Mailgun retries a failed webhook for 8 hours with the
// same timestamp, token and signature.
//
// Rebuild: a route without "mime" at the end of its URL posts the message as fields:
// `message-headers` (the original header fields as [name, value] pairs), `body-plain`,
// `body-html`, `attachment-count` and file parts `attachment-1..N`, and `content-id-map`
// ({"<cid>": "attachment-N"}) for inline parts. The rebuilt message keeps every header field
// in order except the MIME structure ones (MIME-Version, Content-Type,
// Content-Transfer-Encoding), which it writes for its own body: the text and HTML bodies as
// UTF-8 base64 (multipart/alternative when both), attachments base64 in multipart/mixed with
// their filename (RFC 2231 when not ASCII) and Content-Type. Parsed (protocol/mime), it gives
// the same subject, addresses, date, Message-ID, text and HTML bodies and attachment bytes and
// names as the original. The bytes are a function of the fields alone (the boundary is derived
// from them), so a Mailgun retry rebuilds the same message, byte for byte.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mailgate::mailgun {

// True when `signature` is the lower- or upper-case hex HMAC-SHA256(key, timestamp + token).
bool signature_valid(std::string_view signing_key, std::string_view timestamp, std::string_view token,
                     std::string_view signature);

// The hex signature Mailgun would send (for tests and fakes).
std::string sign(std::string_view signing_key, std::string_view timestamp, std::string_view token);

enum class TimestampCheck { ok, malformed, out_of_window };
// `timestamp` must be decimal Unix seconds (at most 12 digits) within max_age of `now_unix`.
TimestampCheck check_timestamp(std::string_view timestamp, std::int64_t now_unix, std::chrono::seconds max_age);

struct RebuildAttachment {
  std::string filename;
  std::string content_type;  // as posted; "application/octet-stream" when empty
  std::string data;
  std::string content_id;    // without <>; set: an inline part
};

struct RebuildInput {
  std::vector<std::pair<std::string, std::string>> headers;  // message-headers, in order
  std::optional<std::string> text_body, html_body;
  std::vector<RebuildAttachment> attachments;
};

// The raw message (CRLF line ends). Header values with line breaks not followed by white space
// (no valid folding) have them replaced by spaces, so a field can never inject another.
std::string rebuild_message(const RebuildInput& in);

}  // namespace mailgate::mailgun
