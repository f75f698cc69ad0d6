// daemon/outbox: the workers that empty the outbox (store/outbox.hpp) through each mailbox's
// outgoing transport. SMTP now; Mailgun and Microsoft Graph plug in as transports (issue 7).
//
// Every poll interval (or at once when woken by an API call that queued something) the
// dispatcher takes back rows whose lease passed, then, for each mailbox with due rows, opens
// connections up to the mailbox's send_max_connections. A connection claims at most
// send_max_per_connection rows (some providers, e.g. Strato, refuse more than 20 per session),
// sends them one by one within send_max_per_minute (counted per mailbox across its connections),
// records each outcome in its own transaction, and says QUIT. Every row is composed once and
// keeps its bytes and Message-ID for all attempts.
//
// Outcomes: accepted -> sent, with a copy stored in the mailbox's "sent" folder and linked to
// contacts; 4xx, timeouts, lost connections -> retrying with backoff until [outbox]
// max_age_hours; 5xx -> failed with the server's reply. A message the server accepted just before
// the daemon died is sent again after the lease (the one documented duplicate window).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "daemon/services.hpp"

namespace boost::asio {
class io_context;
}

namespace mailgate {

class OutboxWorker {
 public:
  OutboxWorker(boost::asio::io_context& io, Services& services);
  ~OutboxWorker();
  void start();
  void stop();
  void wake();  // something was queued: look now

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// The connection test of a mailbox (POST /mailboxes/{id}/test): connect, TLS, authenticate and
// send a test message to the mailbox's own address, directly (not through the outbox: the
// answer is the point). Returns {"ok": true, "reply": ...} or {"ok": false, "step": ..., "reply": ...}.
struct MailboxTestResult {
  bool ok = false;
  std::string step, reply;
};
boost::asio::awaitable<MailboxTestResult> test_mailbox_sending(Services& services, std::int64_t mailbox_id);

}  // namespace mailgate
