// Registers the whole /api/v1 surface, and serves the OpenAPI document that describes it.
// The document is assembled from docs/openapi/*.json (one fragment per area, embedded at build
// time): "paths" and "components.schemas" of every fragment are merged into the first one.
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "daemon/api.hpp"
#include "util/embedded.hpp"

namespace mailgate {

namespace json = boost::json;

void register_api_routes(Api& api) {
  register_openapi_route(api);
  register_access_routes(api);
  register_mailbox_routes(api);
  register_contact_routes(api);
  register_administration_routes(api);
  register_message_routes(api);
  register_outbox_routes(api);
  register_receiver_routes(api);
  register_mailgun_domain_routes(api);
}

json::object openapi_document() {
  json::object doc;
  for (const auto& f : embedded_openapi()) {
    json::object part = json::parse(f.bytes).as_object();
    if (doc.empty()) {
      doc = std::move(part);
      continue;
    }
    if (auto* paths = part.if_contains("paths"))
      for (const auto& [k, v] : paths->as_object()) {
        auto& target = doc["paths"].as_object()[k];
        if (target.is_null()) target = json::object{};
        for (const auto& [m, op] : v.as_object()) target.as_object()[m] = op;
      }
    if (auto* comps = part.if_contains("components"))
      if (auto* schemas = comps->as_object().if_contains("schemas"))
        for (const auto& [k, v] : schemas->as_object()) doc["components"].as_object()["schemas"].as_object()[k] = v;
  }
  return doc;
}

void register_openapi_route(Api& api) {
  static const std::string document = json::serialize(openapi_document());
  api.add("GET", "/api/v1/openapi.json", kPublic, [](HttpRequest&, const Principal&) -> boost::asio::awaitable<HttpResponse> {
    co_return HttpResponse::json(200, document);
  });
}

}  // namespace mailgate
