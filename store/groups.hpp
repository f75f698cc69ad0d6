// store/groups: resolving a CRM group (static, dynamic or composite) to its contacts in SQL.
//
// A group becomes one statement: every group it depends on (composite members, dynamic
// "member_of" conditions), each once, is a CTE `g<id>(contact_id)` listed before the groups that
// use it; the caller selects from the root. Every value that comes from a filter is a bound
// parameter ($n), never part of the SQL text.
//
// - The CTEs include archived contacts; callers filter `NOT c.archived` once, at the top (that
//   distributes over union, intersection and member_of, so the result is the same).
// - A cycle (which the API refuses, see group_graph_lock) or nesting deeper than kGroupMaxDepth
//   throws GroupResolveError instead of recursing without end. A group that does not exist
//   resolves to no contacts.
// - Dynamic conditions (rules/groups.hpp):
//     product has [id]          an order of that product for the contact that runs today (status
//                               active or terminated, start_date <= today <= end_date or no end)
//     postcode between [a, b]   Dutch postcodes (country NL), "1234" bounds cover every letter pair
//     age gte|lte [n], between [a, b]   whole years on the current date; no date of birth: no match
//     city eq [name]            case-insensitive
//     contact_type eq [type]
//     group member_of [id]      a member of that group (any kind)
#pragma once
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "rules/groups.hpp"

namespace pqxx {
class dbtransaction;
class result;
}

namespace mailgate {

inline constexpr int kGroupMaxDepth = 32;

class GroupResolveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A statement built piece by piece: parameters ("$n") and CTEs.
class SqlBuilder {
 public:
  std::string param(std::string value);  // returns "$n"
  void cte(std::string name, std::string body);
  bool has_cte(const std::string& name) const;
  std::string with() const;  // "" or "WITH a AS (...), b AS (...) "
  const std::vector<std::string>& params() const { return params_; }

 private:
  std::vector<std::string> params_;
  std::vector<std::pair<std::string, std::string>> ctes_;
};

// Runs a statement whose parameters `sql` collected. Build the statement first, in its own
// statement: the parameters are read here (C++ leaves the order of arguments' evaluation open).
pqxx::result sql_exec(pqxx::dbtransaction& tx, const std::string& query, const SqlBuilder& sql);

// Adds the CTEs for `group_id` (and what it depends on) and returns "SELECT contact_id FROM g<id>".
std::string group_members_sql(pqxx::dbtransaction& tx, std::int64_t group_id, SqlBuilder& sql);

// The WHERE expression of a dynamic filter over `contacts c`. `member_of` is asked for the SQL
// of a referenced group's contact ids.
std::string group_filter_sql(const GroupFilter& filter, SqlBuilder& sql,
                             const std::function<std::string(std::int64_t)>& member_of);

// A dynamic group's stored filter (contact_groups.filter jsonb) read back into the rules type.
GroupFilter group_filter_load(pqxx::dbtransaction& tx, std::int64_t group_id);

// Every "group contains group" edge: composite members and dynamic member_of conditions.
std::vector<CompositeEdge> group_edges(pqxx::dbtransaction& tx);

// Serialises changes of the group graph (members of composite groups, dynamic filters) so that
// two transactions cannot together close a cycle that each alone would not. Transaction-scoped.
void group_graph_lock(pqxx::dbtransaction& tx);

// The non-archived contacts of a group, ids ascending, after `after_id`, at most `limit` (0: all).
std::vector<std::int64_t> group_contact_ids(pqxx::dbtransaction& tx, std::int64_t group_id, std::int64_t after_id = 0,
                                            std::int64_t limit = 0);

}  // namespace mailgate
