// protocol/oauth2: the OAuth 2.0 client credentials grant (RFC 6749 4.4) as the Microsoft identity
// platform speaks it (v2.0 token endpoint), sans I/O: building the token request and reading the
// answer. daemon/graph_tokens sends it (protocol/http_client), caches and shares the tokens.
//
// token_request(): POST {login_base}/{tenant}/oauth2/v2.0/token, form-encoded grant_type,
// client_id, client_secret, scope (the secret in the body, never in the URL).
// parse_token_response(): 200 with access_token and expires_in gives a Token; anything else
// throws oauth2::Error with the platform's `error` and `error_description` (its "AADSTSnnnn: ..."
// text, which is what an admin needs to see) and whether asking again can help:
//  - permanent: a 400/401 carrying an OAuth error (invalid_client: wrong, expired (AADSTS7000222)
//    or revoked secret; unauthorized_client: unknown app; invalid_request: unknown tenant;
//    invalid_scope; ...): the configuration must change first.
//  - transient: 429, 5xx, or an answer that is not the documented JSON.
// The access token and the secret never appear in an Error's text.
#pragma once
#include <chrono>
#include <stdexcept>
#include <string>

#include "protocol/http_client.hpp"

namespace mailgate::oauth2 {

struct ClientCredentials {
  std::string login_base;  // https://login.microsoftonline.com (no trailing slash needed)
  std::string tenant;      // directory (tenant) id or domain
  std::string client_id;
  std::string client_secret;
  std::string scope;       // https://graph.microsoft.com/.default, https://outlook.office365.com/.default
};

std::string token_url(const std::string& login_base, const std::string& tenant);
http::Request token_request(const ClientCredentials& credentials);

struct Token {
  std::string access_token;
  std::chrono::seconds expires_in{0};
};

class Error : public std::runtime_error {
 public:
  Error(int status, std::string error, std::string description, bool permanent);
  int status;               // HTTP status (0: no answer)
  std::string error;        // "invalid_client", ... (empty when the answer had none)
  std::string description;  // "AADSTS7000222: The provided client secret keys ... are expired. ..."
  bool permanent;
};

Token parse_token_response(const http::Response& response);  // throws Error

}  // namespace mailgate::oauth2
