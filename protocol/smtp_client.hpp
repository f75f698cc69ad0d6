// protocol/smtp_client: one SMTP submission connection (RFC 5321, 6409), driven by coroutines on
// protocol/connection; the wire details are protocol/smtp_wire's.
//
// - open(): connect; greeting; EHLO (HELO only if EHLO is refused); STARTTLS when the security is
//   "starttls" — a server that does not offer it is an error and nothing more is sent, never a
//   silent downgrade; after the handshake everything is asked again. Then AUTH when credentials
//   are set: XOAUTH2 with a token, else PLAIN, else LOGIN; credentials are never sent over a
//   connection that is not TLS unless the security is explicitly "plain". A server that offers
//   no AUTH at all gets the mail without it (as Postfix does; a relay that wants it says 5xx).
// - send(): MAIL, RCPT for each recipient, DATA, the message dot-stuffed; with PIPELINING the
//   envelope and DATA go in one write (RFC 2920), and when the caller names the message it sends
//   next (or says it is the last), that one's envelope (or QUIT) goes in the write of this one's
//   content. Recipients refused while others are accepted
//   are reported per address; when none is accepted the transaction fails. After a failed
//   transaction RSET keeps the connection usable.
// - Failures throw smtp::Failure: the step (connect, tls, greeting, ehlo, auth, mail, rcpt, data),
//   whether it is permanent (5xx, or a problem retrying cannot fix) or transient (4xx, network,
//   timeouts), and the server's reply text.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "protocol/connection.hpp"
#include "protocol/smtp_wire.hpp"

namespace mailgate::smtp {

struct Account {
  net::Endpoint endpoint;     // security: tls (465) | starttls (587) | plain
  std::string helo_name = "localhost";
  std::string username;       // empty: no AUTH
  std::string password;
  std::string oauth_token;    // set: AUTH XOAUTH2 with this bearer token
};

// RFC 5321 4.5.3.2 minimums; tests shorten them.
struct Timeouts {
  std::chrono::milliseconds connect{std::chrono::seconds(30)};
  std::chrono::milliseconds command{std::chrono::minutes(5)};
  std::chrono::milliseconds data_end{std::chrono::minutes(10)};
};

enum class Step { connect, tls, greeting, ehlo, auth, mail, rcpt, data };
const char* to_string(Step s);

class Failure : public std::runtime_error {
 public:
  Failure(Step step, bool permanent, const std::string& message, int code = 0)
      : std::runtime_error(message), step(step), permanent(permanent), code(code) {}
  Step step;
  bool permanent;
  int code;  // the server's reply code, 0 when the failure was not a reply
};

struct Envelope {
  std::string from;             // "" is the null reverse-path
  std::vector<std::string> to;  // every recipient (To, Cc and Bcc)
};

struct Refused {
  std::string address;
  Reply reply;
};

struct SendResult {
  Reply reply;                   // the server's answer to the end of DATA
  std::vector<Refused> refused;  // recipients refused while others were accepted
};

// A message the caller will send next on the connection (see Client::send).
struct Outgoing {
  const Envelope* envelope = nullptr;
  const std::string* message = nullptr;
};
// What follows a message on the connection (see Client::send).
struct After {
  std::optional<Outgoing> next = std::nullopt;  // the message sent right after this one
  bool quit = false;             // nothing: this is the session's last message
};

class Client {
 public:
  Client(boost::asio::any_io_executor executor, Account account, Timeouts timeouts = {});
  ~Client();
  Client(const Client&) = delete;

  boost::asio::awaitable<void> open();
  // `after.next`: the message the caller sends right after this one. With PIPELINING its envelope
  // and DATA go in the write of this one's content (RFC 2920 lets the content head a group) and
  // its replies are read by that next send(): one round trip per message instead of two. The
  // caller must then send exactly that message next; quit() instead drops the connection, which
  // discards it (nothing is delivered without the final dot), as does sending another message
  // (a transient failure).
  // `after.quit`: the session ends with this message. With PIPELINING the QUIT goes in the write
  // of the content (RFC 2920: QUIT may end a group); the connection is not usable afterwards,
  // and quit() reads the server's goodbye.
  boost::asio::awaitable<SendResult> send(const Envelope& envelope, const std::string& message, After after = {});
  boost::asio::awaitable<void> quit();  // QUIT and close; never throws
  void close();

  const Capabilities& capabilities() const;
  std::size_t sent() const;  // messages accepted on this connection
  bool usable() const;       // open and not broken by a failure
  std::string transcript_tail() const;  // the last commands and replies, for diagnostics (AUTH masked)

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace mailgate::smtp
