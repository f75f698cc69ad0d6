// store/: the PostgreSQL store. libpqxx is blocking, so Store owns a fixed pool of connections,
// each on its own thread, and jobs are handed to that pool. No I/O thread ever waits on the
// database: coroutines use the awaitable facade in store/run.hpp (`co_await run(store, fn)`).
//
// Contract:
// - A job gets a live pqxx connection. Connections open lazily and reopen after PostgreSQL went
//   away, so the pool rides out a database restart without a daemon restart.
// - A job that fails with a broken connection before it committed is run once more on a fresh
//   connection; a job must therefore be one transaction (or read-only). A commit whose outcome is
//   unknown (pqxx::in_doubt_error) is never retried here.
// - Errors reach the caller as exceptions: StoreUnavailable when the database cannot be reached,
//   otherwise what the job threw (pqxx::sql_error, ...).
#pragma once
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"

namespace pqxx {
class connection_base;
}  // namespace pqxx

namespace mailgate {

// The database cannot be reached (refused, reset, timed out). Temporary by nature.
class StoreUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The job did not finish within its deadline. Its outcome is unknown to the caller.
class StoreTimeout : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Adds connect_timeout, application_name and statement_timeout to a libpq connection string.
std::string store_conninfo(const DatabaseConfig& config);

class Store {
 public:
  using Job = std::function<void(pqxx::connection_base&)>;
  using Done = std::function<void(std::exception_ptr)>;

  explicit Store(const DatabaseConfig& config);
  // Cancels the queries still running (their jobs fail), fails the queued jobs with
  // StoreUnavailable, and joins the pool threads.
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Queues `job`; `done` is called on a pool thread with null or the job's exception.
  void submit(Job job, Done done);

  int size() const { return static_cast<int>(threads_.size()); }
  int in_use() const { return in_use_.load(); }
  int queued() const;
  const DatabaseConfig& config() const { return config_; }

 private:
  struct Task {
    Job job;
    Done done;
  };
  void worker();

  DatabaseConfig config_;
  std::string conninfo_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Task> queue_;
  bool stopping_ = false;
  std::atomic<int> in_use_{0};
  std::vector<pqxx::connection_base*> running_;  // connections running a job, under mutex_
  std::vector<std::thread> threads_;
};

}  // namespace mailgate
