// Routes of the embedded HTTP server: METHOD + path pattern ("/api/v1/users/{id}") -> handler.
// A pattern segment in braces matches one non-empty path segment and lands in request.params.
// dispatch() answers 404 when no pattern matches the path and 405 (with Allow) when only the
// method differs. The route table is also what the OpenAPI test compares against.
// A route may carry its own request body limit (the Mailgun webhook takes [mailgun]
// webhook_max_bytes); the others get [http] max_body_bytes.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "daemon/http.hpp"

namespace mailgate {

using Handler = std::function<boost::asio::awaitable<HttpResponse>(HttpRequest&)>;

struct Route {
  std::string method;
  std::string pattern;
  Handler handler;
  std::vector<std::string> segments;  // pattern split at '/'
  std::size_t max_body_bytes = 0;     // 0: the server's [http] max_body_bytes
};

class Router {
 public:
  void add(std::string method, std::string pattern, Handler handler, std::size_t max_body_bytes = 0);

  // Finds the route for a request and fills request.params. Null with status 404/405 otherwise.
  struct Match {
    const Route* route = nullptr;
    int status = 404;
    std::string allow;  // for 405
  };
  Match match(HttpRequest& request) const;

  const std::vector<Route>& routes() const { return routes_; }

  // The body limit for METHOD + path: the matching route's own, else `fallback`.
  std::size_t body_limit(std::string_view method, std::string_view path, std::size_t fallback) const;
  // The largest limit any route has (at least `fallback`): what a request may announce before
  // its route is known.
  std::size_t max_body_limit(std::size_t fallback) const;

 private:
  std::vector<Route> routes_;
};

}  // namespace mailgate
