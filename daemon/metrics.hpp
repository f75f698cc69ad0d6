// Process metrics in the Prometheus text exposition format (version 0.0.4). Counters are
// updated from any thread; render() takes a consistent-enough snapshot under one mutex.
#pragma once
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace mailgate {

class Metrics {
 public:
  Metrics();
  void http_request(const std::string& route, int status);
  // A gauge read at render time, e.g. the database pool in use.
  void gauge(std::string name, std::string help, std::function<double()> read);
  // A counter with one label, e.g. count("mailgate_smtp_messages_total", "...", "outcome", "accepted").
  void count(const std::string& name, const std::string& help, const std::string& label, const std::string& value);
  std::string render() const;

 private:
  std::chrono::steady_clock::time_point started_;
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, unsigned long long> http_requests_;
  std::map<std::string, std::pair<std::string, std::function<double()>>> gauges_;
  struct Counter {
    std::string help, label;
    std::map<std::string, unsigned long long> values;
  };
  std::map<std::string, Counter> counters_;
};

}  // namespace mailgate
