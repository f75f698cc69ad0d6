// protocol/smtp_session: the server side of one SMTP session (RFC 5321, ESMTP) as a sans-I/O
// state machine, for the trusted-receiver listener (issue 6). The driver feeds the bytes it
// read and pulls events: replies to write, questions to answer (may this recipient receive mail?
// is this message accepted? -- answered after the database said so), and the STARTTLS handshake.
//
// Extensions: PIPELINING (commands already buffered are answered in order, each after the
// answers before it), SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, STARTTLS (when the driver
// has a certificate). No AUTH, no relay: a recipient is accepted only when the driver says so.
//
// Refused, never interpreted (the SMTP smuggling family, CVE-2023-51764): a command line that
// ends in a bare LF; and in DATA any bare LF or bare CR -- the data is read up to the one true end
// (CRLF "." CRLF) and the message refused with 554, so nothing after a fake end can become a
// second message. STARTTLS throws away whatever the client pipelined after it (RFC 3207,
// CVE-2011-0411). Limits: command line length, data line length, recipients per message, message
// size (SIZE= on MAIL is checked at once; data beyond the limit is read and thrown away, then 552).
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailgate::smtpd {

struct Limits {
  std::size_t command_line = 512;       // bytes with CRLF (RFC 5321 4.5.3.1.4)
  std::size_t data_line = 1000;         // bytes with CRLF (RFC 5321 4.5.3.1.6)
  std::size_t recipients = 100;         // per message (RFC 5321 4.5.3.1.8)
  std::size_t message = 25 << 20;       // bytes of data
  std::size_t errors_before_close = 10; // syntax errors before 421
};

struct Settings {
  std::string hostname = "localhost";
  bool tls_available = false;  // a certificate is configured: offer STARTTLS
  Limits limits;
};

struct Envelope {
  std::string helo;
  std::string from;             // "" for the null reverse-path
  std::vector<std::string> to;  // accepted recipients
  bool smtputf8 = false, eight_bit = false;
  bool tls = false;
};

struct Event {
  enum class Kind {
    reply,       // write `text`
    check_rcpt,  // answer with answer_rcpt(); `address`
    message,     // answer with answer_message(); `envelope`, `data` (dot-unstuffed, CRLF line ends)
    start_tls,   // `text` (the 220) is to be written first; then handshake and call tls_started()
    close,       // write `text` (if any), then close the connection
  };
  Kind kind = Kind::reply;
  std::string text;
  std::string address;
  Envelope envelope;
  std::string data;
};

enum class RcptVerdict {
  accept,     // 250 2.1.5
  unknown,    // 550 5.1.1 (the same for an unknown and an inactive address)
  need_tls,   // 530 5.7.0 this address takes mail only over TLS
  defer,      // 451 4.3.0 (the database is unavailable)
  later,      // 452 4.5.3 not in this transaction (e.g. another receiver): the client sends it again
};

class Session {
 public:
  explicit Session(Settings settings);

  // The greeting, as the first event; call once after connecting.
  Event greeting();
  void feed(std::string_view bytes);
  // The next event, or nothing until more bytes arrive or the pending question is answered.
  std::optional<Event> next();

  void answer_rcpt(RcptVerdict verdict);
  // The reply to the end of data: 250 after the message was committed, else 451 or 554.
  void answer_message(int code, const std::string& enhanced, const std::string& text);
  void tls_started();
  bool tls() const { return tls_; }
  // Reading a message's data (the driver gives the data phase its own timeout).
  bool in_data() const { return state_ == State::data; }
  // Between transactions with nothing pending: a shutdown may close the session here.
  bool idle() const { return state_ == State::fresh || state_ == State::ready; }
  // The driver's timeout: 421 and close.
  Event timed_out();

 private:
  enum class State { fresh, ready, mail, rcpt, data, waiting, closed };
  std::optional<Event> command(const std::string& line);
  std::optional<Event> data_bytes();
  Event reply(int code, const std::string& enhanced, const std::string& text);
  Event syntax_error(const std::string& enhanced, const std::string& text, int code = 500);
  void reset_transaction();

  Settings settings_;
  std::string in_;
  State state_ = State::fresh;
  bool tls_ = false, esmtp_ = false;
  Envelope envelope_;
  std::string pending_rcpt_;
  std::optional<Event> pending_reply_;  // the answer to a question, written before anything else
  std::size_t errors_ = 0;
  // DATA
  std::string data_;
  std::size_t data_size_ = 0, line_length_ = 0;
  bool data_bare_ = false, data_too_big_ = false, data_line_too_long_ = false, line_start_ = true;
  std::optional<std::size_t> declared_size_;
};

}  // namespace mailgate::smtpd
