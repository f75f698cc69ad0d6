// /api/v1 contacts and groups against the real daemon: validation, normalised e-mail addresses
// and the match-key lookup, archiving, audit rows, permissions, and group resolution of every
// kind including nesting and refused cycles.
#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "tests/support/api_client.hpp"

namespace mailgate {
namespace {

namespace json = boost::json;
using test::ApiFixture;
using Ids = std::vector<std::int64_t>;

std::string body(const json::object& o) { return json::serialize(o); }

std::string url_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

std::int64_t id_of(const test::ApiResult& r) { return r.json.at("id").as_int64(); }

Ids ids_of(const test::ApiResult& r) {
  Ids out;
  for (const auto& item : r.json.at("items").as_array()) out.push_back(item.at("id").as_int64());
  return out;
}

std::int64_t person(ApiFixture& api, const std::string& last_name, json::object extra = {}) {
  extra["type"] = "person";
  extra["last_name"] = last_name;
  auto r = api.call("staff", "POST", "/api/v1/contacts", body(extra));
  EXPECT_EQ(r.status, 201) << r.body;
  return r.status == 201 ? id_of(r) : 0;
}

std::int64_t group(ApiFixture& api, json::object input) {
  auto r = api.call("staff", "POST", "/api/v1/groups", body(input));
  EXPECT_EQ(r.status, 201) << body(input) << " -> " << r.body;
  return r.status == 201 ? id_of(r) : 0;
}

json::object condition(const std::string& field, const std::string& op, json::array values) {
  return {{"field", field}, {"op", op}, {"values", std::move(values)}};
}

json::object dynamic(const std::string& name, json::array conditions, const std::string& match = "all") {
  return {{"name", name}, {"kind", "dynamic"}, {"filter", json::object{{"match", match}, {"conditions", std::move(conditions)}}}};
}

json::object composite(const std::string& name, const std::string& operation, const Ids& members) {
  json::array m;
  for (auto id : members) m.emplace_back(id);
  return {{"name", name}, {"kind", "composite"}, {"operation", operation}, {"member_groups", m}};
}

// Every contact of a group, following next_cursor through pages of `limit`.
Ids resolve(ApiFixture& api, std::int64_t group_id, int limit = 200) {
  Ids out;
  std::string cursor;
  for (int pages = 0; pages < 100; ++pages) {
    auto r = api.call("readonly", "GET",
                      "/api/v1/groups/" + std::to_string(group_id) + "/contacts?limit=" + std::to_string(limit) +
                          (cursor.empty() ? "" : "&cursor=" + cursor));
    EXPECT_EQ(r.status, 200) << r.body;
    if (r.status != 200) break;
    for (auto id : ids_of(r)) out.push_back(id);
    if (r.json.at("next_cursor").is_null()) break;
    cursor = std::string(r.json.at("next_cursor").as_string());
  }
  return out;
}

TEST(ContactApi, CreateNormalisesAndAuditsGetListAndPatch) {
  ApiFixture api;
  json::object input{{"type", "person"},
                     {"title", " dhr. "},
                     {"initials", "J.P."},
                     {"first_name", "Jan"},
                     {"infix", "van der"},
                     {"last_name", " Berg "},
                     {"emails", json::array{json::object{{"address", " Jan.Berg@Bücher.Example "}},
                                            json::object{{"address", "jan@WERK.nl"}, {"primary", true}}}},
                     {"phones", json::array{json::object{{"number", "+31 6 1234 5678"}, {"label", "mobile"}}, "030-1234567"}},
                     {"street", "Dorpsstraat"},
                     {"house_number", "12"},
                     {"house_number_addition", "a"},
                     {"postcode", "3511 ab"},
                     {"city", "Utrecht"},
                     {"date_of_birth", "1980-04-23"},
                     {"free_fields", json::object{{"lidnummer", "A-17"}, {"nieuwsbrief_sinds", "2021"}}}};
  auto created = api.call("staff", "POST", "/api/v1/contacts", body(input));
  ASSERT_EQ(created.status, 201) << created.body;
  const auto& c = created.json.as_object();
  const auto id = c.at("id").as_int64();
  EXPECT_EQ(c.at("title").as_string(), "dhr.");
  EXPECT_EQ(c.at("last_name").as_string(), "Berg");
  EXPECT_EQ(c.at("display_name").as_string(), "Jan van der Berg");
  EXPECT_EQ(c.at("postcode").as_string(), "3511AB");
  EXPECT_EQ(c.at("country").as_string(), "NL");
  const auto& emails = c.at("emails").as_array();
  ASSERT_EQ(emails.size(), 2u);
  EXPECT_EQ(emails[0].at("address").as_string(), "Jan.Berg@xn--bcher-kva.example") << "trimmed, IDN domain to punycode";
  EXPECT_FALSE(emails[0].at("primary").as_bool());
  EXPECT_EQ(emails[1].at("address").as_string(), "jan@werk.nl") << "domain lower-cased";
  EXPECT_TRUE(emails[1].at("primary").as_bool());
  EXPECT_EQ(c.at("primary_email").as_string(), "jan@werk.nl");
  EXPECT_EQ(c.at("phones").as_array().at(1).at("number").as_string(), "030-1234567");
  EXPECT_EQ(c.at("free_fields").at("lidnummer").as_string(), "A-17");

  auto got = api.call("readonly", "GET", "/api/v1/contacts/" + std::to_string(id));
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(got.json, created.json);
  EXPECT_EQ(api.call("readonly", "GET", "/api/v1/contacts/999999").status, 404);

  // The match key: any case, and the Unicode spelling of the domain, find the contact.
  const auto other = person(api, "Anders", {{"emails", json::array{"iemand@example.nl"}}});
  for (const std::string& q : {std::string("JAN.BERG@XN--BCHER-KVA.EXAMPLE"), std::string("jan.berg@bücher.example"),
                               std::string("Jan@Werk.NL")}) {
    auto r = api.call("readonly", "GET", "/api/v1/contacts?email=" + url_encode(q));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(ids_of(r), Ids{id}) << q;
  }
  pqxx::connection db(api.database_url());
  EXPECT_EQ(pqxx::work(db).exec_params1("SELECT count(*) FROM contact_emails WHERE email_match_key = $1", "jan.berg@xn--bcher-kva.example")[0].as<int>(), 1);
  EXPECT_EQ(api.call("readonly", "GET", "/api/v1/contacts?email=" + url_encode("geen adres")).status, 422);

  // q: name parts or e-mail, LIKE wildcards taken literally.
  EXPECT_EQ(ids_of(api.call("readonly", "GET", "/api/v1/contacts?q=" + url_encode("van der berg"))), Ids{id});
  EXPECT_EQ(ids_of(api.call("readonly", "GET", "/api/v1/contacts?q=iemand")), Ids{other});
  EXPECT_EQ(ids_of(api.call("readonly", "GET", "/api/v1/contacts?q=%25")), Ids{});
  EXPECT_EQ(ids_of(api.call("readonly", "GET", "/api/v1/contacts")), (Ids{id, other}));
  auto page = api.call("readonly", "GET", "/api/v1/contacts?limit=1");
  EXPECT_EQ(ids_of(page), Ids{id});
  EXPECT_EQ(ids_of(api.call("readonly", "GET", "/api/v1/contacts?limit=1&cursor=" + std::string(page.json.at("next_cursor").as_string()))),
            Ids{other});

  // PATCH: free fields merge (null removes), archiving hides from the list but not from GET.
  auto patched = api.call("staff", "PATCH", "/api/v1/contacts/" + std::to_string(id),
                          body({{"city", "Zeist"}, {"free_fields", json::object{{"lidnummer", nullptr}, {"kleur", "groen"}}}}));
  ASSERT_EQ(patched.status, 200) << patched.body;
  EXPECT_EQ(patched.json.at("city").as_string(), "Zeist");
  EXPECT_EQ(patched.json.at("free_fields"), (json::object{{"kleur", "groen"}, {"nieuwsbrief_sinds", "2021"}}));
  EXPECT_EQ(patched.json.at("postcode").as_string(), "3511AB");
  auto archived = api.call("staff", "PATCH", "/api/v1/contacts/" + std::to_string(id), body({{"archived", true}}));
  ASSERT_EQ(archived.status, 200) << archived.body;
  EXPECT_EQ(ids_of(api.call("readonly", "GET", "/api/v1/contacts")), Ids{other});
  EXPECT_EQ(ids_of(api.call("readonly", "GET", "/api/v1/contacts?archived=true")), Ids{id});
  EXPECT_EQ(api.call("readonly", "GET", "/api/v1/contacts/" + std::to_string(id)).json.at("archived").as_bool(), true);

  auto audit = api.call("admin", "GET", "/api/v1/audit?entity=contact&entity_id=" + std::to_string(id));
  ASSERT_EQ(audit.status, 200) << audit.body;
  const auto& rows = audit.json.at("items").as_array();
  ASSERT_EQ(rows.size(), 3u) << audit.body;
  EXPECT_EQ(rows[0].at("action").as_string(), "create");
  EXPECT_EQ(rows[0].at("actor_label").as_string(), "staff@example.nl");
  EXPECT_EQ(rows[1].at("action").as_string(), "update");
  EXPECT_EQ(rows[1].at("changes").at("city"), (json::object{{"old", "Utrecht"}, {"new", "Zeist"}}));
  EXPECT_FALSE(rows[1].at("changes").as_object().contains("updated_at"));
  EXPECT_EQ(rows[2].at("action").as_string(), "archive");
}

TEST(ContactApi, ValidationNamesTheField) {
  ApiFixture api;
  struct Row {
    std::string key;
    json::value value;  // null: remove the key
    const char* field;
  };
  const std::vector<Row> rows = {
      {"type", nullptr, "type"},
      {"type", "robot", "type"},
      {"last_name", nullptr, "last_name"},
      {"last_name", "Berg\r\nBcc: x@evil.example", "last_name"},
      {"first_name", "Ja\nn", "first_name"},
      {"infix", json::string(std::string(31, 'v')), "infix"},
      {"organisation_name", "Coöp", "organisation_name"},
      {"postcode", "ABCD 12", "postcode"},
      {"country", "Nederland", "country"},
      {"date_of_birth", "1980-02-30", "date_of_birth"},
      {"date_of_birth", "23-04-1980", "date_of_birth"},
      {"date_of_birth", "2999-01-01", "date_of_birth"},
      {"emails", json::array{"geen adres"}, "emails[0]"},
      {"emails", json::array{json::object{{"address", "a@b.nl"}}, json::object{{"address", "x@\r\ny.nl"}}}, "emails[1].address"},
      {"emails", json::array{"a@b.nl", "A@B.NL"}, "emails[1]"},
      {"emails", json::array{json::object{{"address", "a@b.nl"}, {"primary", true}}, json::object{{"address", "c@b.nl"}, {"primary", true}}},
       "emails"},
      {"emails", "a@b.nl", "emails"},
      {"phones", json::array{json::object{{"number", "bel me"}}}, "phones[0].number"},
      {"phones", json::array{json::object{{"number", "06 12345678"}, {"colour", "red"}}}, "phones[0].colour"},
      {"free_fields", json::object{{"Lid Nummer", "1"}}, "free_fields.Lid Nummer"},
      {"free_fields", json::object{{"notitie", std::string(1001, 'x')}}, "free_fields.notitie"},
      {"free_fields", json::object{{"notitie", "a\nb"}}, "free_fields.notitie"},
      {"free_fields", json::object{{"nummer", 12}}, "free_fields.nummer"},
      {"free_fields", "x", "free_fields"},
      {"colour", "blue", "colour"},
  };
  for (const auto& row : rows) {
    json::object input{{"type", "person"}, {"last_name", "Berg"}};
    if (row.value.is_null())
      input.erase(row.key);
    else
      input[row.key] = row.value;
    auto r = api.call("staff", "POST", "/api/v1/contacts", body(input));
    EXPECT_EQ(r.status, 422) << body(input) << " -> " << r.body;
    if (r.status == 422) {
      EXPECT_EQ(r.json.at("error").at("field").as_string(), row.field) << body(input) << " -> " << r.body;
    }
  }
  json::object many;
  for (int i = 0; i < 51; ++i) many["f" + std::to_string(i)] = "x";
  auto r = api.call("staff", "POST", "/api/v1/contacts", body({{"type", "person"}, {"last_name", "Berg"}, {"free_fields", many}}));
  EXPECT_EQ(r.status, 422);
  EXPECT_EQ(r.json.at("error").at("field").as_string(), "free_fields") << r.body;

  // Organisation rules, and what PATCH refuses.
  r = api.call("staff", "POST", "/api/v1/contacts", body({{"type", "organisation"}}));
  EXPECT_EQ(r.json.at("error").at("field").as_string(), "organisation_name") << r.body;
  r = api.call("staff", "POST", "/api/v1/contacts", body({{"type", "organisation"}, {"organisation_name", "Coöp"}, {"first_name", "Jan"}}));
  EXPECT_EQ(r.json.at("error").at("field").as_string(), "first_name") << r.body;
  const auto org = api.call("staff", "POST", "/api/v1/contacts",
                            body({{"type", "organisation"}, {"organisation_name", " Coöp Zon "}, {"country", "be"}, {"postcode", "B-1000"}}));
  ASSERT_EQ(org.status, 201) << org.body;
  EXPECT_EQ(org.json.at("display_name").as_string(), "Coöp Zon");
  EXPECT_EQ(org.json.at("country").as_string(), "BE");
  const std::string path = "/api/v1/contacts/" + std::to_string(id_of(org));
  for (const auto& [input, field] : std::vector<std::pair<json::object, const char*>>{
           {json::object{{"type", "person"}}, "type"},
           {json::object{{"emails", json::array{"a@b.nl"}}}, "emails"},
           {json::object{{"date_of_birth", "1990-01-01"}}, "date_of_birth"},
           {json::object{{"organisation_name", ""}}, "organisation_name"},
           {json::object{{"country", "NL"}}, "postcode"}}) {
    auto p = api.call("staff", "PATCH", path, body(input));
    EXPECT_EQ(p.status, 422) << body(input) << " -> " << p.body;
    if (p.status == 422) {
      EXPECT_EQ(p.json.at("error").at("field").as_string(), field) << p.body;
    }
  }
  EXPECT_EQ(api.call("staff", "PATCH", "/api/v1/contacts/424242", body({{"city", "X"}})).status, 404);
  EXPECT_EQ(api.call("staff", "POST", "/api/v1/contacts", "[1]").status, 400);

  pqxx::connection c(api.database_url());
  pqxx::work tx(c);
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM contacts")[0].as<int>(), 1) << "refused input changes nothing";
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM audit_log WHERE entity = 'contact'")[0].as<int>(), 1);
}

TEST(ContactApi, EmailListIsReplacedWithExactlyOnePrimary) {
  ApiFixture api;
  const auto id = person(api, "Berg", {{"emails", json::array{"eerste@example.nl", "tweede@example.nl"}}});
  const std::string path = "/api/v1/contacts/" + std::to_string(id) + "/emails";
  auto c = api.call("readonly", "GET", "/api/v1/contacts/" + std::to_string(id));
  EXPECT_EQ(c.json.at("primary_email").as_string(), "eerste@example.nl") << "the first is primary when none is marked";

  auto r = api.call("staff", "PUT", path,
                    body({{"emails", json::array{"nieuw@example.nl", json::object{{"address", "Tweede@Example.NL"}, {"primary", true}}}}}));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.at("primary_email").as_string(), "Tweede@example.nl");
  EXPECT_EQ(r.json.at("emails").as_array().size(), 2u);
  EXPECT_EQ(ids_of(api.call("readonly", "GET", "/api/v1/contacts?email=eerste@example.nl")), Ids{});
  EXPECT_EQ(ids_of(api.call("readonly", "GET", "/api/v1/contacts?email=tweede@example.nl")), Ids{id});

  r = api.call("staff", "PUT", path,
               body({{"emails", json::array{json::object{{"address", "a@b.nl"}, {"primary", true}}, json::object{{"address", "c@b.nl"}, {"primary", true}}}}}));
  EXPECT_EQ(r.status, 422);
  EXPECT_EQ(r.json.at("error").at("field").as_string(), "emails") << r.body;
  r = api.call("staff", "PUT", path, body(json::object{}));
  EXPECT_EQ(r.json.at("error").at("field").as_string(), "emails") << r.body;
  EXPECT_EQ(api.call("staff", "PUT", "/api/v1/contacts/424242/emails", body({{"emails", json::array{}}})).status, 404);

  r = api.call("staff", "PUT", path, body({{"emails", json::array{}}}));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(r.json.at("primary_email").is_null());
  auto audit = api.call("admin", "GET", "/api/v1/audit?entity=contact&entity_id=" + std::to_string(id));
  const auto& rows = audit.json.at("items").as_array();
  ASSERT_EQ(rows.size(), 3u) << audit.body;
  EXPECT_EQ(rows[1].at("action").as_string(), "emails_replace");
  EXPECT_TRUE(rows[1].at("changes").as_object().contains("emails")) << audit.body;
}

TEST(ContactApi, ReadonlyMayReadButNotWrite) {
  ApiFixture api;
  const auto id = person(api, "Berg");
  const auto g = group(api, {{"name", "Leuke mensen"}, {"kind", "static"}});
  const std::string c = "/api/v1/contacts/" + std::to_string(id), gp = "/api/v1/groups/" + std::to_string(g);
  const std::vector<std::tuple<std::string, std::string, std::string>> writes = {
      {"POST", "/api/v1/contacts", R"({"type": "person", "last_name": "X"})"},
      {"PATCH", c, R"({"city": "X"})"},
      {"PUT", c + "/emails", R"({"emails": []})"},
      {"POST", "/api/v1/groups", R"({"name": "X", "kind": "static"})"},
      {"PATCH", gp, R"({"description": "X"})"},
      {"PUT", gp + "/members", R"({"members": []})"},
  };
  for (const auto& [method, path, input] : writes) {
    EXPECT_EQ(api.call("readonly", method, path, input).status, 403) << method << " " << path;
    EXPECT_EQ(api.call("", method, path, input).status, 401) << method << " " << path;
  }
  for (const std::string& path : {std::string("/api/v1/contacts"), c, std::string("/api/v1/groups"), gp, gp + "/contacts"})
    EXPECT_EQ(api.call("readonly", "GET", path).status, 200) << path;
  EXPECT_EQ(api.call("admin", "PATCH", c, R"({"city": "Zeist"})").status, 200) << "admin may write too";
}

TEST(GroupApi, EveryKindResolvesIncludingNestedComposites) {
  ApiFixture api;
  // Seed: "alle leuke mensen" (static), "leden coöperatie" (dynamic), and who is both (composite).
  const auto a = person(api, "A", {{"city", "Utrecht"}, {"postcode", "3511AB"}, {"date_of_birth", "1950-01-01"}});
  const auto b = person(api, "B", {{"city", "Utrecht"}, {"postcode", "3600"}});
  const auto c = person(api, "C", {{"city", "Zeist"}, {"postcode", "3700AA"}, {"date_of_birth", "2015-06-01"}});
  const auto d = person(api, "D", {{"city", "Amersfoort"}});
  auto org = api.call("staff", "POST", "/api/v1/contacts", body({{"type", "organisation"}, {"organisation_name", "Coöp"}, {"city", "utrecht"}}));
  ASSERT_EQ(org.status, 201) << org.body;
  const auto o = id_of(org);

  const auto nice = group(api, {{"name", " Alle leuke mensen "}, {"kind", "static"}, {"members", json::array{a, c}},
                                {"visible_on_portal", false}});
  auto nice_json = api.call("readonly", "GET", "/api/v1/groups/" + std::to_string(nice));
  EXPECT_EQ(nice_json.json.at("name").as_string(), "Alle leuke mensen");
  EXPECT_EQ(nice_json.json.at("member_count").as_int64(), 2);
  EXPECT_EQ(resolve(api, nice), (Ids{a, c}));

  auto put = api.call("staff", "PUT", "/api/v1/groups/" + std::to_string(nice) + "/members", body({{"members", json::array{c, 999999}}}));
  EXPECT_EQ(put.status, 422);
  EXPECT_EQ(put.json.at("error").at("field").as_string(), "members[1]") << put.body;
  put = api.call("staff", "PUT", "/api/v1/groups/" + std::to_string(nice) + "/members", body({{"members", json::array{c, a, b, a}}}));
  ASSERT_EQ(put.status, 200) << put.body;
  EXPECT_EQ(put.json.at("member_count").as_int64(), 3);
  EXPECT_EQ(resolve(api, nice, 1), (Ids{a, b, c})) << "paginated one by one";

  const auto utrecht = group(api, dynamic("Utrecht", {condition("city", "eq", {"UTRECHT"})}));
  EXPECT_EQ(resolve(api, utrecht), (Ids{a, b, o}));
  const auto persons_3500 = group(api, dynamic("Personen 3500-3699", {condition("postcode", "between", {"3500", "3699zz"}),
                                                                      condition("contact_type", "eq", {"person"})}));
  EXPECT_EQ(resolve(api, persons_3500), (Ids{a, b}));
  const auto seniors = group(api, dynamic("65+", {condition("age", "gte", {65})}));
  EXPECT_EQ(resolve(api, seniors), (Ids{a}));
  const auto kids = group(api, dynamic("Jeugd", {condition("age", "between", {"0", "17"})}));
  EXPECT_EQ(resolve(api, kids), (Ids{c}));
  const auto nice_or_old = group(api, dynamic("Leuk of oud", {condition("group", "member_of", {nice}), condition("age", "gte", {65})}, "any"));
  EXPECT_EQ(resolve(api, nice_or_old), (Ids{a, b, c}));

  const auto both = group(api, composite("Leuk en Utrecht", "intersection", {nice, utrecht}));
  EXPECT_EQ(resolve(api, both), (Ids{a, b}));
  const auto either = group(api, composite("Leuk of Utrecht", "union", {nice, utrecht}));
  EXPECT_EQ(resolve(api, either), (Ids{a, b, c, o}));
  // composite of composite of dynamic
  const auto amersfoort = group(api, dynamic("Amersfoort", {condition("city", "eq", {"Amersfoort"})}));
  const auto inner = group(api, composite("Binnen", "union", {amersfoort, seniors}));
  const auto outer = group(api, composite("Buiten", "union", {inner, kids}));
  EXPECT_EQ(resolve(api, outer), (Ids{a, c, d}));
  const auto top = group(api, composite("Top", "intersection", {outer, either}));
  EXPECT_EQ(resolve(api, top), (Ids{a, c}));

  // Contacts list by group; archived contacts leave every group.
  EXPECT_EQ(ids_of(api.call("readonly", "GET", "/api/v1/contacts?group=" + std::to_string(top))), (Ids{a, c}));
  EXPECT_EQ(api.call("readonly", "GET", "/api/v1/contacts?group=999999").status, 422);
  ASSERT_EQ(api.call("staff", "PATCH", "/api/v1/contacts/" + std::to_string(a), body({{"archived", true}})).status, 200);
  EXPECT_EQ(resolve(api, top), (Ids{c}));
  EXPECT_EQ(resolve(api, nice), (Ids{b, c}));

  // PATCH a composite's members and operation.
  auto p = api.call("staff", "PATCH", "/api/v1/groups/" + std::to_string(both), body({{"operation", "union"}, {"member_groups", json::array{amersfoort, kids}}}));
  ASSERT_EQ(p.status, 200) << p.body;
  EXPECT_EQ(p.json.at("member_groups"), (json::array{kids, amersfoort}));
  EXPECT_EQ(resolve(api, both), (Ids{c, d}));

  auto list = api.call("readonly", "GET", "/api/v1/groups?kind=composite");
  EXPECT_EQ(ids_of(list), (Ids{both, either, inner, outer, top}));
  EXPECT_EQ(ids_of(api.call("readonly", "GET", "/api/v1/groups?q=LEUK%20")), (Ids{nice, nice_or_old, both, either}));
  EXPECT_EQ(ids_of(api.call("readonly", "GET", "/api/v1/groups?q=%25")), Ids{}) << "wildcards are literal";
  EXPECT_EQ(api.call("readonly", "GET", "/api/v1/groups/999999/contacts").status, 404);

  auto audit = api.call("admin", "GET", "/api/v1/audit?entity=group&entity_id=" + std::to_string(nice));
  const auto& rows = audit.json.at("items").as_array();
  ASSERT_EQ(rows.size(), 2u) << audit.body;
  EXPECT_EQ(rows[1].at("action").as_string(), "members_replace");
  EXPECT_EQ(rows[1].at("changes").at("members").at("new").as_string(), "[" + std::to_string(a) + "," + std::to_string(b) + "," +
                                                                          std::to_string(c) + "]");
}

TEST(GroupApi, CyclesAreRefusedNamingThePath) {
  ApiFixture api;
  const auto base = group(api, {{"name", "Basis"}, {"kind", "static"}});
  const auto a = group(api, composite("A", "union", {base}));
  const auto b = group(api, composite("B", "union", {a}));
  const auto c = group(api, composite("C", "intersection", {b}));
  auto expect_cycle = [&](std::int64_t id, const json::object& change, const char* field, const std::string& path) {
    auto r = api.call("staff", "PATCH", "/api/v1/groups/" + std::to_string(id), body(change));
    EXPECT_EQ(r.status, 422) << r.body;
    if (r.status != 422) return;
    EXPECT_EQ(r.json.at("error").at("code").as_string(), "group_cycle") << r.body;
    EXPECT_EQ(r.json.at("error").at("field").as_string(), field) << r.body;
    EXPECT_NE(std::string(r.json.at("error").at("message").as_string()).find(path), std::string::npos) << r.body;
  };
  auto tag = [](const char* name, std::int64_t id) { return std::string("'") + name + "' (#" + std::to_string(id) + ")"; };
  // Direct: a group in itself.
  expect_cycle(a, {{"member_groups", json::array{base, a}}}, "member_groups", tag("A", a) + " -> " + tag("A", a));
  // Indirect: A -> C -> B -> A.
  expect_cycle(a, {{"member_groups", json::array{c}}}, "member_groups", tag("A", a) + " -> " + tag("C", c) + " -> " + tag("B", b) + " -> " + tag("A", a));
  auto put = api.call("staff", "PUT", "/api/v1/groups/" + std::to_string(a) + "/members", body({{"members", json::array{c}}}));
  EXPECT_EQ(put.status, 422);
  EXPECT_EQ(put.json.at("error").at("code").as_string(), "group_cycle") << put.body;

  // Through a dynamic member_of condition: D = member_of C; then C gets D as a member.
  const auto d = group(api, dynamic("D", {condition("group", "member_of", {c})}));
  expect_cycle(c, {{"member_groups", json::array{b, d}}}, "member_groups", tag("C", c) + " -> " + tag("D", d) + " -> " + tag("C", c));
  // And from the other side: E in composite F, then E's filter refers to F.
  const auto e = group(api, dynamic("E", {condition("city", "eq", {"Zeist"})}));
  const auto f = group(api, composite("F", "union", {e}));
  expect_cycle(e, {{"filter", json::object{{"conditions", json::array{condition("group", "member_of", {f})}}}}}, "filter",
               tag("E", e) + " -> " + tag("F", f) + " -> " + tag("E", e));

  pqxx::connection db(api.database_url());
  pqxx::work tx(db);
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM group_composite_members")[0].as<int>(), 4) << "refused changes changed nothing";
  EXPECT_EQ(resolve(api, a), Ids{});
}

TEST(GroupApi, ValidationKindAndPortalRules) {
  ApiFixture api;
  const auto s = group(api, {{"name", "Nieuwsbrief"}, {"kind", "static"}, {"visible_on_portal", true}, {"changeable_on_portal", true},
                             {"description", "Digitale nieuwsbrief\nelke maand"}});
  const auto d = group(api, dynamic("Zeist", {condition("city", "eq", {"Zeist"})}));
  struct Row {
    json::object input;
    int status;
    const char* field;
    const char* code;
  };
  const std::vector<Row> rows = {
      {{{"kind", "static"}}, 422, "name", "required"},
      {{{"name", "  "}, {"kind", "static"}}, 422, "name", "required"},
      {{{"name", "X\r\nY"}, {"kind", "static"}}, 422, "name", "invalid"},
      {{{"name", "nieuwsbrief"}, {"kind", "static"}}, 409, "name", "name_taken"},
      {{{"name", "X"}}, 422, "kind", "required"},
      {{{"name", "X"}, {"kind", "smart"}}, 422, "kind", "invalid"},
      {{{"name", "X"}, {"kind", "dynamic"}}, 422, "filter", "required"},
      {{{"name", "X"}, {"kind", "composite"}}, 422, "operation", "required"},
      {{{"name", "X"}, {"kind", "composite"}, {"operation", "difference"}}, 422, "operation", "invalid"},
      {{{"name", "X"}, {"kind", "static"}, {"operation", "union"}}, 422, "operation", "invalid"},
      {{{"name", "X"}, {"kind", "composite"}, {"operation", "union"}, {"member_groups", json::array{s, 999999}}}, 422, "member_groups[1]", "invalid"},
      {{{"name", "X"}, {"kind", "composite"}, {"operation", "union"}, {"members", json::array{1}}}, 422, "members", "invalid"},
      {{{"name", "X"}, {"kind", "static"}, {"members", json::array{999999}}}, 422, "members[0]", "invalid"},
      {{{"name", "X"}, {"kind", "static"}, {"changeable_on_portal", true}}, 422, "changeable_on_portal", "invalid"},
      {{{"name", "X"}, {"kind", "static"}, {"filter", json::object{{"conditions", json::array{condition("city", "eq", {"Zeist"})}}}}}, 422, "filter", "invalid"},
      {dynamic("X", {condition("city", "is", {"Zeist"})}), 422, "filter.conditions[0].op", "invalid"},
      {dynamic("X", {condition("city", "eq", {"Zeist"}), condition("shoe_size", "eq", {"44"})}), 422, "filter.conditions[1].field", "invalid"},
      {dynamic("X", {condition("postcode", "between", {"3700", "3500"})}), 422, "filter.conditions[0].values", "invalid"},
      {dynamic("X", {condition("age", "gte", {"oud"})}), 422, "filter.conditions[0].values", "invalid"},
      {dynamic("X", {condition("group", "member_of", {999999})}), 422, "filter.conditions[0].values", "invalid"},
      {dynamic("X", {condition("product", "has", {999999})}), 422, "filter.conditions[0].values", "invalid"},
      {dynamic("X", {condition("city", "eq", {"Zei\nst"})}), 422, "filter.conditions[0].values[0]", "invalid"},
      {dynamic("X", {}), 422, "filter.conditions", "invalid"},
      {dynamic("X", {condition("city", "eq", {"Zeist"})}, "some"), 422, "filter.match", "invalid"},
  };
  for (const auto& row : rows) {
    auto r = api.call("staff", "POST", "/api/v1/groups", body(row.input));
    EXPECT_EQ(r.status, row.status) << body(row.input) << " -> " << r.body;
    if (r.status == row.status) {
      EXPECT_EQ(r.json.at("error").at("field").as_string(), row.field) << body(row.input) << " -> " << r.body;
      EXPECT_EQ(r.json.at("error").at("code").as_string(), row.code) << body(row.input) << " -> " << r.body;
    }
  }
  // Portal flags: changeable only for a static group that is visible.
  auto r = api.call("staff", "PATCH", "/api/v1/groups/" + std::to_string(d), body({{"visible_on_portal", true}, {"changeable_on_portal", true}}));
  EXPECT_EQ(r.json.at("error").at("field").as_string(), "changeable_on_portal") << r.body;
  r = api.call("staff", "PATCH", "/api/v1/groups/" + std::to_string(s), body({{"visible_on_portal", false}}));
  EXPECT_EQ(r.json.at("error").at("field").as_string(), "changeable_on_portal") << r.body;
  // Kind is fixed; members of a dynamic group come from its filter.
  r = api.call("staff", "PATCH", "/api/v1/groups/" + std::to_string(s), body({{"kind", "dynamic"}}));
  EXPECT_EQ(r.status, 422);
  EXPECT_EQ(r.json.at("error").at("field").as_string(), "kind") << r.body;
  EXPECT_EQ(api.call("staff", "PATCH", "/api/v1/groups/" + std::to_string(s), body({{"kind", "static"}, {"description", "Maandelijks"}})).status, 200);
  r = api.call("staff", "PUT", "/api/v1/groups/" + std::to_string(d) + "/members", body({{"members", json::array{}}}));
  EXPECT_EQ(r.json.at("error").at("field").as_string(), "members") << r.body;
  r = api.call("staff", "PATCH", "/api/v1/groups/" + std::to_string(d), body({{"name", "NIEUWSBRIEF"}}));
  EXPECT_EQ(r.status, 409) << r.body;
  // A filter change is stored normalised and audited.
  r = api.call("staff", "PATCH", "/api/v1/groups/" + std::to_string(d),
               body({{"filter", json::object{{"conditions", json::array{condition("postcode", "between", {"3700 aa", "3799"})}}}}}));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.at("filter").at("conditions").at(0).at("values"), (json::array{"3700AA", "3799"}));
  EXPECT_EQ(r.json.at("filter").at("match").as_string(), "all");
  auto audit = api.call("admin", "GET", "/api/v1/audit?entity=group&entity_id=" + std::to_string(d));
  const auto& rows_audit = audit.json.at("items").as_array();
  ASSERT_EQ(rows_audit.size(), 2u) << audit.body;
  EXPECT_TRUE(rows_audit[1].at("changes").as_object().contains("filter")) << audit.body;

  pqxx::connection db(api.database_url());
  EXPECT_EQ(pqxx::work(db).exec1("SELECT count(*) FROM contact_groups")[0].as<int>(), 2) << "refused input changes nothing";
}

}  // namespace
}  // namespace mailgate
