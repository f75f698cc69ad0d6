// Beast lives in this translation unit only: it converts between Beast's messages and the plain
// HttpRequest/HttpResponse of daemon/http.hpp, and owns sockets, TLS, limits and deadlines.
//
// Body limits: a request announces its size (Content-Length) or streams chunks; either way at
// most the limit of its route (Router::body_limit: [http] max_body_bytes unless the route has
// its own) is read before the answer is 413. The parser's limit starts at the largest of all
// routes, so that the header read does not refuse a large webhook before its route is known.
#include "daemon/http_server.hpp"

#include <array>
#include <atomic>
#include <mutex>
#include <set>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <spdlog/spdlog.h>

#include "daemon/metrics.hpp"
#include "daemon/router.hpp"
#include "store/store.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// One connection. Shared so that the server's shutdown can reach it on its strand. With TLS the
// TCP stream moves into `tls` once the session starts; lowest() is the TCP layer either way.
struct Connection {
  explicit Connection(tcp::socket s) : executor(s.get_executor()), plain(std::in_place, std::move(s)) {}
  asio::any_io_executor executor;  // the connection's strand
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
  bool busy = false;  // a request was received and is being answered; touched on the strand only
  bool unread_body = false;  // answered 413 while the client may still be sending its body

  beast::tcp_stream& lowest() { return tls ? tls->next_layer() : *plain; }
};

std::shared_ptr<asio::ssl::context> server_tls_context(const HttpConfig& c) {
  if (c.tls_certificate.empty()) return nullptr;
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                   asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  try {
    ctx->use_certificate_chain_file(c.tls_certificate.string());
    ctx->use_private_key_file(c.tls_key.string(), asio::ssl::context::pem);
  } catch (const std::exception& e) {
    throw std::runtime_error("[http] tls_certificate / tls_key: " + std::string(e.what()));
  }
  return ctx;
}

// The request target's path as the router sees it ("" when the target is not origin-form).
std::string path_of(std::string_view target) {
  auto parsed = boost::urls::parse_origin_form(target);
  return parsed ? std::string(parsed->path()) : std::string();
}

HttpRequest to_request(const http::request<http::string_body>& m, const std::string& remote) {
  HttpRequest r;
  r.method = std::string(m.method_string());
  r.target = std::string(m.target());
  r.remote_address = remote;
  auto parsed = boost::urls::parse_origin_form(r.target);
  if (!parsed) throw ApiError(400, "bad_request", "the request target is not a valid origin-form URL");
  r.path = std::string(parsed->path());
  for (auto p : parsed->params()) r.query[std::string(p.key)] = std::string(p.value);
  for (const auto& f : m) {
    std::string name(f.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    r.headers.emplace_back(std::move(name), std::string(f.value()));
  }
  r.body = m.body();
  return r;
}

}  // namespace

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(asio::io_context& io, const HttpConfig& c, const Router& r, Metrics& m)
      : io(io), config(c), router(r), metrics(m), acceptor(asio::make_strand(io)), tls_context(server_tls_context(c)) {}

  asio::io_context& io;
  HttpConfig config;
  const Router& router;
  Metrics& metrics;
  tcp::acceptor acceptor;
  std::shared_ptr<asio::ssl::context> tls_context;  // null: plain HTTP
  std::atomic<bool> draining{false};
  std::atomic<std::size_t> active{0};  // requests received and not yet answered
  std::mutex mutex;
  std::set<std::shared_ptr<Connection>> connections;

  asio::awaitable<void> accept_loop() {
    auto self = shared_from_this();
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::make_strand(io), asio::as_tuple(asio::use_awaitable));
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      if (ec) {  // e.g. out of file descriptors: back off instead of spinning
        spdlog::warn("event=http_accept_failed reason=\"{}\"", ec.message());
        asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(100));
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
        continue;
      }
      socket.set_option(asio::ip::tcp::no_delay(true), ec);  // answers go out when written (no Nagle delay)
      auto conn = std::make_shared<Connection>(std::move(socket));
      {
        std::lock_guard lock(mutex);
        connections.insert(conn);
      }
      auto ex = conn->executor;
      asio::co_spawn(ex, session(conn), [self, conn](std::exception_ptr e) {
        if (e) {
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& x) {
            spdlog::error("event=http_session_crashed reason=\"{}\"", x.what());
          }
        }
        std::lock_guard lock(self->mutex);
        self->connections.erase(conn);
      });
    }
  }

  asio::awaitable<HttpResponse> dispatch(HttpRequest& req, std::string& route_label) {
    auto m = router.match(req);
    if (!m.route) {
      route_label = "unmatched";
      auto r = m.status == 405 ? HttpResponse::error(405, "method_not_allowed", "this path does not accept " + req.method)
                               : HttpResponse::error(404, "not_found", "no such resource");
      if (m.status == 405) r.headers.emplace_back("Allow", m.allow);
      co_return r;
    }
    route_label = m.route->pattern;
    co_return co_await m.route->handler(req);
  }

  // Runs the handler and turns what escapes it into an answer the client can act on; internals
  // never reach the client, they are logged with the request id.
  asio::awaitable<HttpResponse> answer(HttpRequest& req, std::string& route_label, const std::string& request_id) {
    std::exception_ptr failure;
    try {
      co_return co_await dispatch(req, route_label);
    } catch (...) {
      failure = std::current_exception();
    }
    try {
      std::rethrow_exception(failure);
    } catch (const ApiError& e) {
      co_return HttpResponse::error(e.status, e.code, e.what(), e.field);
    } catch (const StoreUnavailable& e) {
      spdlog::warn("event=http_db_unavailable request={} route={} reason=\"{}\"", request_id, route_label, e.what());
      co_return HttpResponse::error(503, "database_unavailable", "the database cannot be reached; try again later");
    } catch (const StoreTimeout& e) {
      spdlog::warn("event=http_db_timeout request={} route={}", request_id, route_label);
      co_return HttpResponse::error(503, "database_timeout", "the database did not answer in time; try again later");
    } catch (const std::exception& e) {
      spdlog::error("event=http_handler_failed request={} route={} reason=\"{}\"", request_id, route_label, e.what());
      co_return HttpResponse::error(500, "internal_error", "internal error (request " + request_id + ")");
    }
  }

  static http::response<http::string_body> to_beast(const HttpResponse& r, unsigned version, bool keep_alive) {
    http::response<http::string_body> res{static_cast<http::status>(r.status), version};
    res.set(http::field::content_type, r.content_type);
    res.set(http::field::cache_control, "no-store");
    res.set("X-Content-Type-Options", "nosniff");
    for (const auto& [k, v] : r.headers) res.set(k, v);
    res.body() = r.body;
    res.keep_alive(keep_alive);
    res.prepare_payload();
    return res;
  }

  template <class Stream>
  asio::awaitable<void> write_error(Stream& stream, int status, std::string_view code, std::string_view message) {
    auto res = to_beast(HttpResponse::error(status, code, message), 11, false);
    beast::get_lowest_layer(stream).expires_after(config.write_timeout);
    co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
    metrics.http_request("unmatched", status);
  }

  asio::awaitable<void> session(std::shared_ptr<Connection> conn) {
    beast::error_code ec;
    std::string remote = conn->lowest().socket().remote_endpoint(ec).address().to_string();
    if (!tls_context) {
      co_await serve(conn, *conn->plain, remote);
    } else {
      conn->tls.emplace(std::move(*conn->plain), *tls_context);
      conn->plain.reset();
      conn->lowest().expires_after(config.read_timeout);
      auto [hec] = co_await conn->tls->async_handshake(asio::ssl::stream_base::server, asio::as_tuple(asio::use_awaitable));
      if (hec)
        spdlog::debug("event=http_tls_handshake_failed client={} reason=\"{}\"", remote, hec.message());
      else
        co_await serve(conn, *conn->tls, remote);
    }
    // No TLS close_notify exchange: every answer is framed by its Content-Length, and waiting for
    // the client's close_notify would hold the connection (and a shutdown) for nothing.
    conn->lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
    if (conn->unread_body) co_await discard_input(conn->lowest());
    conn->lowest().socket().close(ec);
  }

  // After a 413 the client may still be sending the body it announced. Closing with unread input
  // makes the kernel answer with a reset, which can destroy the 413 before the client reads it
  // (a webhook sender would then retry as if the network failed). So read and drop what keeps
  // coming, for a bounded time and amount, before closing.
  static asio::awaitable<void> discard_input(beast::tcp_stream& s) {
    static constexpr std::size_t kMaxDiscard = 64 << 20;
    std::array<char, 16384> sink;
    std::size_t total = 0;
    s.expires_after(std::chrono::seconds(2));
    while (total < kMaxDiscard) {
      auto [ec, n] = co_await s.async_read_some(asio::buffer(sink), asio::as_tuple(asio::use_awaitable));
      if (ec) break;
      total += n;
    }
  }

  template <class Stream>
  asio::awaitable<void> serve(std::shared_ptr<Connection> conn, Stream& stream, const std::string& remote) {
    beast::flat_buffer buffer;
    const std::size_t largest_limit = router.max_body_limit(config.max_body_bytes);
    while (!draining) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(config.max_header_bytes));
      parser.body_limit(largest_limit);
      beast::get_lowest_layer(stream).expires_after(config.read_timeout);
      auto [rec, rn] = co_await http::async_read_header(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
      if (rec == http::error::body_limit) {  // a Content-Length over every route's limit is caught here
        co_await write_error(stream, 413, "body_too_large", "the request body is too large");
        conn->unread_body = true;
        break;
      }
      if (rec == http::error::header_limit) {
        co_await write_error(stream, 431, "headers_too_large", "the request headers are too large");
        break;
      }
      if (rec) {
        if (rec != http::error::end_of_stream && rec != beast::error::timeout && rec != asio::error::operation_aborted &&
            rec != asio::error::connection_reset && rec != asio::error::eof &&
            rec != asio::ssl::error::stream_truncated)
          co_await write_error(stream, 400, "bad_request", "the request is not valid HTTP/1.1");
        break;
      }
      conn->busy = true;
      ++active;
      struct Done {
        Connection& c;
        std::atomic<std::size_t>& a;
        ~Done() {
          c.busy = false;
          --a;
        }
      } done{*conn, active};

      // This route's limit: a Content-Length over it is refused before any of the body is read;
      // a chunked body is cut off by the parser as soon as it passes it.
      const std::size_t limit =
          router.body_limit(std::string(parser.get().method_string()), path_of(parser.get().target()), config.max_body_bytes);
      if (parser.content_length() && *parser.content_length() > limit) {
        co_await write_error(stream, 413, "body_too_large", "the request body is too large");
        conn->unread_body = true;
        break;
      }
      parser.body_limit(limit);
      if (auto e = parser.get()[http::field::expect]; beast::iequals(e, "100-continue")) {
        http::response<http::empty_body> cont{http::status::continue_, 11};
        co_await http::async_write(stream, cont, asio::as_tuple(asio::use_awaitable));
      }
      auto [bec, bn] = co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
      if (bec == http::error::body_limit) {
        co_await write_error(stream, 413, "body_too_large", "the request body is too large");
        conn->unread_body = true;
        break;
      }
      if (bec) break;

      auto message = parser.release();
      const auto started = std::chrono::steady_clock::now();
      const std::string request_id = hex_encode(random_bytes(6));
      std::string route_label = "unmatched";
      HttpResponse response;
      try {
        HttpRequest req = to_request(message, remote);
        response = co_await answer(req, route_label, request_id);
      } catch (const ApiError& e) {
        response = HttpResponse::error(e.status, e.code, e.what(), e.field);
      }
      const bool keep_alive = message.keep_alive() && !draining;
      auto res = to_beast(response, message.version(), keep_alive);
      res.set("X-Request-Id", request_id);
      beast::get_lowest_layer(stream).expires_after(config.write_timeout);
      auto [wec, wn] = co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
      metrics.http_request(route_label, response.status);
      spdlog::debug("event=http_request request={} method={} route=\"{}\" status={} ms={}", request_id,
                    std::string(message.method_string()), route_label, response.status,
                    std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count());
      if (wec || !keep_alive) break;
    }
  }

  // Cancels the connections that are waiting for a request (all of them when `all`).
  void close_connections(bool all) {
    std::lock_guard lock(mutex);
    for (auto& c : connections)
      asio::post(c->executor, [c, all] {
        if (all || !c->busy) c->lowest().cancel();
      });
  }
};

HttpServer::HttpServer(asio::io_context& io, const HttpConfig& config, const Router& router, Metrics& metrics)
    : impl_(std::make_shared<Impl>(io, config, router, metrics)) {}

HttpServer::~HttpServer() = default;

void HttpServer::start() {
  tcp::endpoint ep(asio::ip::make_address(impl_->config.address), impl_->config.port);
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(asio::socket_base::reuse_address(true));
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen(asio::socket_base::max_listen_connections);
  asio::co_spawn(impl_->acceptor.get_executor(), impl_->accept_loop(), asio::detached);
}

std::uint16_t HttpServer::port() const { return impl_->acceptor.local_endpoint().port(); }

std::size_t HttpServer::active_requests() const { return impl_->active.load(); }

asio::awaitable<void> HttpServer::shutdown(std::chrono::steady_clock::duration grace) {
  auto impl = impl_;
  impl->draining = true;
  asio::post(impl->acceptor.get_executor(), [impl] {
    beast::error_code ec;
    impl->acceptor.close(ec);
  });
  impl->close_connections(false);
  asio::steady_timer timer(co_await asio::this_coro::executor);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  auto remaining = [&] {
    std::lock_guard lock(impl->mutex);
    return impl->connections.size();
  };
  while (remaining() > 0 && std::chrono::steady_clock::now() < deadline) {
    impl->close_connections(false);  // connections that finished a request meanwhile
    timer.expires_after(std::chrono::milliseconds(20));
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  if (remaining() > 0) {
    spdlog::warn("event=http_shutdown_forced connections={}", remaining());
    impl->close_connections(true);
    for (int i = 0; i < 50 && remaining() > 0; ++i) {
      timer.expires_after(std::chrono::milliseconds(20));
      co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }
}

}  // namespace mailgate
