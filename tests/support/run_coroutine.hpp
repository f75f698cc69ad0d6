// Runs one coroutine to completion on a fresh io_context (on a strand, as the daemon's
// coroutines run) and returns its result or rethrows its exception. For protocol client tests:
//   auto r = test::run_coroutine([&](auto ex) -> asio::awaitable<int> { ...; co_return 1; });
#pragma once
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_future.hpp>

namespace mailgate::test {

template <class F>
auto run_coroutine(F body) {
  boost::asio::io_context io;
  auto strand = boost::asio::make_strand(io);
  auto future = boost::asio::co_spawn(strand, body(strand), boost::asio::use_future);
  io.run();
  return future.get();
}

}  // namespace mailgate::test
