#include "store/outbox.hpp"

#include <algorithm>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "store/ingest.hpp"
#include "store/sql.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace {

std::vector<MailAddress> plain_addresses(const std::vector<std::string>& list) {
  std::vector<MailAddress> out;
  for (const auto& a : list) out.push_back({"", a});
  return out;
}

}  // namespace

std::vector<std::string> OutboxRow::recipients() const {
  std::vector<std::string> out;
  for (const auto& a : message.to) out.push_back(a.address);
  for (const auto& a : message.cc) out.push_back(a.address);
  out.insert(out.end(), bcc.begin(), bcc.end());
  return out;
}

std::int64_t outbox_queue(pqxx::dbtransaction& tx, const OutboxRequest& r, const std::string& message_id_domain) {
  const std::string message_id = "<" + random_token(18) + "@" + (message_id_domain.empty() ? "mailgate.invalid" : message_id_domain) + ">";
  const auto id = tx.exec_params1(
                        "INSERT INTO outbox (kind, mailbox_id, from_address, from_name, reply_to, to_addresses, cc_addresses, bcc_addresses, "
                        "subject, text_body, html_body, message_id, cause_entity, cause_id, contact_id, administration_id, template_id, created_by) "
                        "VALUES ($1, $2, nullif($3, ''), $4, nullif($5, ''), $6::text[], $7::text[], $8::text[], $9, $10, nullif($11, ''), $12, "
                        "nullif($13, ''), nullif($14, ''), $15, $16, $17, $18) RETURNING id",
                        r.kind, r.mailbox_id, r.from.address, r.from.name, r.reply_to ? r.reply_to->address : std::string(),
                        sql_text_array(r.to), sql_text_array(r.cc), sql_text_array(r.bcc), r.subject, r.text_body, r.html_body, message_id,
                        r.cause_entity, r.cause_id, r.contact_id, r.administration_id, r.template_id, r.created_by)[0]
                        .as<std::int64_t>();
  for (std::size_t i = 0; i < r.attachments.size(); ++i) {
    const auto& a = r.attachments[i];
    tx.exec_params("INSERT INTO outbox_attachments (outbox_id, position, filename, content_type, data) VALUES ($1, $2, $3, $4, $5)", id,
                   static_cast<int>(i), a.filename, a.content_type, pqxx::binarystring(a.data));
  }
  return id;
}

int outbox_recover(pqxx::dbtransaction& tx) {
  return static_cast<int>(
      tx.exec("UPDATE outbox SET state = 'retrying', lease_until = NULL, next_attempt_at = now(), updated_at = now(), "
              "last_error = coalesce(last_error, 'the sending daemon stopped before it recorded the outcome') "
              "WHERE state = 'sending' AND lease_until < now()")
          .affected_rows());
}

std::vector<DueMailbox> outbox_due(pqxx::dbtransaction& tx) {
  tx.exec("UPDATE outbox SET mailbox_id = (SELECT id FROM mailboxes WHERE is_primary) "
          "WHERE mailbox_id IS NULL AND state IN ('queued', 'retrying') AND EXISTS (SELECT 1 FROM mailboxes WHERE is_primary)");
  std::vector<DueMailbox> out;
  for (const auto& r : tx.exec("SELECT mailbox_id, count(*) FROM outbox WHERE state IN ('queued', 'retrying') AND next_attempt_at <= now() "
                               "AND mailbox_id IS NOT NULL GROUP BY mailbox_id ORDER BY min(id)"))
    out.push_back({r[0].as<std::int64_t>(), r[1].as<int>()});
  return out;
}

std::vector<std::int64_t> outbox_claim(pqxx::dbtransaction& tx, std::int64_t mailbox_id, int limit, std::chrono::seconds lease) {
  std::vector<std::int64_t> ids;
  for (const auto& r : tx.exec_params(
           "WITH c AS (SELECT id FROM outbox WHERE mailbox_id = $1 AND state IN ('queued', 'retrying') AND next_attempt_at <= now() "
           "ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) "
           "UPDATE outbox o SET state = 'sending', attempts = attempts + 1, lease_until = now() + make_interval(secs => $3), "
           "updated_at = now() FROM c WHERE o.id = c.id RETURNING o.id",
           mailbox_id, limit, static_cast<double>(lease.count())))
    ids.push_back(r[0].as<std::int64_t>());
  std::sort(ids.begin(), ids.end());
  return ids;
}

void outbox_extend(pqxx::dbtransaction& tx, const std::vector<std::int64_t>& ids, std::chrono::seconds lease) {
  if (ids.empty()) return;
  tx.exec_params("UPDATE outbox SET lease_until = now() + make_interval(secs => $2) WHERE id = ANY($1::bigint[]) AND state = 'sending'",
                 sql_id_array(ids), static_cast<double>(lease.count()));
}

OutboxRow outbox_load(pqxx::dbtransaction& tx, std::int64_t id) {
  auto r = tx.exec_params1(
      "SELECT o.id, o.mailbox_id, coalesce(o.from_address, m.address), CASE WHEN o.from_address IS NULL THEN m.display_name ELSE o.from_name END, "
      "o.reply_to, o.to_addresses, o.cc_addresses, o.bcc_addresses, o.subject, o.text_body, coalesce(o.html_body, ''), o.message_id, "
      "extract(epoch FROM o.created_at)::bigint, o.raw, o.kind "
      "FROM outbox o JOIN mailboxes m ON m.id = o.mailbox_id WHERE o.id = $1",
      id);
  OutboxRow row;
  row.id = r[0].as<std::int64_t>();
  row.mailbox_id = r[1].as<std::int64_t>();
  auto& m = row.message;
  m.from = {r[3].as<std::string>(), r[2].as<std::string>()};
  if (!r[4].is_null()) m.reply_to = MailAddress{"", r[4].as<std::string>()};
  m.to = plain_addresses(sql_text_list(r[5]));
  m.cc = plain_addresses(sql_text_list(r[6]));
  row.bcc = sql_text_list(r[7]);
  m.subject = r[8].as<std::string>();
  m.text_body = r[9].as<std::string>();
  m.html_body = r[10].as<std::string>();
  m.message_id = r[11].as<std::string>();
  if (m.message_id.size() > 2 && m.message_id.front() == '<' && m.message_id.back() == '>') m.message_id = m.message_id.substr(1, m.message_id.size() - 2);
  m.date = r[12].as<std::int64_t>();
  if (!r[13].is_null()) row.raw = pqxx::binarystring(r[13]).str();
  const std::string kind = r[14].as<std::string>();
  // RFC 3834: no auto-replies to these. A trusted receiver's mails answer a supplier's message.
  if (kind.rfind("receiver_", 0) == 0)
    m.extra_headers.push_back({"Auto-Submitted", "auto-replied"});
  else if (kind != "message")
    m.extra_headers.push_back({"Auto-Submitted", "auto-generated"});
  for (const auto& a : tx.exec_params("SELECT filename, content_type, data FROM outbox_attachments WHERE outbox_id = $1 ORDER BY position", id))
    m.attachments.push_back({a[0].as<std::string>(), a[1].as<std::string>(), pqxx::binarystring(a[2]).str()});
  return row;
}

void outbox_set_raw(pqxx::dbtransaction& tx, std::int64_t id, const std::string& raw) {
  tx.exec_params("UPDATE outbox SET raw = $2 WHERE id = $1 AND raw IS NULL", id, pqxx::binarystring(raw));
}

void outbox_mark_sent(pqxx::dbtransaction& tx, std::int64_t id, const std::vector<RefusedRecipient>& refused, const ParsedMessage& parsed) {
  auto r = tx.exec_params("SELECT mailbox_id, raw FROM outbox WHERE id = $1 AND state = 'sending' FOR UPDATE", id);
  if (r.empty() || r[0][1].is_null()) return;  // taken back (lease passed) or cancelled meanwhile
  const auto mailbox = r[0][0].as<std::int64_t>();
  InboundMessage copy;
  copy.mailbox_id = mailbox;
  copy.source = "sent";
  copy.source_key = "outbox:" + std::to_string(id);
  copy.raw = pqxx::binarystring(r[0][1]).str();
  copy.folder = "sent";
  const auto stored = ingest_message(tx, copy, parsed, load_link_policy(tx, mailbox));
  boost::json::array refused_json;
  for (const auto& x : refused) refused_json.emplace_back(boost::json::object{{"address", x.address}, {"reply", x.reply}});
  tx.exec_params(
      "UPDATE outbox SET state = 'sent', sent_at = now(), lease_until = NULL, last_error = NULL, failed_step = NULL, "
      "refused = $2::jsonb, sent_message_id = $3, updated_at = now() WHERE id = $1",
      id, boost::json::serialize(refused_json), stored.message_id);
  tx.exec_params("UPDATE messages SET status = 'read' WHERE id = $1 AND source = 'sent'", stored.message_id);
}

void outbox_mark_failed(pqxx::dbtransaction& tx, std::int64_t id, bool permanent, const std::string& step, const std::string& reason,
                        std::chrono::seconds retry_base, std::chrono::seconds max_age) {
  // Backoff: base * 2^(attempts-1), at most an hour; 'failed' once the next try would be past max_age.
  tx.exec_params(
      "UPDATE outbox SET lease_until = NULL, last_error = $3, failed_step = nullif($4, ''), updated_at = now(), "
      "state = CASE WHEN $2 OR now() + least(make_interval(secs => $5 * power(2, least(attempts - 1, 16))), interval '1 hour') "
      "  > age_from + make_interval(secs => $6) THEN 'failed' ELSE 'retrying' END, "
      "next_attempt_at = now() + least(make_interval(secs => $5 * power(2, least(attempts - 1, 16))), interval '1 hour') "
      "WHERE id = $1 AND state = 'sending'",
      id, permanent, reason, step, static_cast<double>(retry_base.count()), static_cast<double>(max_age.count()));
}

}  // namespace mailgate
