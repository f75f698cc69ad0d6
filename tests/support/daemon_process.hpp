// Runs the real mailgated binary for an end-to-end test: writes its configuration and secrets
// key into a temporary directory, picks a free port, starts it with stderr captured to a file,
// and waits until /healthz answers.
#pragma once
#include <netinet/in.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace mailgate::test {

struct HttpResult {
  int status = 0;  // 0: no answer (connection refused, reset, timed out)
  std::string headers;
  std::string body;
};

// A blocking HTTP/1.1 request to 127.0.0.1:port with Connection: close.
HttpResult http_request(std::uint16_t port, const std::string& method, const std::string& target,
                        const std::string& body = {}, const std::string& extra_headers = {},
                        std::chrono::milliseconds timeout = std::chrono::seconds(10));
inline HttpResult http_get(std::uint16_t port, const std::string& target) { return http_request(port, "GET", target); }

std::uint16_t free_port();
// 127.0.0.1:port, for bind() and connect().
sockaddr_in loopback(std::uint16_t port);

class DaemonProcess {
 public:
  // `extra_toml` is appended to the generated configuration.
  explicit DaemonProcess(std::string database_url, std::string extra_toml = {});
  ~DaemonProcess();  // SIGKILL if still running

  // Replaces the first occurrence of `from` in the generated configuration (before start()).
  void edit_config(const std::string& from, const std::string& to);

  // Environment variables set for the daemon ("NAME=value"), before start().
  void set_env(std::string assignment) { env_.push_back(std::move(assignment)); }
  // What start() waits for instead of GET /healthz over plain HTTP (a daemon serving HTTPS only).
  void set_ready_check(std::function<bool()> check) { ready_check_ = std::move(check); }

  void start();  // returns once /healthz answers 200; throws with the log on failure
  // Sends `signal` and waits up to `timeout`; returns the exit status (or 128+signal), -1 on timeout.
  int stop(int signal, std::chrono::milliseconds timeout = std::chrono::seconds(20));
  bool running();

  std::uint16_t http_port() const { return http_port_; }
  pid_t pid() const { return pid_; }
  std::string log() const;  // everything it wrote to stderr so far
  const std::filesystem::path& dir() const { return dir_; }
  const std::filesystem::path& config_path() const { return config_; }

 private:
  std::filesystem::path dir_, config_, log_;
  std::uint16_t http_port_;
  pid_t pid_ = -1;
  int exit_status_ = -1;
  std::vector<std::string> env_;
  std::function<bool()> ready_check_;
};

}  // namespace mailgate::test
