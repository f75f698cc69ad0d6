#include "daemon/http.hpp"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

namespace mailgate {

const std::string* HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return &v;
  return nullptr;
}

HttpResponse HttpResponse::json(int status, std::string body) { return {status, "application/json", std::move(body), {}}; }

HttpResponse HttpResponse::text(int status, std::string body) {
  return {status, "text/plain; charset=utf-8", std::move(body), {}};
}

HttpResponse HttpResponse::error(int status, std::string_view code, std::string_view message, std::string_view field) {
  boost::json::object e{{"code", code}, {"message", message}};
  if (!field.empty()) e["field"] = field;
  return json(status, boost::json::serialize(boost::json::object{{"error", std::move(e)}}));
}

}  // namespace mailgate
