#include "store/messages.hpp"

#include <map>

#include <pqxx/pqxx>

#include "rules/linking.hpp"
#include "store/audit.hpp"
#include "store/ingest.hpp"
#include "store/sql.hpp"

namespace mailgate {

int link_earlier_messages(pqxx::dbtransaction& tx, std::int64_t contact_id, const std::vector<std::string>& match_keys) {
  if (match_keys.empty()) return 0;
  auto candidates = tx.exec_params(
      "SELECT a.message_id, coalesce(m.mailbox_id, 0), a.match_key FROM message_addresses a JOIN messages m ON m.id = a.message_id "
      "WHERE a.match_key = ANY($1::text[]) AND NOT EXISTS "
      "(SELECT 1 FROM message_contacts l WHERE l.message_id = a.message_id AND l.contact_id = $2) ORDER BY a.message_id "
      "FOR KEY SHARE OF m",  // a message being purged is not linked (no foreign key guards message_contacts)
      sql_text_array(match_keys), contact_id);
  std::map<std::int64_t, LinkPolicy> policies;  // per mailbox (0: no mailbox, nothing excluded)
  int linked = 0;
  std::int64_t last = 0;
  for (const auto& r : candidates) {
    const auto message = r[0].as<std::int64_t>(), mailbox = r[1].as<std::int64_t>();
    if (message == last) continue;  // linked through another of its addresses already
    auto policy = policies.find(mailbox);
    if (policy == policies.end()) policy = policies.emplace(mailbox, mailbox ? load_link_policy(tx, mailbox) : LinkPolicy{}).first;
    if (linkable_addresses({r[2].as<std::string>()}, policy->second).empty()) continue;
    tx.exec_params("INSERT INTO message_contacts (message_id, contact_id, linked_by) VALUES ($1, $2, 'auto') ON CONFLICT DO NOTHING",
                   message, contact_id);
    last = message;
    ++linked;
  }
  return linked;
}

int purge_removed_messages(pqxx::dbtransaction& tx, std::chrono::hours retention, int limit) {
  auto doomed = tx.exec_params(
      "SELECT id, coalesce(mailbox_id::text, ''), subject, raw_sha256 FROM messages "
      "WHERE folder = 'removed' AND removed_at < now() - make_interval(hours => $1) ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
      static_cast<int>(retention.count()), limit);
  if (doomed.empty()) return 0;
  std::vector<std::int64_t> ids;
  for (const auto& r : doomed) ids.push_back(r[0].as<std::int64_t>());
  const std::string list = sql_id_array(ids);
  for (const char* table : {"attachment_parts", "message_addresses", "message_contacts"})
    tx.exec_params(std::string("DELETE FROM ") + table + " WHERE message_id = ANY($1::bigint[])", list);
  // A sent copy's outbox row keeps its outcome, without the link (found by the copy's source key).
  tx.exec_params(
      "UPDATE outbox o SET sent_message_id = NULL FROM messages m WHERE m.id = ANY($1::bigint[]) AND m.source = 'sent' "
      "AND m.source_key LIKE 'outbox:%' AND o.id = substr(m.source_key, 8)::bigint AND o.sent_message_id = m.id",
      list);
  tx.exec_params("DELETE FROM messages WHERE id = ANY($1::bigint[])", list);
  for (const auto& r : doomed)
    audit_write(tx, Actor{"daemon", std::nullopt, "retention"}, "message", r[0].c_str(), "purge",
                {{"mailbox_id", r[1].c_str(), std::nullopt}, {"subject", r[2].c_str(), std::nullopt}, {"raw_sha256", r[3].c_str(), std::nullopt}});
  return static_cast<int>(doomed.size());
}

}  // namespace mailgate
