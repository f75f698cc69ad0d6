// daemon/outbox: the workers that empty the outbox (store/outbox.hpp) through each mailbox's
// outgoing transport (daemon/outbox_transports: SMTP, Mailgun's API, Microsoft Graph sendMail).
//
// Every poll interval (or at once when woken by an API call that queued something, or by a
// connection that ended) the dispatcher takes back rows whose lease passed, then, for each
// mailbox with due rows, opens connections up to the mailbox's send_max_connections. A connection
// takes rows in chunks of store/outbox's outbox_chunk_rows (claimed, loaded and composed in one
// transaction), at most send_max_per_connection in all (some providers, e.g. Strato, refuse more
// than 20 per session), sends them one by one within send_max_per_minute (counted per mailbox
// across its connections), records each chunk's outcomes in one transaction, and says QUIT.
// While one chunk is on the wire the previous chunk's outcomes commit and the next chunk is taken
// (during a session's last chunk: the next session's first), so the SMTP session does not wait
// for PostgreSQL; the claim's commit does not wait for the disk (store/outbox.hpp). Over SMTP with
// PIPELINING each row's envelope goes in the write of the row before's content, and the session's
// last row takes the QUIT along (RFC 2920): one round trip per message. Every attempt at a row
// composes the same bytes with the same Message-ID. daemon/serve.cpp runs the worker on an event
// loop and thread of its own.
//
// A "connection" is one SMTP session, or for the HTTP transports a run of API requests over the
// shared keep-alive client; Microsoft 365 mailboxes get at most [graph] max_concurrent_per_mailbox
// of them.
//
// Outcomes: accepted -> sent, with a copy stored in the mailbox's "sent" folder and linked to
// contacts; 4xx, timeouts, lost connections (HTTP: 429 and 5xx) -> retrying with backoff until
// [outbox] max_age_hours; 5xx (HTTP: other 4xx, an expired app secret, a message over Graph's
// size limit) -> failed with the server's reply. A Retry-After from the provider puts the row's
// next attempt no sooner than it says, and no new connection of that mailbox starts before then.
// Messages the server accepted whose chunk had not committed when the daemon died are sent again
// after the lease, with the same bytes and Message-ID: at most two chunks per connection slot
// (store/outbox.hpp, "Duplicates").
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
