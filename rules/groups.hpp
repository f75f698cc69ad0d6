// rules/groups: the pure parts of CRM groups (seed: static, dynamic and composite groups).
//
// - composite_cycle(): would giving `group` these member groups make a group contain itself,
//   directly or through other composite groups (or dynamic "member_of" conditions)? Returns the
//   cycle as a path of group ids, first and last equal (3 -> 5 -> 3).
// - validate_group_filter(): a dynamic group's filter, checked field by field; the error names
//   the offending part as a path ("filter.conditions[2].values").
// - normalize_postcode(): Dutch postcodes, "1234 ab" -> "1234AB"; "1234" alone is accepted.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailgate {

struct CompositeEdge {
  std::int64_t group;
  std::int64_t member_group;
};

std::optional<std::vector<std::int64_t>> composite_cycle(const std::vector<CompositeEdge>& existing, std::int64_t group,
                                                         const std::vector<std::int64_t>& new_members);

// field / op / values:
//   product       has          [product id]
//   postcode      between      [from, to]            Dutch postcodes, from <= to
//   group         member_of    [group id]
//   age           gte | lte    [years]  or between [min, max]   whole years 0..150
//   city          eq           [name]
//   contact_type  eq           [person | organisation]
struct FilterCondition {
  std::string field;
  std::string op;
  std::vector<std::string> values;
};

struct GroupFilter {
  std::string match = "all";  // "all" (AND) or "any" (OR)
  std::vector<FilterCondition> conditions;
};

struct FilterError {
  std::string field_path;
  std::string message;
};

std::optional<FilterError> validate_group_filter(const GroupFilter& filter);
std::vector<std::int64_t> filter_referenced_groups(const GroupFilter& filter);
std::string normalize_postcode(std::string_view postcode);  // "" when not a Dutch postcode

}  // namespace mailgate
