// /api/v1 administrations, templates, products and orders against the real daemon: validation
// tables (KvK, VAT, IBAN, ...), sender mailbox default and checks, merge-field refusal, the
// product duration / price-per rules, order life cycle, permissions and the audit trail.
#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "tests/support/api_client.hpp"

namespace mailgate {
namespace {

namespace json = boost::json;
using test::ApiFixture;
using test::ApiResult;

std::string body(const json::object& o) { return json::serialize(o); }

// rules/product.hpp names: a one-off product is priced once ("none"); one that runs until
// cancelled is priced per period.
constexpr const char* kOneOff = "none";
constexpr const char* kOnce = "none";
constexpr const char* kUntilCancelled = "until_cancelled";
constexpr const char* kPerMonth = "month";

std::int64_t created(const ApiResult& r) {
  EXPECT_EQ(r.status, 201) << r.body;
  return r.status == 201 ? r.json.at("id").as_int64() : 0;
}

std::string error_field(const ApiResult& r) {
  const auto* e = r.json.is_object() ? r.json.as_object().if_contains("error") : nullptr;
  return e && e->as_object().contains("field") ? std::string(e->at("field").as_string()) : "";
}
std::string error_code(const ApiResult& r) {
  const auto* e = r.json.is_object() ? r.json.as_object().if_contains("error") : nullptr;
  return e ? std::string(e->at("code").as_string()) : "";
}
std::string error_message(const ApiResult& r) {
  const auto* e = r.json.is_object() ? r.json.as_object().if_contains("error") : nullptr;
  return e ? std::string(e->at("message").as_string()) : "";
}

std::int64_t sql_id(const std::string& url, const std::string& sql) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  auto id = tx.exec1(sql)[0].as<std::int64_t>();
  tx.commit();
  return id;
}

void sql(const std::string& url, const std::string& statement) {
  pqxx::connection c(url);
  pqxx::work tx(c);
  tx.exec(statement);
  tx.commit();
}

std::int64_t mailbox(const std::string& url, const std::string& address, bool primary, bool active = true) {
  return sql_id(url, "INSERT INTO mailboxes (display_name, address, is_primary, active) VALUES ('" + address + "', '" + address +
                         "', " + (primary ? "true" : "false") + ", " + (active ? "true" : "false") + ") RETURNING id");
}

std::int64_t contact(const std::string& url) { return sql_id(url, "INSERT INTO contacts (type, last_name) VALUES ('person', 'Jansen') RETURNING id"); }

std::int64_t administration(ApiFixture& api, const std::string& name = "Zonnecoöperatie") {
  return created(api.call("admin", "POST", "/api/v1/administrations", body({{"name", name}})));
}

json::object product_body(std::int64_t administration_id, const std::string& name, const std::string& code, const std::string& duration,
                          const std::string& price_per) {
  return {{"administration_id", administration_id}, {"name", name}, {"code", code}, {"duration", duration}, {"price_per", price_per},
          {"price_cents", 2500}, {"vat_percentage", 21}};
}

// --- administrations ---------------------------------------------------------------------------

TEST(AdministrationApi, CreateNormalisesFieldsAndAudits) {
  ApiFixture api;
  auto r = api.call("admin", "POST", "/api/v1/administrations",
                    body({{"name", "  Zon Coöperatie U.A. "}, {"address", " Dorpsstraat 1 "}, {"postal_code", "1234ab"},
                          {"city", "Utrecht"}, {"kvk_number", "1234 5678"}, {"vat_number", "nl 1234.56.782.b01"},
                          {"iban", "nl91 abna 0417 1643 00"}, {"email", " Info@Zon.NL "}, {"website", "www.Zon.nl/over"},
                          {"bcc_self", true}}));
  ASSERT_EQ(r.status, 201) << r.body;
  const auto& a = r.json.as_object();
  EXPECT_EQ(a.at("name").as_string(), "Zon Coöperatie U.A.");
  EXPECT_EQ(a.at("address").as_string(), "Dorpsstraat 1");
  EXPECT_EQ(a.at("postal_code").as_string(), "1234AB");
  EXPECT_EQ(a.at("country").as_string(), "NL");
  EXPECT_EQ(a.at("kvk_number").as_string(), "12345678");
  EXPECT_EQ(a.at("vat_number").as_string(), "NL123456782B01");
  EXPECT_EQ(a.at("iban").as_string(), "NL91ABNA0417164300");
  EXPECT_EQ(a.at("email").as_string(), "Info@zon.nl");
  EXPECT_EQ(a.at("website").as_string(), "https://www.zon.nl/over");
  EXPECT_TRUE(a.at("bcc_self").as_bool());
  EXPECT_TRUE(a.at("active").as_bool());
  EXPECT_TRUE(a.at("sender_mailbox_id").is_null());
  for (const char* slot : {"invoice_transfer_template_id", "invoice_direct_debit_template_id", "reminder_template_id", "dunning_template_id"})
    EXPECT_TRUE(a.at(slot).is_null()) << slot;

  const auto id = std::to_string(a.at("id").as_int64());
  auto patched = api.call("admin", "PATCH", "/api/v1/administrations/" + id, body({{"city", "Amersfoort"}, {"iban", nullptr}}));
  ASSERT_EQ(patched.status, 200) << patched.body;
  EXPECT_EQ(patched.json.at("iban").as_string(), "");
  EXPECT_EQ(patched.json.at("kvk_number").as_string(), "12345678") << "fields not given stay as they were";

  auto audit = api.call("admin", "GET", "/api/v1/audit?entity=administration&entity_id=" + id);
  ASSERT_EQ(audit.status, 200);
  const auto& items = audit.json.at("items").as_array();
  ASSERT_EQ(items.size(), 2u) << audit.body;
  EXPECT_EQ(items[0].at("action").as_string(), "create");
  EXPECT_EQ(items[0].at("changes").at("iban").at("new").as_string(), "NL91ABNA0417164300");
  EXPECT_EQ(items[1].at("action").as_string(), "update");
  const auto& changes = items[1].at("changes").as_object();
  EXPECT_EQ(changes.size(), 2u) << json::serialize(changes) << ": only the changed fields";
  EXPECT_EQ(changes.at("city").at("old").as_string(), "Utrecht");
  EXPECT_EQ(changes.at("city").at("new").as_string(), "Amersfoort");

  auto again = api.call("admin", "POST", "/api/v1/administrations", body({{"name", "ZON coöperatie u.a."}}));
  EXPECT_EQ(again.status, 409) << "names are unique, case-insensitively";
  EXPECT_EQ(error_field(again), "name");
  auto missing = api.call("admin", "POST", "/api/v1/administrations", body({{"city", "Utrecht"}}));
  EXPECT_EQ(missing.status, 422);
  EXPECT_EQ(error_field(missing), "name");
}

struct FieldRow {
  const char* field;
  json::value value;
  const char* stored;  // nullptr: refused with 422 naming the field
  const char* code = "invalid";
};

TEST(AdministrationApi, FieldValidationTable) {
  ApiFixture api;
  const auto id = std::to_string(administration(api));
  const std::vector<FieldRow> rows = {
      // KvK number: 8 digits, no check digit.
      {"kvk_number", "12345678", "12345678"},
      {"kvk_number", " 0123 4567 ", "01234567"},
      {"kvk_number", "1234.5678", "12345678"},
      {"kvk_number", "", ""},
      {"kvk_number", "1234567", nullptr},
      {"kvk_number", "123456789", nullptr},
      {"kvk_number", "1234567a", nullptr},
      {"kvk_number", 12345678, nullptr},
      // VAT: NL + 9 digits + B + 2 digits; 11-check on the 9 digits or mod 97 over the whole.
      {"vat_number", "NL123456782B01", "NL123456782B01"},
      {"vat_number", "NL004495445B01", "NL004495445B01"},
      {"vat_number", "nl0044.95.445.b02", "NL004495445B02"},
      {"vat_number", "NL100000024B01", "NL100000024B01"},  // passes only mod 97 (sole trader numbers since 2020)
      {"vat_number", "NL123456789B01", nullptr, "invalid_checksum"},
      {"vat_number", "NL123456782B00", nullptr},
      {"vat_number", "NL12345678B01", nullptr},
      {"vat_number", "NL123456782X01", nullptr},
      {"vat_number", "BE0123456749", nullptr},
      {"vat_number", "123456782B01", nullptr},
      // IBAN: mod-97, stored upper-case without spaces; Dutch length and shape.
      {"iban", "NL91ABNA0417164300", "NL91ABNA0417164300"},
      {"iban", " nl02 abna 0123 4567 89 ", "NL02ABNA0123456789"},
      {"iban", "BE68 5390 0754 7034", "BE68539007547034"},
      {"iban", "DE89370400440532013000", "DE89370400440532013000"},
      {"iban", "NL91ABNA0417164301", nullptr, "invalid_checksum"},
      {"iban", "NL91ABNA041716430", nullptr},
      {"iban", "NL91ABNA04171643001", nullptr},
      {"iban", "NL91 ABNA-0417-1643-00", nullptr},
      {"iban", "NLXXABNA0417164300", nullptr},
      {"iban", "DE8937040044053201300", nullptr},
      // Address and contact fields.
      {"postal_code", "3511 ax", "3511AX"},
      {"postal_code", "0123 AB", nullptr},
      {"postal_code", "3511", nullptr},
      {"website", "https://Zon.NL", "https://zon.nl"},
      {"website", "ftp://zon.nl", nullptr},
      {"website", "http://zon nl", nullptr},
      {"email", "Penningmeester@Zon.nl", "Penningmeester@zon.nl"},
      {"email", "geen-adres", nullptr, "invalid_address"},
      {"name", "Zon\r\nBcc: x@example.nl", nullptr},
      {"name", "", nullptr, "required"},
      {"city", "Utrecht\n", "Utrecht"},  // trimmed before the line-break check
      {"city", "Ut\nrecht", nullptr},
      {"country", "be", "BE"},
      {"country", "NLD", nullptr},
      {"country", "1A", nullptr},
  };
  for (const auto& row : rows) {
    auto r = api.call("admin", "PATCH", "/api/v1/administrations/" + id, body({{row.field, row.value}}));
    const std::string what = std::string(row.field) + " = " + json::serialize(row.value);
    if (row.stored) {
      ASSERT_EQ(r.status, 200) << what << ": " << r.body;
      EXPECT_EQ(r.json.at(row.field).as_string(), row.stored) << what;
    } else {
      EXPECT_EQ(r.status, 422) << what << ": " << r.body;
      EXPECT_EQ(error_field(r), row.field) << what;
      EXPECT_EQ(error_code(r), row.code) << what << ": " << r.body;
    }
  }
}

TEST(AdministrationApi, PostcodeIsCheckedAgainstTheCountryItEndsUpWith) {
  ApiFixture api;
  const auto id = std::to_string(administration(api));
  auto be = api.call("admin", "PATCH", "/api/v1/administrations/" + id, body({{"country", "be"}, {"postal_code", "1000"}}));
  ASSERT_EQ(be.status, 200) << be.body;
  EXPECT_EQ(be.json.at("country").as_string(), "BE");
  EXPECT_EQ(be.json.at("postal_code").as_string(), "1000");
  auto nl = api.call("admin", "PATCH", "/api/v1/administrations/" + id, body({{"country", "NL"}}));
  EXPECT_EQ(nl.status, 422) << "1000 is no Dutch postcode";
  EXPECT_EQ(error_field(nl), "postal_code");
}

TEST(AdministrationApi, SenderMailboxDefaultsToThePrimaryAndMustBeActive) {
  ApiFixture api;
  const auto url = api.database_url();
  const auto primary = mailbox(url, "info@zon.nl", true);
  const auto invoices = mailbox(url, "nota@zon.nl", false);
  const auto old = mailbox(url, "oud@zon.nl", false, false);

  auto a = api.call("admin", "POST", "/api/v1/administrations", body({{"name", "Zon"}}));
  ASSERT_EQ(a.status, 201) << a.body;
  const auto id = std::to_string(a.json.at("id").as_int64());
  EXPECT_TRUE(a.json.at("sender_mailbox_id").is_null());
  EXPECT_EQ(a.json.at("effective_sender_mailbox_id").as_int64(), primary) << "none chosen: the primary mailbox";

  auto chosen = api.call("admin", "PATCH", "/api/v1/administrations/" + id, body({{"sender_mailbox_id", invoices}}));
  ASSERT_EQ(chosen.status, 200) << chosen.body;
  EXPECT_EQ(chosen.json.at("sender_mailbox_id").as_int64(), invoices);
  EXPECT_EQ(chosen.json.at("effective_sender_mailbox_id").as_int64(), invoices);

  auto inactive = api.call("admin", "PATCH", "/api/v1/administrations/" + id, body({{"sender_mailbox_id", old}}));
  EXPECT_EQ(inactive.status, 422) << inactive.body;
  EXPECT_EQ(error_field(inactive), "sender_mailbox_id");
  EXPECT_NE(error_message(inactive).find("deactivated"), std::string::npos) << inactive.body;
  auto unknown = api.call("admin", "PATCH", "/api/v1/administrations/" + id, body({{"sender_mailbox_id", 999999}}));
  EXPECT_EQ(unknown.status, 422);
  EXPECT_EQ(error_field(unknown), "sender_mailbox_id");
  auto on_create = api.call("admin", "POST", "/api/v1/administrations", body({{"name", "Wind"}, {"sender_mailbox_id", old}}));
  EXPECT_EQ(on_create.status, 422);
  EXPECT_EQ(error_field(on_create), "sender_mailbox_id");

  // The chosen mailbox is deactivated later: the administration falls back to the primary one,
  // and other edits still work.
  sql(url, "UPDATE mailboxes SET active = false WHERE id = " + std::to_string(invoices));
  auto later = api.call("admin", "PATCH", "/api/v1/administrations/" + id, body({{"city", "Zeist"}}));
  ASSERT_EQ(later.status, 200) << later.body;
  EXPECT_EQ(later.json.at("sender_mailbox_id").as_int64(), invoices);
  EXPECT_EQ(later.json.at("effective_sender_mailbox_id").as_int64(), primary);

  auto cleared = api.call("admin", "PATCH", "/api/v1/administrations/" + id, body({{"sender_mailbox_id", nullptr}}));
  ASSERT_EQ(cleared.status, 200) << cleared.body;
  EXPECT_TRUE(cleared.json.at("sender_mailbox_id").is_null());
  EXPECT_EQ(cleared.json.at("effective_sender_mailbox_id").as_int64(), primary);
}

TEST(AdministrationApi, InvoiceTemplatesMustBeActiveTemplatesAndStayInUse) {
  ApiFixture api;
  const auto tpl = created(api.call("admin", "POST", "/api/v1/templates",
                                    body({{"name", "Eerste nota overboeking"}, {"subject", "Nota {nota_nummer} van {administratie_naam}"},
                                          {"text_body", "Beste {contact_voornaam},\n\nBijgaand uw nota."}})));
  const auto other = created(api.call("admin", "POST", "/api/v1/templates",
                                      body({{"name", "Herinnering"}, {"subject", "Herinnering"}, {"text_body", "Betaal a.u.b."}})));
  auto a = api.call("admin", "POST", "/api/v1/administrations",
                    body({{"name", "Zon"}, {"invoice_transfer_template_id", tpl}, {"reminder_template_id", other}}));
  ASSERT_EQ(a.status, 201) << a.body;
  EXPECT_EQ(a.json.at("invoice_transfer_template_id").as_int64(), tpl);
  const auto id = std::to_string(a.json.at("id").as_int64());

  auto unknown = api.call("admin", "PATCH", "/api/v1/administrations/" + id, body({{"dunning_template_id", 999999}}));
  EXPECT_EQ(unknown.status, 422);
  EXPECT_EQ(error_field(unknown), "dunning_template_id");

  auto in_use = api.call("admin", "PATCH", "/api/v1/templates/" + std::to_string(tpl), body({{"active", false}}));
  EXPECT_EQ(in_use.status, 409) << in_use.body;
  EXPECT_EQ(error_code(in_use), "in_use");
  EXPECT_NE(error_message(in_use).find("Zon"), std::string::npos) << in_use.body;

  ASSERT_EQ(api.call("admin", "PATCH", "/api/v1/administrations/" + id, body({{"invoice_transfer_template_id", nullptr}})).status, 200);
  auto archived = api.call("admin", "PATCH", "/api/v1/templates/" + std::to_string(tpl), body({{"active", false}}));
  ASSERT_EQ(archived.status, 200) << archived.body;
  auto refused = api.call("admin", "PATCH", "/api/v1/administrations/" + id, body({{"invoice_direct_debit_template_id", tpl}}));
  EXPECT_EQ(refused.status, 422) << "an archived template cannot be chosen";
  EXPECT_EQ(error_field(refused), "invoice_direct_debit_template_id");
}

// --- templates ---------------------------------------------------------------------------------

TEST(TemplateApi, MergeFieldsAreCheckedWhenSaved) {
  ApiFixture api;
  auto ok = api.call("admin", "POST", "/api/v1/templates",
                     body({{"name", "Dongel"}, {"subject", "Uw dongel, {contact_voornaam}"},
                           {"html_body", "<style>p {{ margin: 0 }}</style><p>MAC {contact_dongel_mac_nummer}, {administratie_naam}</p>"},
                           {"text_body", "Beste {contact_naam},\nstart {contact_dongel_datum_start}\n"}}));
  ASSERT_EQ(ok.status, 201) << ok.body;
  EXPECT_EQ(ok.json.at("text_body").as_string(), "Beste {contact_naam},\nstart {contact_dongel_datum_start}\n") << "bodies kept as written";
  const auto& fields = ok.json.at("merge_fields").as_array();
  std::vector<std::string> names;
  for (const auto& f : fields) names.emplace_back(f.as_string());
  EXPECT_EQ(names, (std::vector<std::string>{"contact_voornaam", "contact_dongel_mac_nummer", "administratie_naam", "contact_naam",
                                             "contact_dongel_datum_start"}));
  const auto id = std::to_string(ok.json.at("id").as_int64());

  struct Row {
    const char* field;
    const char* value;
    const char* code;
    const char* in_message;
  };
  for (const Row& row : {Row{"html_body", "<p>Beste {contact_vornaam}</p>", "unknown_merge_field", "{contact_vornaam} at line 1, column 10"},
                         Row{"text_body", "Hallo\n{klant_naam}", "unknown_merge_field", "{klant_naam} at line 2, column 1"},
                         Row{"subject", "Nota {nota_nr}", "unknown_merge_field", "{nota_nr}"},
                         Row{"html_body", "<style>p { margin: 0 }</style>", "template_syntax", "'{{'"},
                         Row{"text_body", "Groet }", "template_syntax", "lone '}'"}}) {
    auto r = api.call("admin", "PATCH", "/api/v1/templates/" + id, body({{row.field, row.value}}));
    EXPECT_EQ(r.status, 422) << row.value << ": " << r.body;
    EXPECT_EQ(error_field(r), row.field) << row.value;
    EXPECT_EQ(error_code(r), row.code) << row.value;
    EXPECT_NE(error_message(r).find(row.in_message), std::string::npos) << r.body;
    json::object bad{{"name", "Fout"}, {"subject", "Onderwerp"}, {"text_body", "tekst"}};
    bad[row.field] = row.value;
    auto created_bad = api.call("admin", "POST", "/api/v1/templates", body(bad));
    EXPECT_EQ(created_bad.status, 422) << row.value << ": " << created_bad.body;
    EXPECT_EQ(error_field(created_bad), row.field);
  }
  auto unchanged = api.call("admin", "GET", "/api/v1/templates/" + id);
  EXPECT_EQ(unchanged.json.at("subject").as_string(), "Uw dongel, {contact_voornaam}");

  auto header = api.call("admin", "PATCH", "/api/v1/templates/" + id, body({{"subject", "Nota\r\nBcc: x@example.nl"}}));
  EXPECT_EQ(header.status, 422);
  EXPECT_EQ(error_field(header), "subject");
  auto empty = api.call("admin", "PATCH", "/api/v1/templates/" + id, body({{"html_body", ""}, {"text_body", nullptr}}));
  EXPECT_EQ(empty.status, 422) << "a template needs a body";
  auto taken = api.call("admin", "POST", "/api/v1/templates", body({{"name", "dongel"}, {"subject", "x"}, {"text_body", "y"}}));
  EXPECT_EQ(taken.status, 409);
  EXPECT_EQ(error_field(taken), "name");

  auto list = api.call("readonly", "GET", "/api/v1/templates");
  ASSERT_EQ(list.status, 200) << list.body;
  ASSERT_EQ(list.json.at("items").as_array().size(), 1u);
  EXPECT_FALSE(list.json.at("items").at(0).as_object().contains("html_body")) << "lists leave the bodies out";
  EXPECT_EQ(list.json.at("items").at(0).at("merge_fields").as_array().size(), 5u);
}

// --- products ----------------------------------------------------------------------------------

struct ProductRow {
  const char* duration;
  const char* price_per;
  bool accepted;
};

TEST(ProductApi, PricePerMustFitTheDuration) {
  ApiFixture api;
  const auto admin_id = administration(api);
  int n = 0;
  const std::vector<ProductRow> rows = {
      {"none", "none", true},          {"none", "month", false},         {"none", "year", false},
      {"month", "none", true},         {"month", "month", true},         {"month", "quarter", false},
      {"quarter", "month", true},      {"quarter", "quarter", true},     {"quarter", "half_year", false},
      {"half_year", "quarter", true},  {"half_year", "year", false},     {"year", "none", true},
      {"year", "month", true},         {"year", "half_year", true},      {"year", "year", true},
      {"until_cancelled", "none", false}, {"until_cancelled", "month", true}, {"until_cancelled", "year", true},
  };
  for (const ProductRow& row : rows) {
    ++n;
    auto r = api.call("admin", "POST", "/api/v1/products",
                      body(product_body(admin_id, "Product " + std::to_string(n), "P" + std::to_string(n), row.duration, row.price_per)));
    const std::string what = std::string(row.duration) + " / " + row.price_per;
    if (row.accepted) {
      EXPECT_EQ(r.status, 201) << what << ": " << r.body;
    } else {
      EXPECT_EQ(r.status, 422) << what << ": " << r.body;
      EXPECT_EQ(error_field(r), "price_per") << what;
    }
  }
  auto unknown = api.call("admin", "POST", "/api/v1/products", body(product_body(admin_id, "X", "X", "fortnight", kOnce)));
  EXPECT_EQ(unknown.status, 422);
  EXPECT_EQ(error_field(unknown), "duration");
}

TEST(ProductApi, DurationCannotChangeButOtherFieldsCan) {
  ApiFixture api;
  const auto admin_id = administration(api);
  auto p = api.call("admin", "POST", "/api/v1/products", body(product_body(admin_id, "Lidmaatschap", "LID", kUntilCancelled, kPerMonth)));
  ASSERT_EQ(p.status, 201) << p.body;
  EXPECT_EQ(p.json.at("price_cents").as_int64(), 2500);
  EXPECT_EQ(p.json.at("vat_percentage").as_int64(), 21);
  const auto id = std::to_string(p.json.at("id").as_int64());

  auto same = api.call("admin", "PATCH", "/api/v1/products/" + id, body({{"duration", kUntilCancelled}, {"price_cents", 3000}}));
  ASSERT_EQ(same.status, 200) << same.body;
  EXPECT_EQ(same.json.at("price_cents").as_int64(), 3000);
  auto changed = api.call("admin", "PATCH", "/api/v1/products/" + id, body({{"duration", kOneOff}}));
  EXPECT_EQ(changed.status, 422) << changed.body;
  EXPECT_EQ(error_field(changed), "duration");
  EXPECT_EQ(error_code(changed), "immutable");
  auto bad_fit = api.call("admin", "PATCH", "/api/v1/products/" + id, body({{"price_per", kOnce}}));
  EXPECT_EQ(bad_fit.status, 422) << "price_per is checked against the stored duration: " << bad_fit.body;
  EXPECT_EQ(error_field(bad_fit), "price_per");
  auto moved = api.call("admin", "PATCH", "/api/v1/products/" + id, body({{"administration_id", administration(api, "Wind")}}));
  EXPECT_EQ(moved.status, 422);
  EXPECT_EQ(error_code(moved), "immutable");
  auto no_vat = api.call("admin", "PATCH", "/api/v1/products/" + id, body({{"vat_percentage", nullptr}}));
  ASSERT_EQ(no_vat.status, 200);
  EXPECT_TRUE(no_vat.json.at("vat_percentage").is_null());

  pqxx::connection c(api.database_url());
  pqxx::work tx(c);
  EXPECT_THROW(tx.exec("UPDATE products SET duration = '" + std::string(kOneOff) + "' WHERE id = " + id), pqxx::sql_error)
      << "the database refuses it too";
}

TEST(ProductApi, NameAndCodeAreUniqueOverAllAdministrations) {
  ApiFixture api;
  const auto zon = administration(api, "Zon"), wind = administration(api, "Wind");
  ASSERT_EQ(api.call("admin", "POST", "/api/v1/products", body(product_body(zon, "Lidmaatschap", "LID", kOneOff, kOnce))).status, 201);
  auto name = api.call("admin", "POST", "/api/v1/products", body(product_body(wind, "lidmaatschap", "LID2", kOneOff, kOnce)));
  EXPECT_EQ(name.status, 409);
  EXPECT_EQ(error_field(name), "name");
  auto code = api.call("admin", "POST", "/api/v1/products", body(product_body(wind, "Lid Wind", "lid", kOneOff, kOnce)));
  EXPECT_EQ(code.status, 409);
  EXPECT_EQ(error_field(code), "code");
  auto bad_code = api.call("admin", "POST", "/api/v1/products", body(product_body(wind, "Lid Wind", "LID WIND", kOneOff, kOnce)));
  EXPECT_EQ(bad_code.status, 422);
  EXPECT_EQ(error_field(bad_code), "code");

  ASSERT_EQ(api.call("admin", "PATCH", "/api/v1/administrations/" + std::to_string(wind), body({{"active", false}})).status, 200);
  auto inactive = api.call("admin", "POST", "/api/v1/products", body(product_body(wind, "Lid Wind", "LIDW", kOneOff, kOnce)));
  EXPECT_EQ(inactive.status, 422);
  EXPECT_EQ(error_field(inactive), "administration_id");
  auto listed = api.call("staff", "GET", "/api/v1/products?administration_id=" + std::to_string(zon));
  ASSERT_EQ(listed.status, 200);
  EXPECT_EQ(listed.json.at("items").as_array().size(), 1u);
}

// --- orders ------------------------------------------------------------------------------------

TEST(OrderApi, LifeCycleAndInvalidCombinations) {
  ApiFixture api;
  const auto url = api.database_url();
  const auto admin_id = administration(api);
  const auto product = created(api.call("admin", "POST", "/api/v1/products", body(product_body(admin_id, "Lid", "LID", kUntilCancelled, kPerMonth))));
  const auto other = created(api.call("admin", "POST", "/api/v1/products", body(product_body(admin_id, "Scan", "SCAN", kOneOff, kOnce))));
  const auto jan = contact(url), piet = contact(url);

  auto o = api.call("staff", "POST", "/api/v1/orders", body({{"contact_id", jan}, {"product_id", product}, {"start_date", "2026-01-01"}}));
  ASSERT_EQ(o.status, 201) << o.body;
  EXPECT_EQ(o.json.at("status").as_string(), "concept");
  EXPECT_EQ(o.json.at("quantity").as_int64(), 1);
  EXPECT_TRUE(o.json.at("end_date").is_null());
  EXPECT_EQ(o.json.at("administration_id").as_int64(), admin_id);
  const auto id = std::to_string(o.json.at("id").as_int64());
  auto patch = [&](const json::object& b) { return api.call("staff", "PATCH", "/api/v1/orders/" + id, body(b)); };

  struct Row {
    json::object change;
    const char* field;  // nullptr: accepted
    const char* code = "invalid";
  };
  const std::vector<Row> rows = {
      {{{"end_date", "2025-12-31"}}, "end_date"},
      {{{"start_date", "2026-02-30"}}, "start_date"},
      {{{"start_date", "1-1-2026"}}, "start_date"},
      {{{"quantity", 0}}, "quantity"},
      {{{"status", "paused"}}, "status"},
      {{{"status", "terminated"}}, "end_date", "required"},
      {{{"product_id", 999999}}, "product_id"},
      {{{"contact_id", piet}}, "contact_id", "immutable"},
      {{{"product_id", other}, {"quantity", 2}}, nullptr},  // a concept may change its product
      {{{"status", "active"}, {"end_date", "2026-12-31"}}, nullptr},
      {{{"start_date", "2027-01-01"}}, "start_date"},  // would put the start after the end
      {{{"product_id", product}}, "product_id", "immutable"},
      {{{"status", "concept"}}, "status", "invalid_transition"},
      {{{"status", "terminated"}}, nullptr},
      {{{"status", "active"}}, "status", "invalid_transition"},
      {{{"end_date", nullptr}}, "end_date", "required"},
  };
  for (const auto& row : rows) {
    auto r = patch(row.change);
    if (!row.field) {
      EXPECT_EQ(r.status, 200) << json::serialize(row.change) << ": " << r.body;
    } else {
      EXPECT_EQ(r.status, 422) << json::serialize(row.change) << ": " << r.body;
      EXPECT_EQ(error_field(r), row.field) << json::serialize(row.change);
      EXPECT_EQ(error_code(r), row.code) << json::serialize(row.change) << ": " << r.body;
    }
  }
  auto final_state = api.call("readonly", "GET", "/api/v1/orders/" + id);
  ASSERT_EQ(final_state.status, 200);
  EXPECT_EQ(final_state.json.at("status").as_string(), "terminated");
  EXPECT_EQ(final_state.json.at("product_id").as_int64(), other);
  EXPECT_EQ(final_state.json.at("quantity").as_int64(), 2);
  EXPECT_EQ(final_state.json.at("end_date").as_string(), "2026-12-31");

  auto no_contact = api.call("staff", "POST", "/api/v1/orders", body({{"contact_id", 999999}, {"product_id", product}, {"start_date", "2026-01-01"}}));
  EXPECT_EQ(no_contact.status, 422);
  EXPECT_EQ(error_field(no_contact), "contact_id");
  const auto gone = contact(url);
  sql(url, "UPDATE contacts SET archived = true WHERE id = " + std::to_string(gone));
  auto archived_contact = api.call("staff", "POST", "/api/v1/orders", body({{"contact_id", gone}, {"product_id", product}, {"start_date", "2026-01-01"}}));
  EXPECT_EQ(archived_contact.status, 422) << archived_contact.body;
  EXPECT_EQ(error_field(archived_contact), "contact_id");
  auto no_start = api.call("staff", "POST", "/api/v1/orders", body({{"contact_id", jan}, {"product_id", product}}));
  EXPECT_EQ(no_start.status, 422);
  EXPECT_EQ(error_field(no_start), "start_date");
  ASSERT_EQ(api.call("admin", "PATCH", "/api/v1/products/" + std::to_string(product), body({{"active", false}})).status, 200);
  auto archived = api.call("staff", "POST", "/api/v1/orders", body({{"contact_id", piet}, {"product_id", product}, {"start_date", "2026-01-01"}}));
  EXPECT_EQ(archived.status, 422) << "an archived product cannot be ordered";
  EXPECT_EQ(error_field(archived), "product_id");

  ASSERT_EQ(api.call("admin", "PATCH", "/api/v1/administrations/" + std::to_string(admin_id), body({{"active", false}})).status, 200);
  auto closed = api.call("staff", "POST", "/api/v1/orders", body({{"contact_id", piet}, {"product_id", other}, {"start_date", "2026-01-01"}}));
  EXPECT_EQ(closed.status, 422) << "the product's administration is deactivated: " << closed.body;
  EXPECT_EQ(error_field(closed), "product_id");

  auto by_contact = api.call("readonly", "GET", "/api/v1/orders?contact_id=" + std::to_string(jan) + "&status=terminated");
  ASSERT_EQ(by_contact.status, 200) << by_contact.body;
  EXPECT_EQ(by_contact.json.at("items").as_array().size(), 1u);

  auto audit = api.call("admin", "GET", "/api/v1/audit?entity=order&entity_id=" + id);
  std::vector<std::string> actions;
  for (const auto& e : audit.json.at("items").as_array()) actions.emplace_back(e.at("action").as_string());
  EXPECT_EQ(actions, (std::vector<std::string>{"create", "update", "activate", "terminate"})) << audit.body;
}

// --- permissions -------------------------------------------------------------------------------

TEST(AdministrationPermissions, ReadonlyReadsStaffWritesOrdersOnly) {
  ApiFixture api;
  const auto admin_id = administration(api);
  const auto product = created(api.call("admin", "POST", "/api/v1/products", body(product_body(admin_id, "Lid", "LID", kOneOff, kOnce))));
  const auto tpl = created(api.call("admin", "POST", "/api/v1/templates", body({{"name", "T"}, {"subject", "S"}, {"text_body", "B"}})));
  const auto jan = contact(api.database_url());
  const json::object order{{"contact_id", jan}, {"product_id", product}, {"start_date", "2026-01-01"}};

  for (const char* path : {"/api/v1/administrations", "/api/v1/templates", "/api/v1/products", "/api/v1/orders"})
    for (const char* role : {"readonly", "staff", "admin"}) EXPECT_EQ(api.call(role, "GET", path).status, 200) << role << " " << path;

  struct Write {
    const char* method;
    std::string path;
    json::object body;
    bool staff_may;
  };
  const std::vector<Write> writes = {
      {"POST", "/api/v1/administrations", {{"name", "Nieuw"}}, false},
      {"PATCH", "/api/v1/administrations/" + std::to_string(admin_id), {{"city", "Zeist"}}, false},
      {"POST", "/api/v1/templates", {{"name", "T2"}, {"subject", "S"}, {"text_body", "B"}}, false},
      {"PATCH", "/api/v1/templates/" + std::to_string(tpl), {{"subject", "S2"}}, false},
      {"POST", "/api/v1/products", product_body(admin_id, "Lid2", "LID2", kOneOff, kOnce), false},
      {"PATCH", "/api/v1/products/" + std::to_string(product), {{"price_cents", 1}}, false},
      {"POST", "/api/v1/orders", order, true},
  };
  for (const auto& w : writes) {
    EXPECT_EQ(api.call("readonly", w.method, w.path, body(w.body)).status, 403) << "readonly " << w.method << " " << w.path;
    EXPECT_EQ(api.call("", w.method, w.path, body(w.body)).status, 401) << w.method << " " << w.path;
    auto staff = api.call("staff", w.method, w.path, body(w.body));
    if (w.staff_may) {
      EXPECT_EQ(staff.status, 201) << "staff " << w.method << " " << w.path << ": " << staff.body;
      const auto order_id = std::to_string(staff.json.at("id").as_int64());
      EXPECT_EQ(api.call("staff", "PATCH", "/api/v1/orders/" + order_id, R"({"status":"active"})").status, 200);
      EXPECT_EQ(api.call("readonly", "PATCH", "/api/v1/orders/" + order_id, R"({"status":"active"})").status, 403);
    } else {
      EXPECT_EQ(staff.status, 403) << "staff " << w.method << " " << w.path << ": " << staff.body;
    }
  }
}

}  // namespace
}  // namespace mailgate
