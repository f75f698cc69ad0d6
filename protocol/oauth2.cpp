#include "protocol/oauth2.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

namespace mailgate::oauth2 {

namespace json = boost::json;

namespace {

std::string short_text(std::string s) {
  if (s.size() > 300) s = s.substr(0, 300) + "...";
  for (auto& c : s)
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  return s;
}

std::string what_of(int status, const std::string& error, const std::string& description) {
  if (!description.empty()) return description;  // "AADSTS7000222: ...": already says it all
  if (!error.empty()) return "token endpoint: " + error + " (HTTP " + std::to_string(status) + ")";
  return "token endpoint answered HTTP " + std::to_string(status);
}

}  // namespace

Error::Error(int status, std::string error, std::string description, bool permanent)
    : std::runtime_error(what_of(status, error, description)),
      status(status),
      error(std::move(error)),
      description(std::move(description)),
      permanent(permanent) {}

std::string token_url(const std::string& login_base, const std::string& tenant) {
  std::string base = login_base;
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + "/" + http::url_encode(tenant) + "/oauth2/v2.0/token";
}

http::Request token_request(const ClientCredentials& c) {
  http::Request r;
  r.method = "POST";
  r.url = token_url(c.login_base, c.tenant);
  r.headers.push_back({"Content-Type", "application/x-www-form-urlencoded"});
  r.headers.push_back({"Accept", "application/json"});
  r.body = http::form_urlencode({{"grant_type", "client_credentials"},
                                 {"client_id", c.client_id},
                                 {"client_secret", c.client_secret},
                                 {"scope", c.scope}});
  return r;
}

Token parse_token_response(const http::Response& response) {
  json::value body;
  boost::system::error_code ec;
  body = json::parse(response.body, ec);
  const json::object* o = (!ec && body.is_object()) ? &body.as_object() : nullptr;
  auto text = [&](const char* key) -> std::string {
    if (!o) return {};
    const auto* v = o->if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
  };
  if (response.status == 200 && o) {
    Token t;
    t.access_token = text("access_token");
    const auto* e = o->if_contains("expires_in");
    // expires_in is a number in the v2.0 endpoint; v1.0 sent a string.
    if (e && e->is_int64()) t.expires_in = std::chrono::seconds(e->as_int64());
    else if (e && e->is_uint64()) t.expires_in = std::chrono::seconds(static_cast<std::int64_t>(e->as_uint64()));
    else if (e && e->is_string()) {
      try {
        t.expires_in = std::chrono::seconds(std::stoll(std::string(e->as_string())));
      } catch (const std::exception&) {
      }
    }
    if (t.access_token.empty() || t.expires_in.count() <= 0)
      throw Error(response.status, "", "token endpoint answered 200 without access_token or expires_in", false);
    return t;
  }
  const std::string error = short_text(text("error"));
  const std::string description = short_text(text("error_description"));
  // An OAuth error on 400/401 means the request itself is refused: a wrong, expired or revoked
  // secret, an unknown app, tenant or scope. Asking again cannot help until an admin acts.
  const bool permanent = (response.status == 400 || response.status == 401) && !error.empty() && error != "temporarily_unavailable";
  throw Error(response.status, error, description, permanent);
}

}  // namespace mailgate::oauth2
