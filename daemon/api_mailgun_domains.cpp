// /api/v1/mailgun-domains: Mailgun domains, configured once and chosen per mailbox
// (PATCH /api/v1/mailboxes/{id} {"mailgun_domain_id": n}). Admin only, every change audited.
//
// - A domain has its name (unique, normalised: lower case, punycode), its region (eu | us: which
//   API host sends for it), and two secrets, write-only like the mailboxes' (sealed with the
//   secrets key, shown as "<name>_set": true, audited as "***"): api_key (sending) and
//   webhook_signing_key (Mailgun's HTTP webhook signing key, which verifies inbound webhooks).
// - A mailbox with a domain uses the domain's values; its own mailgun_* columns stay the fallback
//   for a mailbox without one. Domains are never deleted, only deactivated; an inactive domain's
//   keys are not used (inbound webhooks fall back to the mailbox's own key, if any).
#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "daemon/api.hpp"
#include "rules/address.hpp"
#include "store/run.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {

const std::vector<std::string> kDomainSecrets = {"api_key", "webhook_signing_key"};

constexpr const char* kDomainColumns =
    "id, domain, region, active, api_key IS NOT NULL, webhook_signing_key IS NOT NULL, "
    "coalesce((SELECT array_agg(m.id ORDER BY m.id) FROM mailboxes m WHERE m.mailgun_domain_id = d.id), '{}'), "
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";

json::object domain_json(const pqxx::row& r) {
  return json::object{{"id", r[0].as<std::int64_t>()},        {"domain", r[1].c_str()},
                      {"region", r[2].c_str()},               {"active", r[3].as<bool>()},
                      {"api_key_set", r[4].as<bool>()},       {"webhook_signing_key_set", r[5].as<bool>()},
                      {"mailboxes", json_id_array(r[6])},     {"created_at", r[7].c_str()},
                      {"updated_at", r[8].c_str()}};
}

json::object load_domain(pqxx::dbtransaction& tx, std::int64_t id) {
  auto r = tx.exec_params(std::string("SELECT ") + kDomainColumns + " FROM mailgun_domains d WHERE id = $1", id);
  if (r.empty()) throw ApiError(404, "not_found", "no Mailgun domain with id " + std::to_string(id));
  return domain_json(r[0]);
}

struct DomainInput {
  std::optional<std::string> domain, region;
  std::optional<bool> active;
  std::map<std::string, std::string> sealed;  // column -> sealed secret, only those given
};

DomainInput read_domain_input(const JsonInput& in, const SecretBox& secrets, bool create) {
  in.only({"domain", "region", "active", "api_key", "webhook_signing_key"});
  DomainInput d;
  if (auto v = in.text("domain", create, 253)) {
    auto n = normalize_domain(*v);
    if (std::holds_alternative<AddressError>(n)) invalid("domain", "domain: " + std::get<AddressError>(n).reason);
    d.domain = std::get<std::string>(n);
  }
  if (auto v = in.text("region")) {
    if (*v != "eu" && *v != "us") invalid("region", "region must be one of eu, us");
    d.region = *v;
  }
  d.active = in.boolean("active");
  for (const auto& k : kDomainSecrets) {
    if (!in.has(k)) continue;
    const json::value* v = in.raw(k);
    if (!v->is_string()) invalid(k, k + " must be a string");
    const std::string secret(v->as_string());
    if (secret.empty()) invalid(k, k + " must not be empty (leave it out to keep the stored one)", "required");
    if (secret.size() > 4096) invalid(k, k + " is longer than 4096 bytes");
    if (has_line_break(secret)) invalid(k, k + " must not contain a line break");
    d.sealed[k] = secrets.seal(secret);
  }
  return d;
}

// Writes the given fields; 409 when the name belongs to another domain.
void write_domain(pqxx::dbtransaction& tx, std::int64_t id, const DomainInput& d) {
  if (d.domain && !tx.exec_params("SELECT 1 FROM mailgun_domains WHERE domain = $1 AND id <> $2", *d.domain, id).empty())
    throw ApiError(409, "domain_taken", "this Mailgun domain is configured already", "domain");
  tx.exec_params("UPDATE mailgun_domains SET domain = coalesce($2, domain), region = coalesce($3, region), "
                 "active = coalesce($4::boolean, active), updated_at = now() WHERE id = $1",
                 id, d.domain, d.region, d.active);
  for (const auto& [k, v] : d.sealed)
    tx.exec_params("UPDATE mailgun_domains SET " + k + " = $2 WHERE id = $1", id, pqxx::binarystring(v));
}

std::vector<FieldChange> domain_changes(const json::object& before, const json::object& after, const DomainInput& d,
                                        const std::set<std::string>& stored_secrets) {
  auto changes = diff_objects(before, after);
  std::erase_if(changes, [](const FieldChange& c) { return c.field == "updated_at" || c.field.ends_with("_set"); });
  for (const auto& [k, v] : d.sealed)
    changes.push_back({k, stored_secrets.count(k) ? std::optional<std::string>("***") : std::nullopt, "***", true});
  return changes;
}

}  // namespace

void register_mailgun_domain_routes(Api& api) {
  Services& s = api.services();

  api.add("GET", "/api/v1/mailgun-domains", kAdmin, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const Page page = page_of(req);
    auto op = store_transact(s.store, [page](pqxx::work& tx) {
      json::array a;
      for (const auto& r : tx.exec_params(std::string("SELECT ") + kDomainColumns + " FROM mailgun_domains d WHERE id > $1 ORDER BY id LIMIT $2",
                                          page.after_id, page.limit + 1))
        a.emplace_back(domain_json(r));
      return a;
    });
    auto items = co_await std::move(op);
    co_return page_response(std::move(items), page, [](const json::value& v) { return v.at("id").as_int64(); });
  });

  api.add("GET", "/api/v1/mailgun-domains/{id}", kAdmin, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto op = store_transact(s.store, [id](pqxx::work& tx) { return load_domain(tx, id); });
    co_return json_response(200, co_await std::move(op));
  });

  api.add("POST", "/api/v1/mailgun-domains", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const DomainInput d = read_domain_input(JsonInput(req.body), s.secrets, true);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [d, actor](pqxx::work& tx) {
      if (!tx.exec_params("SELECT 1 FROM mailgun_domains WHERE domain = $1", *d.domain).empty())
        throw ApiError(409, "domain_taken", "this Mailgun domain is configured already", "domain");
      const auto id = tx.exec_params1("INSERT INTO mailgun_domains (domain) VALUES ($1) RETURNING id", *d.domain)[0].as<std::int64_t>();
      write_domain(tx, id, d);
      auto after = load_domain(tx, id);
      audit_write(tx, actor, "mailgun_domain", std::to_string(id), "create", domain_changes({}, after, d, {}));
      return after;
    });
    co_return json_response(201, co_await std::move(op));
  });

  api.add("PATCH", "/api/v1/mailgun-domains/{id}", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    const DomainInput d = read_domain_input(JsonInput(req.body), s.secrets, false);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [id, d, actor](pqxx::work& tx) {
      auto before = load_domain(tx, id);
      std::set<std::string> stored;
      for (const auto& k : kDomainSecrets)
        if (before.at(k + "_set").as_bool()) stored.insert(k);
      write_domain(tx, id, d);
      auto after = load_domain(tx, id);
      auto changes = domain_changes(before, after, d, stored);
      if (!changes.empty())
        audit_write(tx, actor, "mailgun_domain", std::to_string(id), after.at("active").as_bool() ? "update" : "deactivate", changes);
      return after;
    });
    co_return json_response(200, co_await std::move(op));
  });
}

}  // namespace mailgate
