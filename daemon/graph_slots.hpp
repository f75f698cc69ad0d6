// daemon/graph_slots: at most [graph] max_concurrent_per_mailbox requests of one mailbox in flight
// at Microsoft Graph, counted over everything that calls Graph for it: the inbound sync
// (daemon/graph_sync) and the outbox's sendMail (daemon/outbox_transports). Graph throttles per
// mailbox (4 concurrent requests), so the two directions share one count instead of each keeping
// its own.
//
// Waiters are served first come, first served. Callers may run on different strands; each caller
// must itself run on a strand (or a single-threaded executor), as every coroutine of the daemon
// does. A coroutine destroyed while it waits (shutdown) leaves no slot taken.
#pragma once
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include <boost/asio/awaitable.hpp>

namespace mailgate {

class GraphSlots {
 public:
  explicit GraphSlots(int per_mailbox);
  GraphSlots(const GraphSlots&) = delete;
  GraphSlots& operator=(const GraphSlots&) = delete;

  // One request's right to be in flight; given back when destroyed.
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& other) noexcept : owner_(other.owner_), mailbox_(other.mailbox_) { other.owner_ = nullptr; }
    Slot& operator=(Slot&& other) noexcept;
    ~Slot();

   private:
    friend class GraphSlots;
    Slot(GraphSlots* owner, std::int64_t mailbox) : owner_(owner), mailbox_(mailbox) {}
    GraphSlots* owner_ = nullptr;
    std::int64_t mailbox_ = 0;
  };

  // Waits until the mailbox has a free slot.
  boost::asio::awaitable<Slot> acquire(std::int64_t mailbox);
  // The same through a pointer that may be null (no count kept: unit tests without one): then
  // nothing to wait for.
  static boost::asio::awaitable<std::optional<Slot>> acquire(GraphSlots* slots, std::int64_t mailbox);

  int in_use(std::int64_t mailbox) const;  // slots held (tests, metrics)
  int per_mailbox() const { return per_mailbox_; }

 private:
  struct Waiter;
  struct Mailbox {
    int used = 0;
    std::deque<std::shared_ptr<Waiter>> waiters;
  };
  void release(std::int64_t mailbox);  // hands the slot to the first waiter, or frees it

  const int per_mailbox_;
  mutable std::mutex mutex_;
  std::map<std::int64_t, Mailbox> mailboxes_;
};

}  // namespace mailgate
