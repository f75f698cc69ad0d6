#include "store/ingest.hpp"

#include <map>
#include <tuple>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "rules/address.hpp"
#include "store/prepared.hpp"
#include "store/sql.hpp"

namespace mailgate {

namespace {

// Existing rows by idempotency key, for the keys of one (mailbox, source): one index lookup on all
// three columns per key. The subquery is fenced (OFFSET 0) because on a table without statistics
// (a new installation, a receiver's first burst) PostgreSQL 15 planned both `source_key =
// ANY($3)` and a plain join as a scan of every earlier message of the (mailbox, source) with the
// keys as a filter: 1 ms at 3,000 rows for one key, growing with the table, against 0.03 ms.
constexpr const char* kFindBySource =
    "SELECT k.source_key, s.id FROM unnest($3::text[]) AS k(source_key) CROSS JOIN LATERAL "
    "(SELECT m.id FROM messages m WHERE coalesce(m.mailbox_id, 0) = coalesce($1::bigint, 0) AND m.source = $2 "
    "AND m.source_key = k.source_key OFFSET 0) s";
// Existing rows by content (the oldest of each), for a resync.
constexpr const char* kFindByContent =
    "SELECT DISTINCT ON (raw_sha256) raw_sha256, id FROM messages WHERE mailbox_id = $1 AND raw_sha256 = ANY($2::text[]) "
    "ORDER BY raw_sha256, id";
constexpr const char* kLinksOf = "SELECT message_id, contact_id FROM message_contacts WHERE message_id = ANY($1::bigint[])";
// Contacts by address match key. The contacts schema keeps one row per address.
constexpr const char* kContactsByAddress =
    "SELECT e.email_match_key, e.contact_id FROM contact_emails e WHERE e.email_match_key = ANY($1::text[])";
constexpr const char* kInsertAddresses =
    "INSERT INTO message_addresses (message_id, match_key) SELECT * FROM unnest($1::bigint[], $2::text[]) ON CONFLICT DO NOTHING";
// Both in one round trip: a data-modifying WITH runs whether or not the query reads it.
constexpr const char* kInsertAddressesFindContacts =
    "WITH inserted AS (INSERT INTO message_addresses (message_id, match_key) SELECT * FROM unnest($1::bigint[], $2::text[]) "
    "ON CONFLICT DO NOTHING) "
    "SELECT e.email_match_key, e.contact_id FROM contact_emails e WHERE e.email_match_key = ANY($3::text[])";
constexpr const char* kInsertLinks =
    "INSERT INTO message_contacts (message_id, contact_id, linked_by) SELECT m, c, 'auto' FROM unnest($1::bigint[], $2::bigint[]) "
    "AS l(m, c) ON CONFLICT DO NOTHING";

// One multi-row INSERT carries at most this many bytes of bytea (and a row or two more): the
// server holds a statement's parameters whole while it runs.
constexpr std::size_t kStatementBytes = 32 << 20;
constexpr std::size_t kStatementRows = 500;
// Multi-row INSERTs of up to this many rows are prepared, one statement per row count: the SMTP
// receiver's group commit (at most 64 deliveries) and the outbox's sent copies. Parsing and
// planning a 4-row INSERT cost more than running it.
constexpr std::size_t kPreparedRows = 64;

using Param = std::optional<std::string>;


boost::json::array addresses_json(const std::vector<MailAddress>& list) {
  boost::json::array a;
  for (const auto& m : list) a.emplace_back(boost::json::object{{"name", m.name}, {"address", m.address}});
  return a;
}

// A multi-row INSERT: text parameters ($1..$k) then binary ones ($k+1..), numbered as the rows
// are built; the parameters are read when exec() runs (libpqxx 6.4's dynamic params).
class MultiInsert {
 public:
  explicit MultiInsert(std::string head) : head_(std::move(head)) {}
  std::string text(Param v) {
    text_.push_back(std::move(v));
    return "$" + std::to_string(text_.size());
  }
  std::string binary(const std::string& bytes) {
    bytes_ += bytes.size();
    binary_.emplace_back(bytes);
    return "$B" + std::to_string(binary_.size());  // renumbered in exec()
  }
  void row(const std::string& values) { rows_.push_back(values); }
  std::size_t rows() const { return rows_.size(); }
  bool full() const { return bytes_ >= kStatementBytes || rows_.size() >= kStatementRows; }

  // `prepared_as`: the statement is prepared under that name and its row count when it has at
  // most kPreparedRows rows (the caller builds every row with the same text, so n rows are always
  // one statement). Larger ones (an IMAP batch) are planned once for many rows anyway, and are
  // not kept in every connection.
  pqxx::result exec(pqxx::dbtransaction& tx, const std::string& tail = "", const char* prepared_as = nullptr) {
    std::string sql = head_;
    for (std::size_t i = 0; i < rows_.size(); ++i) sql += (i ? ", " : " ") + renumber(rows_[i]);
    sql += tail;
    auto text = pqxx::prepare::make_dynamic_params(text_);
    auto binary = pqxx::prepare::make_dynamic_params(binary_);
    auto r = prepared_as && rows_.size() <= kPreparedRows
                 ? exec_prepared(tx, std::string(prepared_as) + "_" + std::to_string(rows_.size()), sql, text, binary)
                 : tx.exec_params(sql, text, binary);
    text_.clear();
    binary_.clear();
    rows_.clear();
    bytes_ = 0;
    return r;
  }

 private:
  // "$B7" -> "$<text count + 7>": binary parameters follow the text ones.
  std::string renumber(const std::string& row) const {
    std::string out;
    out.reserve(row.size() + 16);
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (row[i] == '$' && i + 1 < row.size() && row[i + 1] == 'B') {
        std::size_t j = i + 2, n = 0;
        while (j < row.size() && row[j] >= '0' && row[j] <= '9') n = n * 10 + static_cast<std::size_t>(row[j++] - '0');
        out += "$" + std::to_string(text_.size() + n);
        i = j - 1;
      } else {
        out.push_back(row[i]);
      }
    }
    return out;
  }

  std::string head_;
  std::vector<Param> text_;
  std::vector<pqxx::binarystring> binary_;
  std::vector<std::string> rows_;
  std::size_t bytes_ = 0;
};

std::string str(std::int64_t v) { return std::to_string(v); }

// (mailbox or 0, source, source_key): the idempotency key.
using Key = std::tuple<std::int64_t, std::string, std::string>;
Key key_of(const InboundMessage& in) { return {in.mailbox_id.value_or(0), in.source, in.source_key}; }

constexpr const char* kMessageColumns =
    "INSERT INTO messages (mailbox_id, source, source_key, folder, raw, raw_sha256, raw_size, header_message_id, sent_at, subject, "
    "from_name, from_address, addresses, text_body, html_body, parse_warnings, transport_tls, peer_address, receiver_id, "
    "envelope_from, authentication_results, auth, status) VALUES";

void add_message_row(MultiInsert& q, const InboundMessage& in, const ParsedMessage& p) {
  boost::json::object addresses{{"from", addresses_json(p.from)},         {"sender", addresses_json(p.sender)},
                                {"reply_to", addresses_json(p.reply_to)}, {"to", addresses_json(p.to)},
                                {"cc", addresses_json(p.cc)}};
  std::string v = "(";
  v += q.text(in.mailbox_id ? Param(str(*in.mailbox_id)) : std::nullopt) + "::bigint, ";
  v += q.text(in.source) + ", " + q.text(in.source_key) + ", " + q.text(in.folder) + ", ";
  v += q.binary(in.raw) + ", " + q.text(p.sha256_hex) + ", " + q.text(str(static_cast<std::int64_t>(in.raw.size()))) + "::integer, ";
  v += q.text(p.message_id) + ", to_timestamp(" + q.text(p.date ? Param(str(*p.date)) : std::nullopt) + "::bigint), ";
  v += q.text(p.subject) + ", " + q.text(p.from.empty() ? "" : p.from[0].name) + ", " + q.text(p.from.empty() ? "" : p.from[0].address) + ", ";
  v += q.text(boost::json::serialize(addresses)) + "::jsonb, " + q.text(p.text_body) + ", " + q.text(p.html_body) + ", ";
  v += q.text(sql_text_array(p.warnings)) + "::text[], ";
  v += q.text(in.transport_tls ? Param(*in.transport_tls ? "true" : "false") : std::nullopt) + "::boolean, ";
  v += q.text(in.peer_address.empty() ? std::nullopt : Param(in.peer_address)) + ", ";
  // Parameters whether set or not: a one-row INSERT has one text, so it can be prepared.
  const auto& r = in.received;
  v += q.text(r ? Param(str(r->receiver_id)) : std::nullopt) + "::bigint, " + q.text(r ? Param(r->envelope_from) : std::nullopt) + ", ";
  v += q.text(r ? Param(r->authentication_results) : std::nullopt) + ", " + q.text(r ? Param(r->auth_json) : std::nullopt) + "::jsonb, ";
  v += q.text(in.read ? "read" : "unread") + ")";
  q.row(v);
}

constexpr const char* kAttachmentColumns =
    "INSERT INTO attachment_parts (message_id, position, filename, content_type, content_id, inline_part, size, sha256, data, "
    "raw_offset, raw_length, raw_encoding) VALUES";

void add_attachment_row(MultiInsert& q, std::int64_t message_id, std::size_t position, const MailAttachment& a,
                        const std::optional<RawSpan>& span) {
  std::string v = "(" + q.text(str(message_id)) + "::bigint, " + q.text(std::to_string(position)) + "::integer, ";
  v += q.text(a.filename) + ", " + q.text(a.content_type) + ", " + q.text(a.content_id) + ", ";
  v += q.text(a.inline_part ? "true" : "false") + "::boolean, " + q.text(str(static_cast<std::int64_t>(a.data.size()))) + "::integer, ";
  v += q.text(a.sha256_hex) + ", ";
  if (span)
    v += "NULL, " + q.text(str(span->offset)) + "::integer, " + q.text(str(span->length)) + "::integer, " + q.text(span->encoding) + ")";
  else
    v += q.binary(a.data) + ", NULL, NULL, NULL)";
  q.row(v);
}

std::vector<IngestOutcome> ingest_batch(pqxx::dbtransaction& tx, const std::vector<IngestRef>& items) {
  std::vector<IngestOutcome> out(items.size());

  // 1. What is there already: by key, and by content for a resync.
  std::map<Key, std::int64_t> by_key;
  {
    std::map<std::pair<std::int64_t, std::string>, std::vector<std::string>> groups;  // (mailbox or 0, source) -> keys
    std::map<std::pair<std::int64_t, std::string>, std::optional<std::int64_t>> mailbox_of;
    for (const auto& it : items) {
      if (it.in->new_key) continue;
      groups[{it.in->mailbox_id.value_or(0), it.in->source}].push_back(it.in->source_key);
      mailbox_of[{it.in->mailbox_id.value_or(0), it.in->source}] = it.in->mailbox_id;
    }
    for (const auto& [group, keys] : groups)
      for (const auto& r : exec_prepared(tx, "ingest_find_by_source", kFindBySource, mailbox_of[group], group.second, sql_text_array(keys)))
        by_key[{group.first, group.second, r[0].as<std::string>()}] = r[1].as<std::int64_t>();
  }
  std::map<std::pair<std::int64_t, std::string>, std::int64_t> by_content;  // (mailbox, sha256) -> oldest id
  {
    std::map<std::int64_t, std::vector<std::string>> digests;
    for (const auto& it : items)
      if (it.in->dedupe_by_content && it.in->mailbox_id && !by_key.count(key_of(*it.in)))
        digests[*it.in->mailbox_id].push_back(it.parsed->sha256_hex);
    for (const auto& [mailbox, list] : digests)
      for (const auto& r : exec_prepared(tx, "ingest_find_by_content", kFindByContent, mailbox, sql_text_array(list)))
        by_content[{mailbox, r[0].as<std::string>()}] = r[1].as<std::int64_t>();
  }

  // 2. In order: a duplicate of a stored row, of an earlier item of this batch, or new.
  std::vector<std::int64_t> dup_of_row(items.size(), 0);
  std::vector<std::optional<std::size_t>> dup_of_item(items.size());
  std::vector<std::size_t> fresh;
  {
    std::map<Key, std::size_t> batch_keys;
    std::map<std::pair<std::int64_t, std::string>, std::size_t> batch_content;
    for (std::size_t i = 0; i < items.size(); ++i) {
      const auto& in = *items[i].in;
      const Key key = key_of(in);
      const std::pair<std::int64_t, std::string> content{in.mailbox_id.value_or(0), items[i].parsed->sha256_hex};
      if (auto f = by_key.find(key); f != by_key.end()) {
        dup_of_row[i] = f->second;
      } else if (auto b = batch_keys.find(key); b != batch_keys.end()) {
        dup_of_item[i] = b->second;
      } else if (in.dedupe_by_content && in.mailbox_id && by_content.count(content)) {
        dup_of_row[i] = by_content[content];
      } else if (in.dedupe_by_content && in.mailbox_id && batch_content.count(content)) {
        dup_of_item[i] = batch_content[content];
      } else {
        fresh.push_back(i);
        batch_keys[key] = i;
        if (in.mailbox_id) batch_content.emplace(content, i);
      }
    }
  }

  // 3. The new messages, then their attachments.
  {
    std::map<Key, std::int64_t> ids;
    MultiInsert q(kMessageColumns);
    auto flush = [&] {
      for (const auto& r : q.exec(tx, " RETURNING id, coalesce(mailbox_id, 0), source, source_key", "ingest_message_rows"))
        ids[{r[1].as<std::int64_t>(), r[2].as<std::string>(), r[3].as<std::string>()}] = r[0].as<std::int64_t>();
    };
    for (auto i : fresh) {
      add_message_row(q, *items[i].in, *items[i].parsed);
      if (q.full()) flush();
    }
    if (q.rows()) flush();
    for (auto i : fresh) out[i].message_id = ids.at(key_of(*items[i].in));
  }
  {
    MultiInsert q(kAttachmentColumns);
    for (auto i : fresh) {
      const auto& attachments = items[i].parsed->attachments;
      const auto* spans = items[i].spans;
      for (std::size_t k = 0; k < attachments.size(); ++k) {
        const bool has_span = spans && k < spans->size() && (*spans)[k];
        add_attachment_row(q, out[i].message_id, k, attachments[k], has_span ? (*spans)[k] : std::nullopt);
        if (q.full()) q.exec(tx);
      }
    }
    if (q.rows()) q.exec(tx);
  }

  // 4. Addresses (all of them, for later linking) and links (under the policy).
  {
    std::vector<std::int64_t> message_ids;
    std::vector<std::string> keys, wanted;
    std::vector<std::vector<std::string>> linkable(items.size());
    for (auto i : fresh) {
      for (const auto& a : items[i].parsed->linkable_addresses())
        if (auto n = normalize_email(a); std::holds_alternative<std::string>(n)) {
          message_ids.push_back(out[i].message_id);
          keys.push_back(email_match_key(std::get<std::string>(n)));
        }
      linkable[i] = linkable_addresses(items[i].parsed->linkable_addresses(), *items[i].policy);
      wanted.insert(wanted.end(), linkable[i].begin(), linkable[i].end());
    }
    std::map<std::string, std::set<std::int64_t>> by_address;
    pqxx::result contacts;
    if (!keys.empty() && !wanted.empty())
      contacts = exec_prepared(tx, "ingest_insert_addresses_find_contacts", kInsertAddressesFindContacts, sql_id_array(message_ids),
                               sql_text_array(keys), sql_text_array(wanted));
    else if (!keys.empty())
      exec_prepared(tx, "ingest_insert_addresses", kInsertAddresses, sql_id_array(message_ids), sql_text_array(keys));
    else if (!wanted.empty())
      contacts = exec_prepared(tx, "ingest_contacts_by_address", kContactsByAddress, sql_text_array(wanted));
    for (const auto& r : contacts) by_address[r[0].as<std::string>()].insert(r[1].as<std::int64_t>());
    std::vector<std::int64_t> link_messages, link_contacts_;
    for (auto i : fresh) {
      if (linkable[i].empty()) continue;
      out[i].contacts = link_contacts(items[i].parsed->linkable_addresses(), *items[i].policy, by_address);
      for (auto contact : out[i].contacts) {
        link_messages.push_back(out[i].message_id);
        link_contacts_.push_back(contact);
      }
    }
    if (!link_messages.empty()) exec_prepared(tx, "ingest_insert_links", kInsertLinks, sql_id_array(link_messages), sql_id_array(link_contacts_));
  }

  // 5. Duplicates: the stored row and its links.
  std::vector<std::int64_t> stored;
  for (std::size_t i = 0; i < items.size(); ++i)
    if (dup_of_row[i]) stored.push_back(dup_of_row[i]);
  std::map<std::int64_t, std::set<std::int64_t>> links;
  if (!stored.empty())
    for (const auto& r : exec_prepared(tx, "ingest_links_of", kLinksOf, sql_id_array(stored))) links[r[0].as<std::int64_t>()].insert(r[1].as<std::int64_t>());
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (dup_of_row[i]) {
      out[i] = IngestOutcome{dup_of_row[i], true, links[dup_of_row[i]]};
    } else if (dup_of_item[i]) {
      out[i] = out[*dup_of_item[i]];
      out[i].duplicate = true;
    }
  }
  return out;
}

}  // namespace

LinkPolicy load_link_policy(pqxx::dbtransaction& tx, std::int64_t mailbox_id) {
  // One prepared statement: it runs for every batch of every source (each outbox chunk too).
  static constexpr const char* kLoad =
      "SELECT 'own', address FROM mailboxes WHERE id = $1 UNION ALL SELECT kind, value FROM mailbox_exclusions WHERE mailbox_id = $1";
  LinkPolicy p;
  for (const auto& r : exec_prepared(tx, "load_link_policy", kLoad, mailbox_id)) {
    const std::string kind = r[0].as<std::string>();
    if (kind == "own")
      p.own_address = r[1].as<std::string>();
    else
      (kind == "domain" ? p.excluded_domains : p.excluded_addresses).insert(r[1].as<std::string>());
  }
  return p;
}

IngestOutcome ingest_message(pqxx::dbtransaction& tx, const InboundMessage& in, const ParsedMessage& parsed,
                             const LinkPolicy& policy) {
  return ingest_batch(tx, {IngestRef{&in, &parsed, nullptr, &policy}}).front();
}

std::vector<IngestOutcome> ingest_messages(pqxx::dbtransaction& tx, const std::vector<IngestItem>& items, const LinkPolicy& policy) {
  if (items.empty()) return {};
  std::vector<IngestRef> refs;
  refs.reserve(items.size());
  for (const auto& it : items) refs.push_back({&it.in, &it.parsed, &it.attachment_spans, &policy});
  return ingest_batch(tx, refs);
}

std::vector<IngestOutcome> ingest_messages(pqxx::dbtransaction& tx, const std::vector<IngestRef>& items) {
  if (items.empty()) return {};
  return ingest_batch(tx, items);
}

}  // namespace mailgate
