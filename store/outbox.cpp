#include "store/outbox.hpp"

#include <algorithm>
#include <map>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "store/ingest.hpp"
#include "store/prepared.hpp"
#include "store/sql.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace {

std::vector<MailAddress> plain_addresses(const std::vector<std::string>& list) {
  std::vector<MailAddress> out;
  for (const auto& a : list) out.push_back({"", a});
  return out;
}

// Due rows of a mailbox, oldest first, locked and loaded in one statement, each with what it
// weighs: the composed bytes, or the bodies and attachments still to be composed.
constexpr const char* kLockDue =
    "SELECT o.id, o.mailbox_id, coalesce(o.from_address, m.address), CASE WHEN o.from_address IS NULL THEN m.display_name ELSE o.from_name END, "
    "o.reply_to, o.to_addresses, o.cc_addresses, o.bcc_addresses, o.subject, o.text_body, coalesce(o.html_body, ''), o.message_id, "
    "extract(epoch FROM o.created_at)::bigint, o.raw, o.kind, "
    "EXISTS (SELECT 1 FROM outbox_attachments a WHERE a.outbox_id = o.id), "
    "coalesce(octet_length(o.raw), octet_length(o.text_body) + coalesce(octet_length(o.html_body), 0) + "
    "  coalesce((SELECT sum(octet_length(a.data)) FROM outbox_attachments a WHERE a.outbox_id = o.id), 0))::bigint "
    "FROM outbox o JOIN mailboxes m ON m.id = o.mailbox_id "
    "WHERE o.mailbox_id = $1 AND o.state IN ('queued', 'retrying') AND o.next_attempt_at <= now() "
    "ORDER BY o.id LIMIT $2 FOR UPDATE OF o SKIP LOCKED";
constexpr const char* kLoadAttachments =
    "SELECT outbox_id, filename, content_type, data FROM outbox_attachments WHERE outbox_id = ANY($1::bigint[]) ORDER BY outbox_id, position";
constexpr const char* kStartSending =
    "UPDATE outbox SET state = 'sending', attempts = attempts + 1, lease_until = now() + make_interval(secs => $2), updated_at = now() "
    "WHERE id = ANY($1::bigint[])";
constexpr const char* kExtend =
    "UPDATE outbox SET lease_until = now() + make_interval(secs => $2) WHERE id = ANY($1::bigint[]) AND state = 'sending'";
constexpr const char* kRelease =
    "UPDATE outbox SET state = CASE WHEN attempts <= 1 THEN 'queued' ELSE 'retrying' END, attempts = greatest(attempts - 1, 0), "
    "lease_until = NULL, next_attempt_at = now(), updated_at = now() WHERE id = ANY($1::bigint[]) AND state = 'sending'";
constexpr const char* kLockSending =
    "SELECT id, mailbox_id FROM outbox WHERE id = ANY($1::bigint[]) AND state = 'sending' ORDER BY id FOR UPDATE";
constexpr const char* kMarkSent =
    "UPDATE outbox o SET state = 'sent', sent_at = now(), lease_until = NULL, last_error = NULL, failed_step = NULL, "
    "refused = v.refused::jsonb, sent_message_id = v.copy, updated_at = now() "
    "FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS v(id, refused, copy) WHERE o.id = v.id";
// Backoff: base * 2^(attempts-1), at most an hour, but never sooner than the server's
// Retry-After ($7 seconds); 'failed' once the next try would be past max_age.
constexpr const char* kMarkFailed =
    "UPDATE outbox SET lease_until = NULL, last_error = $3, failed_step = nullif($4, ''), updated_at = now(), "
    "state = CASE WHEN $2 OR now() + greatest(least(make_interval(secs => $5 * power(2, least(attempts - 1, 16))), interval '1 hour'), "
    "  make_interval(secs => $7)) > age_from + make_interval(secs => $6) THEN 'failed' ELSE 'retrying' END, "
    "next_attempt_at = now() + greatest(least(make_interval(secs => $5 * power(2, least(attempts - 1, 16))), interval '1 hour'), "
    "  make_interval(secs => $7)) "
    "WHERE id = $1 AND state = 'sending'";


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
  const std::string list = sql_id_array(ids);
  exec_prepared(tx, "outbox_extend", kExtend, list, static_cast<double>(lease.count()));
}

void outbox_release(pqxx::dbtransaction& tx, const std::vector<std::int64_t>& ids) {
  if (ids.empty()) return;
  const std::string list = sql_id_array(ids);
  exec_prepared(tx, "outbox_release", kRelease, list);
}

std::vector<OutboxRow> outbox_lock_due(pqxx::dbtransaction& tx, std::int64_t mailbox_id, int limit, std::size_t max_bytes) {
  // One statement locks and loads up to `limit` rows; those past the byte budget are dropped here
  // (their bodies were read for nothing, their attachments are not) and stay locked until the
  // commit without being claimed: the next chunk takes them.
  std::vector<OutboxRow> rows;
  std::vector<std::int64_t> with_attachments;  // rows still to be composed that have any
  std::map<std::int64_t, std::size_t> index;
  std::size_t bytes = 0;
  for (const auto& r : exec_prepared(tx, "outbox_lock_due_load", kLockDue, mailbox_id, limit)) {
    const auto size = static_cast<std::size_t>(r[16].as<std::int64_t>());
    if (!rows.empty() && bytes + size > max_bytes) break;
    bytes += size;
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
    if (m.message_id.size() > 2 && m.message_id.front() == '<' && m.message_id.back() == '>')
      m.message_id = m.message_id.substr(1, m.message_id.size() - 2);
    m.date = r[12].as<std::int64_t>();
    if (!r[13].is_null()) row.raw = pqxx::binarystring(r[13]).str();
    const std::string kind = r[14].as<std::string>();
    // RFC 3834: no auto-replies to these. A trusted receiver's mails answer a supplier's message.
    if (kind.rfind("receiver_", 0) == 0)
      m.extra_headers.push_back({"Auto-Submitted", "auto-replied"});
    else if (kind != "message")
      m.extra_headers.push_back({"Auto-Submitted", "auto-generated"});
    if (!row.raw && r[15].as<bool>()) with_attachments.push_back(row.id);
    index[row.id] = rows.size();
    rows.push_back(std::move(row));
  }
  if (!with_attachments.empty())
    for (const auto& a : exec_prepared(tx, "outbox_load_attachments", kLoadAttachments, sql_id_array(with_attachments))) {
      auto& row = rows[index.at(a[0].as<std::int64_t>())];
      row.message.attachments.push_back({a[1].as<std::string>(), a[2].as<std::string>(), pqxx::binarystring(a[3]).str()});
    }
  return rows;
}

void outbox_start_sending(pqxx::dbtransaction& tx, const std::vector<std::int64_t>& ids, std::chrono::seconds lease) {
  if (ids.empty()) return;
  const std::string id_list = sql_id_array(ids);
  exec_prepared(tx, "outbox_start_claimed", kStartSending, id_list, static_cast<double>(lease.count()));
}

std::vector<OutboxSentCopy> outbox_record(pqxx::dbtransaction& tx, const OutboxOutcomes& outcomes, std::chrono::seconds retry_base,
                                          std::chrono::seconds max_age) {
  std::vector<OutboxSentCopy> recorded;
  if (!outcomes.sent.empty()) {
    std::vector<std::int64_t> ids;
    for (const auto& s : outcomes.sent) ids.push_back(s.id);
    const std::string id_list = sql_id_array(ids);
    // Lock the rows still ours; one taken back after its lease (or cancelled) is left alone.
    std::map<std::int64_t, std::int64_t> mailbox_of;
    for (const auto& r : exec_prepared(tx, "outbox_lock_sending", kLockSending, id_list))
      mailbox_of[r[0].as<std::int64_t>()] = r[1].as<std::int64_t>();
    // The copies, one ingest_messages() call per mailbox (a connection's rows share one).
    std::map<std::int64_t, std::vector<const OutboxSent*>> by_mailbox;
    for (const auto& s : outcomes.sent)
      if (const auto m = mailbox_of.find(s.id); m != mailbox_of.end()) by_mailbox[m->second].push_back(&s);
    std::vector<std::int64_t> sent_ids, copies;
    std::vector<std::string> refused_lists;
    for (const auto& [mailbox, rows] : by_mailbox) {
      // The parses and spans are the caller's (IngestRef: not copied); InboundMessage owns its raw.
      std::vector<InboundMessage> ins(rows.size());
      std::vector<IngestRef> refs;
      refs.reserve(rows.size());
      const LinkPolicy policy = load_link_policy(tx, mailbox);
      for (std::size_t i = 0; i < rows.size(); ++i) {
        auto& in = ins[i];
        in.mailbox_id = mailbox;
        in.source = "sent";
        in.source_key = "outbox:" + std::to_string(rows[i]->id);
        in.raw = *rows[i]->raw;
        in.folder = "sent";
        in.read = true;
        refs.push_back({&in, rows[i]->parsed, &rows[i]->attachment_spans, &policy});
      }
      const auto stored = ingest_messages(tx, refs);
      for (std::size_t i = 0; i < rows.size(); ++i) {
        boost::json::array refused_json;
        for (const auto& x : rows[i]->refused) refused_json.emplace_back(boost::json::object{{"address", x.address}, {"reply", x.reply}});
        sent_ids.push_back(rows[i]->id);
        copies.push_back(stored.at(i).message_id);
        refused_lists.push_back(boost::json::serialize(refused_json));
        recorded.push_back({rows[i]->id, stored.at(i).message_id});
      }
    }
    if (!sent_ids.empty()) {
      const std::string sent_list = sql_id_array(sent_ids), copy_list = sql_id_array(copies), refused_list = sql_text_array(refused_lists);
      exec_prepared(tx, "outbox_mark_sent", kMarkSent, sent_list, refused_list, copy_list);
    }
  }
  for (const auto& f : outcomes.failed) outbox_mark_failed(tx, f.id, f.permanent, f.step, f.reason, retry_base, max_age, f.not_before);
  outbox_release(tx, outcomes.untried);
  return recorded;
}

void outbox_mark_failed(pqxx::dbtransaction& tx, std::int64_t id, bool permanent, const std::string& step, const std::string& reason,
                        std::chrono::seconds retry_base, std::chrono::seconds max_age, std::chrono::seconds not_before) {
  exec_prepared(tx, "outbox_mark_failed", kMarkFailed, id, permanent, reason, step, static_cast<double>(retry_base.count()),
                static_cast<double>(max_age.count()), static_cast<double>(not_before.count()));
}

}  // namespace mailgate
