// store/listener: an outbox row queued by another connection is announced at its commit (not
// before, not for a rollback), and a listener whose connection was killed listens again.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <pqxx/pqxx>

#include "store/listener.hpp"
#include "tests/support/pg_harness.hpp"

namespace mailgate {
namespace {

using namespace std::chrono_literals;

// Counts the listener's calls; waits for the next one.
class Calls {
 public:
  void operator()() {
    std::lock_guard lock(mutex_);
    ++count_;
    changed_.notify_all();
  }
  int count() {
    std::lock_guard lock(mutex_);
    return count_;
  }
  bool wait_beyond(int seen, std::chrono::milliseconds within) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, within, [&] { return count_ > seen; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  int count_ = 0;
};

DatabaseConfig config_of(const std::string& url) {
  DatabaseConfig c;
  c.url = url;
  return c;
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds within) {
  for (const auto end = std::chrono::steady_clock::now() + within; std::chrono::steady_clock::now() < end;
       std::this_thread::sleep_for(10ms))
    if (condition()) return true;
  return condition();
}

void queue_rows(pqxx::work& tx, int n, const std::string& tag) {
  tx.exec_params("INSERT INTO outbox (kind, to_addresses, subject, text_body, message_id) "
                 "SELECT 'message', ARRAY['jan@klant.nl'], 'test', 'tekst', '<' || $2 || n || '@coop.nl>' FROM generate_series(1, $1) n",
                 n, tag);
}

TEST(StoreListener, AnOutboxRowIsAnnouncedAtItsCommitOnly) {
  const std::string url = test::fresh_migrated_database();
  Calls calls;
  StoreListener listener(config_of(url), "mailgate_outbox", [&] { calls(); });
  ASSERT_TRUE(eventually([&] { return listener.listening() && calls.count() == 1; }, 5s));  // the call after connecting

  pqxx::connection other(url);
  {
    pqxx::work tx(other);
    queue_rows(tx, 3, "a");
    EXPECT_FALSE(calls.wait_beyond(1, 300ms)) << "announced before the commit";
    tx.commit();
  }
  EXPECT_TRUE(calls.wait_beyond(1, 2s));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(calls.count(), 2) << "one announcement for one inserting statement";

  {
    pqxx::work tx(other);
    queue_rows(tx, 1, "b");
    tx.abort();
  }
  EXPECT_FALSE(calls.wait_beyond(2, 500ms)) << "a rolled-back row was announced";
}

TEST(StoreListener, ListensAgainAfterItsConnectionWasKilled) {
  const std::string url = test::fresh_migrated_database();
  Calls calls;
  StoreListener listener(config_of(url), "mailgate_outbox", [&] { calls(); }, 200ms);
  ASSERT_TRUE(eventually([&] { return listener.listening(); }, 5s));
  const int before = calls.count();

  pqxx::connection other(url);
  pqxx::nontransaction(other).exec(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database()");
  ASSERT_TRUE(calls.wait_beyond(before, 5s)) << "no call after reconnecting";
  ASSERT_TRUE(eventually([&] { return listener.listening(); }, 5s));

  const int reconnected = calls.count();
  pqxx::work tx(other);
  queue_rows(tx, 1, "c");
  tx.commit();
  EXPECT_TRUE(calls.wait_beyond(reconnected, 2s));
}

}  // namespace
}  // namespace mailgate
