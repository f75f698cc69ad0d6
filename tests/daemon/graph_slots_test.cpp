// daemon/graph_slots: one count per mailbox over coroutines on different strands and threads.
#include "daemon/graph_slots.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace mailgate {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

struct Counts {
  std::atomic<int> now{0}, max{0}, done{0};
  void enter() {
    const int n = ++now;
    for (int m = max; n > m && !max.compare_exchange_weak(m, n);) {
    }
  }
};

asio::awaitable<void> request(GraphSlots& slots, std::int64_t mailbox, Counts& counts) {
  auto take = slots.acquire(mailbox);
  GraphSlots::Slot slot = co_await std::move(take);
  counts.enter();
  asio::steady_timer t(co_await asio::this_coro::executor);
  t.expires_after(5ms);
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  --counts.now;
  ++counts.done;
}

// Two "directions" (strands) of one mailbox on a two-thread pool: together never more than the
// limit, and the limit is reached; another mailbox is counted on its own.
TEST(GraphSlots, OneCountPerMailboxAcrossStrandsAndThreads) {
  GraphSlots slots(4);
  asio::io_context io(2);
  auto inbound = asio::make_strand(io), outbound = asio::make_strand(io), other = asio::make_strand(io);
  Counts one, two;
  for (int i = 0; i < 30; ++i) {
    asio::co_spawn(inbound, request(slots, 1, one), asio::detached);
    asio::co_spawn(outbound, request(slots, 1, one), asio::detached);
    asio::co_spawn(other, request(slots, 2, two), asio::detached);
  }
  std::thread helper([&] { io.run(); });
  io.run();
  helper.join();
  EXPECT_EQ(one.done, 60);
  EXPECT_EQ(one.max, 4) << "shared by both strands: never more, and the limit is used";
  EXPECT_EQ(two.done, 30);
  EXPECT_EQ(two.max, 4);
  EXPECT_EQ(slots.in_use(1), 0);
  EXPECT_EQ(slots.in_use(2), 0);
}

// A coroutine destroyed while it waits (the daemon stopping) takes no slot with it, and one
// destroyed while it holds a slot gives it back.
TEST(GraphSlots, CoroutinesDestroyedWhileWaitingOrHoldingLeaveNothingTaken) {
  GraphSlots slots(1);
  {
    asio::io_context io;
    Counts counts;
    for (int i = 0; i < 3; ++i) asio::co_spawn(io, request(slots, 7, counts), asio::detached);
    io.run_for(2ms);  // the first holds the slot (its timer runs), the other two wait
    EXPECT_EQ(slots.in_use(7), 1);
    io.stop();
  }  // the io_context destroys the three coroutine frames
  EXPECT_EQ(slots.in_use(7), 0);
  asio::io_context io;
  Counts counts;
  asio::co_spawn(io, request(slots, 7, counts), asio::detached);
  io.run();
  EXPECT_EQ(counts.done, 1) << "the slot is free again";
}

// Through a pointer: a count, when there is one, is taken and given back; without one there is
// nothing to wait for.
TEST(GraphSlots, ThroughAPointerThatMayBeNull) {
  GraphSlots slots(1);
  asio::io_context io;
  int held_with = -1;
  bool without = true;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto take = GraphSlots::acquire(&slots, 3);
        std::optional<GraphSlots::Slot> slot = co_await std::move(take);
        held_with = slot ? slots.in_use(3) : -1;
        auto none = GraphSlots::acquire(nullptr, 3);
        without = (co_await std::move(none)).has_value();
      },
      asio::detached);
  io.run();
  EXPECT_EQ(held_with, 1);
  EXPECT_FALSE(without);
  EXPECT_EQ(slots.in_use(3), 0) << "given back when the coroutine ended";
}

}  // namespace
}  // namespace mailgate
