// protocol/form_data: HTML form bodies as webhooks post them (Mailgun's route forward()):
// multipart/form-data (RFC 7578 on RFC 2046's multipart syntax) and
// application/x-www-form-urlencoded (WHATWG URL "application/x-www-form-urlencoded parsing").
//
// Contract: parse_form() is pure (no I/O) and takes the whole body, which the caller has already
// bounded (the HTTP server's per-route body limit). It returns every field in order, names and
// values byte-exact (a file part's bytes are never re-encoded, CRLF inside a value is kept), or
// a FormError saying what is wrong: the Content-Type (unsupported, no boundary), the body
// (malformed: no closing delimiter, a part without headers or without a name, a bad
// percent-escape), or a limit (more fields than `max_fields`, more bytes than `max_bytes`).
// Nothing is partially returned.
//
// Multipart details: the boundary comes from the Content-Type's `boundary` parameter (quoted or
// not, 1..70 characters). The preamble before the first delimiter and the epilogue after the
// closing one are ignored; transport padding (spaces, tabs) after a delimiter is allowed. Lines
// end in CRLF, as RFC 2046 requires. A part needs `Content-Disposition: form-data; name=...`;
// `filename` marks a file part (RFC 5987 `filename*=UTF-8''...` is accepted too and wins).
// A part's Content-Type defaults to "text/plain". Part headers may not exceed 8 KiB each.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace mailgate::form {

struct Field {
  std::string name;
  std::string value;         // bytes exactly as sent (urlencoded: percent-decoded)
  std::string filename;      // file parts only
  std::string content_type;  // multipart parts: as given, or "text/plain"; urlencoded: empty
  bool is_file = false;      // a filename parameter was present (even an empty one)
};

struct Limits {
  std::size_t max_fields = 1000;
  std::size_t max_bytes = 40 << 20;
};

struct FormError {
  enum class Kind { unsupported_type, malformed, too_many_fields, too_large };
  Kind kind;
  std::string message;
};

using FormResult = std::variant<std::vector<Field>, FormError>;

// `content_type` is the request's Content-Type header value.
FormResult parse_form(std::string_view content_type, std::string_view body, const Limits& limits);

// The boundary parameter of a multipart Content-Type, or "" when absent or invalid.
std::string multipart_boundary(std::string_view content_type);

// The first field named `name`, or null.
const Field* find_field(const std::vector<Field>& fields, std::string_view name);

}  // namespace mailgate::form
