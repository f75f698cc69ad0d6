// protocol/smtp_wire: the sans-I/O parts of an SMTP client (RFC 5321): reply parsing, EHLO
// capabilities, command encoding, SASL initial responses and the DATA transparency procedure.
// The coroutine driver that owns the socket (protocol/smtp_client) builds on these; these are
// table-tested on their own.
//
// Replies: "250-first\r\n250 last\r\n" is one reply with two lines. Lines split anywhere across
// feeds are fine; a line longer than kMaxReplyLine, a code that is not three digits, a
// continuation with another code, or a bare LF where CRLF is required is a protocol error (the
// connection must be dropped). RFC 3463 enhanced status codes ("5.1.1") are split off the text
// when the server announced ENHANCEDSTATUSCODES.
#pragma once
#include <cstddef>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace mailgate::smtp {

inline constexpr std::size_t kMaxReplyLine = 4096;  // RFC 5321 says 512; servers are generous with text

struct ProtocolError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Reply {
  int code = 0;
  std::vector<std::string> lines;  // the text of each line, without the code and separator

  bool positive() const { return code >= 200 && code < 400; }
  bool transient() const { return code >= 400 && code < 500; }
  bool permanent() const { return code >= 500; }
  // "550 5.1.1 no such user" as one line (lines joined with " / ").
  std::string text() const;
  // The RFC 3463 code at the start of the first line ("5.1.1"), or "".
  std::string enhanced() const;
};

class ReplyParser {
 public:
  void feed(std::string_view bytes);
  // The next complete reply, if one has arrived. Throws ProtocolError on malformed input.
  std::optional<Reply> next();
  // Bytes fed but not yet parsed into a reply (STARTTLS: must be empty when the handshake starts).
  bool empty() const { return buffer_.empty() && !partial_; }

 private:
  std::string buffer_;
  std::optional<Reply> partial_;
};

struct Capabilities {
  bool starttls = false, pipelining = false, eightbitmime = false, smtputf8 = false, enhanced_status = false,
       chunking = false;
  std::optional<std::size_t> size;  // SIZE limit; 0 = announced without a limit
  std::set<std::string> auth;       // SASL mechanisms, upper case
};

// From the reply to EHLO (the first line is the greeting, the rest are keywords).
Capabilities parse_ehlo(const Reply& ehlo);

// Refuses CR, LF and NUL, and anything that cannot be an address in a path; returns "<addr>".
std::string path_of(std::string_view address);

// "MAIL FROM:<a> [SIZE=n] [BODY=8BITMIME] [SMTPUTF8]\r\n"
std::string mail_from(std::string_view address, std::size_t size, const Capabilities& caps, bool eight_bit, bool utf8_addresses);
std::string rcpt_to(std::string_view address);

// SASL initial responses (base64): PLAIN "\0user\0password"; XOAUTH2 "user=..^Aauth=Bearer ..^A^A".
std::string sasl_plain(std::string_view user, std::string_view password);
std::string sasl_xoauth2(std::string_view user, std::string_view token);

// The message as DATA sends it: every line ending made CRLF (a bare CR or LF becomes CRLF, so
// nothing can smuggle an end of data), lines starting with "." doubled, a final CRLF added when
// missing, and the terminating ".\r\n".
std::string dot_stuff(std::string_view message);

}  // namespace mailgate::smtp
