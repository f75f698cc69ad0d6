// protocol/oauth2: the client credentials request and the token endpoint's answers, table-tested.
#include <gtest/gtest.h>

#include "protocol/oauth2.hpp"

namespace mailgate {
namespace {

http::Response answer(int status, std::string body) {
  http::Response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

TEST(OAuth2, TokenRequestIsAFormPostToTheTenantsV2Endpoint) {
  oauth2::ClientCredentials c{"https://login.example/", "contoso.onmicrosoft.com", "app-1", "a&b=c d+é", "https://graph.microsoft.com/.default"};
  const auto r = oauth2::token_request(c);
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.url, "https://login.example/contoso.onmicrosoft.com/oauth2/v2.0/token");
  EXPECT_EQ(r.body,
            "grant_type=client_credentials&client_id=app-1&client_secret=a%26b%3Dc%20d%2B%C3%A9"
            "&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default");
  bool form = false;
  for (const auto& h : r.headers) form |= h.name == "Content-Type" && h.value == "application/x-www-form-urlencoded";
  EXPECT_TRUE(form);
  EXPECT_EQ(r.url.find("a&b"), std::string::npos) << "the secret is never in the URL";
}

TEST(OAuth2, TokenAnswer) {
  auto t = oauth2::parse_token_response(
      answer(200, R"({"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0.abc"})"));
  EXPECT_EQ(t.access_token, "eyJ0.abc");
  EXPECT_EQ(t.expires_in, std::chrono::seconds(3599));
  t = oauth2::parse_token_response(answer(200, R"({"token_type":"Bearer","expires_in":"3600","access_token":"x"})"));
  EXPECT_EQ(t.expires_in, std::chrono::seconds(3600)) << "v1.0 sent a string";
}

TEST(OAuth2, ErrorsKeepMicrosoftsTextAndSayWhetherToRetry) {
  struct Case {
    int status;
    std::string body;
    bool permanent;
    std::string error, what_contains;
  };
  const std::vector<Case> cases = {
      {401, R"({"error":"invalid_client","error_description":"AADSTS7000222: The provided client secret keys for app 'x' are expired.","error_codes":[7000222]})",
       true, "invalid_client", "AADSTS7000222: The provided client secret keys"},
      {401, R"({"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."})", true, "invalid_client", "AADSTS7000215"},
      {400, R"({"error":"unauthorized_client","error_description":"AADSTS700016: Application not found."})", true, "unauthorized_client", "AADSTS700016"},
      {400, R"({"error":"invalid_request","error_description":"AADSTS90002: Tenant 'x' not found."})", true, "invalid_request", "AADSTS90002"},
      {400, R"({"error":"temporarily_unavailable","error_description":"AADSTS50001: try later"})", false, "temporarily_unavailable", "try later"},
      {429, R"({"error":"too_many_requests"})", false, "too_many_requests", "too_many_requests"},
      {503, "<html>Service Unavailable</html>", false, "", "HTTP 503"},
      {500, "", false, "", "HTTP 500"},
      {200, R"({"token_type":"Bearer"})", false, "", "without access_token"},
      {200, "not json", false, "", "HTTP 200"},
  };
  for (const auto& c : cases) {
    try {
      oauth2::parse_token_response(answer(c.status, c.body));
      ADD_FAILURE() << "no error for " << c.body;
    } catch (const oauth2::Error& e) {
      EXPECT_EQ(e.permanent, c.permanent) << c.body;
      EXPECT_EQ(e.error, c.error) << c.body;
      EXPECT_EQ(e.status, c.status);
      EXPECT_NE(std::string(e.what()).find(c.what_contains), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace mailgate
