// The connection pool behind Store: one thread per connection, a shared FIFO of jobs.
#include "store/store.hpp"

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

namespace mailgate {

std::string store_conninfo(const DatabaseConfig& c) {
  // libpq accepts both URIs and key=value strings; key=value pairs can be appended only to the
  // latter, so URIs get their options as query parameters.
  const bool uri = c.url.rfind("postgres://", 0) == 0 || c.url.rfind("postgresql://", 0) == 0;
  const long statement_ms = static_cast<long>(c.query_timeout.count()) * 1000;
  if (uri) {
    const char sep = c.url.find('?') == std::string::npos ? '?' : '&';
    return c.url + sep + "connect_timeout=" + std::to_string(c.connect_timeout.count()) +
           "&application_name=mailgated&options=-c%20statement_timeout%3D" + std::to_string(statement_ms);
  }
  return c.url + " connect_timeout=" + std::to_string(c.connect_timeout.count()) +
         " application_name=mailgated options='-c statement_timeout=" + std::to_string(statement_ms) + "'";
}

Store::Store(const DatabaseConfig& config) : config_(config), conninfo_(store_conninfo(config)) {
  threads_.reserve(config.pool_size);
  for (int i = 0; i < config.pool_size; ++i) threads_.emplace_back([this] { worker(); });
}

Store::~Store() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto* c : running_) {
      try {
        c->cancel_query();
      } catch (const std::exception& e) {
        spdlog::debug("event=db_cancel_failed reason=\"{}\"", e.what());
      }
    }
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
  for (auto& task : queue_) task.done(std::make_exception_ptr(StoreUnavailable("the store is shutting down")));
}

void Store::submit(Job job, Done done) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      done(std::make_exception_ptr(StoreUnavailable("the store is shutting down")));
      return;
    }
    queue_.push_back({std::move(job), std::move(done)});
  }
  wake_.notify_one();
}

int Store::queued() const {
  std::lock_guard lock(mutex_);
  return static_cast<int>(queue_.size());
}

void Store::worker() {
  std::unique_ptr<pqxx::connection> conn;
  for (;;) {
    Task task;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    ++in_use_;
    std::exception_ptr error;
    for (int attempt = 0;; ++attempt) {
      try {
        if (!conn || !conn->is_open()) {
          conn.reset();
          conn = std::make_unique<pqxx::connection>(conninfo_);
        }
        {
          std::lock_guard lock(mutex_);
          running_.push_back(conn.get());
        }
        struct Unlist {
          Store& s;
          pqxx::connection_base* c;
          ~Unlist() {
            std::lock_guard lock(s.mutex_);
            std::erase(s.running_, c);
          }
        } unlist{*this, conn.get()};
        task.job(*conn);
        error = nullptr;
        break;
      } catch (const pqxx::in_doubt_error& e) {
        conn.reset();
        error = std::current_exception();
        break;
      } catch (const pqxx::broken_connection& e) {
        // Either connecting failed or an idle connection died with the server. A stale
        // connection is worth one more try; a failed connect is not.
        const bool was_open = conn != nullptr;
        conn.reset();
        spdlog::debug("event=db_connection_lost attempt={} reason=\"{}\"", attempt, e.what());
        error = std::make_exception_ptr(StoreUnavailable(std::string("database unreachable: ") + e.what()));
        if (!was_open || attempt > 0) break;
      } catch (const pqxx::sql_error& e) {
        // Class 08 (connection exception) and 57P0x (server shutting down / crashed) mean the
        // server went away in the middle of the job: the same as a broken connection.
        const std::string state = e.sqlstate();
        if (state.rfind("08", 0) == 0 || state.rfind("57P0", 0) == 0) {
          conn.reset();
          error = std::make_exception_ptr(StoreUnavailable(std::string("database unreachable: ") + e.what()));
          if (attempt > 0) break;
          continue;
        }
        error = std::current_exception();
        break;
      } catch (...) {
        error = std::current_exception();
        break;
      }
    }
    --in_use_;
    task.done(error);
  }
}

}  // namespace mailgate
