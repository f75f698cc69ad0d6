// rules/groups: cycles, filters and postcodes, one row per case.
#include <gtest/gtest.h>

#include "rules/groups.hpp"

namespace mailgate {
namespace {

TEST(CompositeCycle, Table) {
  const std::vector<CompositeEdge> existing = {{1, 2}, {2, 3}, {4, 5}};
  using Path = std::vector<std::int64_t>;
  EXPECT_EQ(composite_cycle(existing, 5, {6}), std::nullopt);
  EXPECT_EQ(composite_cycle(existing, 7, {7}), (Path{7, 7})) << "a group cannot contain itself";
  EXPECT_EQ(composite_cycle(existing, 3, {1}), (Path{3, 1, 2, 3})) << "indirect";
  EXPECT_EQ(composite_cycle(existing, 5, {4}), (Path{5, 4, 5}));
  EXPECT_EQ(composite_cycle(existing, 1, {3}), std::nullopt) << "1's old edge to 2 is replaced";
  EXPECT_EQ(composite_cycle(existing, 3, {4, 5}), std::nullopt) << "diamonds are not cycles";
  EXPECT_EQ(composite_cycle({{1, 2}, {1, 3}, {2, 4}, {3, 4}}, 5, {1}), std::nullopt);
}

TEST(Postcode, Normalised) {
  EXPECT_EQ(normalize_postcode("1234 ab"), "1234AB");
  EXPECT_EQ(normalize_postcode("1234"), "1234");
  for (const char* bad : {"", "123", "0123AB", "1234A", "ABCD", "1234 A1", "12345"}) EXPECT_EQ(normalize_postcode(bad), "") << bad;
}

struct Row {
  const char* name;
  GroupFilter filter;
  const char* path;  // nullptr: valid
};

class FilterTable : public ::testing::TestWithParam<Row> {};

TEST_P(FilterTable, Validation) {
  auto e = validate_group_filter(GetParam().filter);
  if (!GetParam().path)
    EXPECT_FALSE(e) << e->field_path << ": " << e->message;
  else
    EXPECT_EQ(e ? e->field_path : "(valid)", GetParam().path);
}

GroupFilter one(FilterCondition c, std::string match = "all") { return GroupFilter{std::move(match), {std::move(c)}}; }

INSTANTIATE_TEST_SUITE_P(
    Rows, FilterTable,
    ::testing::Values(Row{"product", one({"product", "has", {"7"}}), nullptr},
                      Row{"postcode", one({"postcode", "between", {"1000 AA", "1099zz"}}), nullptr},
                      Row{"member_of", one({"group", "member_of", {"3"}}, "any"), nullptr},
                      Row{"age_between", one({"age", "between", {"18", "30"}}), nullptr},
                      Row{"age_gte", one({"age", "gte", {"65"}}), nullptr},
                      Row{"city", one({"city", "eq", {"Utrecht"}}), nullptr},
                      Row{"type", one({"contact_type", "eq", {"organisation"}}), nullptr},
                      Row{"bad_match", one({"city", "eq", {"Utrecht"}}, "some"), "filter.match"},
                      Row{"no_conditions", GroupFilter{"all", {}}, "filter.conditions"},
                      Row{"unknown_field", one({"shoe_size", "eq", {"42"}}), "filter.conditions[0].field"},
                      Row{"wrong_op", one({"product", "eq", {"7"}}), "filter.conditions[0].op"},
                      Row{"bad_product_id", one({"product", "has", {"x"}}), "filter.conditions[0].values"},
                      Row{"postcode_order", one({"postcode", "between", {"2000", "1000"}}), "filter.conditions[0].values"},
                      Row{"postcode_syntax", one({"postcode", "between", {"1000", "abcd"}}), "filter.conditions[0].values"},
                      Row{"age_order", one({"age", "between", {"30", "18"}}), "filter.conditions[0].values"},
                      Row{"age_range", one({"age", "gte", {"200"}}), "filter.conditions[0].values"},
                      Row{"type_value", one({"contact_type", "eq", {"robot"}}), "filter.conditions[0].values"},
                      Row{"second_condition",
                          GroupFilter{"all", {{"city", "eq", {"Utrecht"}}, {"age", "lte", {}}}},
                          "filter.conditions[1].values"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Filter, ReferencedGroups) {
  GroupFilter f{"any", {{"group", "member_of", {"3"}}, {"city", "eq", {"Gouda"}}, {"group", "member_of", {"9"}}}};
  EXPECT_EQ(filter_referenced_groups(f), (std::vector<std::int64_t>{3, 9}));
}

}  // namespace
}  // namespace mailgate
