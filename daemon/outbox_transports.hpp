// daemon/outbox_transports: the ways a mailbox sends (its outgoing_type), behind one interface
// the outbox's connection loop (daemon/outbox.cpp) and the mailbox test drive alike.
//
// - smtp: protocol/smtp_client, one SMTP session per Transport (open = connect, TLS, AUTH). With
//   smtp_auth 'xoauth2' AUTH XOAUTH2 with a token for https://outlook.office365.com/.default from
//   the ms365_* credentials (Office 365 over SMTP); a refused token is replaced once.
// - mailgun: POST {[mailgun] api_base_eu|us}/v3/{domain}/messages.mime, HTTP Basic api:<key>,
//   multipart/form-data with one `to` field per envelope recipient (Bcc included) and the
//   composed message as the `message` file. 200 -> sent (Mailgun's id in the reply); 429 and 5xx
//   transient, honouring Retry-After; other 4xx permanent with Mailgun's `message`. The domain,
//   region and key come from the mailbox's Mailgun domain (mailgun_domains, migration 0012) or,
//   without one, the mailbox's own mailgun_* columns.
// - ms365: Microsoft Graph POST {[graph] api_base}/users/{ms365_user_id}/sendMail with the
//   message base64-encoded (Content-Type: text/plain), bearer token from the client-credentials
//   token source. 202 -> sent. A message whose base64 exceeds [graph] max_send_bytes fails
//   permanently before anything is sent. 429/503 (and other 5xx) transient with Retry-After;
//   401 from the token endpoint (expired or revoked secret) permanent with Microsoft's text; a
//   401 from Graph with a cached token gets one fresh token and one more try. Bcc recipients,
//   absent from the composed headers, are given to Graph in a Bcc header prepended to the MIME
//   (Exchange removes it on delivery).
//
// Every failure is a TransportFailure: the step (connect, tls, greeting, ehlo, auth, mail, rcpt,
// data for SMTP; connect, tls, auth, send for HTTP), permanent or not, the server's reply text,
// and the server's Retry-After when it gave one. Secrets never appear in a failure's text.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "config/config.hpp"
#include "store/outbox.hpp"

namespace pqxx {
class dbtransaction;
}

namespace mailgate {

class SecretBox;
class GraphTokens;
class GraphSlots;
namespace http {
class Client;
}

// How a mailbox sends, read fresh for every connection (an admin's change applies to the next one).
struct SendSettings {
  std::int64_t id = 0;
  bool exists = false, active = false;
  std::string type, address, display_name;
  // smtp
  std::string host, security, username, password;
  std::string smtp_auth = "password";  // or "xoauth2": a token from the ms365_* credentials
  std::uint16_t port = 587;
  // mailgun
  std::string mailgun_domain, mailgun_region = "eu", mailgun_api_key;
  bool mailgun_domain_inactive = false;
  // ms365
  std::string ms365_tenant_id, ms365_client_id, ms365_client_secret, ms365_user_id;
  int max_connections = 2, max_per_connection = 20, max_per_minute = 60;
};
SendSettings load_send_settings(pqxx::dbtransaction& tx, const SecretBox& secrets, std::int64_t id);

class TransportFailure : public std::runtime_error {
 public:
  TransportFailure(std::string step, bool permanent, const std::string& reply, std::optional<std::chrono::seconds> retry_after = std::nullopt)
      : std::runtime_error(reply), step(std::move(step)), permanent(permanent), retry_after(retry_after) {}
  std::string step;
  bool permanent;
  std::optional<std::chrono::seconds> retry_after;
};

struct TransportEnvelope {
  std::string from;
  std::vector<std::string> to;   // every recipient (To, Cc and Bcc)
  std::vector<std::string> bcc;  // those of `to` that are in no header
};

struct TransportSent {
  std::string reply;                      // the server's answer (SMTP reply, Mailgun id, Graph status)
  std::vector<RefusedRecipient> refused;  // SMTP: recipients refused while others were accepted
};

// What follows a message on the same transport: the message sent right after it (SMTP announces
// its envelope with this one's content, RFC 2920: one round trip per message; the caller must then
// send it next), or the end of the session (SMTP sends QUIT with the content). The HTTP transports
// ignore it.
struct TransportAfter {
  const TransportEnvelope* next_envelope = nullptr;  // null: no next message
  const std::string* next_raw = nullptr;
  bool quit = false;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual boost::asio::awaitable<void> open() = 0;  // throws TransportFailure
  // Throws TransportFailure.
  virtual boost::asio::awaitable<TransportSent> send(const TransportEnvelope& envelope, const std::string& raw, const TransportAfter& after) = 0;
  virtual bool usable() const = 0;                  // open, not broken, not told to slow down
  virtual boost::asio::awaitable<void> quit() = 0;  // ends politely; never throws
  virtual void close() = 0;                         // at once; any thread of the executor
};

// A client-credentials access token for Microsoft Graph of one mailbox's app registration.
// `refresh`: the cached one was refused. Throws TransportFailure (step "auth").
using GraphTokenSource = std::function<boost::asio::awaitable<std::string>(const SendSettings& settings, bool refresh)>;

// The source backed by daemon/graph_tokens (cached per tenant and client; invalidated on refresh).
GraphTokenSource graph_token_source(GraphTokens& tokens);

struct TransportDeps {
  const Config& config;
  http::Client& http;            // Mailgun and Graph; shared, keeps connections alive
  GraphTokenSource graph_token;  // ms365
  GraphSlots* graph_slots = nullptr;  // ms365: the mailbox's concurrent Graph requests, shared with its inbound sync
};

// The transport of the mailbox's outgoing_type; an unknown type throws TransportFailure.
std::unique_ptr<Transport> make_transport(boost::asio::any_io_executor executor, const SendSettings& settings, const TransportDeps& deps);

// How many requests/connections at once the mailbox's transport allows.
int transport_max_connections(const SendSettings& settings, const Config& config);

// The Mailgun API base for a region ("us" -> api_base_us, else api_base_eu).
std::string mailgun_api_base(const Config& config, const std::string& region);

}  // namespace mailgate
