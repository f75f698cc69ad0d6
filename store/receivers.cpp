// store/receivers: see the header. The mails written here are plain text, Dutch first (the
// suppliers and members are Dutch organisations) with an English line.
#include "store/receivers.hpp"

#include <map>

#include <pqxx/pqxx>

#include "rules/address.hpp"
#include "store/audit.hpp"
#include "store/ingest.hpp"
#include "store/outbox.hpp"
#include "store/prepared.hpp"
#include "store/sql.hpp"

namespace mailgate {

namespace {

// A receiver with its rules in one statement: the whitelist as two parallel arrays in entry
// order, and the addresses of the administration's active members when the whitelist has a
// "verified users" entry.
#define MAILGATE_RECEIVER_SELECT                                                                                   \
  "SELECT r.id, r.administration_id, r.address, r.status, r.document_type, r.supplier_name, r.contact_email, a.name, " \
  "r.notify_members, r.require_tls, r.allow_unauthenticated, r.accepted_types, r.max_message_bytes, "                 \
  "ARRAY(SELECT w.kind FROM receiver_whitelist w WHERE w.receiver_id = r.id ORDER BY w.id), "                          \
  "ARRAY(SELECT w.value FROM receiver_whitelist w WHERE w.receiver_id = r.id ORDER BY w.id), "                         \
  "ARRAY(SELECT lower(u.email) FROM administration_members m JOIN users u ON u.id = m.user_id "                        \
  "WHERE m.administration_id = r.administration_id AND u.active AND EXISTS (SELECT 1 FROM receiver_whitelist v "       \
  "WHERE v.receiver_id = r.id AND v.kind = 'verified_users')) "                                                        \
  "FROM receivers r JOIN administrations a ON a.id = r.administration_id "
constexpr const char* kReceiverByAddress = MAILGATE_RECEIVER_SELECT "WHERE r.address = lower($1)";
constexpr const char* kReceiverById = MAILGATE_RECEIVER_SELECT "WHERE r.id = $1";
#undef MAILGATE_RECEIVER_SELECT

std::optional<Receiver> receiver_from(const pqxx::result& res) {
  if (res.empty()) return std::nullopt;
  const auto& row = res[0];
  Receiver r;
  r.id = row[0].as<std::int64_t>();
  r.administration_id = row[1].as<std::int64_t>();
  r.address = row[2].as<std::string>();
  r.status = row[3].as<std::string>();
  r.document_type = row[4].as<std::string>();
  r.supplier_name = row[5].as<std::string>();
  r.contact_email = row[6].as<std::string>();
  r.administration_name = row[7].as<std::string>();
  r.notify_members = row[8].as<bool>();
  r.rules.require_tls = row[9].as<bool>();
  r.rules.allow_unauthenticated = row[10].as<bool>();
  r.rules.accepted_types = sql_text_list(row[11]);
  if (!row[12].is_null()) r.rules.max_message_bytes = row[12].as<std::int64_t>();
  const auto kinds = sql_text_list(row[13]), values = sql_text_list(row[14]);
  for (std::size_t k = 0; k < kinds.size() && k < values.size(); ++k) r.rules.whitelist.push_back({kinds[k], values[k]});
  for (auto& a : sql_text_list(row[15])) r.rules.verified_user_addresses.insert(std::move(a));
  return r;
}

std::string domain_part(const std::string& address) { return address.substr(address.rfind('@') + 1); }

// Automatic mails go out from the administration's sender mailbox (else the primary mailbox).
OutboxRequest automatic_mail(pqxx::dbtransaction& tx, const Receiver& r, std::string kind) {
  OutboxRequest m;
  m.kind = std::move(kind);
  auto a = tx.exec_params("SELECT sender_mailbox_id FROM administrations WHERE id = $1", r.administration_id);
  if (!a.empty() && !a[0][0].is_null()) m.mailbox_id = a[0][0].as<std::int64_t>();
  m.administration_id = r.administration_id;
  m.cause_entity = "receiver";
  m.cause_id = std::to_string(r.id);
  return m;
}

std::string document_type_nl(const std::string& t) {
  if (t == "purchase_invoice") return "inkoopfacturen";
  if (t == "sales_invoice") return "verkoopfacturen";
  if (t == "receipt") return "bonnen";
  return "documenten";
}

void queue_rejection(pqxx::dbtransaction& tx, const Receiver& r, const Delivery& d, const std::string& reason) {
  OutboxRequest m = automatic_mail(tx, r, "receiver_rejection");
  m.to = {r.contact_email};
  m.subject = "Niet verwerkt: " + (d.parsed.subject.empty() ? std::string("uw bericht") : d.parsed.subject);
  m.text_body = "Beste " + (r.supplier_name.empty() ? std::string("leverancier") : r.supplier_name) + ",\n\n" +
                "Uw bericht aan " + r.address + " (" + r.administration_name + ") is niet verwerkt.\n" +
                "Reden: " + reason + "\n\n" +
                "Afzender: " + d.facts.header_from + "\nOnderwerp: " + d.parsed.subject + "\n\n" +
                "Your message to " + r.address + " was not processed: " + reason + "\n";
  outbox_queue(tx, m, domain_part(r.address));
}

int queue_notifications(pqxx::dbtransaction& tx, const Receiver& r, const Delivery& d, std::int64_t message_id) {
  auto members = tx.exec_params(
      "SELECT u.email FROM administration_members m JOIN users u ON u.id = m.user_id WHERE m.administration_id = $1 AND u.active "
      "ORDER BY u.id",
      r.administration_id);
  for (const auto& u : members) {
    OutboxRequest m = automatic_mail(tx, r, "receiver_notification");
    m.to = {u[0].as<std::string>()};
    m.subject = "Ontvangen via " + r.address + ": " + d.parsed.subject;
    std::string files;
    for (const auto& a : d.parsed.attachments) files += "  - " + (a.filename.empty() ? a.content_type : a.filename) + "\n";
    m.text_body = "Er is een bericht ontvangen voor " + r.administration_name + " (" + document_type_nl(r.document_type) + ").\n\n" +
                  "Van: " + d.facts.header_from + "\nOnderwerp: " + d.parsed.subject + "\nBijlagen:\n" + files +
                  "\nBericht " + std::to_string(message_id) + " in mailgate.\n";
    outbox_queue(tx, m, domain_part(r.address));
  }
  return static_cast<int>(members.size());
}

}  // namespace

std::optional<Receiver> receiver_find(pqxx::dbtransaction& tx, const std::string& address) {
  return receiver_from(exec_prepared(tx, "receiver_by_address", kReceiverByAddress, address));
}

std::optional<Receiver> receiver_load(pqxx::dbtransaction& tx, std::int64_t id) {
  return receiver_from(exec_prepared(tx, "receiver_by_id", kReceiverById, id));
}

namespace {

DeliveryOutcome gone() {
  DeliveryOutcome out;
  out.receiver_gone = true;
  out.verdict.action = ReceiverVerdict::Action::reject_not_whitelisted;
  out.verdict.code = 550;
  out.verdict.enhanced = "5.1.1";
  out.verdict.reason = "no such mailbox here";
  return out;
}

// The verdict on `d` for the active receiver `r`; a rejection mail decided on and queued. An
// accepted delivery is left to the caller to store.
DeliveryOutcome judge(pqxx::dbtransaction& tx, const Receiver& r, const Delivery& d, int rejections_per_hour) {
  DeliveryOutcome out;
  out.verdict = judge_received_message(r.rules, d.facts);
  if (out.verdict.action != ReceiverVerdict::Action::reject_rule) return out;
  RejectionFacts f;
  f.envelope_from = d.envelope_from;
  f.auto_submitted = d.parsed.auto_submitted;
  f.precedence = d.precedence;
  f.list_headers = d.list_headers;
  f.limit_per_hour = rejections_per_hour;
  // One rejection decision per receiver at a time; under READ COMMITTED the count below, a
  // new statement, sees what the previous holder committed.
  tx.exec_params("SELECT pg_advisory_xact_lock(hashtext('receiver_rejection'), $1::integer)", static_cast<int>(r.id));
  f.sent_last_hour = tx.exec_params1("SELECT count(*) FROM outbox WHERE kind = 'receiver_rejection' AND cause_id = $1 "
                                     "AND created_at > now() - interval '1 hour'",
                                     std::to_string(r.id))[0]
                         .as<int>();
  const auto decision = rejection_allowed(f);
  if (decision.send) {
    queue_rejection(tx, r, d, out.verdict.reason);
    out.rejection_queued = true;
  } else {
    out.rejection_skipped = decision.why_not;
  }
  return out;
}

InboundMessage inbound_of(const Receiver& r, const Delivery& d) {
  InboundMessage in;
  in.source = "smtp";
  in.source_key = d.queue_id;
  in.new_key = true;
  in.raw = d.raw;
  in.transport_tls = d.tls;
  in.peer_address = d.peer_address;
  in.received = InboundMessage::Received{r.id, d.envelope_from, d.authentication_results, d.auth_json};
  return in;
}

LinkPolicy policy_of(const Receiver& r) {
  LinkPolicy policy;
  policy.own_address = r.address;
  return policy;
}

// What follows the storing of an accepted delivery: the TLS latch and the members' notifications.
void after_accept(pqxx::dbtransaction& tx, const Receiver& r, const Delivery& d, DeliveryOutcome& out) {
  // The first committed latch wins: a concurrent one waits for its row lock, then finds
  // require_tls already on and changes (and audits) nothing.
  const std::string latch = "UPDATE receivers SET require_tls = true, updated_at = now() WHERE id = $1 AND NOT require_tls RETURNING id";
  if (out.verdict.latch_tls && !tx.exec_params(latch, r.id).empty()) {
    audit_write(tx, Actor{"daemon", std::nullopt, "smtp receiver"}, "receiver", std::to_string(r.id), "update",
                {{"require_tls", "false", "true"},
                 {"reason", std::nullopt, "first accepted delivery over TLS (message " + std::to_string(out.message_id) + ")"}});
  }
  if (r.notify_members) out.notifications_queued = queue_notifications(tx, r, d, out.message_id);
}

}  // namespace

DeliveryOutcome receiver_deliver(pqxx::dbtransaction& tx, const Delivery& d, int rejections_per_hour) {
  // No lock on the receiver for a delivery: deliveries of one receiver commit side by side. The
  // two things that must not race take their own: the rejection count an advisory lock (only on
  // the rejection path), the TLS latch the row lock of its conditional UPDATE.
  const auto r = receiver_load(tx, d.receiver_id);
  if (!r || r->status != "active") return gone();
  DeliveryOutcome out = judge(tx, *r, d, rejections_per_hour);
  if (out.verdict.action != ReceiverVerdict::Action::accept) return out;
  const auto in = inbound_of(*r, d);
  const auto policy = policy_of(*r);
  out.message_id = ingest_message(tx, in, d.parsed, policy).message_id;
  after_accept(tx, *r, d, out);
  return out;
}

std::vector<DeliveryOutcome> receiver_deliver_batch(pqxx::dbtransaction& tx, const std::vector<const Delivery*>& batch,
                                                    int rejections_per_hour) {
  std::vector<DeliveryOutcome> out(batch.size());
  std::map<std::int64_t, std::optional<Receiver>> receivers;  // each loaded once
  std::map<std::int64_t, LinkPolicy> policies;
  std::vector<std::size_t> accepted;
  std::vector<InboundMessage> ins;
  ins.reserve(batch.size());  // never moved: the refs below point into it
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const Delivery& d = *batch[i];
    auto found = receivers.find(d.receiver_id);
    if (found == receivers.end()) found = receivers.emplace(d.receiver_id, receiver_load(tx, d.receiver_id)).first;
    auto& r = found->second;
    if (!r || r->status != "active") {
      out[i] = gone();
      continue;
    }
    out[i] = judge(tx, *r, d, rejections_per_hour);
    if (out[i].verdict.action != ReceiverVerdict::Action::accept) continue;
    // What the next delivery's own load would find once this one latched (after_accept below).
    if (out[i].verdict.latch_tls) r->rules.require_tls = true;
    accepted.push_back(i);
    ins.push_back(inbound_of(*r, d));
    policies.try_emplace(r->id, policy_of(*r));
  }
  std::vector<IngestRef> refs;
  for (std::size_t k = 0; k < accepted.size(); ++k)
    refs.push_back({&ins[k], &batch[accepted[k]]->parsed, nullptr, &policies.at(batch[accepted[k]]->receiver_id)});
  const auto stored = ingest_messages(tx, refs);
  for (std::size_t k = 0; k < accepted.size(); ++k) {
    const auto i = accepted[k];
    out[i].message_id = stored[k].message_id;
    after_accept(tx, *receivers.at(batch[i]->receiver_id), *batch[i], out[i]);
  }
  return out;
}

std::int64_t receiver_queue_invitation(pqxx::dbtransaction& tx, const Receiver& r) {
  OutboxRequest m = automatic_mail(tx, r, "receiver_invitation");
  m.to = {r.contact_email};
  m.subject = "Uitnodiging: stuur uw " + document_type_nl(r.document_type) + " voor " + r.administration_name + " naar " + r.address;
  m.text_body = "Beste " + (r.supplier_name.empty() ? std::string("leverancier") : r.supplier_name) + ",\n\n" +
                r.administration_name + " vraagt u voortaan uw " + document_type_nl(r.document_type) + " te sturen naar:\n\n    " +
                r.address + "\n\n" +
                "Alleen berichten van afzenders die " + r.administration_name +
                " heeft opgegeven worden verwerkt, met de documenten als bijlage (PDF of XML).\n\n" +
                r.administration_name + " asks you to send your invoices to " + r.address + " from now on.\n";
  return outbox_queue(tx, m, domain_part(r.address));
}

}  // namespace mailgate
