// protocol/http_client: the one HTTP/1.1 client of mailgate, for Mailgun's API, Microsoft Graph
// and the OAuth2 token endpoint. Built on protocol/connection (TLS 1.2+, certificate and host name
// verified, SNI, the extra CA of [tls] ca_file, deadlines) with Beast's response parser; Beast
// stays inside http_client.cpp.
//
// - Only https:// URLs; anything else throws Error{protocol} before a byte is sent.
// - send(): one request, one response. Connections are kept alive and reused per host:port (at
//   most max_idle_per_host idle ones; one idle longer than idle_timeout is not reused but closed
//   when that host is next asked, or by close_all() / the destructor). A reused connection the
//   server closed before it sent any byte of the response is retried once on a fresh connection
//   (the usual case: the server's idle timer closed it while the request was on its way; a server
//   that read the request and then closed without a byte of answer may see it twice). Nothing
//   else is retried here: the caller owns retry policy (Retry-After is parsed for it).
// - Deadlines: connect (with the TLS handshake) connect_timeout, the whole exchange (writing the
//   request, reading the response) request_timeout. Responses with a body larger than
//   max_response_bytes fail with Error{too_large} and the connection is dropped.
// - Any HTTP status is a Response, not an exception; failures to get a response throw Error with
//   a Kind (daemon/outbox_transports treats connect, tls, timeout, io and too_large as transient,
//   protocol as permanent).
// - Bodies: Content-Length and chunked responses; requests are sent with Content-Length.
#pragma once
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

namespace mailgate {
struct Config;
}

namespace mailgate::http {

struct Header {
  std::string name, value;
};

struct Request {
  std::string method = "GET";
  std::string url;  // absolute: https://host[:port]/path?query
  std::vector<Header> headers;  // Host, Content-Length, User-Agent and Connection are added
  std::string body;
};

struct Response {
  int status = 0;
  std::vector<Header> headers;
  std::string body;

  std::optional<std::string> header(std::string_view name) const;  // the first; name case-insensitive
  // Retry-After as delta-seconds or an HTTP-date (relative to now, never negative); nullopt when
  // absent or unparsable.
  std::optional<std::chrono::seconds> retry_after() const;
};

class Error : public std::runtime_error {
 public:
  enum class Kind { connect, tls, timeout, io, protocol, too_large };
  Error(Kind kind, const std::string& message) : std::runtime_error(message), kind(kind) {}
  Kind kind;
};
const char* to_string(Error::Kind kind);

struct ClientOptions {
  std::string ca_file;  // extra CAs (PEM) beside the system's
  std::chrono::seconds connect_timeout{10};
  std::chrono::seconds request_timeout{60};
  std::size_t max_response_bytes = 64 << 20;
  int max_idle_per_host = 4;
  std::chrono::seconds idle_timeout{60};
  std::string user_agent = "mailgate";
};

// From [http_client] and [tls] ca_file.
ClientOptions client_options(const Config& config);

// Thread safety: one Client may be used by coroutines on any thread of its executor's context
// (the idle pool is locked); a single request is one coroutine.
class Client {
 public:
  Client(boost::asio::any_io_executor executor, ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  boost::asio::awaitable<Response> send(Request request);
  void close_all();  // closes the idle connections
  std::size_t connections_opened() const;  // for tests and metrics

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// URL pieces.
struct Url {
  std::string scheme, host;
  unsigned short port = 443;
  std::string target;  // path?query, at least "/"
};
Url parse_url(std::string_view url);  // throws Error{protocol}
std::string url_encode(std::string_view s);  // RFC 3986 unreserved kept, the rest %XX
std::string form_urlencode(const std::vector<std::pair<std::string, std::string>>& fields);

// multipart/form-data (RFC 7578) with a random boundary that is checked against the content.
class Multipart {
 public:
  Multipart();
  void field(std::string name, std::string value);
  void file(std::string name, std::string filename, std::string content_type, std::string data);
  std::string content_type() const;  // multipart/form-data; boundary=...
  std::string body() const;

 private:
  struct Part {
    std::string name, filename, content_type, data;
    bool is_file = false;
  };
  std::vector<Part> parts_;
  mutable std::string boundary_;
};

std::string base64(std::string_view data);  // standard alphabet, padded, no line breaks
std::string basic_auth(std::string_view user, std::string_view password);  // "Basic ..."

}  // namespace mailgate::http
