#include "protocol/imap_client.hpp"

#include <openssl/ssl.h>

#include <algorithm>
#include <array>
#include <map>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "protocol/imap_parser.hpp"
#include "util/crypto.hpp"

namespace mailgate::imap {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;

std::string uid_set(std::vector<std::uint32_t> uids) {
  std::sort(uids.begin(), uids.end());
  uids.erase(std::unique(uids.begin(), uids.end()), uids.end());
  std::string out;
  for (std::size_t i = 0; i < uids.size();) {
    std::size_t j = i;
    while (j + 1 < uids.size() && uids[j + 1] == uids[j] + 1) ++j;
    out += (out.empty() ? "" : ",") + std::to_string(uids[i]) + (j > i ? ":" + std::to_string(uids[j]) : "");
    i = j + 1;
  }
  return out;
}

namespace {
std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
bool is_ip(const std::string& host) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}
}  // namespace

struct Client::Impl : std::enable_shared_from_this<Client::Impl> {
  Impl(asio::any_io_executor ex, Endpoint ep, Timeouts to)
      : ex(ex), ep(std::move(ep)), to(to), ctx(ssl::context::tls_client), watchdog(ex), idle_timer(ex) {
    ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                    ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    ctx.set_default_verify_paths();
    if (!this->ep.ca_file.empty()) ctx.load_verify_file(this->ep.ca_file);
    stream = std::make_unique<ssl::stream<tcp::socket>>(ex, ctx);
  }

  asio::any_io_executor ex;
  Endpoint ep;
  Timeouts to;
  ssl::context ctx;
  std::unique_ptr<ssl::stream<tcp::socket>> stream;
  bool tls = false, closed = false, timed_out = false;
  Parser parser{64 * 1024};
  std::set<std::string> caps;
  unsigned tag_counter = 0;
  asio::steady_timer watchdog, idle_timer;
  std::chrono::steady_clock::time_point deadline;
  std::map<std::uint64_t, std::string> literals;  // streamed literals of the response being read
  std::array<char, 64 * 1024> buffer{};

  void arm(std::chrono::milliseconds d) { deadline = std::chrono::steady_clock::now() + d; }

  awaitable<void> watch() {
    auto self = shared_from_this();
    while (!closed) {
      watchdog.expires_at(deadline);
      co_await watchdog.async_wait(asio::as_tuple(use_awaitable));
      if (closed) co_return;
      if (std::chrono::steady_clock::now() >= deadline) {
        timed_out = true;
        close();
        co_return;
      }
    }
  }

  void close() {
    if (closed) return;
    closed = true;
    boost::system::error_code ec;
    stream->next_layer().close(ec);
    watchdog.cancel();
    idle_timer.cancel();
  }

  [[noreturn]] void io_failed(const boost::system::error_code& ec, const char* what) {
    if (timed_out) throw Error(Error::Kind::timeout, std::string("timed out ") + what);
    throw Error(Error::Kind::io, std::string(what) + ": " + ec.message());
  }

  awaitable<void> write(const std::string& data) {
    boost::system::error_code ec;
    if (tls)
      std::tie(ec, std::ignore) = co_await asio::async_write(*stream, asio::buffer(data), asio::as_tuple(use_awaitable));
    else
      std::tie(ec, std::ignore) = co_await asio::async_write(stream->next_layer(), asio::buffer(data), asio::as_tuple(use_awaitable));
    if (ec) io_failed(ec, "writing to the server");
  }

  awaitable<Event> next_event() {
    for (;;) {
      if (auto e = parser.next()) {
        if (e->kind == Event::Kind::error) throw Error(Error::Kind::protocol, "the server sent something that is not IMAP: " + e->error);
        if (e->kind == Event::Kind::literal_begin) literals[e->seq].reserve(static_cast<std::size_t>(std::min<std::uint64_t>(e->size, 64 << 20)));
        if (e->kind == Event::Kind::literal_data) literals[e->seq].append(e->data);
        if (e->kind == Event::Kind::response) co_return std::move(*e);
        continue;
      }
      boost::system::error_code ec;
      std::size_t n = 0;
      if (tls)
        std::tie(ec, n) = co_await stream->async_read_some(asio::buffer(buffer), asio::as_tuple(use_awaitable));
      else
        std::tie(ec, n) = co_await stream->next_layer().async_read_some(asio::buffer(buffer), asio::as_tuple(use_awaitable));
      if (ec) io_failed(ec, "reading from the server");
      arm(to.command);
      parser.feed(std::string_view(buffer.data(), n));
    }
  }

  awaitable<Response> next_response() {
    auto e = co_await next_event();
    co_return std::move(e.response);
  }

  std::string next_tag() { return "m" + std::to_string(++tag_counter); }

  void note_capabilities(const std::vector<Value>& items, std::size_t from) {
    caps.clear();
    for (std::size_t i = from; i < items.size(); ++i) caps.insert(upper(items[i].text));
  }

  // Sends one command and reads until its tagged answer; untagged responses go to `untagged`.
  awaitable<Response> command(const std::string& line, const std::function<void(Response&)>& untagged = {}) {
    const std::string tag = next_tag();
    arm(to.command);
    co_await write(tag + " " + line + "\r\n");
    co_return co_await until_tagged(tag, untagged);
  }

  awaitable<Response> until_tagged(const std::string& tag, const std::function<void(Response&)>& untagged) {
    for (;;) {
      Response r = co_await next_response();
      if (r.type == Response::Type::tagged && r.tag == tag) {
        if (!r.code.empty() && r.code[0].is_atom("CAPABILITY")) note_capabilities(r.code, 1);
        co_return r;
      }
      if (r.type == Response::Type::untagged && r.status == "BYE") throw Error(Error::Kind::io, "the server closed the session: " + r.text);
      if (r.type == Response::Type::untagged && !r.data.empty() && r.data[0].is_atom("CAPABILITY")) note_capabilities(r.data, 1);
      if (untagged) untagged(r);
      literals.clear();
    }
  }

  static void ok_or_throw(const Response& r, const std::string& what, Error::Kind kind = Error::Kind::refused) {
    if (r.status != "OK") throw Error(kind, what + " refused by the server: " + r.status + " " + r.text);
  }

  awaitable<void> refresh_capabilities() {
    auto r = co_await command("CAPABILITY");
    ok_or_throw(r, "CAPABILITY");
  }

  awaitable<void> handshake() {
    auto* ssl_handle = stream->native_handle();
    if (!is_ip(ep.host)) SSL_set_tlsext_host_name(ssl_handle, ep.host.c_str());
    stream->set_verify_mode(ssl::verify_peer);
    stream->set_verify_callback(ssl::host_name_verification(ep.host));
    auto [ec] = co_await stream->async_handshake(ssl::stream_base::client, asio::as_tuple(use_awaitable));
    if (ec) {
      if (timed_out) throw Error(Error::Kind::timeout, "timed out in the TLS handshake");
      throw Error(Error::Kind::tls, "TLS handshake with " + ep.host + " failed: " + ec.message());
    }
    tls = true;
  }

  awaitable<void> connect() {
    arm(to.connect);
    asio::co_spawn(ex, watch(), asio::detached);
    tcp::resolver resolver(ex);
    auto [rec, results] = co_await resolver.async_resolve(ep.host, std::to_string(ep.port), asio::as_tuple(use_awaitable));
    if (rec) throw Error(Error::Kind::io, "cannot resolve " + ep.host + ": " + rec.message());
    auto [cec, endpoint] = co_await asio::async_connect(stream->next_layer(), results, asio::as_tuple(use_awaitable));
    if (cec) io_failed(cec, ("connecting to " + ep.host + ":" + std::to_string(ep.port)).c_str());
    if (ep.security == "tls") co_await handshake();
    Response greeting = co_await next_response();
    if (greeting.status == "BYE") throw Error(Error::Kind::refused, "the server refused the connection: " + greeting.text);
    if (greeting.status != "OK" && greeting.status != "PREAUTH") throw Error(Error::Kind::protocol, "no IMAP greeting");
    if (!greeting.code.empty() && greeting.code[0].is_atom("CAPABILITY"))
      note_capabilities(greeting.code, 1);
    else
      co_await refresh_capabilities();
    if (ep.security == "starttls") {
      if (!caps.count("STARTTLS"))
        throw Error(Error::Kind::tls, "the server does not offer STARTTLS and this mailbox requires TLS");
      auto r = co_await command("STARTTLS");
      ok_or_throw(r, "STARTTLS", Error::Kind::tls);
      parser = Parser(64 * 1024);  // whatever came before the handshake is not trusted
      co_await handshake();
      co_await refresh_capabilities();
    }
    arm(to.command);
  }

  // An astring argument; a literal when quoting cannot carry it.
  // (Coroutine parameters are references: GCC 12 destroys by-value class arguments of a
  // coroutine called inside co_await twice.)
  awaitable<std::string> astring_then(const std::string& line, const std::string& value) {
    if (auto q = quote_astring(value)) co_return line + *q;
    if (caps.count("LITERAL+")) co_return line + literal_prefix(value.size(), true) + value;
    co_await write(line + literal_prefix(value.size(), false));
    Response cont = co_await next_response();
    if (cont.type != Response::Type::continuation) {
      ok_or_throw(cont, "a literal");
      throw Error(Error::Kind::protocol, "the server did not accept a literal");
    }
    co_return value;
  }

  awaitable<void> login(const std::string& user, const std::string& password) {
    if (caps.count("AUTH=PLAIN")) {
      const std::string creds = base64_encode(std::string(1, '\0') + user + std::string(1, '\0') + password);
      co_await sasl("PLAIN", creds);
    } else {
      // RFC 3501 6.2.3: the client must not send LOGIN. Trying again cannot help; an admin must
      // choose TLS or STARTTLS (or the server must offer AUTHENTICATE PLAIN).
      if (caps.count("LOGINDISABLED"))
        throw Error(Error::Kind::config, std::string("the server does not allow LOGIN ") +
                                             (tls ? "on this connection" : "without TLS; choose TLS or STARTTLS for this mailbox") +
                                             " (LOGINDISABLED) and offers no AUTHENTICATE PLAIN");
      const std::string tag = next_tag();
      arm(to.command);
      const std::string head = tag + " LOGIN ";
      std::string line = co_await astring_then(head, user);
      line += " ";
      line = co_await astring_then(line, password);
      co_await write(line + "\r\n");
      auto r = co_await until_tagged(tag, {});
      if (r.status != "OK") throw Error(Error::Kind::auth, r.text.empty() ? "LOGIN refused" : r.text);
    }
    if (caps.empty() || !caps.count("IMAP4REV1")) co_await refresh_capabilities();
  }

  awaitable<void> sasl(const std::string& mechanism, const std::string& initial) {
    const std::string tag = next_tag();
    arm(to.command);
    if (caps.count("SASL-IR")) {
      co_await write(tag + " AUTHENTICATE " + mechanism + " " + initial + "\r\n");
    } else {
      co_await write(tag + " AUTHENTICATE " + mechanism + "\r\n");
      Response cont = co_await next_response();
      if (cont.type != Response::Type::continuation) throw Error(Error::Kind::auth, "AUTHENTICATE " + mechanism + " refused: " + cont.text);
      co_await write(initial + "\r\n");
    }
    for (;;) {
      Response r = co_await next_response();
      if (r.type == Response::Type::continuation) {  // an error challenge (XOAUTH2): answer empty, then NO follows
        co_await write("\r\n");
        continue;
      }
      if (r.type == Response::Type::tagged && r.tag == tag) {
        if (!r.code.empty() && r.code[0].is_atom("CAPABILITY")) note_capabilities(r.code, 1);
        if (r.status != "OK") throw Error(Error::Kind::auth, r.text.empty() ? "authentication refused" : r.text);
        co_return;
      }
      if (!r.data.empty() && r.data[0].is_atom("CAPABILITY")) note_capabilities(r.data, 1);
    }
  }
};

Client::Client(asio::any_io_executor executor, Endpoint endpoint, Timeouts timeouts)
    : impl_(std::make_shared<Impl>(executor, std::move(endpoint), timeouts)) {}

Client::~Client() { impl_->close(); }

awaitable<void> Client::connect() { co_await impl_->connect(); }

awaitable<void> Client::login(const std::string& user, const std::string& password) { co_await impl_->login(user, password); }

awaitable<void> Client::authenticate_xoauth2(const std::string& user, const std::string& token) {
  if (!impl_->caps.count("AUTH=XOAUTH2")) throw Error(Error::Kind::auth, "the server does not offer XOAUTH2");
  co_await impl_->sasl("XOAUTH2", base64_encode("user=" + user + "\x01" "auth=Bearer " + token + "\x01\x01"));
}

bool Client::has_capability(const std::string& name) const { return impl_->caps.count(upper(name)) > 0; }

awaitable<std::vector<Folder>> Client::list_folders() {
  std::vector<Folder> out;
  auto r = co_await impl_->command("LIST \"\" \"*\"", [&](Response& u) {
    if (u.data.size() < 4 || !u.data[0].is_atom("LIST") || u.data[1].kind != Value::Kind::list) return;
    Folder f;
    for (const auto& a : u.data[1].items) f.attributes.insert(upper(a.text));
    f.delimiter = u.data[2].kind == Value::Kind::nil ? "" : u.data[2].text;
    f.wire_name = u.data[3].text;
    try {
      f.name = mailbox_decode(f.wire_name);
    } catch (const std::invalid_argument&) {
      f.name = f.wire_name;
    }
    out.push_back(std::move(f));
  });
  Impl::ok_or_throw(r, "LIST");
  co_return out;
}

awaitable<SelectInfo> Client::select(const std::string& wire_name) {
  SelectInfo info;
  const std::string name = quote_astring(wire_name).value_or("\"" + wire_name + "\"");
  auto r = co_await impl_->command("SELECT " + name, [&](Response& u) {
    if (u.data.size() == 2 && u.data[0].kind == Value::Kind::number && u.data[1].is_atom("EXISTS"))
      info.exists = static_cast<std::uint32_t>(u.data[0].number);
    if (u.status == "OK" && u.code.size() == 2 && u.code[1].kind == Value::Kind::number) {
      if (u.code[0].is_atom("UIDVALIDITY")) info.uidvalidity = static_cast<std::uint32_t>(u.code[1].number);
      if (u.code[0].is_atom("UIDNEXT")) info.uidnext = static_cast<std::uint32_t>(u.code[1].number);
    }
  });
  Impl::ok_or_throw(r, "SELECT " + wire_name);
  co_return info;
}

awaitable<void> Client::fetch(std::uint32_t first, std::uint32_t last, const std::function<void(FetchedMessage&&)>& each) {
  auto& impl = *impl_;
  const std::string range = std::to_string(first) + ":" + (last == 0 ? std::string("*") : std::to_string(last));
  auto r = co_await impl.command("UID FETCH " + range + " (UID RFC822.SIZE FLAGS INTERNALDATE BODY.PEEK[])", [&](Response& u) {
    if (u.data.size() != 3 || !u.data[1].is_atom("FETCH") || u.data[2].kind != Value::Kind::list) return;
    FetchedMessage m;
    bool has_body = false;
    const auto& items = u.data[2].items;
    for (std::size_t i = 0; i + 1 < items.size(); i += 2) {
      const Value& key = items[i];
      const Value& v = items[i + 1];
      if (key.is_atom("UID")) {
        m.uid = static_cast<std::uint32_t>(v.number);
      } else if (key.is_atom("RFC822.SIZE")) {
        m.size = v.number;
      } else if (key.is_atom("INTERNALDATE")) {
        m.internal_date = v.text;
      } else if (key.is_atom("FLAGS")) {
        for (const auto& f : v.items) m.flags.push_back(f.text);
      } else if (key.kind == Value::Kind::atom && upper(key.text) == "BODY[]") {
        has_body = true;
        if (v.kind == Value::Kind::literal) {
          auto it = impl.literals.find(v.literal_seq);
          if (it != impl.literals.end()) m.raw = std::move(it->second);
        } else {
          m.raw = v.text;
        }
      }
    }
    // A FETCH without the body is a flag change the server reports on its own: not a message.
    if (has_body && m.uid != 0) each(std::move(m));
  });
  Impl::ok_or_throw(r, "UID FETCH");
}

awaitable<std::vector<std::uint32_t>> Client::search_uids(std::uint32_t first) {
  std::vector<std::uint32_t> out;
  auto r = co_await impl_->command("UID SEARCH UID " + std::to_string(first) + ":*", [&](Response& u) {
    if (u.data.empty() || !u.data[0].is_atom("SEARCH")) return;
    for (std::size_t i = 1; i < u.data.size(); ++i)
      if (u.data[i].kind == Value::Kind::number && u.data[i].number >= first) out.push_back(static_cast<std::uint32_t>(u.data[i].number));
  });
  Impl::ok_or_throw(r, "UID SEARCH");
  co_return out;
}

awaitable<bool> Client::idle(std::chrono::milliseconds max) {
  auto impl = impl_;
  const std::string tag = impl->next_tag();
  impl->arm(max + impl->to.command);
  co_await impl->write(tag + " IDLE\r\n");
  Response cont = co_await impl->next_response();
  if (cont.type != Response::Type::continuation) {
    Impl::ok_or_throw(cont, "IDLE");
    co_return false;
  }
  auto done_sent = std::make_shared<bool>(false);
  // Ends the IDLE after `max` even when the server stays quiet.
  impl->idle_timer.expires_after(max);
  asio::co_spawn(impl->ex, [impl, done_sent]() -> awaitable<void> {
    auto [ec] = co_await impl->idle_timer.async_wait(asio::as_tuple(use_awaitable));
    if (ec || *done_sent || impl->closed) co_return;
    *done_sent = true;
    try {
      co_await impl->write("DONE\r\n");
    } catch (const Error&) {
    }
  }, asio::detached);
  bool changed = false;
  for (;;) {
    Response r = co_await impl->next_response();
    if (r.type == Response::Type::tagged && r.tag == tag) break;
    if (r.type == Response::Type::untagged && r.status == "BYE") throw Error(Error::Kind::io, "the server ended the session: " + r.text);
    const bool change = r.data.size() >= 2 && (r.data[1].is_atom("EXISTS") || r.data[1].is_atom("EXPUNGE") || r.data[1].is_atom("RECENT"));
    if (change) {
      changed = true;
      if (!*done_sent) {
        *done_sent = true;
        impl->idle_timer.cancel();
        co_await impl->write("DONE\r\n");
      }
    }
  }
  impl->idle_timer.cancel();
  impl->arm(impl->to.command);
  co_return changed;
}

awaitable<void> Client::mark_seen(const std::vector<std::uint32_t>& uids) {
  if (uids.empty()) co_return;
  Impl::ok_or_throw(co_await impl_->command("UID STORE " + uid_set(uids) + " +FLAGS.SILENT (\\Seen)"), "UID STORE");
}

awaitable<void> Client::remove(const std::vector<std::uint32_t>& uids) {
  if (uids.empty()) co_return;
  Impl::ok_or_throw(co_await impl_->command("UID STORE " + uid_set(uids) + " +FLAGS.SILENT (\\Deleted)"), "UID STORE");
  // Without UIDPLUS, EXPUNGE would also remove messages someone else marked \Deleted.
  if (!impl_->caps.count("UIDPLUS")) throw Error(Error::Kind::refused, "the server lacks UIDPLUS; imported mail was marked deleted, not expunged");
  Impl::ok_or_throw(co_await impl_->command("UID EXPUNGE " + uid_set(uids)), "UID EXPUNGE");
}

awaitable<void> Client::move(const std::vector<std::uint32_t>& uids, const std::string& wire_name) {
  if (uids.empty()) co_return;
  const std::string target = quote_astring(wire_name).value_or("\"" + wire_name + "\"");
  if (impl_->caps.count("MOVE")) {
    Impl::ok_or_throw(co_await impl_->command("UID MOVE " + uid_set(uids) + " " + target), "UID MOVE");
    co_return;
  }
  Impl::ok_or_throw(co_await impl_->command("UID COPY " + uid_set(uids) + " " + target), "UID COPY");
  co_await remove(uids);
}

awaitable<void> Client::logout() {
  try {
    co_await impl_->command("LOGOUT");
  } catch (const Error&) {
  }
  impl_->close();
}

void Client::close() { impl_->close(); }

}  // namespace mailgate::imap
