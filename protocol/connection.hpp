// protocol/connection: one TCP connection with optional TLS and per-operation deadlines: the
// protocol clients' (SMTP now; IMAP and HTTP are to move onto it), and the sessions a server
// accepted (the SMTP receiver: plain until STARTTLS, then the server side of the handshake).
//
// - Security: "tls" (handshake right after connecting), "starttls" (the protocol asks for the
//   handshake with start_tls() when the server agreed), "plain".
// - TLS: TLS 1.2 or newer, certificate and host name verified (SNI set for names), against the
//   system trust store plus an optional extra CA file.
// - Every connect, read, write and handshake has a deadline; when it passes the operation fails
//   with kind timeout, and a client's socket is closed (an accepted one stays open, so that the
//   server can say why before it closes).
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

namespace boost::asio::ssl {
class context;
}

namespace mailgate::net {

struct Endpoint {
  std::string host;
  std::uint16_t port = 0;
  std::string security = "tls";  // tls | starttls | plain
  std::string ca_file;           // extra CAs trusted beside the system's trust store
};

class Error : public std::runtime_error {
 public:
  enum class Kind { io, timeout, tls };
  Error(Kind kind, const std::string& message) : std::runtime_error(message), kind(kind) {}
  Kind kind;
};

class Connection {
 public:
  Connection(boost::asio::any_io_executor executor, Endpoint endpoint);
  // An accepted socket; start_tls() runs the server side of the handshake with `server_context`
  // (a certificate and key loaded; may be null when the server offers no TLS).
  Connection(boost::asio::ip::tcp::socket socket, std::shared_ptr<boost::asio::ssl::context> server_context);
  ~Connection();
  Connection(const Connection&) = delete;

  // Resolves, connects, and for "tls" completes the handshake.
  boost::asio::awaitable<void> connect(std::chrono::milliseconds timeout);
  // Upgrades a plain connection (after the protocol's STARTTLS was accepted).
  boost::asio::awaitable<void> start_tls(std::chrono::milliseconds timeout);
  // Reads what is available (at least one byte) into `out` (appended).
  boost::asio::awaitable<void> read_some(std::string& out, std::chrono::milliseconds timeout);
  boost::asio::awaitable<void> write(std::string_view data, std::chrono::milliseconds timeout);
  void close();
  // Cancels a pending read or write (it fails with kind io); the connection stays open. May be
  // called from any thread.
  void cancel();

  bool tls() const;
  const Endpoint& endpoint() const;
  std::string peer() const;  // "127.0.0.1:25" once connected
  std::string peer_ip() const;  // "127.0.0.1"

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace mailgate::net
