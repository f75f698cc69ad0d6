// daemon/smtp_server: the trusted-receiver SMTP listener (issue 6). It drives the sans-I/O
// protocol/smtp_session over sockets and asks the database (store/receivers) what to do.
//
// One coroutine per session on its own strand; one socket that STARTTLS upgrades in place.
// - RCPT TO: accepted only for an active receiver's address; unknown and inactive addresses get
//   the same 550 5.1.1 (no relay, nothing to probe). One receiver per transaction: a recipient of
//   another receiver gets 452 4.5.3 and is sent again by the client in a new transaction.
// - End of DATA: the message is parsed (GMime) and its sender authenticated (SPF, DKIM, DMARC:
//   protocol/sender_auth) on a small thread pool; then receiver_deliver() judges and stores it.
//   Deliveries of all sessions are committed together (group commit): while one transaction
//   runs (`commit_transactions`), the next ones queue, and each commit carries every delivery
//   that waited (receiver_deliver_batch; one by one under savepoints when the database refuses
//   one, so that it fails alone). 250 is written only after the commit; when the database is unavailable the
//   client gets 451 4.3.0 and nothing was stored, so its retry is stored once.
// - Limits: sessions in total and per client address (421 4.7.0 beyond them), command and data
//   timeouts (421 4.4.2), line length, recipients and size (protocol/smtp_session).
// - Shutdown: stop accepting; idle sessions get 421 4.3.2 at once, busy ones when their
//   transaction ends; what is left after the grace time is closed.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

namespace mailgate {

struct Services;

class SmtpServer {
 public:
  SmtpServer(boost::asio::io_context& io, Services& services);
  ~SmtpServer();
  SmtpServer(const SmtpServer&) = delete;

  bool enabled() const;  // [smtp_receiver] listen names an address
  // Binds every listen address (throws std::runtime_error naming the address when one fails)
  // and starts accepting.
  void start();
  boost::asio::awaitable<void> shutdown(std::chrono::seconds grace);
  std::vector<std::uint16_t> ports() const;  // the bound ports, in listen order

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace mailgate
