#include "daemon/router.hpp"

#include <algorithm>
#include <map>

namespace mailgate {

namespace {
std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    auto j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    out.emplace_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

bool segments_match(const std::vector<std::string>& pattern, const std::vector<std::string>& path,
                    std::map<std::string, std::string>* params) {
  if (pattern.size() != path.size()) return false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const auto& p = pattern[i];
    if (p.size() > 2 && p.front() == '{' && p.back() == '}') {
      if (params) (*params)[p.substr(1, p.size() - 2)] = path[i];
    } else if (p != path[i]) {
      return false;
    }
  }
  return true;
}
}  // namespace

void Router::add(std::string method, std::string pattern, Handler handler, std::size_t max_body_bytes) {
  auto segments = split_path(pattern);
  routes_.push_back({std::move(method), std::move(pattern), std::move(handler), std::move(segments), max_body_bytes});
}

std::size_t Router::body_limit(std::string_view method, std::string_view path, std::size_t fallback) const {
  const auto segments = split_path(path);
  for (const auto& r : routes_)
    if (r.method == method && segments_match(r.segments, segments, nullptr)) return r.max_body_bytes ? r.max_body_bytes : fallback;
  return fallback;
}

std::size_t Router::max_body_limit(std::size_t fallback) const {
  std::size_t m = fallback;
  for (const auto& r : routes_) m = std::max(m, r.max_body_bytes);
  return m;
}

Router::Match Router::match(HttpRequest& request) const {
  const auto path = split_path(request.path);
  Match m;
  for (const auto& r : routes_) {
    if (!segments_match(r.segments, path, nullptr)) continue;
    if (r.method == request.method) {
      segments_match(r.segments, path, &request.params);
      m.route = &r;
      m.status = 200;
      return m;
    }
    m.status = 405;
    m.allow += (m.allow.empty() ? "" : ", ") + r.method;
  }
  return m;
}

}  // namespace mailgate
