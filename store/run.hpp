// The awaitable facade over Store: `co_await store_run(store, [](pqxx::connection_base&) {...})`.
//
// The job runs on a pool thread; the coroutine is resumed on its own executor. Coroutines that
// use this must run on a strand (every coroutine in daemon/ is spawned on one): the completion
// is posted to that strand, which orders it after the coroutine's suspension.
//
// GCC 12 (Debian 12's compiler) destroys twice a temporary made by aggregate or brace
// initialisation -- a lambda with captures, `Principal{}`, `Endpoint{host, port}` -- when it sits
// in the same full-expression as a co_await (seen with ASan: double free). So build such values in
// their own statement, then await:
//     auto op = store_transact(store, [id](pqxx::work& tx) { ... });
//     auto row = co_await std::move(op);
// never `co_await store_transact(store, [id](...) {...})` in one expression. Coroutines take their
// class-type parameters by const reference for the same reason.
//
// The event loop (io_context) must outlive the Store: a pool thread may still hold a copy of a
// coroutine's executor for a moment after it has posted the completion.
//
// A deadline bounds the wait. When it passes the coroutine gets StoreTimeout while the job may
// still finish on its thread; the job therefore owns everything it touches (capture by value).
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <type_traits>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pqxx/connection>
#include <pqxx/transaction>

#include "store/store.hpp"

namespace mailgate {

namespace detail {
// What the pool thread fills in. It holds no I/O object, so it may outlive the event loop.
template <class R>
struct RunResult {
  std::exception_ptr error;
  std::optional<std::conditional_t<std::is_void_v<R>, bool, R>> value;
};
// What the waiting coroutine owns; the pool thread sees it only through a weak_ptr.
struct RunWaiter {
  explicit RunWaiter(boost::asio::any_io_executor ex) : timer(ex) {}
  boost::asio::steady_timer timer;
  bool done = false;
};
}  // namespace detail

template <class F, class R = std::invoke_result_t<F&, pqxx::connection_base&>>
boost::asio::awaitable<R> store_run(Store& store, F job, std::chrono::steady_clock::duration timeout) {
  auto result = std::make_shared<detail::RunResult<R>>();
  auto waiter = std::make_shared<detail::RunWaiter>(co_await boost::asio::this_coro::executor);
  waiter->timer.expires_after(timeout);
  store.submit(
      [result, job = std::move(job)](pqxx::connection_base& c) mutable {
        if constexpr (std::is_void_v<R>) {
          job(c);
          result->value.emplace(true);
        } else {
          result->value.emplace(job(c));
        }
      },
      [result, weak = std::weak_ptr<detail::RunWaiter>(waiter)](std::exception_ptr e) {
        result->error = e;
        // Null when the coroutine gave up (deadline) and is gone: nobody to wake.
        if (auto w = weak.lock()) {
          auto ex = w->timer.get_executor();
          boost::asio::post(ex, [w = std::move(w)] {
            w->done = true;
            w->timer.cancel();
          });
        }
      });
  co_await waiter->timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  if (!waiter->done) throw StoreTimeout("the database did not answer in time");
  if (result->error) std::rethrow_exception(result->error);
  if constexpr (!std::is_void_v<R>) co_return std::move(*result->value);
}

template <class F, class R = std::invoke_result_t<F&, pqxx::connection_base&>>
boost::asio::awaitable<R> store_run(Store& store, F job) {
  return store_run(store, std::move(job), store.config().query_timeout + store.config().connect_timeout);
}

// Runs `job(tx)` in one transaction and commits it; the job is retried as a whole when the
// connection broke before the commit (see store.hpp).
template <class F, class R = std::invoke_result_t<F&, pqxx::work&>>
boost::asio::awaitable<R> store_transact(Store& store, F job) {
  return store_run(store, [job = std::move(job)](pqxx::connection_base& c) mutable -> R {
    pqxx::work tx(c);
    if constexpr (std::is_void_v<R>) {
      job(tx);
      tx.commit();
    } else {
      R r = job(tx);
      tx.commit();
      return r;
    }
  });
}

}  // namespace mailgate
