#include "store/ingest.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "rules/address.hpp"
#include "store/sql.hpp"

namespace mailgate {

namespace {

constexpr const char* kFindBySource =
    "SELECT id FROM messages WHERE coalesce(mailbox_id, 0) = coalesce($1::bigint, 0) AND source = $2 AND source_key = $3";
constexpr const char* kFindByContent = "SELECT id FROM messages WHERE mailbox_id = $1 AND raw_sha256 = $2 LIMIT 1";
// Contacts by address match key. The contacts schema keeps one row per address.
constexpr const char* kContactsByAddress =
    "SELECT e.email_match_key, e.contact_id FROM contact_emails e WHERE e.email_match_key = ANY($1::text[])";

boost::json::array addresses_json(const std::vector<MailAddress>& list) {
  boost::json::array a;
  for (const auto& m : list) a.emplace_back(boost::json::object{{"name", m.name}, {"address", m.address}});
  return a;
}

std::set<std::int64_t> ids_of(const pqxx::result& r) {
  std::set<std::int64_t> out;
  for (const auto& row : r) out.insert(row[0].as<std::int64_t>());
  return out;
}

}  // namespace

LinkPolicy load_link_policy(pqxx::dbtransaction& tx, std::int64_t mailbox_id) {
  LinkPolicy p;
  auto m = tx.exec_params("SELECT address FROM mailboxes WHERE id = $1", mailbox_id);
  if (!m.empty()) p.own_address = m[0][0].as<std::string>();
  for (const auto& r : tx.exec_params("SELECT kind, value FROM mailbox_exclusions WHERE mailbox_id = $1", mailbox_id))
    (r[0].as<std::string>() == "domain" ? p.excluded_domains : p.excluded_addresses).insert(r[1].as<std::string>());
  return p;
}

IngestOutcome ingest_message(pqxx::dbtransaction& tx, const InboundMessage& in, const ParsedMessage& parsed,
                             const LinkPolicy& policy) {
  IngestOutcome out;
  auto existing = tx.exec_params(kFindBySource, in.mailbox_id, in.source, in.source_key);
  if (existing.empty() && in.dedupe_by_content && in.mailbox_id)
    existing = tx.exec_params(kFindByContent, in.mailbox_id, parsed.sha256_hex);
  if (!existing.empty()) {
    out.message_id = existing[0][0].as<std::int64_t>();
    out.duplicate = true;
    out.contacts = ids_of(tx.exec_params("SELECT contact_id FROM message_contacts WHERE message_id = $1", out.message_id));
    return out;
  }

  boost::json::object addresses{{"from", addresses_json(parsed.from)},         {"sender", addresses_json(parsed.sender)},
                                {"reply_to", addresses_json(parsed.reply_to)}, {"to", addresses_json(parsed.to)},
                                {"cc", addresses_json(parsed.cc)}};
  const std::string from_name = parsed.from.empty() ? "" : parsed.from[0].name;
  const std::string from_address = parsed.from.empty() ? "" : parsed.from[0].address;
  std::optional<std::int64_t> date = parsed.date;
  out.message_id = tx.exec_params1(
                         "INSERT INTO messages (mailbox_id, source, source_key, folder, raw, raw_sha256, raw_size, header_message_id, "
                         "sent_at, subject, from_name, from_address, addresses, text_body, html_body, parse_warnings, "
                         "transport_tls, peer_address) "
                         "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9::bigint), $10, $11, $12, $13::jsonb, $14, $15, "
                         "$16::text[], $17, nullif($18, '')) RETURNING id",
                         in.mailbox_id, in.source, in.source_key, in.folder, pqxx::binarystring(in.raw), parsed.sha256_hex,
                         static_cast<std::int64_t>(in.raw.size()), parsed.message_id, date, parsed.subject, from_name, from_address,
                         boost::json::serialize(addresses), parsed.text_body, parsed.html_body, sql_text_array(parsed.warnings),
                         in.transport_tls, in.peer_address)[0]
                       .as<std::int64_t>();

  for (std::size_t i = 0; i < parsed.attachments.size(); ++i) {
    const auto& a = parsed.attachments[i];
    tx.exec_params(
        "INSERT INTO attachments (message_id, position, filename, content_type, content_id, inline_part, size, sha256, data) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        out.message_id, static_cast<int>(i), a.filename, a.content_type, a.content_id, a.inline_part,
        static_cast<std::int64_t>(a.data.size()), a.sha256_hex, pqxx::binarystring(a.data));
  }

  // Addresses are recorded in full (for later linking); links respect the mailbox's policy.
  std::vector<std::string> keys;
  for (const auto& a : parsed.linkable_addresses())
    if (auto n = normalize_email(a); std::holds_alternative<std::string>(n)) keys.push_back(email_match_key(std::get<std::string>(n)));
  if (!keys.empty())
    tx.exec_params("INSERT INTO message_addresses (message_id, match_key) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
                   out.message_id, sql_text_array(keys));
  const auto linkable = linkable_addresses(parsed.linkable_addresses(), policy);
  if (!linkable.empty()) {
    std::map<std::string, std::set<std::int64_t>> by_address;
    for (const auto& r : tx.exec_params(kContactsByAddress, sql_text_array(linkable)))
      by_address[r[0].as<std::string>()].insert(r[1].as<std::int64_t>());
    out.contacts = link_contacts(parsed.linkable_addresses(), policy, by_address);
    for (auto contact : out.contacts)
      tx.exec_params("INSERT INTO message_contacts (message_id, contact_id, linked_by) VALUES ($1, $2, 'auto') ON CONFLICT DO NOTHING",
                     out.message_id, contact);
  }
  return out;
}

}  // namespace mailgate
