// Serves the admin UI's static files (web/), embedded into the binary at build time.
#include "daemon/router.hpp"
#include "daemon/services.hpp"
#include "util/embedded.hpp"

namespace mailgate {

namespace {
std::string content_type_for(std::string_view name) {
  auto ends = [&](std::string_view ext) { return name.size() >= ext.size() && name.substr(name.size() - ext.size()) == ext; };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  if (ends(".json")) return "application/json";
  return "application/octet-stream";
}

HttpResponse serve_file(std::string_view name) {
  for (const auto& f : embedded_web())
    if (f.name == name) {
      HttpResponse r{200, content_type_for(name), std::string(f.bytes), {}};
      r.headers.emplace_back("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'");
      return r;
    }
  return HttpResponse::error(404, "not_found", "no such file");
}
}  // namespace

void register_web_routes(Router& router) {
  router.add("GET", "/", [](HttpRequest&) -> boost::asio::awaitable<HttpResponse> { co_return serve_file("index.html"); });
  router.add("GET", "/ui/{file}", [](HttpRequest& req) -> boost::asio::awaitable<HttpResponse> {
    co_return serve_file(req.params["file"]);
  });
}

}  // namespace mailgate
