#include "protocol/connection.hpp"

#include <array>
#include <map>
#include <mutex>

#include <openssl/ssl.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace mailgate::net {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

struct Connection::Impl : std::enable_shared_from_this<Connection::Impl> {
  Impl(asio::any_io_executor ex, Endpoint ep) : ex(ex), ep(std::move(ep)), ctx(context_for(this->ep)), watchdog(ex) {
    stream = std::make_unique<ssl::stream<tcp::socket>>(ex, *ctx);
  }
  Impl(tcp::socket socket, std::shared_ptr<ssl::context> server_ctx)
      : ex(socket.get_executor()), ctx(server_ctx ? std::move(server_ctx) : context_for(Endpoint{"", 0, "plain", ""})), watchdog(ex),
        server(true) {
    boost::system::error_code ec;
    const auto remote = socket.remote_endpoint(ec);
    if (!ec) {
      ep.host = remote.address().to_string();
      ep.port = remote.port();
      peer = ep.host + ":" + std::to_string(ep.port);
    }
    ep.security = "starttls";
    stream = std::make_unique<ssl::stream<tcp::socket>>(std::move(socket), *ctx);
  }

  // One TLS context per CA file for the life of the process: loading the system's trust store
  // costs ~35 ms of CPU, too much for every connection. Plain connections get one without it.
  static std::shared_ptr<ssl::context> context_for(const Endpoint& ep) {
    static std::mutex mutex;
    static std::map<std::string, std::shared_ptr<ssl::context>> contexts;
    const std::string key = ep.security == "plain" ? std::string("\0plain", 6) : ep.ca_file;
    std::lock_guard lock(mutex);
    if (auto found = contexts.find(key); found != contexts.end()) return found->second;
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                     ssl::context::no_tlsv1_1);
    if (ep.security != "plain") {
      ctx->set_default_verify_paths();
      if (!ep.ca_file.empty()) ctx->load_verify_file(ep.ca_file);  // throws for a bad file: nothing is kept
    }
    contexts.emplace(key, ctx);
    return ctx;
  }

  asio::any_io_executor ex;
  Endpoint ep;
  std::shared_ptr<ssl::context> ctx;
  std::unique_ptr<ssl::stream<tcp::socket>> stream;
  asio::steady_timer watchdog;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  bool tls = false, closed = false, timed_out = false, watching = false, server = false;
  std::string peer;
  std::array<char, 64 * 1024> buffer{};

  // Sets the deadline of the next operation; the watchdog closes the socket when it passes.
  void arm(std::chrono::milliseconds d) {
    deadline = std::chrono::steady_clock::now() + d;
    if (!watching) {
      watching = true;
      asio::co_spawn(ex, watch(), asio::detached);
    } else if (deadline < watchdog.expiry()) {
      // Sooner than the watchdog wakes: it reads the deadline again now. A later one (the common
      // case: the same timeout from a later start) waits until it wakes, which saves a timer
      // cancellation and a resumption of the watchdog for every read and write.
      watchdog.cancel();
    }
  }

  // No operation pending: an idle connection is not timed out.
  void disarm() { deadline = std::chrono::steady_clock::time_point::max(); }

  awaitable<void> watch() {
    auto self = shared_from_this();
    while (!closed) {
      watchdog.expires_at(deadline);
      co_await watchdog.async_wait(asio::as_tuple(use_awaitable));
      if (closed) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        timed_out = true;
        if (server) {
          // A server answers a timeout (SMTP: 421) before it closes: stop the operation only.
          boost::system::error_code ec;
          stream->next_layer().cancel(ec);
          deadline = std::chrono::steady_clock::time_point::max();
          continue;
        }
        close();
        break;
      }
    }
  }

  void close() {
    if (closed) return;
    closed = true;
    boost::system::error_code ec;
    stream->next_layer().close(ec);
    watchdog.cancel();
  }

  [[noreturn]] void failed(const boost::system::error_code& ec, const std::string& what) {
    if (timed_out) throw Error(Error::Kind::timeout, "timed out " + what);
    throw Error(Error::Kind::io, what + ": " + ec.message());
  }

  awaitable<void> handshake(std::chrono::milliseconds timeout) {
    arm(timeout);
    if (server) {
      auto [ec] = co_await stream->async_handshake(ssl::stream_base::server, asio::as_tuple(use_awaitable));
      if (ec) {
        if (timed_out) throw Error(Error::Kind::timeout, "timed out in the TLS handshake with " + peer);
        throw Error(Error::Kind::tls, "TLS handshake with " + peer + " failed: " + ec.message());
      }
      tls = true;
      disarm();
      co_return;
    }
    boost::system::error_code not_ip;
    asio::ip::make_address(ep.host, not_ip);
    if (not_ip) SSL_set_tlsext_host_name(stream->native_handle(), ep.host.c_str());  // a name: send SNI
    stream->set_verify_mode(ssl::verify_peer);
    stream->set_verify_callback(ssl::host_name_verification(ep.host));
    auto [ec] = co_await stream->async_handshake(ssl::stream_base::client, asio::as_tuple(use_awaitable));
    if (ec) {
      if (timed_out) throw Error(Error::Kind::timeout, "timed out in the TLS handshake with " + ep.host);
      throw Error(Error::Kind::tls, "TLS handshake with " + ep.host + " failed: " + ec.message());
    }
    tls = true;
    disarm();
  }
};

Connection::Connection(asio::any_io_executor executor, Endpoint endpoint)
    : impl_(std::make_shared<Impl>(executor, std::move(endpoint))) {}

Connection::Connection(tcp::socket socket, std::shared_ptr<ssl::context> server_context)
    : impl_(std::make_shared<Impl>(std::move(socket), std::move(server_context))) {}

Connection::~Connection() { impl_->close(); }

awaitable<void> Connection::connect(std::chrono::milliseconds timeout) {
  auto impl = impl_;
  impl->arm(timeout);
  tcp::resolver resolver(impl->ex);
  auto [rec, results] = co_await resolver.async_resolve(impl->ep.host, std::to_string(impl->ep.port), asio::as_tuple(use_awaitable));
  if (rec) throw Error(Error::Kind::io, "cannot resolve " + impl->ep.host + ": " + rec.message());
  auto [cec, endpoint] = co_await asio::async_connect(impl->stream->next_layer(), results, asio::as_tuple(use_awaitable));
  if (cec) impl->failed(cec, "connecting to " + impl->ep.host + ":" + std::to_string(impl->ep.port));
  impl->peer = endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
  // Commands go out when written, not after the server's delayed ACK of the previous one
  // (Nagle's algorithm held back a pipelined command and TLS records written back to back).
  boost::system::error_code nec;
  impl->stream->next_layer().set_option(tcp::no_delay(true), nec);
  impl->disarm();
  if (impl->ep.security == "tls") co_await impl->handshake(timeout);
}

awaitable<void> Connection::start_tls(std::chrono::milliseconds timeout) {
  auto impl = impl_;
  co_await impl->handshake(timeout);
}

awaitable<void> Connection::read_some(std::string& out, std::chrono::milliseconds timeout) {
  auto impl = impl_;
  impl->arm(timeout);
  boost::system::error_code ec;
  std::size_t n = 0;
  if (impl->tls)
    std::tie(ec, n) = co_await impl->stream->async_read_some(asio::buffer(impl->buffer), asio::as_tuple(use_awaitable));
  else
    std::tie(ec, n) = co_await impl->stream->next_layer().async_read_some(asio::buffer(impl->buffer), asio::as_tuple(use_awaitable));
  if (ec) impl->failed(ec, "reading from " + impl->ep.host);
  impl->disarm();
  out.append(impl->buffer.data(), n);
}

awaitable<void> Connection::write(std::string_view data, std::chrono::milliseconds timeout) {
  auto impl = impl_;
  impl->arm(timeout);
  boost::system::error_code ec;
  if (impl->tls)
    std::tie(ec, std::ignore) = co_await asio::async_write(*impl->stream, asio::buffer(data), asio::as_tuple(use_awaitable));
  else
    std::tie(ec, std::ignore) = co_await asio::async_write(impl->stream->next_layer(), asio::buffer(data), asio::as_tuple(use_awaitable));
  if (ec) impl->failed(ec, "writing to " + impl->ep.host);
  impl->disarm();
}

void Connection::close() { impl_->close(); }
void Connection::cancel() {
  asio::post(impl_->ex, [impl = impl_] {
    boost::system::error_code ec;
    if (!impl->closed) impl->stream->next_layer().cancel(ec);
  });
}
bool Connection::tls() const { return impl_->tls; }
const Endpoint& Connection::endpoint() const { return impl_->ep; }
std::string Connection::peer() const { return impl_->peer; }
std::string Connection::peer_ip() const { return impl_->server ? impl_->ep.host : impl_->peer.substr(0, impl_->peer.rfind(':')); }

}  // namespace mailgate::net
