#include "daemon/mailgun_inbound.hpp"

#include <chrono>
#include <map>
#include <memory>
#include <variant>

#include <boost/asio/awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "daemon/metrics.hpp"
#include "daemon/router.hpp"
#include "daemon/services.hpp"
#include "protocol/form_data.hpp"
#include "protocol/mailgun_webhook.hpp"
#include "protocol/mime.hpp"
#include "store/ingest.hpp"
#include "store/run.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {

// The mailbox of a webhook URL and its signing key (the domain's, else the mailbox's own).
constexpr const char* kMailboxByToken =
    "SELECT m.id, m.active, m.incoming_type, coalesce(d.webhook_signing_key, m.mailgun_webhook_key) "
    "FROM mailboxes m LEFT JOIN mailgun_domains d ON d.id = m.mailgun_domain_id AND d.active "
    "WHERE m.mailgun_inbound_token = $1";
constexpr const char* kClaimToken =
    "INSERT INTO mailgun_webhook_tokens (token, mailbox_id, content_sha256, signed_at) VALUES ($1, $2, $3, to_timestamp($4::bigint)) "
    "ON CONFLICT (token) DO NOTHING RETURNING token";
constexpr const char* kTokenSeen = "SELECT mailbox_id, content_sha256, coalesce(message_id, 0) FROM mailgun_webhook_tokens WHERE token = $1";
constexpr const char* kTokenMessage = "UPDATE mailgun_webhook_tokens SET message_id = $2 WHERE token = $1";
// Tokens whose webhook would be refused on its timestamp anyway; a few per request.
constexpr const char* kPurgeTokens =
    "DELETE FROM mailgun_webhook_tokens WHERE token IN (SELECT token FROM mailgun_webhook_tokens "
    "WHERE signed_at < now() - make_interval(secs => $1::bigint) LIMIT 20)";

struct Outcome {
  int status = 200;
  std::string code;     // refusals: the stable error code
  std::string message;  // refusals: what the caller is told
  std::int64_t mailbox_id = 0;
  std::int64_t message_id = 0;
  bool duplicate = false;
  std::size_t contacts = 0;
  std::size_t warnings = 0;
  std::string form;  // mime | fields

  static Outcome refuse(int status, std::string code, std::string message) {
    Outcome o;
    o.status = status;
    o.code = std::move(code);
    o.message = std::move(message);
    return o;
  }
};

struct Webhook {
  std::vector<form::Field> fields;
  std::string path_token, timestamp, token, signature;
};

// The path token as the mailbox API makes it (random_token: base64url).
bool plausible_path_token(const std::string& t) {
  return !t.empty() && t.size() <= 128 &&
         t.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == std::string::npos;
}

std::string strip_angles(std::string s) {
  if (s.size() >= 2 && s.front() == '<' && s.back() == '>') s = s.substr(1, s.size() - 2);
  return s;
}

// The message of the webhook: body-mime as sent, or rebuilt from the parsed fields. A refusal
// (400) when neither form is there or the fields are inconsistent.
std::variant<std::string, Outcome> message_of(const std::vector<form::Field>& fields, std::string& form_kind) {
  if (const auto* mime = form::find_field(fields, "body-mime")) {
    form_kind = "mime";
    return mime->value;
  }
  form_kind = "fields";
  const auto* headers = form::find_field(fields, "message-headers");
  if (!headers) return Outcome::refuse(400, "no_message", "the form has neither body-mime nor message-headers");
  mailgun::RebuildInput in;
  {
    boost::system::error_code ec;
    json::value v = json::parse(headers->value, ec);
    if (ec || !v.is_array()) return Outcome::refuse(400, "invalid_message_headers", "message-headers is not a JSON list");
    for (const auto& h : v.as_array()) {
      if (!h.is_array() || h.as_array().size() != 2 || !h.as_array()[0].is_string() || !h.as_array()[1].is_string())
        return Outcome::refuse(400, "invalid_message_headers", "message-headers must hold [name, value] pairs of strings");
      in.headers.emplace_back(std::string(h.as_array()[0].as_string()), std::string(h.as_array()[1].as_string()));
    }
  }
  if (const auto* f = form::find_field(fields, "body-plain")) in.text_body = f->value;
  if (const auto* f = form::find_field(fields, "body-html")) in.html_body = f->value;

  std::size_t count = 0;
  if (const auto* c = form::find_field(fields, "attachment-count")) {
    if (c->value.empty() || c->value.size() > 6 || c->value.find_first_not_of("0123456789") != std::string::npos)
      return Outcome::refuse(400, "invalid_attachment_count", "attachment-count is not a number");
    count = std::stoul(c->value);
  } else {
    while (form::find_field(fields, "attachment-" + std::to_string(count + 1))) ++count;
  }
  std::map<std::string, std::string> cid_of;  // attachment-N -> content id
  if (const auto* m = form::find_field(fields, "content-id-map")) {
    boost::system::error_code ec;
    json::value v = json::parse(m->value, ec);
    if (ec || !v.is_object()) return Outcome::refuse(400, "invalid_content_id_map", "content-id-map is not a JSON object");
    for (const auto& [cid, part] : v.as_object())
      if (part.is_string()) cid_of[std::string(part.as_string())] = strip_angles(std::string(cid));
  }
  for (std::size_t i = 1; i <= count; ++i) {
    const std::string name = "attachment-" + std::to_string(i);
    const auto* f = form::find_field(fields, name);
    if (!f) return Outcome::refuse(400, "missing_attachment", "attachment-count is " + std::to_string(count) + " but " + name + " is missing");
    mailgun::RebuildAttachment a;
    a.filename = f->filename;
    a.content_type = f->content_type == "text/plain" && !f->is_file ? "" : f->content_type;
    a.data = f->value;
    if (auto c = cid_of.find(name); c != cid_of.end()) a.content_id = c->second;
    in.attachments.push_back(std::move(a));
  }
  return mailgun::rebuild_message(in);
}

// The transaction: mailbox and signature, then the token and the message together.
Outcome receive(pqxx::work& tx, const Webhook& w, const SecretBox& secrets, std::chrono::seconds max_age) {
  auto r = tx.exec_params(kMailboxByToken, w.path_token);
  if (r.empty()) return Outcome::refuse(406, "unknown_mailbox", "no mailbox has this webhook URL");
  const std::int64_t mailbox = r[0][0].as<std::int64_t>();
  if (!r[0][1].as<bool>() || r[0][2].as<std::string>() != "mailgun") {
    Outcome o = Outcome::refuse(406, "unknown_mailbox", "no active Mailgun mailbox has this webhook URL");
    o.mailbox_id = mailbox;
    return o;
  }
  if (r[0][3].is_null()) {
    Outcome o = Outcome::refuse(406, "no_signing_key", "the mailbox has no webhook signing key to verify the signature with");
    o.mailbox_id = mailbox;
    return o;
  }
  const std::string key = secrets.open(pqxx::binarystring(r[0][3]).str());
  if (!mailgun::signature_valid(key, w.timestamp, w.token, w.signature)) {
    Outcome o = Outcome::refuse(406, "bad_signature", "the signature does not match");
    o.mailbox_id = mailbox;
    return o;
  }

  std::string form_kind;
  auto built = message_of(w.fields, form_kind);
  if (auto* refusal = std::get_if<Outcome>(&built)) {
    refusal->mailbox_id = mailbox;
    refusal->form = form_kind;
    return *refusal;
  }
  const std::string& raw = std::get<std::string>(built);
  const std::string digest = sha256_hex(raw);

  tx.exec_params(kPurgeTokens, static_cast<std::int64_t>(max_age.count()) + 3600);
  Outcome o;
  o.mailbox_id = mailbox;
  o.form = form_kind;
  if (tx.exec_params(kClaimToken, w.token, mailbox, digest, w.timestamp).empty()) {
    // Seen before (or being stored right now by a twin request, whose commit this waited for).
    auto seen = tx.exec_params(kTokenSeen, w.token);
    if (!seen.empty() && seen[0][0].as<std::int64_t>() == mailbox && seen[0][1].as<std::string>() == digest) {
      o.duplicate = true;
      o.message_id = seen[0][2].as<std::int64_t>();
      return o;
    }
    Outcome refused = Outcome::refuse(406, "token_replayed", "this webhook token was already used for another message");
    refused.mailbox_id = mailbox;
    refused.form = form_kind;
    return refused;
  }

  IngestItem item;
  item.in.mailbox_id = mailbox;
  item.in.source = "mailgun";
  item.in.source_key = w.token;
  item.in.raw = raw;
  std::vector<std::optional<ContentSpan>> spans;
  item.parsed = parse_message(item.in.raw, spans);
  for (const auto& span : spans)
    item.attachment_spans.push_back(span ? std::optional<RawSpan>(RawSpan{static_cast<std::int64_t>(span->offset),
                                                                          static_cast<std::int64_t>(span->length),
                                                                          span->base64 ? "base64" : "identity"})
                                         : std::nullopt);
  o.warnings = item.parsed.warnings.size();
  const LinkPolicy policy = load_link_policy(tx, mailbox);
  std::vector<IngestItem> items;
  items.push_back(std::move(item));
  const auto outcome = ingest_messages(tx, items, policy).front();
  tx.exec_params(kTokenMessage, w.token, outcome.message_id);
  o.message_id = outcome.message_id;
  o.duplicate = outcome.duplicate;
  o.contacts = outcome.contacts.size();
  return o;
}

HttpResponse refusal_response(const Outcome& o) { return HttpResponse::error(o.status, o.code, o.message); }

void log_outcome(const std::string& request_id, const std::string& remote, const Outcome& o, std::size_t bytes, Metrics& metrics) {
  const char* result = o.status == 200 ? (o.duplicate ? "duplicate" : "stored") : "refused";
  spdlog::info("event=mailgun_webhook request={} client={} mailbox={} status={} result={} reason={} form={} message={} contacts={} "
               "warnings={} bytes={}",
               request_id, remote, o.mailbox_id, o.status, result, o.code.empty() ? "-" : o.code, o.form.empty() ? "-" : o.form,
               o.message_id, o.contacts, o.warnings, bytes);
  metrics.count("mailgate_mailgun_webhooks_total", "Mailgun inbound webhooks, by outcome.", "outcome",
                o.status == 200 ? result : o.code);
}

}  // namespace

void register_mailgun_routes(Router& router, Services& services) {
  Services& s = services;
  auto handler = [&s](HttpRequest& req) -> awaitable<HttpResponse> {
    const std::string request_id = hex_encode(random_bytes(6));
    const std::size_t bytes = req.body.size();
    form::Limits limits;
    limits.max_fields = s.config.mailgun.webhook_max_fields;
    limits.max_bytes = s.config.mailgun.webhook_max_bytes;
    const std::string* content_type = req.header("content-type");
    auto parsed = form::parse_form(content_type ? *content_type : std::string(), req.body, limits);
    req.body.clear();
    req.body.shrink_to_fit();
    if (auto* e = std::get_if<form::FormError>(&parsed)) {
      Outcome o = e->kind == form::FormError::Kind::too_large ? Outcome::refuse(413, "body_too_large", e->message)
                  : e->kind == form::FormError::Kind::too_many_fields ? Outcome::refuse(400, "too_many_fields", e->message)
                                                                      : Outcome::refuse(400, "invalid_form", e->message);
      log_outcome(request_id, req.remote_address, o, bytes, s.metrics);
      co_return refusal_response(o);
    }
    auto webhook = std::make_shared<Webhook>();
    webhook->fields = std::move(std::get<std::vector<form::Field>>(parsed));
    webhook->path_token = req.params["token"];
    for (auto [name, out] : {std::pair{"timestamp", &webhook->timestamp}, std::pair{"token", &webhook->token},
                             std::pair{"signature", &webhook->signature}})
      if (const auto* f = form::find_field(webhook->fields, name)) *out = f->value;

    Outcome early;
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    if (!plausible_path_token(webhook->path_token)) {
      early = Outcome::refuse(406, "unknown_mailbox", "no mailbox has this webhook URL");
    } else if (webhook->token.empty() || webhook->token.size() > 256 || webhook->signature.empty()) {
      early = Outcome::refuse(406, "signature_missing", "the form lacks timestamp, token or signature");
    } else if (auto t = mailgun::check_timestamp(webhook->timestamp, now, s.config.mailgun.webhook_max_age);
               t != mailgun::TimestampCheck::ok) {
      early = t == mailgun::TimestampCheck::malformed
                  ? Outcome::refuse(406, "signature_missing", "the form lacks a valid timestamp")
                  : Outcome::refuse(406, "stale_timestamp", "the webhook's timestamp is outside the accepted window");
    }
    if (early.status != 200) {
      log_outcome(request_id, req.remote_address, early, bytes, s.metrics);
      co_return refusal_response(early);
    }

    const SecretBox* secrets = &s.secrets;
    const std::chrono::seconds max_age = s.config.mailgun.webhook_max_age;
    auto job = [webhook, secrets, max_age](pqxx::work& tx) { return receive(tx, *webhook, *secrets, max_age); };
    Outcome o;
    std::exception_ptr failed;
    try {
      auto op = store_transact(s.store, std::move(job));
      o = co_await std::move(op);
    } catch (...) {
      failed = std::current_exception();
    }
    if (failed) {
      std::string reason;
      try {
        std::rethrow_exception(failed);
      } catch (const std::exception& e) {
        reason = e.what();
      }
      spdlog::warn("event=mailgun_webhook request={} client={} status=5xx result=deferred reason=\"{}\"", request_id,
                   req.remote_address, reason);
      s.metrics.count("mailgate_mailgun_webhooks_total", "Mailgun inbound webhooks, by outcome.", "outcome", "deferred");
      std::rethrow_exception(failed);  // the server answers 503 (database) or 500
    }
    log_outcome(request_id, req.remote_address, o, bytes, s.metrics);
    if (o.status != 200) co_return refusal_response(o);
    json::object body{{"message_id", o.message_id}, {"duplicate", o.duplicate}};
    co_return HttpResponse::json(200, json::serialize(body));
  };
  const std::size_t limit = services.config.mailgun.webhook_max_bytes;
  router.add("POST", "/webhooks/mailgun/{token}/mime", handler, limit);
  router.add("POST", "/webhooks/mailgun/{token}/messages", handler, limit);
  router.add("POST", "/webhooks/mailgun/{token}", handler, limit);
}

}  // namespace mailgate
