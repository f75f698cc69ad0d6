// /api/v1/receivers: trusted receivers (issue 6; seed "Vertrouwde e-mailafzender"), and the
// members of an administration (its verified users, who are notified of received mail).
//
// Contract:
// - Reads need `read`; writes `admin`. Nothing is deleted: a receiver is deactivated.
// - The address is generated at creation, <slug of the administration>-<12 random base32
//   characters (60 bits)>@<[smtp_receiver] receive_domain>, and never changes; without a receive
//   domain in the config a receiver cannot be made (409 no_receive_domain).
// - Status: draft -> active -> inactive -> active ...; never back to draft. Each time a receiver
//   becomes active an invitation mail with its address is queued for the supplier contact, in
//   the same transaction.
// - Whitelist entries: {"kind": "domain", "value": "leverancier.nl"} (a leading "@" is trimmed,
//   IDN converted), {"kind": "address", "value": "facturen@leverancier.nl"}, {"kind":
//   "verified_users"}. A PATCH with "whitelist" replaces the list. Duplicates are kept once.
// - accepted_types: lower-case MIME types an accepted message must carry as an attachment
//   (default PDF and XML; [] accepts any message).
// - Every change is audited (entity receiver, administration) with the field-by-field diff.
#include <algorithm>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "daemon/api.hpp"
#include "rules/address.hpp"
#include "rules/receiver_policy.hpp"
#include "store/receivers.hpp"
#include "store/run.hpp"
#include "store/sql.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {

const std::set<std::string> kDocumentTypes = {"purchase_invoice", "sales_invoice", "receipt", "other"};
const std::set<std::string> kStatuses = {"draft", "active", "inactive"};

const std::string kColumns = "r.id, r.administration_id, r.address, r.status, r.document_type, r.supplier_name, r.contact_email, "
                             "r.notify_members, r.require_tls, r.allow_unauthenticated, r.accepted_types, r.max_message_bytes, " +
                             sql_iso_time("r.activated_at") + ", " + sql_iso_time("r.created_at") + ", " + sql_iso_time("r.updated_at");

json::object receiver_json(pqxx::work& tx, const pqxx::row& r) {
  json::array whitelist;
  for (const auto& w : tx.exec_params("SELECT kind, value FROM receiver_whitelist WHERE receiver_id = $1 ORDER BY id", r[0].as<std::int64_t>())) {
    json::object e{{"kind", w[0].c_str()}};
    if (w[0].as<std::string>() != "verified_users") e["value"] = w[1].c_str();
    whitelist.emplace_back(std::move(e));
  }
  return {{"id", r[0].as<std::int64_t>()},
          {"administration_id", r[1].as<std::int64_t>()},
          {"address", r[2].c_str()},
          {"status", r[3].c_str()},
          {"document_type", r[4].c_str()},
          {"supplier_name", r[5].c_str()},
          {"contact_email", r[6].c_str()},
          {"notify_members", r[7].as<bool>()},
          {"require_tls", r[8].as<bool>()},
          {"allow_unauthenticated", r[9].as<bool>()},
          {"accepted_types", json_text_array(r[10])},
          {"max_message_bytes", r[11].is_null() ? json::value(nullptr) : json::value(r[11].as<std::int64_t>())},
          {"activated_at", json_nullable_text(r[12])},
          {"created_at", r[13].c_str()},
          {"updated_at", r[14].c_str()},
          {"whitelist", std::move(whitelist)}};
}

json::object load_receiver(pqxx::work& tx, std::int64_t id) {
  auto r = tx.exec_params("SELECT " + kColumns + " FROM receivers r WHERE r.id = $1", id);
  if (r.empty()) throw ApiError(404, "not_found", "no receiver with id " + std::to_string(id));
  return receiver_json(tx, r[0]);
}

struct ReceiverInput {
  std::optional<std::int64_t> administration_id;
  std::optional<std::string> document_type, status, supplier_name, contact_email;
  std::optional<bool> notify_members, require_tls, allow_unauthenticated;
  std::optional<std::vector<std::string>> accepted_types;
  std::optional<std::optional<std::int64_t>> max_message_bytes;
  std::optional<std::vector<WhitelistEntry>> whitelist;
};

std::vector<WhitelistEntry> read_whitelist(const JsonInput& in) {
  const json::value* v = in.raw("whitelist");
  if (!v->is_array()) invalid("whitelist", "whitelist must be an array of {kind, value}");
  if (v->as_array().size() > 200) invalid("whitelist", "whitelist has more than 200 entries");
  std::vector<WhitelistEntry> out;
  std::size_t i = 0;
  for (const auto& item : v->as_array()) {
    const std::string at = "whitelist[" + std::to_string(i++) + "]";
    if (!item.is_object()) invalid(at, at + " must be an object {kind, value}");
    const auto& o = item.as_object();
    for (const auto& [k, unused] : o)
      if (k != "kind" && k != "value") invalid(at + "." + std::string(k), "unknown field " + std::string(k), "unknown_field");
    const auto* kind = o.if_contains("kind");
    if (!kind || !kind->is_string()) invalid(at + ".kind", at + ".kind must be domain, address or verified_users", "required");
    const std::string k(kind->as_string());
    const auto* value = o.if_contains("value");
    std::string text;
    if (value && !value->is_null()) {
      if (!value->is_string()) invalid(at + ".value", at + ".value must be a string");
      text = trim(std::string(value->as_string()));
      if (has_line_break(text) || text.size() > 254) invalid(at + ".value", at + ".value is not a domain or an address");
    }
    WhitelistEntry e{k, ""};
    if (k == "domain") {
      auto d = normalize_domain(text);
      if (auto* err = std::get_if<AddressError>(&d)) invalid(at + ".value", at + ".value: " + err->reason);
      e.value = std::get<std::string>(d);
    } else if (k == "address") {
      auto a = normalize_email(text);
      if (auto* err = std::get_if<AddressError>(&a)) invalid(at + ".value", at + ".value: " + err->reason);
      e.value = email_match_key(std::get<std::string>(a));
    } else if (k == "verified_users") {
      if (!text.empty()) invalid(at + ".value", at + ".value must be empty for verified_users");
    } else {
      invalid(at + ".kind", at + ".kind must be domain, address or verified_users");
    }
    const bool seen = std::any_of(out.begin(), out.end(), [&](const WhitelistEntry& x) { return x.kind == e.kind && x.value == e.value; });
    if (!seen) out.push_back(std::move(e));
  }
  return out;
}

std::vector<std::string> read_types(const JsonInput& in) {
  auto list = in.text_list("accepted_types", 20).value_or(std::vector<std::string>{});
  std::vector<std::string> out;
  for (auto t : list) {
    std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    const auto slash = t.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == t.size() || t.find('/', slash + 1) != std::string::npos ||
        t.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789!#$&^_.+-/") != std::string::npos)
      invalid("accepted_types", "accepted_types: '" + t + "' is not a MIME type like application/pdf");
    if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
  }
  return out;
}

ReceiverInput read_receiver_input(const JsonInput& in, bool creating) {
  in.only({"administration_id", "document_type", "status", "supplier_name", "contact_email", "notify_members", "require_tls",
           "allow_unauthenticated", "accepted_types", "max_message_bytes", "whitelist"});
  ReceiverInput r;
  if (creating) {
    r.administration_id = in.integer("administration_id", 1, INT64_MAX, true);
  } else if (in.has("administration_id")) {
    invalid("administration_id", "a receiver stays with its administration; make a new receiver instead", "immutable");
  }
  r.document_type = in.text("document_type", creating, 40);
  if (r.document_type && !kDocumentTypes.count(*r.document_type))
    invalid("document_type", "document_type must be one of purchase_invoice, sales_invoice, receipt, other");
  r.status = in.text("status", false, 20);
  if (r.status && !kStatuses.count(*r.status)) invalid("status", "status must be one of draft, active, inactive");
  r.supplier_name = in.text("supplier_name", false, 200);
  r.contact_email = in.email("contact_email", creating);
  r.notify_members = in.boolean("notify_members");
  r.require_tls = in.boolean("require_tls");
  r.allow_unauthenticated = in.boolean("allow_unauthenticated");
  if (in.has("accepted_types")) r.accepted_types = read_types(in);
  if (in.has("max_message_bytes"))
    r.max_message_bytes = in.raw("max_message_bytes")->is_null() ? std::optional<std::int64_t>()
                                                                 : in.integer("max_message_bytes", 1024, std::int64_t{1} << 31);
  if (in.has("whitelist")) r.whitelist = read_whitelist(in);
  return r;
}

void replace_whitelist(pqxx::work& tx, std::int64_t id, const std::vector<WhitelistEntry>& list) {
  tx.exec_params("DELETE FROM receiver_whitelist WHERE receiver_id = $1", id);
  for (const auto& e : list)
    tx.exec_params("INSERT INTO receiver_whitelist (receiver_id, kind, value) VALUES ($1, $2, $3)", id, e.kind, e.value);
}

std::string whitelist_text(const json::object& r) { return json::serialize(r.at("whitelist")); }

// The audit diff of two receiver states; the whitelist as one field.
std::vector<FieldChange> receiver_changes(const json::object& before, const json::object& after) {
  json::object b = before, a = after;
  for (auto* o : {&b, &a}) {
    if (o->contains("whitelist")) (*o)["whitelist"] = whitelist_text(*o);
    o->erase("updated_at");
    o->erase("activated_at");
  }
  return diff_objects(b, a);
}

void check_administration(pqxx::work& tx, std::int64_t id) {
  auto a = tx.exec_params("SELECT active FROM administrations WHERE id = $1", id);
  if (a.empty()) invalid("administration_id", "no administration with id " + std::to_string(id));
  if (!a[0][0].as<bool>()) invalid("administration_id", "administration " + std::to_string(id) + " is deactivated");
}

// Writes the row; returns whether it became active (the invitation is then queued).
bool write_receiver(pqxx::work& tx, std::int64_t id, const json::object& before, const ReceiverInput& in) {
  const std::string status_before(before.at("status").as_string());
  const std::string status = in.status.value_or(status_before);
  if (status == "draft" && status_before != "draft") invalid("status", "a receiver cannot go back to draft", "invalid_transition");
  const bool activated = status == "active" && status_before != "active";
  tx.exec_params(
      "UPDATE receivers SET document_type = coalesce($2, document_type), status = $3, supplier_name = coalesce($4, supplier_name), "
      "contact_email = coalesce($5, contact_email), notify_members = coalesce($6, notify_members), "
      "require_tls = coalesce($7, require_tls), allow_unauthenticated = coalesce($8, allow_unauthenticated), "
      "accepted_types = coalesce($9::text[], accepted_types), "
      "max_message_bytes = CASE WHEN $10 THEN $11 ELSE max_message_bytes END, "
      "activated_at = CASE WHEN $12 THEN now() ELSE activated_at END, updated_at = now() WHERE id = $1",
      id, in.document_type, status, in.supplier_name, in.contact_email, in.notify_members, in.require_tls, in.allow_unauthenticated,
      in.accepted_types ? std::optional<std::string>(sql_text_array(*in.accepted_types)) : std::nullopt, in.max_message_bytes.has_value(),
      in.max_message_bytes.value_or(std::nullopt), activated);
  if (in.whitelist) replace_whitelist(tx, id, *in.whitelist);
  if (activated) {
    if (tx.exec_params("SELECT 1 FROM receiver_whitelist WHERE receiver_id = $1", id).empty())
      invalid("whitelist", "an active receiver needs at least one whitelist entry", "required");
    receiver_queue_invitation(tx, *receiver_load(tx, id));
  }
  return activated;
}

std::string new_address(const std::string& administration_name, const std::string& domain) {
  // 12 base32 characters: 60 random bits, lower-case (addresses are stored lower-case).
  std::string random = base32_encode(random_bytes(8)).substr(0, 12);
  std::transform(random.begin(), random.end(), random.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return receiver_local_part(administration_name, random) + "@" + domain;
}

json::array members_json(pqxx::work& tx, std::int64_t administration_id) {
  json::array a;
  for (const auto& r : tx.exec_params("SELECT u.id, u.email, u.active FROM administration_members m JOIN users u ON u.id = m.user_id "
                                      "WHERE m.administration_id = $1 ORDER BY u.id",
                                      administration_id))
    a.emplace_back(json::object{{"user_id", r[0].as<std::int64_t>()}, {"email", r[1].c_str()}, {"active", r[2].as<bool>()}});
  return a;
}

}  // namespace

void register_receiver_routes(Api& api) {
  Services& s = api.services();

  api.add("GET", "/api/v1/receivers", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const Page page = page_of(req);
    const std::int64_t administration = query_id(req, "administration_id");
    const std::string status = query_param(req, "status");
    if (!status.empty() && !kStatuses.count(status)) invalid("status", "status must be one of draft, active, inactive");
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      json::array a;
      for (const auto& r : tx.exec_params("SELECT " + kColumns +
                                              " FROM receivers r WHERE r.id > $1 AND ($2 = 0 OR r.administration_id = $2) "
                                              "AND ($3 = '' OR r.status = $3) ORDER BY r.id LIMIT $4",
                                          page.after_id, administration, status, page.limit + 1))
        a.emplace_back(receiver_json(tx, r));
      return a;
    });
    auto items = co_await std::move(op);
    co_return page_response(std::move(items), page, [](const json::value& v) { return v.at("id").as_int64(); });
  });

  api.add("GET", "/api/v1/receivers/{id}", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto op = store_transact(s.store, [id](pqxx::work& tx) { return load_receiver(tx, id); });
    co_return json_response(200, co_await std::move(op));
  });

  api.add("POST", "/api/v1/receivers", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto in = read_receiver_input(JsonInput(req.body), true);
    const std::string domain = s.config.smtp_receiver.receive_domain;
    if (domain.empty())
      throw ApiError(409, "no_receive_domain", "set [smtp_receiver] receive_domain in the configuration before making receivers");
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      check_administration(tx, *in.administration_id);
      const std::string name = tx.exec_params1("SELECT name FROM administrations WHERE id = $1", *in.administration_id)[0].as<std::string>();
      const auto id = tx.exec_params1(
                            "INSERT INTO receivers (administration_id, document_type, address, contact_email) VALUES ($1, $2, $3, $4) "
                            "RETURNING id",
                            *in.administration_id, *in.document_type, new_address(name, domain), *in.contact_email)[0]
                          .as<std::int64_t>();
      const json::object draft = load_receiver(tx, id);
      write_receiver(tx, id, draft, in);
      auto r = load_receiver(tx, id);
      audit_write(tx, actor, "receiver", std::to_string(id), "create", receiver_changes({}, r));
      return r;
    });
    auto r = co_await std::move(op);
    if (r.at("status") == "active" && s.outbox_wake) s.outbox_wake();
    co_return json_response(201, r);
  });

  api.add("PATCH", "/api/v1/receivers/{id}", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    const auto in = read_receiver_input(JsonInput(req.body), false);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      tx.exec_params("SELECT 1 FROM receivers WHERE id = $1 FOR UPDATE", id);
      const auto before = load_receiver(tx, id);
      const bool activated = write_receiver(tx, id, before, in);
      auto after = load_receiver(tx, id);
      auto changes = receiver_changes(before, after);
      if (!changes.empty())
        audit_write(tx, actor, "receiver", std::to_string(id), before.at("status") != after.at("status") ? "status" : "update", changes);
      return std::make_pair(after, activated);
    });
    auto result = co_await std::move(op);
    if (result.second && s.outbox_wake) s.outbox_wake();
    co_return json_response(200, result.first);
  });

  api.add("GET", "/api/v1/administrations/{id}/members", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto op = store_transact(s.store, [id](pqxx::work& tx) {
      if (tx.exec_params("SELECT 1 FROM administrations WHERE id = $1", id).empty())
        throw ApiError(404, "not_found", "no administration with id " + std::to_string(id));
      return members_json(tx, id);
    });
    auto items = co_await std::move(op);
    co_return json_response(200, json::object{{"items", std::move(items)}});
  });

  // Replaces the members: {"user_ids": [...]}.
  api.add("PUT", "/api/v1/administrations/{id}/members", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    const JsonInput in(req.body);
    in.only({"user_ids"});
    auto ids = *in.id_list("user_ids", true);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      if (tx.exec_params("SELECT 1 FROM administrations WHERE id = $1 FOR UPDATE", id).empty())
        throw ApiError(404, "not_found", "no administration with id " + std::to_string(id));
      for (auto user : ids)
        if (tx.exec_params("SELECT 1 FROM users WHERE id = $1", user).empty())
          invalid("user_ids", "user_ids: no user with id " + std::to_string(user));
      const auto before = members_json(tx, id);
      tx.exec_params("DELETE FROM administration_members WHERE administration_id = $1", id);
      tx.exec_params("INSERT INTO administration_members (administration_id, user_id) SELECT $1, unnest($2::bigint[])", id,
                     sql_id_array(ids));
      auto after = members_json(tx, id);
      if (before != after)
        audit_write(tx, actor, "administration", std::to_string(id), "members",
                    {{"members", json::serialize(before), json::serialize(after)}});
      return after;
    });
    auto items = co_await std::move(op);
    co_return json_response(200, json::object{{"items", std::move(items)}});
  });
}

}  // namespace mailgate
