// store/listener: PostgreSQL notifications (LISTEN) on a connection of their own, for what
// another process writes: the outbox rows another daemon, a script or the CRM queues
// (migration 0014) wake this daemon's outbox at once instead of at its next poll.
//
// Contract:
// - `on_notify` runs on the listener's thread, once per notification received and once after
//   every (re)connect, since notifications sent while it was not listening are lost. It must be
//   quick and must not throw (post to an executor).
// - A lost connection is retried every `retry`; meanwhile the caller's poll still finds the
//   rows. Nothing here is needed for correctness, only for promptness.
// - The destructor stops and joins the thread within about 200 ms.
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "config/config.hpp"

namespace mailgate {

class StoreListener {
 public:
  StoreListener(const DatabaseConfig& config, std::string channel, std::function<void()> on_notify,
                std::chrono::milliseconds retry = std::chrono::seconds(5));
  ~StoreListener();
  StoreListener(const StoreListener&) = delete;
  StoreListener& operator=(const StoreListener&) = delete;

  // Whether the LISTEN is in place now (for tests and the health page).
  bool listening() const { return listening_; }

 private:
  void run();

  std::string conninfo_, channel_;
  std::function<void()> on_notify_;
  std::chrono::milliseconds retry_;
  std::atomic<bool> stopping_{false}, listening_{false};
  std::thread thread_;
};

}  // namespace mailgate
