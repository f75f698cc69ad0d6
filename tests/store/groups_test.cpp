// store/groups: static, dynamic and composite groups resolved in SQL against a real PostgreSQL
// (one fresh migrated database per test). Rows are written directly, bypassing the API, so that
// each condition is tested on its own.
#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "store/groups.hpp"
#include "tests/support/pg_harness.hpp"

// Contacts are described with designated initializers naming only what a test cares about; GCC
// warns about the fields left to their default member initializers, which is the point here.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace mailgate {
namespace {

using Ids = std::vector<std::int64_t>;

class GroupStore : public ::testing::Test {
 protected:
  GroupStore() : conn_(test::fresh_migrated_database()) {}

  struct ContactRow {
    std::string type = "person";
    std::string city = "";
    std::string postcode = "";
    std::string country = "NL";
    std::optional<int> age_years;     // born exactly this many years ago today
    int born_days_later = 0;          // ... plus this many days (1: the birthday is tomorrow)
    bool archived = false;
  };

  std::int64_t contact(const ContactRow& r) {
    pqxx::work tx(conn_);
    auto id = tx.exec_params1(
        "INSERT INTO contacts (type, last_name, organisation_name, city, postcode, country, date_of_birth, archived) "
        "VALUES ($1, CASE WHEN $1 = 'person' THEN 'Jansen' ELSE '' END, CASE WHEN $1 = 'organisation' THEN 'Coöp' ELSE '' END, "
        "$2, $3, $4, CASE WHEN $5::int IS NULL THEN NULL ELSE (current_date - make_interval(years => $5::int))::date + $6::int END, $7) "
        "RETURNING id",
        r.type, r.city, r.postcode, r.country, r.age_years, r.born_days_later, r.archived)[0].as<std::int64_t>();
    tx.commit();
    return id;
  }

  std::int64_t static_group(const Ids& members) {
    pqxx::work tx(conn_);
    auto id = tx.exec1("INSERT INTO contact_groups (name, kind) VALUES ('s' || nextval('contact_groups_id_seq'), 'static') RETURNING id")[0]
                  .as<std::int64_t>();
    for (auto m : members) tx.exec_params("INSERT INTO group_contacts (group_id, contact_id) VALUES ($1, $2)", id, m);
    tx.commit();
    return id;
  }

  std::int64_t dynamic_group(const std::string& filter_json) {
    pqxx::work tx(conn_);
    auto id = tx.exec_params1("INSERT INTO contact_groups (name, kind, filter) VALUES ('d' || nextval('contact_groups_id_seq'), 'dynamic', $1::jsonb) "
                              "RETURNING id",
                              filter_json)[0].as<std::int64_t>();
    tx.commit();
    return id;
  }

  std::int64_t composite_group(const std::string& operation, const Ids& members) {
    pqxx::work tx(conn_);
    auto id = tx.exec_params1("INSERT INTO contact_groups (name, kind, operation) VALUES ('c' || nextval('contact_groups_id_seq'), 'composite', $1) "
                              "RETURNING id",
                              operation)[0].as<std::int64_t>();
    for (auto m : members)
      tx.exec_params("INSERT INTO group_composite_members (group_id, member_group_id) VALUES ($1, $2)", id, m);
    tx.commit();
    return id;
  }

  Ids resolve(std::int64_t group) {
    pqxx::work tx(conn_);
    return group_contact_ids(tx, group);
  }

  // One condition, all of its values strings.
  static std::string one(const std::string& field, const std::string& op, const std::vector<std::string>& values,
                         const std::string& match = "all") {
    boost::json::array v;
    for (const auto& x : values) v.emplace_back(boost::json::string(x));
    return boost::json::serialize(boost::json::object{
        {"match", match}, {"conditions", boost::json::array{boost::json::object{{"field", field}, {"op", op}, {"values", v}}}}});
  }

  pqxx::connection conn_;
};

TEST_F(GroupStore, StaticGroupListsItsMembersButNotArchivedOnes) {
  const auto a = contact({}), b = contact({}), archived = contact({.archived = true});
  contact({});  // not a member
  const auto g = static_group({b, a, archived});
  EXPECT_EQ(resolve(g), (Ids{a, b}));
  EXPECT_EQ(resolve(static_group({})), Ids{});
  EXPECT_EQ(resolve(987654), Ids{}) << "a group that does not exist has no contacts";
}

TEST_F(GroupStore, PostcodeRangeCoversFourDigitBoundsAndOnlyDutchAddresses) {
  const auto low = contact({.postcode = "1000AA"}), high = contact({.postcode = "1099ZZ"}), digits = contact({.postcode = "1050"});
  contact({.postcode = "1100AA"});
  contact({.postcode = "0999ZZ"});
  contact({.postcode = ""});
  contact({.postcode = "1050", .country = "BE"});
  EXPECT_EQ(resolve(dynamic_group(one("postcode", "between", {"1000", "1099"}))), (Ids{low, high, digits}));
  EXPECT_EQ(resolve(dynamic_group(one("postcode", "between", {"1000 ab", "1099zz"}))), (Ids{high, digits}))
      << "letters in a bound count; bounds are normalised";
}

TEST_F(GroupStore, AgeCountsWholeYearsOnTheCurrentDate) {
  const auto eighteen_today = contact({.age_years = 18});
  const auto seventeen = contact({.age_years = 18, .born_days_later = 1});  // turns 18 tomorrow
  const auto forty = contact({.age_years = 40});
  const auto forty_one_tomorrow = contact({.age_years = 41, .born_days_later = 1});
  contact({});  // no date of birth: never matches an age condition
  EXPECT_EQ(resolve(dynamic_group(one("age", "gte", {"18"}))), (Ids{eighteen_today, forty, forty_one_tomorrow}));
  EXPECT_EQ(resolve(dynamic_group(one("age", "lte", {"17"}))), (Ids{seventeen}));
  EXPECT_EQ(resolve(dynamic_group(one("age", "between", {"18", "40"}))), (Ids{eighteen_today, forty, forty_one_tomorrow}));
  EXPECT_EQ(resolve(dynamic_group(one("age", "between", {"30", "39"}))), Ids{});
}

TEST_F(GroupStore, CityAndContactTypeWithAllOrAny) {
  const auto utrecht_person = contact({.city = "Utrecht"});
  const auto utrecht_org = contact({.type = "organisation", .city = "UTRECHT"});
  const auto zeist_org = contact({.type = "organisation", .city = "Zeist"});
  contact({.city = "Zeist"});
  EXPECT_EQ(resolve(dynamic_group(one("city", "eq", {"utrecht"}))), (Ids{utrecht_person, utrecht_org})) << "case-insensitive";
  EXPECT_EQ(resolve(dynamic_group(one("contact_type", "eq", {"organisation"}))), (Ids{utrecht_org, zeist_org}));
  const std::string both = R"({"conditions": [{"field": "city", "op": "eq", "values": ["Utrecht"]},
                                              {"field": "contact_type", "op": "eq", "values": ["organisation"]}], "match": )";
  EXPECT_EQ(resolve(dynamic_group(both + R"("all"})")), (Ids{utrecht_org}));
  EXPECT_EQ(resolve(dynamic_group(both + R"("any"})")), (Ids{utrecht_person, utrecht_org, zeist_org}));
}

TEST_F(GroupStore, HasProductMeansAnOrderRunningToday) {
  // Seed: the dynamic group "leden coöperatie" = every contact with the product "lidmaatschap".
  std::int64_t membership = 0, newsletter = 0;
  {
    pqxx::work tx(conn_);
    const auto admin = tx.exec1("INSERT INTO administrations (name) VALUES ('Coöperatie') RETURNING id")[0].as<std::int64_t>();
    auto product = [&](const char* name) {
      return tx.exec_params1("INSERT INTO products (administration_id, name, code, duration, price_per, price_cents) "
                             "VALUES ($1, $2, $2, 'until_cancelled', 'year', 2500) RETURNING id",
                             admin, std::string(name))[0].as<std::int64_t>();
    };
    membership = product("lidmaatschap");
    newsletter = product("nieuwsbrief");
    tx.commit();
  }
  auto order = [&](std::int64_t contact, std::int64_t product, const char* status, const char* start, const char* end) {
    pqxx::work tx(conn_);
    tx.exec_params("INSERT INTO orders (contact_id, product_id, status, start_date, end_date) "
                   "VALUES ($1, $2, $3, current_date + $4::interval, current_date + $5::interval)",
                   contact, product, std::string(status), std::string(start), end ? std::optional<std::string>(end) : std::nullopt);
    tx.commit();
  };
  const auto active = contact({}), ending_later = contact({}), open_ended_since_today = contact({});
  const auto draft = contact({}), ended = contact({}), future = contact({}), other_product = contact({});
  order(active, membership, "active", "-1 year", "+1 year");
  order(ending_later, membership, "terminated", "-2 years", "+1 month");
  order(open_ended_since_today, membership, "active", "0 days", nullptr);
  order(draft, membership, "concept", "-1 month", nullptr);
  order(ended, membership, "terminated", "-2 years", "-1 day");
  order(future, membership, "active", "+1 day", nullptr);
  order(other_product, newsletter, "active", "-1 year", nullptr);
  EXPECT_EQ(resolve(dynamic_group(one("product", "has", {std::to_string(membership)}))),
            (Ids{active, ending_later, open_ended_since_today}));
}

TEST_F(GroupStore, FilterValuesAreBoundNeverPartOfTheStatement) {
  const auto tricky = contact({.city = "x') OR true --"});
  contact({.city = "Utrecht"});
  const auto g = dynamic_group(one("city", "eq", {"x') OR true --"}));
  EXPECT_EQ(resolve(g), (Ids{tricky}));
  pqxx::work tx(conn_);
  SqlBuilder sql;
  const std::string select = group_members_sql(tx, g, sql);
  const std::string statement = sql.with() + select;
  EXPECT_EQ(statement.find("OR true"), std::string::npos) << statement;
  EXPECT_NE(std::find(sql.params().begin(), sql.params().end(), "x') OR true --"), sql.params().end());
}

TEST_F(GroupStore, MemberOfUsesTheOtherGroupOfAnyKind) {
  const auto a = contact({.city = "Utrecht"}), b = contact({.city = "Zeist"}), c = contact({.city = "Utrecht"});
  const auto fans = static_group({a, b});
  const auto in_fans = dynamic_group(one("group", "member_of", {std::to_string(fans)}));
  EXPECT_EQ(resolve(in_fans), (Ids{a, b}));
  const auto utrecht_fans = dynamic_group(R"({"match": "all", "conditions": [{"field": "group", "op": "member_of", "values": [")" +
                                          std::to_string(in_fans) + R"("]}, {"field": "city", "op": "eq", "values": ["Utrecht"]}]})");
  EXPECT_EQ(resolve(utrecht_fans), (Ids{a}));
  (void)c;
}

TEST_F(GroupStore, CompositeUnionIntersectionAndNesting) {
  // Seed: "leuke mensen" (static) and "leden coöperatie" (dynamic); who is both?
  const auto a = contact({.city = "Utrecht"}), b = contact({.city = "Utrecht"}), c = contact({.city = "Zeist"}),
             d = contact({.city = "Amersfoort"});
  const auto nice = static_group({a, c});
  const auto utrecht = dynamic_group(one("city", "eq", {"Utrecht"}));
  const auto both = composite_group("intersection", {nice, utrecht});
  const auto either = composite_group("union", {nice, utrecht});
  EXPECT_EQ(resolve(both), (Ids{a}));
  EXPECT_EQ(resolve(either), (Ids{a, b, c}));
  EXPECT_EQ(resolve(composite_group("union", {})), Ids{});
  EXPECT_EQ(resolve(composite_group("intersection", {})), Ids{});

  // composite of composite of dynamic, sharing a group twice (evaluated once, as one CTE)
  const auto amersfoort = dynamic_group(one("city", "eq", {"Amersfoort"}));
  const auto nested = composite_group("union", {both, composite_group("union", {amersfoort, utrecht}), utrecht});
  EXPECT_EQ(resolve(nested), (Ids{a, b, d}));
  const auto outer = composite_group("intersection", {nested, either});
  EXPECT_EQ(resolve(outer), (Ids{a, b}));

  pqxx::work tx(conn_);
  SqlBuilder sql;
  group_members_sql(tx, outer, sql);
  EXPECT_EQ(sql.with().find("g" + std::to_string(utrecht) + "(contact_id) AS"),
            sql.with().rfind("g" + std::to_string(utrecht) + "(contact_id) AS"))
      << "each group once: " << sql.with();
}

TEST_F(GroupStore, EdgesIncludeCompositeMembersAndMemberOfConditions) {
  const auto s = static_group({});
  const auto d = dynamic_group(one("group", "member_of", {std::to_string(s)}));
  const auto c = composite_group("union", {d, s});
  pqxx::work tx(conn_);
  auto edges = group_edges(tx);
  std::set<std::pair<std::int64_t, std::int64_t>> got;
  for (const auto& e : edges) got.insert({e.group, e.member_group});
  EXPECT_EQ(got, (std::set<std::pair<std::int64_t, std::int64_t>>{{d, s}, {c, d}, {c, s}}));
  // Giving the static group's place in a cycle: d member_of c would close c -> d -> c.
  auto cycle = composite_cycle(edges, d, {c});
  ASSERT_TRUE(cycle);
  EXPECT_EQ(*cycle, (Ids{d, c, d}));
}

TEST_F(GroupStore, ACycleWrittenPastTheApiIsAnErrorNotEndlessRecursion) {
  const auto a = composite_group("union", {});
  const auto b = composite_group("union", {a});
  const auto d = dynamic_group(one("group", "member_of", {std::to_string(b)}));
  {
    pqxx::work tx(conn_);
    tx.exec_params("INSERT INTO group_composite_members (group_id, member_group_id) VALUES ($1, $2)", a, d);
    tx.commit();
  }
  pqxx::work tx(conn_);
  EXPECT_THROW(group_contact_ids(tx, a), GroupResolveError);
}

TEST_F(GroupStore, NestingDeeperThanTheLimitIsRefused) {
  auto g = static_group({contact({})});
  for (int i = 0; i < kGroupMaxDepth - 1; ++i) g = composite_group("union", {g});
  EXPECT_EQ(resolve(g).size(), 1u) << "exactly at the limit still resolves";
  g = composite_group("union", {g});
  pqxx::work tx(conn_);
  EXPECT_THROW(group_contact_ids(tx, g), GroupResolveError);
}

TEST_F(GroupStore, FilterRoundTripsThroughTheDatabase) {
  const auto g = dynamic_group(R"({"match": "any", "conditions": [{"field": "age", "op": "between", "values": ["18", 30]},
                                                                  {"field": "city", "op": "eq", "values": ["Zeist"]}]})");
  pqxx::work tx(conn_);
  const auto f = group_filter_load(tx, g);
  EXPECT_EQ(f.match, "any");
  ASSERT_EQ(f.conditions.size(), 2u);
  EXPECT_EQ(f.conditions[0].field, "age");
  EXPECT_EQ(f.conditions[0].op, "between");
  EXPECT_EQ(f.conditions[0].values, (std::vector<std::string>{"18", "30"}));
  EXPECT_EQ(f.conditions[1].values, (std::vector<std::string>{"Zeist"}));
}

TEST_F(GroupStore, ContactEmailsNeedExactlyOnePrimaryAtCommit) {
  const auto c = contact({});
  {
    pqxx::work tx(conn_);
    tx.exec_params("INSERT INTO contact_emails (contact_id, address, email_match_key, is_primary, position) VALUES ($1, 'A@x.nl', 'a@x.nl', false, 0)", c);
    EXPECT_THROW(tx.commit(), pqxx::sql_error) << "addresses without a primary one";
  }
  {
    pqxx::work tx(conn_);
    EXPECT_THROW(tx.exec_params("INSERT INTO contact_emails (contact_id, address, email_match_key, is_primary, position) "
                                "VALUES ($1, 'A@x.nl', 'A@x.nl', true, 0)", c),
                 pqxx::check_violation)
        << "the match key is the lower-cased address";
  }
  pqxx::work tx(conn_);
  tx.exec_params("INSERT INTO contact_emails (contact_id, address, email_match_key, is_primary, position) VALUES ($1, 'A@x.nl', 'a@x.nl', true, 0)", c);
  tx.exec_params("INSERT INTO contact_emails (contact_id, address, email_match_key, is_primary, position) VALUES ($1, 'b@x.nl', 'b@x.nl', false, 1)", c);
  EXPECT_NO_THROW(tx.commit());
}

}  // namespace
}  // namespace mailgate
