// /api/v1/receivers and /administrations/{id}/members against the real daemon: generated
// addresses, validation (one row per bad input: 422 naming the field, nothing changed), the
// status life cycle with its invitation mail, whitelist normalisation, audit, permissions.
#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include <regex>

#include "tests/support/api_client.hpp"

namespace mailgate {
namespace {

namespace json = boost::json;

class ApiReceivers : public ::testing::Test {
 protected:
  ApiReceivers() : api("[smtp_receiver]\nreceive_domain = \"Ontvang.Coop.TEST\"\n") {
    auto a = api.call("admin", "POST", "/api/v1/administrations", R"({"name": "Coöperatie De Zonnewei"})");
    EXPECT_EQ(a.status, 201) << a.body;
    administration = a.json.is_object() ? a.json.at("id").as_int64() : 0;
  }
  std::string base(const std::string& extra = "") const {
    return R"({"administration_id": )" + std::to_string(administration) +
           R"(, "document_type": "purchase_invoice", "contact_email": " Facturen@Leverancier.NL ")" + extra + "}";
  }
  int count(const std::string& sql) {
    pqxx::connection c(api.database_url());
    return pqxx::work(c).exec(sql)[0][0].as<int>();
  }
  static std::string field(const test::ApiResult& r) {
    const auto* e = r.json.is_object() ? r.json.as_object().if_contains("error") : nullptr;
    return e && e->as_object().contains("field") ? std::string(e->at("field").as_string()) : "";
  }

  test::ApiFixture api;
  std::int64_t administration = 0;
};

TEST_F(ApiReceivers, CreatesADraftWithAnUnguessableAddressAndNormalisedWhitelist) {
  auto r = api.call("admin", "POST", "/api/v1/receivers",
                    base(R"(, "whitelist": [{"kind": "domain", "value": " @Leverancier.NL "}, {"kind": "address", "value": "Boekhouding@Andere.nl"},
                                           {"kind": "domain", "value": "leverancier.nl"}, {"kind": "verified_users"}, {"kind": "domain", "value": "bücher.de"}])"));
  ASSERT_EQ(r.status, 201) << r.body;
  const std::string address(r.json.at("address").as_string());
  EXPECT_TRUE(std::regex_match(address, std::regex("cooperatie-de-zonnewei-[a-z2-7]{12}@ontvang\\.coop\\.test"))) << address;
  EXPECT_EQ(r.json.at("status").as_string(), "draft");
  EXPECT_EQ(r.json.at("contact_email").as_string(), "Facturen@leverancier.nl");
  EXPECT_EQ(json::serialize(r.json.at("whitelist")),
            R"([{"kind":"domain","value":"leverancier.nl"},{"kind":"address","value":"boekhouding@andere.nl"},{"kind":"verified_users"},)"
            R"({"kind":"domain","value":"xn--bcher-kva.de"}])");
  EXPECT_EQ(json::serialize(r.json.at("accepted_types")), R"(["application/pdf","application/xml","text/xml"])");
  // Another receiver of the same administration gets another address.
  auto r2 = api.call("admin", "POST", "/api/v1/receivers", base());
  ASSERT_EQ(r2.status, 201);
  EXPECT_NE(r2.json.at("address"), r.json.at("address"));
  // A draft invites nobody.
  EXPECT_EQ(count("SELECT count(*) FROM outbox"), 0);
  auto audit = api.call("admin", "GET", "/api/v1/audit?entity=receiver&entity_id=" + std::to_string(r.json.at("id").as_int64()));
  EXPECT_EQ(audit.json.at("items").as_array().size(), 1u) << audit.body;
}

TEST_F(ApiReceivers, BadInputIsRefusedNamingTheFieldAndChangesNothing) {
  struct Bad {
    std::string body, field;
  };
  const std::string id = std::to_string(administration);
  for (const auto& b : std::vector<Bad>{
           {R"({"document_type": "purchase_invoice", "contact_email": "a@b.nl"})", "administration_id"},
           {R"({"administration_id": 999, "document_type": "purchase_invoice", "contact_email": "a@b.nl"})", "administration_id"},
           {R"({"administration_id": )" + id + R"(, "document_type": "invoice", "contact_email": "a@b.nl"})", "document_type"},
           {R"({"administration_id": )" + id + R"(, "document_type": "purchase_invoice"})", "contact_email"},
           {R"({"administration_id": )" + id + R"(, "document_type": "purchase_invoice", "contact_email": "a@b.nl\r\nBcc: x@evil.nl"})",
            "contact_email"},
           {base(R"(, "supplier_name": "Leverancier\r\nBcc: x@evil.nl")"), "supplier_name"},
           {base(R"(, "whitelist": [{"kind": "domain", "value": "not a domain"}])"), "whitelist[0].value"},
           {base(R"(, "whitelist": [{"kind": "address", "value": "piet"}])"), "whitelist[0].value"},
           {base(R"(, "whitelist": [{"kind": "everyone"}])"), "whitelist[0].kind"},
           {base(R"(, "whitelist": [{"kind": "verified_users", "value": "x"}])"), "whitelist[0].value"},
           {base(R"(, "whitelist": [{"kind": "domain", "value": "a.nl", "note": 1}])"), "whitelist[0].note"},
           {base(R"(, "whitelist": "leverancier.nl")"), "whitelist"},
           {base(R"(, "accepted_types": ["pdf"])"), "accepted_types"},
           {base(R"(, "max_message_bytes": 10)"), "max_message_bytes"},
           {base(R"(, "status": "active")"), "whitelist"},  // active needs a whitelist entry
           {base(R"(, "status": "deleted")"), "status"},
           {base(R"(, "address": "mine@ontvang.coop.test")"), "address"},
       }) {
    auto r = api.call("admin", "POST", "/api/v1/receivers", b.body);
    EXPECT_EQ(r.status, 422) << b.body << " -> " << r.body;
    EXPECT_EQ(field(r), b.field) << b.body << " -> " << r.body;
  }
  EXPECT_EQ(count("SELECT count(*) FROM receivers"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM outbox"), 0);
  EXPECT_EQ(api.call("admin", "POST", "/api/v1/receivers", "not json").status, 400);
}

TEST_F(ApiReceivers, StatusLifeCycleInvitesOnEachActivationAndNeverGoesBackToDraft) {
  auto r = api.call("admin", "POST", "/api/v1/receivers", base(R"(, "whitelist": [{"kind": "domain", "value": "leverancier.nl"}])"));
  ASSERT_EQ(r.status, 201);
  const std::string path = "/api/v1/receivers/" + std::to_string(r.json.at("id").as_int64());
  auto active = api.call("admin", "PATCH", path, R"({"status": "active"})");
  ASSERT_EQ(active.status, 200) << active.body;
  EXPECT_FALSE(active.json.at("activated_at").is_null());
  EXPECT_EQ(count("SELECT count(*) FROM outbox WHERE kind = 'receiver_invitation' AND to_addresses = '{Facturen@leverancier.nl}'"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM outbox WHERE kind = 'receiver_invitation' AND text_body LIKE '%" +
                  std::string(r.json.at("address").as_string()) + "%'"),
            1);
  EXPECT_EQ(api.call("admin", "PATCH", path, R"({"supplier_name": "Leverancier BV"})").status, 200);
  EXPECT_EQ(count("SELECT count(*) FROM outbox"), 1) << "only a change of status to active invites";
  EXPECT_EQ(api.call("admin", "PATCH", path, R"({"status": "inactive"})").status, 200);
  auto back = api.call("admin", "PATCH", path, R"({"status": "draft"})");
  EXPECT_EQ(back.status, 422);
  EXPECT_EQ(field(back), "status");
  EXPECT_EQ(api.call("admin", "PATCH", path, R"({"status": "active"})").status, 200);
  EXPECT_EQ(count("SELECT count(*) FROM outbox WHERE kind = 'receiver_invitation'"), 2);
  // Emptying an active receiver's whitelist is allowed: it then takes nobody's mail.
  auto cleared = api.call("admin", "PATCH", path, R"({"whitelist": []})");
  EXPECT_EQ(cleared.status, 200);
  EXPECT_EQ(api.call("admin", "PATCH", path, R"({"administration_id": 1})").status, 422);
  auto audit = api.call("admin", "GET", "/api/v1/audit?entity=receiver&entity_id=" + std::to_string(r.json.at("id").as_int64()));
  EXPECT_EQ(audit.json.at("items").as_array().size(), 6u) << audit.body;  // create, 3 status changes, 2 updates
}

TEST_F(ApiReceivers, MembersArePeopleOfTheAdministrationAndOnlyAdminsWrite) {
  const std::string path = "/api/v1/administrations/" + std::to_string(administration) + "/members";
  auto put = api.call("admin", "PUT", path,
                      "{\"user_ids\": [" + std::to_string(api.user_id("staff")) + ", " + std::to_string(api.user_id("staff")) + "]}");
  ASSERT_EQ(put.status, 200) << put.body;
  EXPECT_EQ(put.json.at("items").as_array().size(), 1u);
  EXPECT_EQ(api.call("admin", "PUT", path, R"({"user_ids": [424242]})").status, 422);
  EXPECT_EQ(api.call("staff", "PUT", path, R"({"user_ids": []})").status, 403);
  EXPECT_EQ(api.call("staff", "POST", "/api/v1/receivers", base()).status, 403);
  auto got = api.call("readonly", "GET", path);
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(got.json.at("items").as_array()[0].at("email").as_string(), "staff@example.nl");
  EXPECT_EQ(api.call("admin", "GET", "/api/v1/administrations/999/members").status, 404);
}

TEST(ApiReceiversWithoutDomain, RefusedUntilAReceiveDomainIsConfigured) {
  test::ApiFixture api;
  auto a = api.call("admin", "POST", "/api/v1/administrations", R"({"name": "Coop"})");
  auto r = api.call("admin", "POST", "/api/v1/receivers",
                    R"({"administration_id": )" + std::to_string(a.json.at("id").as_int64()) +
                        R"(, "document_type": "receipt", "contact_email": "a@b.nl"})");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_NE(r.body.find("no_receive_domain"), std::string::npos);
}

}  // namespace
}  // namespace mailgate
