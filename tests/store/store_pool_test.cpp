// store/: the connection pool and its awaitable facade, against a real PostgreSQL.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_future.hpp>
#include <pqxx/pqxx>

#include "store/run.hpp"
#include "tests/support/pg_harness.hpp"

namespace mailgate {
namespace {

namespace asio = boost::asio;

DatabaseConfig db(const std::string& url, int pool = 2) {
  DatabaseConfig c;
  c.url = url;
  c.pool_size = pool;
  c.connect_timeout = std::chrono::seconds(2);
  c.query_timeout = std::chrono::seconds(5);
  return c;
}

template <class T>
T run_on(asio::io_context& io, asio::awaitable<T> a) {
  auto f = asio::co_spawn(asio::make_strand(io), std::move(a), asio::use_future);
  io.restart();
  io.run();
  return f.get();
}

TEST(StorePool, RunsJobsOnPoolThreadsAndReturnsValues) {
  asio::io_context io;
  Store store(db(test::fresh_migrated_database()));
  const auto io_thread = std::this_thread::get_id();
  auto [value, thread] = run_on(io, [&]() -> asio::awaitable<std::pair<int, std::thread::id>> {
    co_return co_await store_run(store, [](pqxx::connection_base& c) {
      pqxx::work tx(c);
      return std::make_pair(tx.exec("SELECT 41 + 1")[0][0].as<int>(), std::this_thread::get_id());
    });
  }());
  EXPECT_EQ(value, 42);
  EXPECT_NE(thread, io_thread) << "database work must not run on the I/O thread";
}

TEST(StorePool, JobExceptionsReachTheCaller) {
  asio::io_context io;
  Store store(db(test::fresh_migrated_database()));
  EXPECT_THROW(run_on(io, [&]() -> asio::awaitable<int> {
                 co_return co_await store_transact(store, [](pqxx::work& tx) { return tx.exec("SELECT nonsense")[0][0].as<int>(); });
               }()),
               pqxx::sql_error);
}

TEST(StorePool, TransactRollsBackOnException) {
  const auto url = test::fresh_migrated_database();
  asio::io_context io;
  Store store(db(url));
  EXPECT_THROW(run_on(io, [&]() -> asio::awaitable<int> {
                 co_await store_transact(store, [](pqxx::work& tx) {
                   tx.exec("INSERT INTO users (email) VALUES ('a@example.nl')");
                   throw std::runtime_error("policy said no");
                 });
                 co_return 0;
               }()),
               std::runtime_error);
  pqxx::connection c(url);
  EXPECT_EQ(pqxx::work(c).exec("SELECT count(*) FROM users")[0][0].as<int>(), 0);
}

TEST(StorePool, DeadlineGivesStoreTimeoutWithoutWaitingForTheJob) {
  asio::io_context io;
  Store store(db(test::fresh_migrated_database()));
  const auto started = std::chrono::steady_clock::now();
  EXPECT_THROW(run_on(io, [&]() -> asio::awaitable<int> {
                 co_await store_run(store, [](pqxx::connection_base& c) { pqxx::work(c).exec("SELECT pg_sleep(2)"); },
                                    std::chrono::milliseconds(200));
                 co_return 0;
               }()),
               StoreTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(1500));
}

TEST(StorePool, UnreachableDatabaseIsStoreUnavailable) {
  asio::io_context io;
  Store store(db("postgresql://mailgate@127.0.0.1:1/none"));
  EXPECT_THROW(run_on(io, [&]() -> asio::awaitable<int> {
                 co_return co_await store_run(store, [](pqxx::connection_base&) { return 1; });
               }()),
               StoreUnavailable);
}

TEST(StorePool, RidesOutADatabaseRestart) {
  test::PgCluster cluster(test::temp_dir("pg-restart") / "data");
  asio::io_context io;
  Store store(db(cluster.url(), 1));
  auto ping = [&]() -> asio::awaitable<int> {
    co_return co_await store_run(store, [](pqxx::connection_base& c) { return pqxx::work(c).exec("SELECT 7")[0][0].as<int>(); });
  };
  EXPECT_EQ(run_on(io, ping()), 7);
  cluster.stop();
  EXPECT_THROW(run_on(io, ping()), StoreUnavailable);
  cluster.start();
  EXPECT_EQ(run_on(io, ping()), 7) << "the pool reconnects by itself";
}

}  // namespace
}  // namespace mailgate
