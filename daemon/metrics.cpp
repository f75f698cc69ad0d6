#include "daemon/metrics.hpp"

#include <fmt/format.h>

namespace mailgate {

namespace {
// Label values escape backslash, double quote and newline.
std::string label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}
}  // namespace

Metrics::Metrics() : started_(std::chrono::steady_clock::now()) {}

void Metrics::http_request(const std::string& route, int status) {
  std::lock_guard lock(mutex_);
  ++http_requests_[{route, status}];
}

void Metrics::gauge(std::string name, std::string help, std::function<double()> read) {
  std::lock_guard lock(mutex_);
  gauges_[std::move(name)] = {std::move(help), std::move(read)};
}

void Metrics::count(const std::string& name, const std::string& help, const std::string& label_name, const std::string& value) {
  std::lock_guard lock(mutex_);
  auto& c = counters_[name];
  if (c.help.empty()) c = Counter{help, label_name, {}};
  ++c.values[value];
}

std::string Metrics::render() const {
  std::lock_guard lock(mutex_);
  const double uptime = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  std::string out;
  out += "# HELP mailgate_uptime_seconds Seconds since the daemon started.\n";
  out += "# TYPE mailgate_uptime_seconds gauge\n";
  out += fmt::format("mailgate_uptime_seconds {:.3f}\n", uptime);
  out += "# HELP mailgate_http_requests_total HTTP requests answered, by route pattern and status.\n";
  out += "# TYPE mailgate_http_requests_total counter\n";
  for (const auto& [key, n] : http_requests_)
    out += fmt::format("mailgate_http_requests_total{{route=\"{}\",status=\"{}\"}} {}\n", label(key.first), key.second, n);
  for (const auto& [name, c] : counters_) {
    out += fmt::format("# HELP {} {}\n# TYPE {} counter\n", name, c.help, name);
    for (const auto& [value, n] : c.values) out += fmt::format("{}{{{}=\"{}\"}} {}\n", name, c.label, label(value), n);
  }
  for (const auto& [name, g] : gauges_) {
    out += fmt::format("# HELP {} {}\n# TYPE {} gauge\n{} {}\n", name, g.first, name, name, g.second());
  }
  return out;
}

}  // namespace mailgate
