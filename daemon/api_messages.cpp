// /api/v1/messages: the mail every source stored (store/ingest.hpp), as CRM staff handle it.
//
// - Who sees what: admins and API keys with the read scope see every message; other users see
//   the messages of the mailboxes linked to them (PUT /mailboxes/{id}/users), the messages a
//   trusted receiver took for an administration they are a member of (PUT
//   /administrations/{id}/members), and messages with neither. A message one may not see is a 404.
// - Lists are newest first (by id) with the usual limit/cursor paging; filters: mailbox_id,
//   contact_id, receiver_id, unlinked, folder (default: every folder but "removed"), status, q (subject or
//   sender), since/until (received time, ISO 8601). Also /mailboxes/{id}/messages,
//   /contacts/{id}/messages and /receivers/{id}/messages. A received message also shows its
//   sender-authentication verdicts (auth, authentication_results) and envelope sender.
// - Handling (as in Econobis): folder inbox | concept | sent | removed, status unread | read |
//   in_progress | urgent | closed, a responsible user or team. An incoming message lives in
//   inbox or removed; concept and sent hold mail written here. Removing is a soft delete:
//   DELETE (or PATCH folder "removed") stamps removed_at; the daemon purges it for good after
//   [messages] retention_days (store/messages.hpp). PATCH folder back restores it.
// - Contacts: linked automatically at ingest and when a contact gains an address; by hand with
//   POST /messages/{id}/contacts and DELETE /messages/{id}/contacts/{contact_id}.
// - Downloads: /raw is the message byte-exact (message/rfc822); /attachments/{id} the decoded
//   part, always as a download (Content-Disposition: attachment, nosniff, sandboxed), so an HTML
//   or SVG attachment never runs in the admin UI's origin.
// Every change is audited in its own transaction.
#include <array>
#include <cctype>
#include <limits>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "daemon/api.hpp"
#include "rules/address.hpp"
#include "store/groups.hpp"
#include "store/run.hpp"

namespace mailgate {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {

const std::set<std::string> kFolders = {"inbox", "concept", "sent", "removed"};
const std::set<std::string> kStatuses = {"unread", "read", "in_progress", "urgent", "closed"};

// Columns of a list item; the full message adds kDetailColumns.
const std::string kSummaryColumns =
    "m.id, m.mailbox_id, m.source, m.folder, m.status, m.subject, m.from_name, m.from_address, " + sql_iso_time("m.sent_at") + ", " +
    sql_iso_time("m.received_at") + ", m.raw_size, m.responsible_user_id, m.responsible_team, m.parse_warnings, " + sql_iso_time("m.removed_at") +
    ", (SELECT count(*) FROM attachments a WHERE a.message_id = m.id AND NOT a.inline_part), "
    "coalesce((SELECT array_agg(contact_id ORDER BY contact_id) FROM message_contacts l WHERE l.message_id = m.id), '{}')";
const std::string kDetailColumns =
    ", m.header_message_id, m.raw_sha256, m.addresses::text, m.text_body, m.html_body, m.transport_tls, m.peer_address, "
    "m.receiver_id, m.envelope_from, m.authentication_results, m.auth::text";

json::object summary_json(const pqxx::row& r) {
  return json::object{{"id", r[0].as<std::int64_t>()},
                      {"mailbox_id", json_nullable_id(r[1])},
                      {"source", r[2].c_str()},
                      {"folder", r[3].c_str()},
                      {"status", r[4].c_str()},
                      {"subject", r[5].c_str()},
                      {"from", json::object{{"name", r[6].c_str()}, {"address", r[7].c_str()}}},
                      {"sent_at", json_nullable_text(r[8])},
                      {"received_at", r[9].c_str()},
                      {"size", r[10].as<std::int64_t>()},
                      {"responsible_user_id", json_nullable_id(r[11])},
                      {"responsible_team", json_nullable_text(r[12])},
                      {"warnings", json_text_array(r[13])},
                      {"removed_at", json_nullable_text(r[14])},
                      {"attachment_count", r[15].as<std::int64_t>()},
                      {"contacts", json_id_array(r[16])}};
}

// The SQL condition that limits `messages m` to what the principal may see.
std::string visible_sql(const Principal& p, SqlBuilder& sql) {
  if (p.is_admin() || p.kind == "api_key") return "true";
  const std::string user = sql.param(std::to_string(p.id)) + "::bigint";
  return "((m.mailbox_id IS NULL AND m.receiver_id IS NULL) "
         "OR EXISTS (SELECT 1 FROM mailbox_users mu WHERE mu.mailbox_id = m.mailbox_id AND mu.user_id = " + user + ") "
         "OR EXISTS (SELECT 1 FROM receivers r JOIN administration_members am ON am.administration_id = r.administration_id "
         "WHERE r.id = m.receiver_id AND am.user_id = " + user + "))";
}

// Locks and returns the message row's handling state, or 404 when it does not exist or is not
// visible to `p`.
json::object lock_state(pqxx::work& tx, std::int64_t id, const Principal& p) {
  SqlBuilder sql;
  const std::string visible = visible_sql(p, sql);
  auto r = sql_exec(tx,
                      "SELECT m.folder, m.status, m.responsible_user_id, m.responsible_team, m.source FROM messages m WHERE m.id = " +
                          sql.param(std::to_string(id)) + "::bigint AND " + visible + " FOR UPDATE",
                      sql);
  if (r.empty()) throw ApiError(404, "not_found", "no message with id " + std::to_string(id));
  return json::object{{"folder", r[0][0].c_str()},
                      {"status", r[0][1].c_str()},
                      {"responsible_user_id", json_nullable_id(r[0][2])},
                      {"responsible_team", json_nullable_text(r[0][3])},
                      {"source", r[0][4].c_str()}};
}

json::object load_message(pqxx::work& tx, std::int64_t id, const Principal& p) {
  SqlBuilder sql;
  const std::string visible = visible_sql(p, sql);
  auto r = sql_exec(tx, "SELECT " + kSummaryColumns + kDetailColumns + " FROM messages m WHERE m.id = " +
                              sql.param(std::to_string(id)) + "::bigint AND " + visible,
                      sql);
  if (r.empty()) throw ApiError(404, "not_found", "no message with id " + std::to_string(id));
  const auto& row = r[0];
  json::object m = summary_json(row);
  m["message_id"] = row[17].c_str();
  m["sha256"] = row[18].c_str();
  m["addresses"] = json::parse(row[19].c_str());
  m["text_body"] = row[20].c_str();
  m["html_body"] = row[21].c_str();
  m["transport_tls"] = row[22].is_null() ? json::value(nullptr) : json::value(row[22].as<bool>());
  m["peer_address"] = json_nullable_text(row[23]);
  m["receiver_id"] = json_nullable_id(row[24]);
  m["envelope_from"] = json_nullable_text(row[25]);
  m["authentication_results"] = json_nullable_text(row[26]);
  m["auth"] = row[27].is_null() ? json::value(nullptr) : json::parse(row[27].c_str());
  json::array attachments;
  for (const auto& a : tx.exec_params(
           "SELECT id, filename, content_type, content_id, inline_part, size, sha256 FROM attachments WHERE message_id = $1 ORDER BY position",
           id))
    attachments.emplace_back(json::object{{"id", a[0].as<std::int64_t>()},
                                          {"filename", a[1].c_str()},
                                          {"content_type", a[2].c_str()},
                                          {"content_id", a[3].c_str()},
                                          {"inline", a[4].as<bool>()},
                                          {"size", a[5].as<std::int64_t>()},
                                          {"sha256", a[6].c_str()}});
  m["attachments"] = std::move(attachments);
  json::array links;
  for (const auto& l : tx.exec_params(
           "SELECT l.contact_id, l.linked_by, " + sql_iso_time("l.linked_at") +
               ", CASE WHEN c.type = 'organisation' THEN c.organisation_name "
               "ELSE concat_ws(' ', nullif(c.first_name, ''), nullif(c.infix, ''), nullif(c.last_name, '')) END "
               "FROM message_contacts l JOIN contacts c ON c.id = l.contact_id WHERE l.message_id = $1 ORDER BY l.contact_id",
           id))
    links.emplace_back(json::object{{"contact_id", l[0].as<std::int64_t>()},
                                    {"linked_by", l[1].c_str()},
                                    {"linked_at", l[2].c_str()},
                                    {"name", l[3].c_str()}});
  m["links"] = std::move(links);
  return m;
}

// The filters of a message list, read from the query string.
struct ListFilter {
  std::int64_t mailbox_id = 0, contact_id = 0, receiver_id = 0;
  std::string unlinked, folder, status, q, since, until;
};

ListFilter read_filter(const HttpRequest& req) {
  ListFilter f;
  f.mailbox_id = query_id(req, "mailbox_id");
  f.contact_id = query_id(req, "contact_id");
  f.receiver_id = query_id(req, "receiver_id");
  f.unlinked = query_bool(req, "unlinked");
  f.folder = query_param(req, "folder");
  if (!f.folder.empty() && !kFolders.count(f.folder)) invalid("folder", "folder must be one of inbox, concept, sent, removed");
  f.status = query_param(req, "status");
  if (!f.status.empty() && !kStatuses.count(f.status))
    invalid("status", "status must be one of unread, read, in_progress, urgent, closed");
  f.q = query_param(req, "q");
  f.since = query_param(req, "since");
  f.until = query_param(req, "until");
  return f;
}

json::array list_messages(pqxx::work& tx, const ListFilter& f, const Page& page, const Principal& p) {
  SqlBuilder sql;
  std::vector<std::string> where{visible_sql(p, sql)};
  if (page.after_id) where.push_back("m.id < " + sql.param(std::to_string(page.after_id)) + "::bigint");
  if (f.mailbox_id) where.push_back("m.mailbox_id = " + sql.param(std::to_string(f.mailbox_id)) + "::bigint");
  if (f.receiver_id) where.push_back("m.receiver_id = " + sql.param(std::to_string(f.receiver_id)) + "::bigint");
  if (f.contact_id)
    where.push_back("EXISTS (SELECT 1 FROM message_contacts l WHERE l.message_id = m.id AND l.contact_id = " +
                    sql.param(std::to_string(f.contact_id)) + "::bigint)");
  if (!f.unlinked.empty())
    where.push_back(std::string(f.unlinked == "true" ? "NOT " : "") + "EXISTS (SELECT 1 FROM message_contacts l WHERE l.message_id = m.id)");
  where.push_back(f.folder.empty() ? "m.folder <> 'removed'" : "m.folder = " + sql.param(f.folder));
  if (!f.status.empty()) where.push_back("m.status = " + sql.param(f.status));
  if (!f.q.empty()) {
    const std::string pattern = sql.param("%" + escape_like(f.q) + "%");
    where.push_back("m.subject ILIKE " + pattern + " OR m.from_address ILIKE " + pattern + " OR m.from_name ILIKE " + pattern);
  }
  if (!f.since.empty()) where.push_back("m.received_at >= " + sql.param(f.since) + "::timestamptz");
  if (!f.until.empty()) where.push_back("m.received_at < " + sql.param(f.until) + "::timestamptz");
  std::string condition;
  for (const auto& w : where) condition += (condition.empty() ? "(" : " AND (") + w + ")";
  const std::string query = "SELECT " + kSummaryColumns + " FROM messages m WHERE " + condition + " ORDER BY m.id DESC LIMIT " +
                            sql.param(std::to_string(page.limit + 1)) + "::bigint";
  pqxx::result r;
  try {
    r = sql_exec(tx, query, sql);
  } catch (const pqxx::data_exception&) {
    throw ApiError(422, "invalid", "since and until must be ISO 8601 times (2026-11-24T10:00:00Z)", f.since.empty() ? "until" : "since");
  }
  json::array items;
  for (const auto& row : r) items.emplace_back(summary_json(row));
  return items;
}

HttpResponse page_of_messages(json::array items, const Page& page) {
  return page_response(std::move(items), page, [](const json::value& v) { return v.at("id").as_int64(); });
}

// A filename for Content-Disposition: an ASCII fallback and the UTF-8 original (RFC 6266, 8187).
std::string disposition(const std::string& filename) {
  std::string ascii, encoded;
  for (unsigned char c : filename) {
    ascii.push_back(c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '/' ? static_cast<char>(c) : '_');
    if (std::isalnum(c) || std::string_view("!#$&+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos)
      encoded.push_back(static_cast<char>(c));
    else {
      static const char* hex = "0123456789ABCDEF";
      encoded += {'%', hex[c >> 4], hex[c & 15]};
    }
  }
  if (ascii.empty()) ascii = encoded = "attachment";
  return "attachment; filename=\"" + ascii + "\"; filename*=UTF-8''" + encoded;
}

// The stored content type if it is a plain type/subtype, else application/octet-stream.
std::string safe_content_type(const std::string& stored) {
  const auto slash = stored.find('/');
  const bool ok = !stored.empty() && stored.size() < 128 && slash != std::string::npos && slash > 0 && slash + 1 < stored.size() &&
                  stored.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789!#$&^_.+-/") == std::string::npos &&
                  stored.find('/', slash + 1) == std::string::npos;
  return ok ? stored : "application/octet-stream";
}

HttpResponse download(std::string content_type, std::string body, const std::string& filename) {
  HttpResponse r{200, std::move(content_type), std::move(body), {}};
  r.headers.emplace_back("Content-Disposition", disposition(filename));
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Content-Security-Policy", "sandbox; default-src 'none'");
  r.headers.emplace_back("Cache-Control", "private, no-store");
  return r;
}

}  // namespace

void register_message_routes(Api& api) {
  Services& s = api.services();

  api.add("GET", "/api/v1/messages", kRead, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const Page page = page_of(req);
    const ListFilter f = read_filter(req);
    auto op = store_transact(s.store, [f, page, p](pqxx::work& tx) { return list_messages(tx, f, page, p); });
    co_return page_of_messages(co_await std::move(op), page);
  });

  for (const std::string owner : {"mailboxes", "contacts", "receivers"}) {
    api.add("GET", "/api/v1/" + owner + "/{id}/messages", kRead, [&s, owner](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
      const auto id = path_id(req);
      const Page page = page_of(req);
      ListFilter f = read_filter(req);
      (owner == "mailboxes" ? f.mailbox_id : owner == "contacts" ? f.contact_id : f.receiver_id) = id;
      auto op = store_transact(s.store, [f, page, p, owner, id](pqxx::work& tx) {
        if (tx.exec_params("SELECT 1 FROM " + owner + " WHERE id = $1", id).empty())
          throw ApiError(404, "not_found", "no " + owner.substr(0, owner.size() - 1) + " with id " + std::to_string(id));
        return list_messages(tx, f, page, p);
      });
      co_return page_of_messages(co_await std::move(op), page);
    });
  }

  api.add("GET", "/api/v1/messages/{id}", kRead, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto op = store_transact(s.store, [id, p](pqxx::work& tx) { return load_message(tx, id, p); });
    co_return json_response(200, co_await std::move(op));
  });

  api.add("GET", "/api/v1/messages/{id}/raw", kRead, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto op = store_transact(s.store, [id, p](pqxx::work& tx) {
      SqlBuilder sql;
      const std::string visible = visible_sql(p, sql);
      auto r = sql_exec(tx, "SELECT m.raw FROM messages m WHERE m.id = " + sql.param(std::to_string(id)) + "::bigint AND " + visible, sql);
      if (r.empty()) throw ApiError(404, "not_found", "no message with id " + std::to_string(id));
      return pqxx::binarystring(r[0][0]).str();
    });
    auto raw = co_await std::move(op);
    co_return download("message/rfc822", std::move(raw), "message-" + std::to_string(id) + ".eml");
  });

  api.add("GET", "/api/v1/messages/{id}/attachments/{attachment_id}", kRead,
          [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
            const auto id = path_id(req);
            const auto attachment = path_id(req, "attachment_id");
            auto op = store_transact(s.store, [id, attachment, p](pqxx::work& tx) {
              SqlBuilder sql;
              const std::string visible = visible_sql(p, sql);
              auto r = sql_exec(tx,
                                  "SELECT a.content_type, a.filename, a.data FROM attachments a JOIN messages m ON m.id = a.message_id "
                                  "WHERE a.id = " + sql.param(std::to_string(attachment)) + "::bigint AND a.message_id = " +
                                      sql.param(std::to_string(id)) + "::bigint AND " + visible,
                                  sql);
              if (r.empty()) throw ApiError(404, "not_found", "no attachment " + std::to_string(attachment) + " in message " + std::to_string(id));
              return std::array<std::string, 3>{r[0][0].c_str(), r[0][1].c_str(), pqxx::binarystring(r[0][2]).str()};
            });
            auto a = co_await std::move(op);
            co_return download(safe_content_type(a[0]), std::move(a[2]), a[1]);
          });

  api.add("PATCH", "/api/v1/messages/{id}", kCrmWrite, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    JsonInput in(req.body);
    in.only({"folder", "status", "responsible_user_id", "responsible_team"});
    const auto folder = in.text("folder");
    if (folder && !kFolders.count(*folder)) invalid("folder", "folder must be one of inbox, concept, sent, removed");
    const auto status = in.text("status");
    if (status && !kStatuses.count(*status)) invalid("status", "status must be one of unread, read, in_progress, urgent, closed");
    const bool set_user = in.has("responsible_user_id");
    const auto user = in.integer("responsible_user_id", 1, std::numeric_limits<std::int64_t>::max());
    const bool set_team = in.has("responsible_team");
    auto team = in.text("responsible_team", false, 100);
    if (team && team->empty()) team.reset();
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      auto before = lock_state(tx, id, p);
      const std::string source(before.at("source").as_string());
      before.erase("source");
      if (folder) {
        const bool incoming = source != "sent";
        if (incoming && *folder != "inbox" && *folder != "removed")
          invalid("folder", "a received message is in inbox or removed; concept and sent hold mail written here");
        if (!incoming && *folder == "inbox") invalid("folder", "a message written here is in concept, sent or removed");
      }
      if (user && tx.exec_params("SELECT 1 FROM users WHERE id = $1 AND active", *user).empty())
        invalid("responsible_user_id", "no active user with id " + std::to_string(*user));
      tx.exec_params(
          "UPDATE messages SET folder = coalesce($2, folder), status = coalesce($3, status), "
          "responsible_user_id = CASE WHEN $4 THEN $5 ELSE responsible_user_id END, "
          "responsible_team = CASE WHEN $6 THEN $7 ELSE responsible_team END, "
          "removed_at = CASE WHEN coalesce($2, folder) = 'removed' THEN coalesce(removed_at, now()) END WHERE id = $1",
          id, folder, status, set_user, user, set_team, team);
      auto after = lock_state(tx, id, p);
      after.erase("source");
      auto changes = diff_objects(before, after);
      if (!changes.empty()) {
        const std::string action = before.at("folder") != after.at("folder")
                                       ? (after.at("folder") == "removed" ? "remove" : before.at("folder") == "removed" ? "restore" : "update")
                                       : "update";
        audit_write(tx, p.actor(), "message", std::to_string(id), action, changes);
      }
      return load_message(tx, id, p);
    });
    co_return json_response(200, co_await std::move(op));
  });

  api.add("DELETE", "/api/v1/messages/{id}", kCrmWrite, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto op = store_transact(s.store, [id, p](pqxx::work& tx) {
      auto before = lock_state(tx, id, p);
      if (before.at("folder") == "removed") return;
      tx.exec_params("UPDATE messages SET folder = 'removed', removed_at = now() WHERE id = $1", id);
      audit_write(tx, p.actor(), "message", std::to_string(id), "remove",
                  {{"folder", std::string(before.at("folder").as_string()), "removed"}});
    });
    co_await std::move(op);
    co_return HttpResponse{204, "application/json", "", {}};
  });

  api.add("POST", "/api/v1/messages/{id}/contacts", kCrmWrite, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    JsonInput in(req.body);
    in.only({"contact_id"});
    const auto contact = in.integer("contact_id", 1, std::numeric_limits<std::int64_t>::max(), true).value();
    auto op = store_transact(s.store, [id, contact, p](pqxx::work& tx) {
      lock_state(tx, id, p);
      if (tx.exec_params("SELECT 1 FROM contacts WHERE id = $1", contact).empty())
        invalid("contact_id", "no contact with id " + std::to_string(contact));
      auto inserted = tx.exec_params(
          "INSERT INTO message_contacts (message_id, contact_id, linked_by) VALUES ($1, $2, 'user') ON CONFLICT DO NOTHING RETURNING 1", id,
          contact);
      if (!inserted.empty())
        audit_write(tx, p.actor(), "message", std::to_string(id), "link", {{"contact_id", std::nullopt, std::to_string(contact)}});
      return load_message(tx, id, p);
    });
    co_return json_response(200, co_await std::move(op));
  });

  api.add("DELETE", "/api/v1/messages/{id}/contacts/{contact_id}", kCrmWrite,
          [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
            const auto id = path_id(req);
            const auto contact = path_id(req, "contact_id");
            auto op = store_transact(s.store, [id, contact, p](pqxx::work& tx) {
              lock_state(tx, id, p);
              auto removed = tx.exec_params("DELETE FROM message_contacts WHERE message_id = $1 AND contact_id = $2 RETURNING linked_by", id, contact);
              if (removed.empty()) throw ApiError(404, "not_found", "message " + std::to_string(id) + " is not linked to contact " + std::to_string(contact));
              audit_write(tx, p.actor(), "message", std::to_string(id), "unlink",
                          {{"contact_id", std::to_string(contact), std::nullopt}, {"linked_by", removed[0][0].c_str(), std::nullopt}});
              return load_message(tx, id, p);
            });
            co_return json_response(200, co_await std::move(op));
          });
}

}  // namespace mailgate
