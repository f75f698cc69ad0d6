#include "daemon/graph_slots.hpp"

#include <algorithm>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace mailgate {

namespace asio = boost::asio;

// A coroutine waiting for a slot, owned by that coroutine (and by the queue while queued).
// `granted` is written under the mutex by release(); the timer belongs to the waiter's executor:
// release() posts there to wake it (setting the expiry in the past both ends a wait in progress
// and makes a wait not yet begun end at once).
struct GraphSlots::Waiter {
  explicit Waiter(asio::any_io_executor ex) : timer(std::move(ex)) { timer.expires_at(asio::steady_timer::time_point::max()); }
  asio::steady_timer timer;
  bool granted = false;
};

GraphSlots::GraphSlots(int per_mailbox) : per_mailbox_(std::max(1, per_mailbox)) {}

GraphSlots::Slot& GraphSlots::Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    if (owner_) owner_->release(mailbox_);
    owner_ = other.owner_;
    mailbox_ = other.mailbox_;
    other.owner_ = nullptr;
  }
  return *this;
}

GraphSlots::Slot::~Slot() {
  if (owner_) owner_->release(mailbox_);
}

int GraphSlots::in_use(std::int64_t mailbox) const {
  std::lock_guard lock(mutex_);
  auto m = mailboxes_.find(mailbox);
  return m == mailboxes_.end() ? 0 : m->second.used;
}

void GraphSlots::release(std::int64_t mailbox) {
  std::shared_ptr<Waiter> next;
  {
    std::lock_guard lock(mutex_);
    auto m = mailboxes_.find(mailbox);
    if (m == mailboxes_.end()) return;
    if (!m->second.waiters.empty()) {  // the slot passes on: `used` stays
      next = m->second.waiters.front();
      m->second.waiters.pop_front();
      next->granted = true;
    } else if (--m->second.used <= 0) {
      mailboxes_.erase(m);
    }
  }
  // The wake-up holds the waiter weakly: a waiter whose coroutine is gone (an io_context being
  // destroyed) is not kept alive by it, nor is its timer touched.
  if (next)
    asio::post(next->timer.get_executor(), [weak = std::weak_ptr<Waiter>(next)] {
      if (auto w = weak.lock()) w->timer.expires_at(asio::steady_timer::time_point::min());
    });
}

asio::awaitable<GraphSlots::Slot> GraphSlots::acquire(std::int64_t mailbox) {
  const auto executor = co_await asio::this_coro::executor;
  auto waiter = std::make_shared<Waiter>(executor);
  bool free_now = false;
  {
    std::lock_guard lock(mutex_);
    auto& m = mailboxes_[mailbox];
    if (m.used < per_mailbox_ && m.waiters.empty()) {
      ++m.used;
      free_now = true;
    } else {
      m.waiters.push_back(waiter);
    }
  }
  if (free_now) co_return Slot(this, mailbox);

  // Ends the wait cleanly if this coroutine is destroyed first: out of the queue, or, when a slot
  // was handed over meanwhile, the slot given back.
  struct Leave {
    GraphSlots* self;
    std::int64_t mailbox;
    std::shared_ptr<Waiter> waiter;
    bool taken = false;
    ~Leave() {
      if (taken) return;
      bool pass_on = false;
      {
        std::lock_guard lock(self->mutex_);
        if (waiter->granted) {
          pass_on = true;
        } else if (auto m = self->mailboxes_.find(mailbox); m != self->mailboxes_.end()) {
          auto& q = m->second.waiters;
          q.erase(std::remove(q.begin(), q.end(), waiter), q.end());
        }
      }
      if (pass_on) self->release(mailbox);
    }
  };
  Leave leave{this, mailbox, waiter};
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (waiter->granted) break;
    }
    co_await waiter->timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  leave.taken = true;
  co_return Slot(this, mailbox);
}

asio::awaitable<std::optional<GraphSlots::Slot>> GraphSlots::acquire(GraphSlots* slots, std::int64_t mailbox) {
  if (!slots) co_return std::nullopt;
  auto take = slots->acquire(mailbox);
  co_return co_await std::move(take);
}

}  // namespace mailgate
