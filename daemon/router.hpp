// Routes of the embedded HTTP server: METHOD + path pattern ("/api/v1/users/{id}") -> handler.
// A pattern segment in braces matches one non-empty path segment and lands in request.params.
// dispatch() answers 404 when no pattern matches the path and 405 (with Allow) when only the
// method differs. The route table is also what the OpenAPI test compares against.
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
};

class Router {
 public:
  void add(std::string method, std::string pattern, Handler handler);

  // Finds the route for a request and fills request.params. Null with status 404/405 otherwise.
  struct Match {
    const Route* route = nullptr;
    int status = 404;
    std::string allow;  // for 405
  };
  Match match(HttpRequest& request) const;

  const std::vector<Route>& routes() const { return routes_; }

 private:
  std::vector<Route> routes_;
};

}  // namespace mailgate
