// daemon/graph_tokens: the one OAuth2 token source of the daemon, for Microsoft Graph (inbound
// sync, sendMail) and for Office 365 IMAP/SMTP with XOAUTH2.
//
// token() returns an access token for (tenant, client id, scope), asking the tenant's token
// endpoint ({[graph] login_base}/{tenant}/oauth2/v2.0/token, client credentials) only when the
// cached one is missing or expires within 5 minutes. One request per key is in flight at a time:
// concurrent callers wait for it and share its token (or its error). A token obtained with a
// secret other than the caller's is not reused (the admin saved a new secret).
//
// Errors: oauth2::Error (protocol/oauth2.hpp: Microsoft's error text, and `permanent` for an
// invalid, expired or revoked secret, unknown app or tenant: the mailbox is then marked failed),
// or http::Error (no answer: transient). Errors are not cached: the next call asks again.
// invalidate() drops a key's token after Graph answered 401 with it.
//
// Thread safety: token() and invalidate() may be called from any coroutine on any thread; the
// cache lives on the source's own strand. Secrets and tokens are never logged.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "protocol/oauth2.hpp"

namespace mailgate {

struct Config;

inline constexpr const char* kGraphScope = "https://graph.microsoft.com/.default";
inline constexpr const char* kOutlookScope = "https://outlook.office365.com/.default";  // IMAP/SMTP XOAUTH2

struct GraphCredentials {
  std::string tenant, client_id, client_secret;
  std::string scope = kGraphScope;
};

class GraphTokens {
 public:
  GraphTokens(boost::asio::any_io_executor executor, const Config& config);
  ~GraphTokens();
  GraphTokens(const GraphTokens&) = delete;
  GraphTokens& operator=(const GraphTokens&) = delete;

  // (By value: a coroutine's parameters must outlive the caller's statement.)
  boost::asio::awaitable<std::string> token(GraphCredentials credentials);
  void invalidate(const GraphCredentials& credentials);
  std::uint64_t requests() const;  // token requests sent so far (tests, metrics)

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace mailgate
