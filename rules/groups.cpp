#include "rules/groups.hpp"

#include <algorithm>
#include <cctype>
#include <functional>
#include <map>
#include <set>

namespace mailgate {

std::optional<std::vector<std::int64_t>> composite_cycle(const std::vector<CompositeEdge>& existing, std::int64_t group,
                                                         const std::vector<std::int64_t>& new_members) {
  std::map<std::int64_t, std::vector<std::int64_t>> edges;
  for (const auto& e : existing)
    if (e.group != group) edges[e.group].push_back(e.member_group);  // the group's own edges are being replaced
  for (auto m : new_members) edges[group].push_back(m);
  // Depth-first search from `group`; a path back to it is the cycle.
  std::vector<std::int64_t> path{group};
  std::set<std::int64_t> done;
  std::function<bool(std::int64_t)> dfs = [&](std::int64_t node) -> bool {
    for (auto next : edges[node]) {
      path.push_back(next);
      if (next == group) return true;
      if (!done.count(next) && std::find(path.begin(), path.end() - 1, next) == path.end() - 1 && dfs(next)) return true;
      path.pop_back();
    }
    done.insert(node);
    return false;
  };
  if (dfs(group)) return path;
  return std::nullopt;
}

std::string normalize_postcode(std::string_view postcode) {
  std::string s;
  for (char c : postcode)
    if (c != ' ') s.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  if (s.size() != 4 && s.size() != 6) return {};
  for (int i = 0; i < 4; ++i)
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return {};
  if (s[0] == '0') return {};
  if (s.size() == 6 && (!std::isupper(static_cast<unsigned char>(s[4])) || !std::isupper(static_cast<unsigned char>(s[5])))) return {};
  return s;
}

namespace {
bool positive_id(const std::string& s) {
  return !s.empty() && s.size() <= 18 && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); }) && s != "0" &&
         s[0] != '0';
}
bool years(const std::string& s) {
  return !s.empty() && s.size() <= 3 && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); }) && std::stoi(s) <= 150;
}
}  // namespace

std::optional<FilterError> validate_group_filter(const GroupFilter& f) {
  if (f.match != "all" && f.match != "any") return FilterError{"filter.match", "match must be \"all\" or \"any\""};
  if (f.conditions.empty()) return FilterError{"filter.conditions", "a dynamic group needs at least one condition"};
  if (f.conditions.size() > 50) return FilterError{"filter.conditions", "a filter has at most 50 conditions"};
  for (std::size_t i = 0; i < f.conditions.size(); ++i) {
    const auto& c = f.conditions[i];
    const std::string at = "filter.conditions[" + std::to_string(i) + "]";
    auto bad_op = [&](const char* allowed) { return FilterError{at + ".op", "field " + c.field + " takes op " + allowed}; };
    auto bad_values = [&](const std::string& what) { return FilterError{at + ".values", what}; };
    if (c.field == "product") {
      if (c.op != "has") return bad_op("has");
      if (c.values.size() != 1 || !positive_id(c.values[0])) return bad_values("product needs one product id");
    } else if (c.field == "group") {
      if (c.op != "member_of") return bad_op("member_of");
      if (c.values.size() != 1 || !positive_id(c.values[0])) return bad_values("group needs one group id");
    } else if (c.field == "postcode") {
      if (c.op != "between") return bad_op("between");
      if (c.values.size() != 2) return bad_values("postcode between needs two postcodes");
      const auto from = normalize_postcode(c.values[0]), to = normalize_postcode(c.values[1]);
      if (from.empty() || to.empty()) return bad_values("postcodes are Dutch: 1234 or 1234AB");
      if (from > to) return bad_values("the first postcode must not come after the second");
    } else if (c.field == "age") {
      if (c.op == "gte" || c.op == "lte") {
        if (c.values.size() != 1 || !years(c.values[0])) return bad_values("age needs one number of years (0-150)");
      } else if (c.op == "between") {
        if (c.values.size() != 2 || !years(c.values[0]) || !years(c.values[1])) return bad_values("age between needs two numbers of years (0-150)");
        if (std::stoi(c.values[0]) > std::stoi(c.values[1])) return bad_values("the lower age must come first");
      } else {
        return bad_op("gte, lte or between");
      }
    } else if (c.field == "city") {
      if (c.op != "eq") return bad_op("eq");
      if (c.values.size() != 1 || c.values[0].empty() || c.values[0].size() > 100) return bad_values("city needs one name");
    } else if (c.field == "contact_type") {
      if (c.op != "eq") return bad_op("eq");
      if (c.values.size() != 1 || (c.values[0] != "person" && c.values[0] != "organisation"))
        return bad_values("contact_type is person or organisation");
    } else {
      return FilterError{at + ".field", "unknown field '" + c.field + "' (product, postcode, group, age, city, contact_type)"};
    }
  }
  return std::nullopt;
}

std::vector<std::int64_t> filter_referenced_groups(const GroupFilter& f) {
  std::vector<std::int64_t> out;
  for (const auto& c : f.conditions)
    if (c.field == "group" && c.values.size() == 1 && positive_id(c.values[0])) out.push_back(std::stoll(c.values[0]));
  return out;
}

}  // namespace mailgate
