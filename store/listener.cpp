#include "store/listener.hpp"

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "store/store.hpp"

namespace mailgate {

namespace {

class Receiver final : public pqxx::notification_receiver {
 public:
  Receiver(pqxx::connection_base& c, const std::string& channel, const std::function<void()>& on_notify)
      : pqxx::notification_receiver(c, channel), on_notify_(on_notify) {}
  void operator()(const std::string&, int) override { on_notify_(); }

 private:
  const std::function<void()>& on_notify_;
};

}  // namespace

StoreListener::StoreListener(const DatabaseConfig& config, std::string channel, std::function<void()> on_notify,
                             std::chrono::milliseconds retry)
    : conninfo_(store_conninfo(config)), channel_(std::move(channel)), on_notify_(std::move(on_notify)), retry_(retry) {
  thread_ = std::thread([this] { run(); });
}

StoreListener::~StoreListener() {
  stopping_ = true;
  thread_.join();
}

void StoreListener::run() {
  constexpr long kWaitMicroseconds = 200000;  // how soon the destructor is noticed
  bool warned = false;
  while (!stopping_) {
    try {
      pqxx::connection conn(conninfo_);
      Receiver receiver(conn, channel_, on_notify_);  // sends the LISTEN and waits for its answer
      listening_ = true;
      if (warned) spdlog::info("event=db_listen_restored channel={}", channel_);
      warned = false;
      on_notify_();  // anything written while nobody listened
      while (!stopping_) conn.await_notification(0, kWaitMicroseconds);
    } catch (const std::exception& e) {
      listening_ = false;
      if (!warned) spdlog::warn("event=db_listen_lost channel={} reason=\"{}\" action=\"polling only; retried every {} ms\"", channel_, e.what(), retry_.count());
      warned = true;
    }
    listening_ = false;
    for (auto waited = std::chrono::milliseconds(0); !stopping_ && waited < retry_; waited += std::chrono::milliseconds(100))
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace mailgate
