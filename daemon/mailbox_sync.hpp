// daemon/mailbox_sync: one supervised coroutine per active IMAP mailbox, each on its own strand.
//
// A mailbox's loop: connect, log in, find the folder, SELECT, fetch what is new in batches, and
// commit each batch together with the mailbox's cursor (UIDVALIDITY, last UID) in one
// transaction; only then apply the after-import action (leave, \Seen, move, delete) to that
// batch. Then IDLE (re-issued before 29 minutes) or poll. A changed UIDVALIDITY resyncs from UID
// 1, deduplicating on the raw bytes' SHA-256. Failures follow rules/mailbox_sync: "retrying"
// with backoff, or "failed" (credentials refused, or failing too long), which waits until an
// admin saves the mailbox or asks for a reconnect (health set back to "ok" in the database).
// Every health change is logged and audited.
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

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace mailgate
