// protocol/imap_client: one IMAP connection, driven by coroutines. It owns the socket, TLS and
// the deadlines; the parsing is protocol/imap_parser's.
//
// - Security: "tls" (implicit, port 993), "starttls" (refuses a server that does not offer it:
//   never a silent downgrade; anything the server sent before the handshake is discarded), or
//   "plain" only when the mailbox says so. Certificates and host names are verified (SNI set)
//   against the system trust store or a given CA file.
// - Authentication: AUTHENTICATE PLAIN when offered (base64: any password works), else LOGIN
//   with quoted strings or literals (LITERAL+ when offered); XOAUTH2 with a bearer token.
// - Every read and write has a deadline; a passing deadline closes the connection.
// - Failures throw imap::Error whose kind tells the caller whether trying again can help:
//   auth (the server refused the credentials) and config (the server offers no way in that this
//   mailbox's settings allow, such as LOGINDISABLED on a connection without TLS) are permanent:
//   an admin must change something. The rest are transient.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

namespace mailgate::imap {

struct Endpoint {
  std::string host;
  std::uint16_t port = 993;
  std::string security = "tls";  // tls | starttls | plain
  std::string ca_file;           // extra CAs trusted beside the system's trust store
};

struct Timeouts {
  std::chrono::milliseconds connect{std::chrono::seconds(30)};
  std::chrono::milliseconds command{std::chrono::seconds(120)};
};

class Error : public std::runtime_error {
 public:
  enum class Kind { io, timeout, tls, protocol, auth, refused, config };
  Error(Kind kind, const std::string& message) : std::runtime_error(message), kind(kind) {}
  Kind kind;
  bool permanent() const { return kind == Kind::auth || kind == Kind::config; }
};

struct Folder {
  std::string name;      // UTF-8
  std::string wire_name; // as the server names it (modified UTF-7)
  std::string delimiter;
  std::set<std::string> attributes;  // upper-cased: \NOSELECT, \SENT, \INBOX ...
};

struct SelectInfo {
  std::uint32_t uidvalidity = 0;
  std::uint32_t uidnext = 0;
  std::uint32_t exists = 0;
};

struct FetchedMessage {
  std::uint32_t uid = 0;
  std::uint64_t size = 0;
  std::vector<std::string> flags;
  std::string internal_date;  // as the server wrote it: "17-Jul-1996 02:44:25 -0700"
  std::string raw;
};

class Client {
 public:
  Client(boost::asio::any_io_executor executor, Endpoint endpoint, Timeouts timeouts = {});
  ~Client();
  Client(const Client&) = delete;

  boost::asio::awaitable<void> connect();
  boost::asio::awaitable<void> login(const std::string& user, const std::string& password);
  boost::asio::awaitable<void> authenticate_xoauth2(const std::string& user, const std::string& access_token);
  bool has_capability(const std::string& name) const;  // upper-case name, e.g. "IDLE", "MOVE"

  boost::asio::awaitable<std::vector<Folder>> list_folders();
  boost::asio::awaitable<SelectInfo> select(const std::string& wire_name);
  // UID FETCH first:last (last 0 = "*") (UID RFC822.SIZE FLAGS INTERNALDATE BODY.PEEK[]); each
  // message is handed over as soon as it is complete.
  boost::asio::awaitable<void> fetch(std::uint32_t first, std::uint32_t last, const std::function<void(FetchedMessage&&)>& each);
  boost::asio::awaitable<std::vector<std::uint32_t>> search_uids(std::uint32_t first);  // UID SEARCH UID first:*
  // IDLE until the server reports a change or `max` passes; true when something changed.
  boost::asio::awaitable<bool> idle(std::chrono::milliseconds max);
  boost::asio::awaitable<void> mark_seen(const std::vector<std::uint32_t>& uids);
  boost::asio::awaitable<void> move(const std::vector<std::uint32_t>& uids, const std::string& wire_name);
  boost::asio::awaitable<void> remove(const std::vector<std::uint32_t>& uids);  // \Deleted + UID EXPUNGE
  boost::asio::awaitable<void> logout();
  void close();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// "1:3,7,9:10" for a sorted list of UIDs.
std::string uid_set(std::vector<std::uint32_t> uids);

}  // namespace mailgate::imap
