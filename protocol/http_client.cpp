// protocol/http_client: see http_client.hpp. The request is serialized here by hand (it is
// small and fixed in shape); the response is read with Beast's response_parser fed from the
// bytes protocol/connection returns, so Beast's templates are instantiated in this file only.
#include "protocol/http_client.hpp"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <map>
#include <mutex>

#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "config/config.hpp"
#include "protocol/connection.hpp"
#include "util/crypto.hpp"

namespace mailgate::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
using asio::awaitable;

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y)); });
}

bool header_value_ok(std::string_view s) { return s.find_first_of("\r\n") == std::string_view::npos && s.find('\0') == std::string_view::npos; }

std::string serialize(const Request& request, const Url& url, const std::string& user_agent) {
  std::string out;
  out.reserve(256 + request.body.size());
  out += request.method;
  out += ' ';
  out += url.target;
  out += " HTTP/1.1\r\nHost: ";
  out += url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  if (url.port != 443) out += ":" + std::to_string(url.port);
  out += "\r\n";
  bool has_user_agent = false;
  for (const auto& h : request.headers) {
    if (iequals(h.name, "Host") || iequals(h.name, "Content-Length") || iequals(h.name, "Connection") || iequals(h.name, "Transfer-Encoding"))
      continue;
    if (iequals(h.name, "User-Agent")) has_user_agent = true;
    out += h.name;
    out += ": ";
    out += h.value;
    out += "\r\n";
  }
  if (!has_user_agent && !user_agent.empty()) out += "User-Agent: " + user_agent + "\r\n";
  if (!request.body.empty() || (request.method != "GET" && request.method != "HEAD" && request.method != "DELETE"))
    out += "Content-Length: " + std::to_string(request.body.size()) + "\r\n";
  out += "\r\n";
  out += request.body;
  return out;
}

// One idle kept-alive connection.
struct Idle {
  std::shared_ptr<net::Connection> connection;
  std::chrono::steady_clock::time_point since;
};

// Why one attempt failed, and whether a retry on a fresh connection is safe.
struct AttemptFailure {
  Error error;
  bool retry_fresh = false;
};

}  // namespace

const char* to_string(Error::Kind kind) {
  switch (kind) {
    case Error::Kind::connect: return "connect";
    case Error::Kind::tls: return "tls";
    case Error::Kind::timeout: return "timeout";
    case Error::Kind::io: return "io";
    case Error::Kind::protocol: return "protocol";
    case Error::Kind::too_large: return "too_large";
  }
  return "?";
}

std::optional<std::string> Response::header(std::string_view name) const {
  for (const auto& h : headers)
    if (iequals(h.name, name)) return h.value;
  return std::nullopt;
}

std::optional<std::chrono::seconds> Response::retry_after() const {
  auto value = header("Retry-After");
  if (!value) return std::nullopt;
  std::string v = *value;
  while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) v.pop_back();
  while (!v.empty() && std::isspace(static_cast<unsigned char>(v.front()))) v.erase(v.begin());
  if (v.empty()) return std::nullopt;
  if (std::all_of(v.begin(), v.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    if (v.size() > 9) return std::chrono::seconds(999999999);
    return std::chrono::seconds(std::stol(v));
  }
  // HTTP-date (IMF-fixdate, RFC 9110 5.6.7): Sun, 06 Nov 1994 08:49:37 GMT
  std::tm tm{};
  const char* end = strptime(v.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (!end || *end) return std::nullopt;
  const std::time_t at = timegm(&tm);
  const std::time_t now = std::time(nullptr);
  return std::chrono::seconds(at > now ? at - now : 0);
}

ClientOptions client_options(const Config& config) {
  ClientOptions o;
  o.ca_file = config.tls.ca_file.string();
  o.connect_timeout = config.http_client.connect_timeout;
  o.request_timeout = config.http_client.request_timeout;
  o.max_response_bytes = config.http_client.max_response_bytes;
  o.max_idle_per_host = config.http_client.max_idle_per_host;
  o.idle_timeout = config.http_client.idle_timeout;
  return o;
}

Url parse_url(std::string_view url) {
  Url u;
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) throw Error(Error::Kind::protocol, "not an absolute URL");
  u.scheme = std::string(url.substr(0, scheme_end));
  std::transform(u.scheme.begin(), u.scheme.end(), u.scheme.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (u.scheme != "https") throw Error(Error::Kind::protocol, "only https:// URLs are allowed, not " + u.scheme + "://");
  auto rest = url.substr(scheme_end + 3);
  const auto path_at = rest.find_first_of("/?#");
  auto authority = rest.substr(0, path_at);
  u.target = path_at == std::string_view::npos ? "/" : std::string(rest.substr(path_at));
  if (auto hash = u.target.find('#'); hash != std::string::npos) u.target.erase(hash);
  if (u.target.empty() || u.target[0] == '?') u.target.insert(0, "/");
  if (authority.find('@') != std::string_view::npos) throw Error(Error::Kind::protocol, "credentials in a URL are not allowed");
  std::string_view port;
  if (!authority.empty() && authority[0] == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) throw Error(Error::Kind::protocol, "bad IPv6 address in URL");
    u.host = std::string(authority.substr(1, close - 1));
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') throw Error(Error::Kind::protocol, "bad authority in URL");
      port = after.substr(1);
    }
  } else {
    const auto colon = authority.rfind(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (u.host.empty()) throw Error(Error::Kind::protocol, "no host in URL");
  if (!port.empty()) {
    if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
      throw Error(Error::Kind::protocol, "bad port in URL");
    const int p = std::stoi(std::string(port));
    if (p <= 0 || p > 65535) throw Error(Error::Kind::protocol, "bad port in URL");
    u.port = static_cast<unsigned short>(p);
  }
  for (char c : u.target)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) throw Error(Error::Kind::protocol, "URL path must be percent-encoded");
  return u;
}

std::string url_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string form_urlencode(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string out;
  for (const auto& [name, value] : fields) {
    if (!out.empty()) out += '&';
    out += url_encode(name);
    out += '=';
    out += url_encode(value);
  }
  return out;
}

std::string base64(std::string_view data) { return base64_encode(data); }

std::string basic_auth(std::string_view user, std::string_view password) {
  std::string pair(user);
  pair += ':';
  pair += password;
  return "Basic " + base64_encode(pair);
}

Multipart::Multipart() = default;

void Multipart::field(std::string name, std::string value) {
  parts_.push_back(Part{std::move(name), {}, {}, std::move(value), false});
  boundary_.clear();
}

void Multipart::file(std::string name, std::string filename, std::string content_type, std::string data) {
  parts_.push_back(Part{std::move(name), std::move(filename), std::move(content_type), std::move(data), true});
  boundary_.clear();
}

namespace {
// A quoted-string parameter of Content-Disposition (RFC 7578 4.2: quotes and line breaks escaped).
std::string form_quoted(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += "%22";
    else if (c == '\r') out += "%0D";
    else if (c == '\n') out += "%0A";
    else out += c;
  }
  return out + "\"";
}
}  // namespace

std::string Multipart::content_type() const {
  body();  // chooses the boundary
  return "multipart/form-data; boundary=" + boundary_;
}

std::string Multipart::body() const {
  for (;;) {
    if (boundary_.empty()) {
      boundary_ = "mailgate-" + random_token(18);
      std::replace(boundary_.begin(), boundary_.end(), '_', 'x');  // base64url's '-' and '_' are boundary-safe; keep it plain
    }
    bool clash = false;
    for (const auto& p : parts_)
      if (p.data.find(boundary_) != std::string::npos) clash = true;
    if (!clash) break;
    boundary_.clear();
  }
  std::string out;
  for (const auto& p : parts_) {
    out += "--" + boundary_ + "\r\nContent-Disposition: form-data; name=" + form_quoted(p.name);
    if (p.is_file) {
      out += "; filename=" + form_quoted(p.filename) + "\r\nContent-Type: " + (p.content_type.empty() ? "application/octet-stream" : p.content_type);
    }
    out += "\r\n\r\n";
    out += p.data;
    out += "\r\n";
  }
  out += "--" + boundary_ + "--\r\n";
  return out;
}

struct Client::Impl {
  asio::any_io_executor executor;
  ClientOptions options;
  std::mutex mutex;
  std::map<std::string, std::vector<Idle>> idle;  // host:port -> most recently used last
  std::size_t opened = 0;

  std::shared_ptr<net::Connection> take_idle(const std::string& key) {
    std::vector<std::shared_ptr<net::Connection>> expired;
    std::shared_ptr<net::Connection> found;
    {
      std::lock_guard lock(mutex);
      auto it = idle.find(key);
      if (it == idle.end()) return nullptr;
      const auto now = std::chrono::steady_clock::now();
      auto& list = it->second;
      while (!list.empty()) {
        Idle last = std::move(list.back());
        list.pop_back();
        if (now - last.since < options.idle_timeout) {
          found = std::move(last.connection);
          break;
        }
        expired.push_back(std::move(last.connection));
      }
      // Older ones than an expired one are expired too.
      for (auto& i : list)
        if (now - i.since >= options.idle_timeout) expired.push_back(i.connection);
      std::erase_if(list, [&](const Idle& i) { return now - i.since >= options.idle_timeout; });
    }
    for (auto& c : expired) c->close();
    return found;
  }

  void give_back(const std::string& key, std::shared_ptr<net::Connection> connection) {
    std::shared_ptr<net::Connection> dropped;
    {
      std::lock_guard lock(mutex);
      auto& list = idle[key];
      list.push_back(Idle{std::move(connection), std::chrono::steady_clock::now()});
      if (static_cast<int>(list.size()) > std::max(0, options.max_idle_per_host)) {
        dropped = std::move(list.front().connection);
        list.erase(list.begin());
      }
    }
    if (dropped) dropped->close();
  }

  awaitable<std::shared_ptr<net::Connection>> open(const Url& url) {
    auto connection = std::make_shared<net::Connection>(executor, net::Endpoint{url.host, url.port, "tls", options.ca_file});
    {
      std::lock_guard lock(mutex);
      ++opened;
    }
    std::optional<Error> failure;
    try {
      co_await connection->connect(std::chrono::duration_cast<std::chrono::milliseconds>(options.connect_timeout));
    } catch (const net::Error& e) {
      const auto kind = e.kind == net::Error::Kind::timeout ? Error::Kind::timeout
                        : e.kind == net::Error::Kind::tls   ? Error::Kind::tls
                                                            : Error::Kind::connect;
      failure.emplace(kind, e.what());
    } catch (const std::exception& e) {  // a CA file that cannot be loaded
      failure.emplace(Error::Kind::tls, e.what());
    }
    if (failure) throw *failure;
    co_return connection;
  }

  // One request on one connection. Throws AttemptFailure.
  struct Exchanged {
    Response response;
    bool keep = false;
  };
  awaitable<Exchanged> exchange(std::shared_ptr<net::Connection> connection, bool reused, const std::string& wire,
                               std::chrono::steady_clock::time_point deadline, bool head) {
    using ms = std::chrono::milliseconds;
    auto remaining = [deadline] {
      return std::max(ms(1), std::chrono::duration_cast<ms>(deadline - std::chrono::steady_clock::now()));
    };
    std::size_t received = 0;
    auto net_failure = [&](const net::Error& e, const char* what) {
      const bool timeout = e.kind == net::Error::Kind::timeout;
      return AttemptFailure{Error(timeout ? Error::Kind::timeout : Error::Kind::io, std::string(what) + ": " + e.what()),
                            reused && received == 0 && !timeout};
    };
    std::optional<AttemptFailure> failure;
    try {
      co_await connection->write(wire, remaining());
    } catch (const net::Error& e) {
      failure = net_failure(e, "sending the request");
    }
    if (failure) throw *failure;

    beast::http::response_parser<beast::http::string_body> parser;
    parser.body_limit(options.max_response_bytes);
    parser.header_limit(256 * 1024);
    parser.eager(true);
    if (head) parser.skip(true);
    std::string buffer;
    std::size_t used = 0;
    bool eof = false;
    while (!parser.is_done()) {
      if (used == buffer.size()) {
        buffer.clear();
        used = 0;
        try {
          co_await connection->read_some(buffer, remaining());
        } catch (const net::Error& e) {
          if (e.kind == net::Error::Kind::timeout) {
            failure = net_failure(e, "reading the response");
          } else {
            eof = true;
            if (received > 0 && parser.is_header_done()) {  // a body delimited by the end of the connection?
              beast::error_code ec;
              parser.put_eof(ec);
              if (!ec && parser.is_done()) break;
            }
            failure = net_failure(e, received ? "the server closed the connection in the middle of the response" : "reading the response");
          }
        }
        if (failure) throw *failure;
        received += buffer.size();
        continue;
      }
      beast::error_code ec;
      const auto n = parser.put(asio::buffer(buffer.data() + used, buffer.size() - used), ec);
      used += n;
      if (ec == beast::http::error::need_more) {
        if (used < buffer.size()) {  // keep the partial element, read more after it
          buffer.erase(0, used);
          used = 0;
          std::string more;
          try {
            co_await connection->read_some(more, remaining());
          } catch (const net::Error& e) {
            failure = net_failure(e, "reading the response");
          }
          if (failure) throw *failure;
          received += more.size();
          buffer += more;
        }
        continue;
      }
      if (ec == beast::http::error::body_limit)
        throw AttemptFailure{Error(Error::Kind::too_large, "the response is larger than " + std::to_string(options.max_response_bytes) + " bytes"),
                             false};
      if (ec == beast::http::error::header_limit) throw AttemptFailure{Error(Error::Kind::too_large, "the response's header is too large"), false};
      if (ec) throw AttemptFailure{Error(Error::Kind::protocol, "bad HTTP response: " + ec.message()), false};
    }
    auto& message = parser.get();
    Response response;
    response.status = static_cast<int>(message.result_int());
    for (const auto& field : message) response.headers.push_back(Header{std::string(field.name_string()), std::string(field.value())});
    response.body = std::move(message.body());
    // Kept alive when the server says so and sent nothing beyond this response.
    Exchanged out;
    out.keep = !eof && message.keep_alive() && used == buffer.size();
    if (!out.keep) connection->close();
    out.response = std::move(response);
    co_return out;
  }
};

Client::Client(asio::any_io_executor executor, ClientOptions options) : impl_(std::make_shared<Impl>()) {
  impl_->executor = std::move(executor);
  impl_->options = std::move(options);
}

Client::~Client() { close_all(); }

void Client::close_all() {
  std::map<std::string, std::vector<Idle>> idle;
  {
    std::lock_guard lock(impl_->mutex);
    idle.swap(impl_->idle);
  }
  for (auto& [key, list] : idle)
    for (auto& i : list) i.connection->close();
}

std::size_t Client::connections_opened() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->opened;
}

awaitable<Response> Client::send(Request request) {
  auto impl = impl_;
  const Url url = parse_url(request.url);
  for (const auto& h : request.headers)
    if (!header_value_ok(h.name) || !header_value_ok(h.value) || h.name.empty()) throw Error(Error::Kind::protocol, "bad request header");
  if (request.method.empty() || request.method.find_first_of(" \r\n") != std::string::npos) throw Error(Error::Kind::protocol, "bad method");
  const std::string wire = serialize(request, url, impl->options.user_agent);
  const std::string key = url.host + ":" + std::to_string(url.port);
  const bool head = request.method == "HEAD";
  const auto deadline = std::chrono::steady_clock::now() + impl->options.request_timeout;

  for (int attempt = 0;; ++attempt) {
    std::shared_ptr<net::Connection> connection = attempt == 0 ? impl->take_idle(key) : nullptr;
    const bool reused = connection != nullptr;
    if (!connection) connection = co_await impl->open(url);
    std::optional<Impl::Exchanged> response;
    std::optional<AttemptFailure> failure;
    try {
      response = co_await impl->exchange(connection, reused, wire, deadline, head);
    } catch (const AttemptFailure& f) {
      failure = f;
    }
    if (response) {
      if (response->keep) impl->give_back(key, std::move(connection));  // else exchange() closed it
      co_return std::move(response->response);
    }
    connection->close();
    if (failure->retry_fresh && attempt == 0) continue;  // the server had closed the idle connection
    throw failure->error;
  }
}

}  // namespace mailgate::http
