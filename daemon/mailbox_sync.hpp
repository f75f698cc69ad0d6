// daemon/mailbox_sync: one supervised coroutine per active IMAP mailbox, each on its own strand.
//
// A mailbox's loop: connect, log in, find the folder, SELECT, fetch what is new in batches, and
// commit each batch together with the mailbox's cursor (UIDVALIDITY, last UID) in one
// transaction; only then apply the after-import action (leave, \Seen, move, delete) to that
// batch. The action is recorded as pending in the batch's transaction and removed once done, so
// an action lost to a crash or a dropped connection is done on the next connection (before
// anything new is fetched). Then IDLE (re-issued before 29 minutes) or poll.
//
// Fetching, parsing and storing overlap: each message is parsed with GMime on a small pool of
// threads as soon as it has arrived, and batch n is inserted and committed (store/ingest.hpp's
// ingest_messages: a handful of statements per batch) while batch n+1 is fetched.
//
// A changed UIDVALIDITY resyncs from UID 1, deduplicating on the raw bytes' SHA-256. Failures
// follow rules/mailbox_sync: "retrying" with backoff, or "failed" (credentials refused, a server
// that allows no login these settings permit such as LOGINDISABLED, a folder that does not exist,
// or failing too long), which waits until an admin saves the mailbox or asks for a reconnect
// (health set back to "ok" in the database). Every health change is logged and audited.
#pragma once
#include <atomic>
#include <memory>

#include "daemon/services.hpp"

namespace boost::asio {
class io_context;
}

namespace mailgate {

class MailboxSupervisor {
 public:
  MailboxSupervisor(boost::asio::io_context& io, Services& services);
  ~MailboxSupervisor();
  void start();  // begins watching the mailboxes table; returns at once
  void stop();   // asks every loop to end at its next step
  void wake();   // looks for mailboxes to start now instead of at the next watch interval

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace mailgate
