// store/groups: group resolution in SQL (see groups.hpp for the contract).
#include "store/groups.hpp"

#include <algorithm>

#include <pqxx/pqxx>

namespace mailgate {

namespace {

constexpr const char* kNoContacts = "SELECT NULL::bigint WHERE false";

std::string product_condition(SqlBuilder& sql, const std::string& product_id);

class Resolver {
 public:
  Resolver(pqxx::dbtransaction& tx, SqlBuilder& sql) : tx_(tx), sql_(sql) {}

  std::string visit(std::int64_t id) {
    const std::string name = "g" + std::to_string(id);
    const std::string select = "SELECT contact_id FROM " + name;
    if (sql_.has_cte(name)) return select;
    if (std::find(path_.begin(), path_.end(), id) != path_.end()) {
      std::string p;
      for (auto g : path_) p += std::to_string(g) + " -> ";
      throw GroupResolveError("groups form a cycle: " + p + std::to_string(id));
    }
    if (static_cast<int>(path_.size()) >= kGroupMaxDepth)
      throw GroupResolveError("groups are nested deeper than " + std::to_string(kGroupMaxDepth) + " levels");
    path_.push_back(id);
    std::string body = definition(id);
    path_.pop_back();
    sql_.cte(name, std::move(body));  // after the groups it uses: CTEs may only refer backwards
    return select;
  }

 private:
  std::string definition(std::int64_t id) {
    auto r = tx_.exec_params("SELECT kind, operation FROM contact_groups WHERE id = $1", id);
    if (r.empty()) return kNoContacts;
    const std::string kind = r[0][0].as<std::string>();
    if (kind == "static")
      return "SELECT contact_id FROM group_contacts WHERE group_id = " + sql_.param(std::to_string(id)) + "::bigint";
    if (kind == "dynamic") {
      const GroupFilter filter = group_filter_load(tx_, id);
      const std::string where = group_filter_sql(filter, sql_, [this](std::int64_t g) { return visit(g); });
      return "SELECT c.id FROM contacts c WHERE " + where;
    }
    const std::string op = r[0][1].as<std::string>() == "intersection" ? " INTERSECT " : " UNION ";
    std::string body;
    for (const auto& m : tx_.exec_params("SELECT member_group_id FROM group_composite_members WHERE group_id = $1 ORDER BY 1", id)) {
      const std::string member = visit(m[0].as<std::int64_t>());
      body += (body.empty() ? "" : op) + ("(" + member + ")");
    }
    return body.empty() ? kNoContacts : body;
  }

  pqxx::dbtransaction& tx_;
  SqlBuilder& sql_;
  std::vector<std::int64_t> path_;
};

}  // namespace

std::string SqlBuilder::param(std::string value) {
  params_.push_back(std::move(value));
  return "$" + std::to_string(params_.size());
}

void SqlBuilder::cte(std::string name, std::string body) { ctes_.emplace_back(std::move(name), std::move(body)); }

bool SqlBuilder::has_cte(const std::string& name) const {
  return std::any_of(ctes_.begin(), ctes_.end(), [&](const auto& c) { return c.first == name; });
}

std::string SqlBuilder::with() const {
  if (ctes_.empty()) return {};
  std::string s = "WITH ";
  for (std::size_t i = 0; i < ctes_.size(); ++i) s += (i ? ", " : "") + ctes_[i].first + "(contact_id) AS (" + ctes_[i].second + ")";
  return s + " ";
}

pqxx::result sql_exec(pqxx::dbtransaction& tx, const std::string& query, const SqlBuilder& sql) {
  return tx.exec_params(query, pqxx::prepare::make_dynamic_params(sql.params()));
}

std::string group_members_sql(pqxx::dbtransaction& tx, std::int64_t group_id, SqlBuilder& sql) {
  return Resolver(tx, sql).visit(group_id);
}

std::string group_filter_sql(const GroupFilter& filter, SqlBuilder& sql, const std::function<std::string(std::int64_t)>& member_of) {
  std::vector<std::string> parts;
  for (const auto& c : filter.conditions) {
    auto value = [&](std::size_t i) -> const std::string& {
      if (i >= c.values.size()) throw GroupResolveError("condition on " + c.field + " lacks a value");
      return c.values[i];
    };
    if (c.field == "product" && c.op == "has") {
      parts.push_back(product_condition(sql, value(0)));
    } else if (c.field == "postcode" && c.op == "between") {
      const std::string from = normalize_postcode(value(0));
      std::string to = normalize_postcode(value(1));
      if (from.empty() || to.empty()) throw GroupResolveError("postcode condition with a postcode that is not Dutch");
      if (to.size() == 4) to += "ZZ";  // "1099" covers 1099AA..1099ZZ
      parts.push_back("c.country = 'NL' AND c.postcode COLLATE \"C\" BETWEEN " + sql.param(from) + " AND " + sql.param(to));
    } else if (c.field == "age") {
      // Age >= n: born on or before today minus n years. Age <= n: born after today minus n+1 years.
      auto at_least = [&](const std::string& n) {
        return "c.date_of_birth <= (current_date - make_interval(years => " + sql.param(n) + "::int))::date";
      };
      auto at_most = [&](const std::string& n) {
        return "c.date_of_birth > (current_date - make_interval(years => " + sql.param(n) + "::int + 1))::date";
      };
      if (c.op == "gte")
        parts.push_back(at_least(value(0)));
      else if (c.op == "lte")
        parts.push_back(at_most(value(0)));
      else if (c.op == "between")
        parts.push_back(at_least(value(0)) + " AND " + at_most(value(1)));
      else
        throw GroupResolveError("unknown age operator " + c.op);
    } else if (c.field == "city" && c.op == "eq") {
      parts.push_back("lower(c.city) = lower(" + sql.param(value(0)) + ")");
    } else if (c.field == "contact_type" && c.op == "eq") {
      parts.push_back("c.type = " + sql.param(value(0)));
    } else if (c.field == "group" && c.op == "member_of") {
      std::int64_t id = 0;
      try {
        id = std::stoll(value(0));
      } catch (const std::exception&) {
        throw GroupResolveError("member_of condition without a group id");
      }
      parts.push_back("c.id IN (" + member_of(id) + ")");
    } else {
      throw GroupResolveError("unknown condition " + c.field + " " + c.op);
    }
  }
  if (parts.empty()) return "false";
  const std::string glue = filter.match == "any" ? " OR " : " AND ";
  std::string where;
  for (const auto& p : parts) where += (where.empty() ? "" : glue) + ("(" + p + ")");
  return "(" + where + ")";
}

GroupFilter group_filter_load(pqxx::dbtransaction& tx, std::int64_t group_id) {
  GroupFilter f;
  auto m = tx.exec_params("SELECT coalesce(filter->>'match', 'all') FROM contact_groups WHERE id = $1 AND filter IS NOT NULL", group_id);
  if (m.empty()) return f;
  f.match = m[0][0].as<std::string>();
  // One row per (condition, value); a condition without values still yields one row (v null).
  auto rows = tx.exec_params(
      "SELECT e.i, e.c->>'field', e.c->>'op', v.v "
      "FROM contact_groups g CROSS JOIN LATERAL jsonb_array_elements(g.filter->'conditions') WITH ORDINALITY AS e(c, i) "
      "LEFT JOIN LATERAL jsonb_array_elements_text(CASE jsonb_typeof(e.c->'values') WHEN 'array' THEN e.c->'values' ELSE '[]' END) "
      "     WITH ORDINALITY AS v(v, n) ON true "
      "WHERE g.id = $1 ORDER BY e.i, v.n",
      group_id);
  std::int64_t current = 0;
  for (const auto& r : rows) {
    if (r[0].as<std::int64_t>() != current) {
      current = r[0].as<std::int64_t>();
      f.conditions.push_back({r[1].is_null() ? "" : r[1].as<std::string>(), r[2].is_null() ? "" : r[2].as<std::string>(), {}});
    }
    if (!r[3].is_null()) f.conditions.back().values.push_back(r[3].as<std::string>());
  }
  return f;
}

std::vector<CompositeEdge> group_edges(pqxx::dbtransaction& tx) {
  std::vector<CompositeEdge> out;
  for (const auto& r : tx.exec(
           "SELECT group_id, member_group_id FROM group_composite_members "
           "UNION "
           "SELECT g.id, (c->'values'->>0)::bigint FROM contact_groups g, jsonb_array_elements(g.filter->'conditions') c "
           "WHERE g.kind = 'dynamic' AND c->>'field' = 'group' AND c->'values'->>0 ~ '^[0-9]{1,18}$'"))
    out.push_back({r[0].as<std::int64_t>(), r[1].as<std::int64_t>()});
  return out;
}

void group_graph_lock(pqxx::dbtransaction& tx) {
  tx.exec("SELECT pg_advisory_xact_lock(7236837203427528962)");  // "mg:group" graph
}

std::vector<std::int64_t> group_contact_ids(pqxx::dbtransaction& tx, std::int64_t group_id, std::int64_t after_id, std::int64_t limit) {
  SqlBuilder sql;
  const std::string members = group_members_sql(tx, group_id, sql);
  std::string q = sql.with() + "SELECT c.id FROM contacts c WHERE NOT c.archived AND c.id > " + sql.param(std::to_string(after_id)) +
                  "::bigint AND c.id IN (" + members + ") ORDER BY c.id";
  if (limit > 0) q += " LIMIT " + sql.param(std::to_string(limit)) + "::bigint";
  std::vector<std::int64_t> out;
  for (const auto& r : tx.exec_params(q, pqxx::prepare::make_dynamic_params(sql.params()))) out.push_back(r[0].as<std::int64_t>());
  return out;
}

namespace {

// "Has product": an order of the product for the contact that runs today. Orders (migration
// 0005) go concept -> active -> terminated; a concept order does not count yet, a terminated one
// counts until its end date (a membership cancelled per the end of the year still runs until then).
std::string product_condition(SqlBuilder& sql, const std::string& product_id) {
  return "EXISTS (SELECT 1 FROM orders o WHERE o.contact_id = c.id AND o.product_id = " + sql.param(product_id) +
         "::bigint AND o.status IN ('active', 'terminated') AND o.start_date <= current_date "
         "AND (o.end_date IS NULL OR o.end_date >= current_date))";
}

}  // namespace

}  // namespace mailgate
