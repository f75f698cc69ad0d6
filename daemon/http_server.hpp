// The embedded HTTP/1.1 server: one coroutine per connection, each on its own strand, with
// header and body size limits and read/write deadlines from [http].
//
// Shutdown (two phases, see CONVENTIONS.md): shutdown() closes the listener, closes connections
// that wait for a request, lets requests already received finish and answers them with
// "Connection: close", then after the grace period cancels whatever is left.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>

#include <boost/asio/awaitable.hpp>

#include "config/config.hpp"

namespace boost::asio {
class io_context;
}

namespace mailgate {

class Router;
class Metrics;

class HttpServer {
 public:
  HttpServer(boost::asio::io_context& io, const HttpConfig& config, const Router& router, Metrics& metrics);
  ~HttpServer();

  // Binds and listens (throws std::system_error when the address is taken), then accepts.
  void start();
  std::uint16_t port() const;
  std::size_t active_requests() const;
  boost::asio::awaitable<void> shutdown(std::chrono::steady_clock::duration grace);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace mailgate
