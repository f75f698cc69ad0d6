// daemon/outbox_transports: see outbox_transports.hpp.
#include "daemon/outbox_transports.hpp"

#include <unistd.h>

#include <algorithm>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "daemon/graph_slots.hpp"
#include "daemon/graph_tokens.hpp"
#include "protocol/http_client.hpp"
#include "protocol/oauth2.hpp"
#include "protocol/smtp_client.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace asio = boost::asio;
using asio::awaitable;

SendSettings load_send_settings(pqxx::dbtransaction& tx, const SecretBox& secrets, std::int64_t id) {
  SendSettings s;
  s.id = id;
  // A mailbox with a Mailgun domain (migration 0012) takes the domain's region and key; its own
  // mailgun_* columns are the fallback.
  auto r = tx.exec_params(
      "SELECT m.active, m.outgoing_type, m.address, m.display_name, coalesce(m.smtp_host, ''), coalesce(m.smtp_security, 'starttls'), "
      "coalesce(m.smtp_username, m.address), m.smtp_password, coalesce(m.smtp_port, CASE coalesce(m.smtp_security, 'starttls') "
      "WHEN 'tls' THEN 465 WHEN 'plain' THEN 25 ELSE 587 END), m.send_max_connections, m.send_max_per_connection, m.send_max_per_minute, "
      "coalesce(d.domain, m.mailgun_domain, ''), coalesce(d.region, m.mailgun_region, 'eu'), coalesce(d.api_key, m.mailgun_api_key), "
      "coalesce(d.active, true), coalesce(m.ms365_tenant_id, ''), coalesce(m.ms365_client_id, ''), m.ms365_client_secret, "
      "coalesce(m.ms365_user_id, m.address), m.smtp_auth "
      "FROM mailboxes m LEFT JOIN mailgun_domains d ON d.id = m.mailgun_domain_id WHERE m.id = $1",
      id);
  if (r.empty()) return s;
  const auto& row = r[0];
  s.exists = true;
  s.active = row[0].as<bool>();
  s.type = row[1].as<std::string>();
  s.address = row[2].as<std::string>();
  s.display_name = row[3].as<std::string>();
  s.host = row[4].as<std::string>();
  s.security = row[5].as<std::string>();
  s.username = row[6].as<std::string>();
  if (!row[7].is_null()) s.password = secrets.open(pqxx::binarystring(row[7]).str());
  s.port = static_cast<std::uint16_t>(row[8].as<int>());
  s.max_connections = row[9].as<int>();
  s.max_per_connection = row[10].as<int>();
  s.max_per_minute = row[11].as<int>();
  s.mailgun_domain = row[12].as<std::string>();
  s.mailgun_region = row[13].as<std::string>();
  if (!row[14].is_null()) s.mailgun_api_key = secrets.open(pqxx::binarystring(row[14]).str());
  s.mailgun_domain_inactive = !row[15].as<bool>();
  s.ms365_tenant_id = row[16].as<std::string>();
  s.ms365_client_id = row[17].as<std::string>();
  if (!row[18].is_null()) s.ms365_client_secret = secrets.open(pqxx::binarystring(row[18]).str());
  s.ms365_user_id = row[19].as<std::string>();
  s.smtp_auth = row[20].as<std::string>();
  return s;
}

int transport_max_connections(const SendSettings& settings, const Config& config) {
  if (settings.type == "ms365") return std::max(1, std::min(settings.max_connections, config.graph.max_concurrent_per_mailbox));
  return settings.max_connections;
}

std::string mailgun_api_base(const Config& config, const std::string& region) {
  return region == "us" ? config.mailgun.api_base_us : config.mailgun.api_base_eu;
}

namespace {

// ---- SMTP ------------------------------------------------------------------------------------

std::string helo_name(const Config& config) {
  if (!config.outbox.helo_name.empty()) return config.outbox.helo_name;
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0 || !name[0]) return "localhost";
  return name;
}

// SMTP; with smtp_auth 'xoauth2' (Office 365 over SMTP) AUTH XOAUTH2 with an access token for the
// Outlook scope from the mailbox's ms365_* credentials, through the one token source. A token the
// server refuses is dropped and a fresh one tried once, on a new connection.
class SmtpTransport final : public Transport {
 public:
  SmtpTransport(asio::any_io_executor ex, const SendSettings& s, const TransportDeps& deps) : ex_(std::move(ex)), settings_(s), deps_(deps) {
    account_.endpoint = net::Endpoint{s.host, s.port, s.security, deps.config.tls.ca_file.string()};
    account_.helo_name = helo_name(deps.config);
    const bool oauth = s.smtp_auth == "xoauth2";
    account_.username = oauth || !s.password.empty() ? s.username : std::string();
    account_.password = oauth ? std::string() : s.password;
    const auto command = std::chrono::duration_cast<std::chrono::milliseconds>(deps.config.outbox.command_timeout);
    timeouts_ = smtp::Timeouts{std::min<std::chrono::milliseconds>(command, std::chrono::seconds(30)), command, command * 2};
    client_ = std::make_shared<smtp::Client>(ex_, account_, timeouts_);
  }

  awaitable<void> open() override {
    if (settings_.smtp_auth != "xoauth2") {
      co_await open_client();
      co_return;
    }
    if (!deps_.graph_token) throw TransportFailure("auth", true, "no Microsoft 365 token source for XOAUTH2");
    for (int attempt = 0; attempt < 2; ++attempt) {
      const bool refresh = attempt == 1;
      auto get = deps_.graph_token(settings_, refresh);
      account_.oauth_token = co_await std::move(get);
      client_ = std::make_shared<smtp::Client>(ex_, account_, timeouts_);
      std::optional<TransportFailure> failure;
      try {
        co_await open_client();
        co_return;
      } catch (const TransportFailure& f) {
        failure = f;
      }
      if (failure->step != "auth" || refresh) throw *failure;
      spdlog::info("event=smtp_xoauth2_refused mailbox={} action=\"a fresh token, once\" reason=\"{}\"", settings_.id, failure->what());
      client_->close();
    }
  }

  awaitable<TransportSent> send(const TransportEnvelope& envelope, const std::string& raw, const TransportAfter& after) override {
    const smtp::Envelope e{envelope.from, envelope.to};
    std::optional<smtp::Envelope> next_envelope;
    smtp::After then;
    then.quit = after.quit;
    if (after.next_envelope) {
      next_envelope = smtp::Envelope{after.next_envelope->from, after.next_envelope->to};
      then.next = smtp::Outgoing{&*next_envelope, after.next_raw};
    }
    std::optional<smtp::SendResult> result;
    std::optional<smtp::Failure> failure;
    try {
      result = co_await client_->send(e, raw, then);
    } catch (const smtp::Failure& f) {
      failure = f;
    }
    if (failure) throw TransportFailure(smtp::to_string(failure->step), failure->permanent, failure->what());
    TransportSent sent;
    sent.reply = result->reply.text();
    for (const auto& r : result->refused) sent.refused.push_back({r.address, r.reply.text()});
    co_return sent;
  }

  bool usable() const override { return client_->usable(); }
  awaitable<void> quit() override { co_await client_->quit(); }
  void close() override { client_->close(); }

 private:
  awaitable<void> open_client() {
    std::optional<smtp::Failure> failure;
    try {
      co_await client_->open();
    } catch (const smtp::Failure& f) {
      failure = f;
    }
    if (failure) throw TransportFailure(smtp::to_string(failure->step), failure->permanent, failure->what());
  }

  asio::any_io_executor ex_;
  SendSettings settings_;
  const TransportDeps& deps_;
  smtp::Account account_;
  smtp::Timeouts timeouts_;
  std::shared_ptr<smtp::Client> client_;
};

// ---- HTTP transports -------------------------------------------------------------------------

// A failure to get any answer: network and TLS problems are transient (as SMTP's are).
TransportFailure http_failure(const http::Error& e, const std::string& service) {
  switch (e.kind) {
    case http::Error::Kind::connect: return TransportFailure("connect", false, service + ": " + e.what());
    case http::Error::Kind::tls: return TransportFailure("tls", false, service + ": " + e.what());
    case http::Error::Kind::protocol: return TransportFailure("send", true, service + ": " + e.what());
    default: return TransportFailure("send", false, service + ": " + e.what());
  }
}

// The readable part of an error body: Mailgun's {"message"}, Graph's {"error": {"code",
// "message"}}, the token endpoint's {"error", "error_description"}; else the text itself.
std::string error_text(const std::string& body) {
  boost::system::error_code ec;
  auto v = boost::json::parse(body, ec);
  std::string out;
  if (!ec && v.is_object()) {
    const auto& o = v.as_object();
    if (auto* e = o.if_contains("error"); e && e->is_object()) {
      const auto& eo = e->as_object();
      if (auto* c = eo.if_contains("code"); c && c->is_string()) out = std::string(c->as_string().c_str());
      if (auto* m = eo.if_contains("message"); m && m->is_string()) out += (out.empty() ? "" : ": ") + std::string(m->as_string().c_str());
    } else if (auto* d = o.if_contains("error_description"); d && d->is_string()) {
      out = std::string(d->as_string().c_str());
    } else if (auto* m = o.if_contains("message"); m && m->is_string()) {
      out = std::string(m->as_string().c_str());
    }
  }
  if (out.empty()) out = body;
  std::replace_if(out.begin(), out.end(), [](char c) { return c == '\r' || c == '\n'; }, ' ');
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (out.size() > 500) out = out.substr(0, 500) + "...";
  return out;
}

std::string json_string(const std::string& body, const char* key) {
  boost::system::error_code ec;
  auto v = boost::json::parse(body, ec);
  if (ec || !v.is_object()) return {};
  auto* f = v.as_object().if_contains(key);
  return f && f->is_string() ? std::string(f->as_string().c_str()) : std::string();
}

class HttpTransport : public Transport {
 public:
  bool usable() const override { return !closed_ && !throttled_; }
  awaitable<void> quit() override {
    closed_ = true;
    co_return;
  }
  void close() override { closed_ = true; }

 protected:
  // A throttling answer: the rest of this connection's rows wait (daemon/outbox.cpp).
  TransportFailure throttled(std::string step, const std::string& text, const http::Response& r) {
    throttled_ = true;
    return TransportFailure(std::move(step), false, text, r.retry_after());
  }
  bool closed_ = false, throttled_ = false;
};

class MailgunTransport final : public HttpTransport {
 public:
  MailgunTransport(const SendSettings& s, const TransportDeps& deps) : settings_(s), deps_(deps) {}

  awaitable<void> open() override {
    if (settings_.mailgun_domain.empty()) throw TransportFailure("connect", true, "the mailbox has no Mailgun domain");
    if (settings_.mailgun_domain_inactive) throw TransportFailure("connect", true, "the Mailgun domain " + settings_.mailgun_domain + " is deactivated");
    if (settings_.mailgun_api_key.empty()) throw TransportFailure("auth", true, "no Mailgun API key for " + settings_.mailgun_domain);
    co_return;
  }

  awaitable<TransportSent> send(const TransportEnvelope& envelope, const std::string& raw, const TransportAfter&) override {
    http::Multipart form;
    for (const auto& to : envelope.to) form.field("to", to);
    form.file("message", "message.mime", "message/rfc822", raw);
    http::Request request;
    request.method = "POST";
    request.url = mailgun_api_base(deps_.config, settings_.mailgun_region) + "/v3/" + http::url_encode(settings_.mailgun_domain) + "/messages.mime";
    request.headers.push_back({"Authorization", http::basic_auth("api", settings_.mailgun_api_key)});
    request.headers.push_back({"Content-Type", form.content_type()});
    request.headers.push_back({"Accept", "application/json"});
    request.body = form.body();
    std::optional<http::Response> response;
    std::optional<TransportFailure> failure;
    try {
      response = co_await deps_.http.send(std::move(request));
    } catch (const http::Error& e) {
      failure = http_failure(e, "Mailgun");
    }
    if (failure) throw *failure;
    const int status = response->status;
    const std::string text = "Mailgun answered " + std::to_string(status) + ": " + error_text(response->body);
    if (status == 200) {
      TransportSent sent;
      const std::string id = json_string(response->body, "id"), message = json_string(response->body, "message");
      sent.reply = "200 " + (message.empty() ? std::string("Queued") : message) + (id.empty() ? "" : " id=" + id);
      co_return sent;
    }
    if (status == 429 || status >= 500) throw throttled("send", text, *response);
    if (status == 401 || status == 403) throw TransportFailure("auth", true, text);
    throw TransportFailure("send", true, text);
  }

 private:
  SendSettings settings_;
  const TransportDeps& deps_;
};

// The Bcc recipients as a header, for a sendMail that takes recipients from the MIME only.
std::string bcc_header(const std::vector<std::string>& bcc) {
  std::string h = "Bcc: ";
  for (std::size_t i = 0; i < bcc.size(); ++i) h += (i ? ",\r\n " : "") + bcc[i];
  return h + "\r\n";
}

class GraphTransport final : public HttpTransport {
 public:
  GraphTransport(const SendSettings& s, const TransportDeps& deps) : settings_(s), deps_(deps) {}

  awaitable<void> open() override {
    if (!deps_.graph_token) throw TransportFailure("auth", false, "no Microsoft Graph token source");
    token_ = co_await deps_.graph_token(settings_, false);
  }

  awaitable<TransportSent> send(const TransportEnvelope& envelope, const std::string& raw, const TransportAfter&) override {
    const std::string mime = envelope.bcc.empty() ? raw : bcc_header(envelope.bcc) + raw;
    std::string body = http::base64(mime);
    const std::size_t limit = deps_.config.graph.max_send_bytes;
    if (body.size() > limit)
      throw TransportFailure("send", true,
                             "the message is too large for Microsoft Graph's sendMail: " + std::to_string(raw.size()) + " bytes, " +
                                 std::to_string(body.size()) + " in base64, over the limit of " + std::to_string(limit) +
                                 " ([graph] max_send_bytes); send it through SMTP or make it smaller");
    for (int attempt = 0;; ++attempt) {
      http::Request request;
      request.method = "POST";
      request.url = deps_.config.graph.api_base + "/users/" + http::url_encode(settings_.ms365_user_id) + "/sendMail";
      request.headers.push_back({"Authorization", "Bearer " + token_});
      request.headers.push_back({"Content-Type", "text/plain"});
      request.body = body;
      // In flight within the mailbox's share of Graph, counted with its inbound sync's requests.
      auto take = GraphSlots::acquire(deps_.graph_slots, settings_.id);
      std::optional<GraphSlots::Slot> slot = co_await std::move(take);
      std::optional<http::Response> response;
      std::optional<TransportFailure> failure;
      try {
        response = co_await deps_.http.send(std::move(request));
      } catch (const http::Error& e) {
        failure = http_failure(e, "Microsoft Graph");
      }
      slot.reset();
      if (failure) throw *failure;
      const int status = response->status;
      if (status == 202 || status == 200) {
        TransportSent sent;
        sent.reply = std::to_string(status) + " Accepted by Microsoft Graph";
        co_return sent;
      }
      const std::string text = "Microsoft Graph answered " + std::to_string(status) + ": " + error_text(response->body);
      if (status == 401 && attempt == 0) {  // the cached token expired or was revoked: one fresh one
        token_ = co_await deps_.graph_token(settings_, true);
        continue;
      }
      if (status == 429 || status >= 500) throw throttled("send", text, *response);
      if (status == 401 || status == 403) throw TransportFailure("auth", true, text);
      throw TransportFailure("send", true, text);
    }
  }

 private:
  SendSettings settings_;
  const TransportDeps& deps_;
  std::string token_;
};

awaitable<std::string> graph_token(GraphTokens* tokens, SendSettings settings, bool refresh) {
  GraphCredentials credentials;
  credentials.tenant = settings.ms365_tenant_id;
  credentials.client_id = settings.ms365_client_id;
  credentials.client_secret = settings.ms365_client_secret;
  if (settings.type == "smtp") credentials.scope = kOutlookScope;  // Office 365 over SMTP (XOAUTH2)
  if (credentials.tenant.empty() || credentials.client_id.empty() || credentials.client_secret.empty())
    throw TransportFailure("auth", true, "the mailbox has no Microsoft 365 tenant id, client id or client secret");
  if (refresh) tokens->invalidate(credentials);
  std::optional<TransportFailure> failure;
  std::string token;
  try {
    token = co_await tokens->token(credentials);
  } catch (const oauth2::Error& e) {
    failure.emplace("auth", e.permanent, std::string("Microsoft identity platform: ") + e.what());
  } catch (const http::Error& e) {
    failure = http_failure(e, "Microsoft identity platform");
  }
  if (failure) throw *failure;
  co_return token;
}

}  // namespace

GraphTokenSource graph_token_source(GraphTokens& tokens) {
  return [tokens = &tokens](const SendSettings& settings, bool refresh) { return graph_token(tokens, settings, refresh); };
}

std::unique_ptr<Transport> make_transport(asio::any_io_executor executor, const SendSettings& settings, const TransportDeps& deps) {
  if (settings.type == "smtp") return std::make_unique<SmtpTransport>(executor, settings, deps);
  if (settings.type == "mailgun") return std::make_unique<MailgunTransport>(settings, deps);
  if (settings.type == "ms365") return std::make_unique<GraphTransport>(settings, deps);
  throw TransportFailure("connect", true, "unknown outgoing type " + settings.type);
}

}  // namespace mailgate
