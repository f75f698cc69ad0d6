// The HTTP types the API's handlers see. They are plain structs so that handlers and tests do
// not include Beast; only daemon/http_server.cpp converts between these and Beast's messages.
#pragma once
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mailgate {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as received: path and query
  std::string path;    // percent-decoded path, without the query
  std::map<std::string, std::string> query;   // decoded query parameters (last one wins)
  std::map<std::string, std::string> params;  // path parameters filled by the router ({id})
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::string remote_address;

  const std::string* header(std::string_view name) const;  // name in lower case
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;

  static HttpResponse json(int status, std::string body);
  static HttpResponse text(int status, std::string body);
  // {"error": {"code": ..., "message": ..., "field": ...}}; field omitted when empty.
  static HttpResponse error(int status, std::string_view code, std::string_view message, std::string_view field = {});
};

// Thrown by handlers for a request that cannot be served as asked; becomes the JSON error body.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string code, const std::string& message, std::string field = {})
      : std::runtime_error(message), status(status), code(std::move(code)), field(std::move(field)) {}
  int status;
  std::string code;
  std::string field;
};

}  // namespace mailgate
