#include "tests/support/daemon_process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "tests/support/pg_harness.hpp"
#include "util/crypto.hpp"

namespace mailgate::test {

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// A port below the kernel's ephemeral range, free when asked (as tools/pg-cluster picks them). A
// port-0 bind would hand out an ephemeral one, which between this probe and the server's own bind
// any outgoing connection or port-0 listener of the tests running beside it may take: a server
// that then fails to start leaves a test talking to whatever got its port. Never the same port
// twice in one process.
std::uint16_t free_port() {
  static std::mutex mutex;
  static std::set<std::uint16_t> given;
  static std::mt19937 random{std::random_device{}()};
  int low = 32768;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> low;
  low = std::max(low, 10001);
  std::lock_guard lock(mutex);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const auto port = static_cast<std::uint16_t>(std::uniform_int_distribution<int>(10000, low - 1)(random));
    if (given.count(port)) continue;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a = loopback(port);
    const bool free = bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    close(s);
    if (!free) continue;
    given.insert(port);
    return port;
  }
  throw std::runtime_error("free_port: no free port below the ephemeral range");
}

HttpResult http_request(std::uint16_t port, const std::string& method, const std::string& target,
                        const std::string& body, const std::string& extra_headers, std::chrono::milliseconds timeout) {
  HttpResult result;
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = loopback(port);
  if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(s);
    return result;
  }
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + extra_headers;
  if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH")
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  for (std::size_t off = 0; off < req.size();) {
    ssize_t n = send(s, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += n;
  }
  std::string in;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{s, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[8192];
    ssize_t n = recv(s, buf, sizeof buf, 0);
    if (n <= 0) break;
    in.append(buf, n);
  }
  close(s);
  auto end = in.find("\r\n\r\n");
  if (in.rfind("HTTP/1.", 0) != 0 || end == std::string::npos) return result;
  result.status = std::stoi(in.substr(9, 3));
  result.headers = in.substr(0, end);
  result.body = in.substr(end + 4);
  return result;
}

DaemonProcess::DaemonProcess(std::string database_url, std::string extra_toml)
    : dir_(temp_dir("mailgated")), config_(dir_ / "mailgate.toml"), log_(dir_ / "stderr.log"), http_port_(free_port()) {
  {
    std::ofstream key(dir_ / "secrets.key");
    key << hex_encode(random_bytes(32)) << "\n";
  }
  std::ofstream c(config_);
  c << "[daemon]\nio_threads = 2\nshutdown_grace_seconds = 10\nlog_level = \"debug\"\n\n"
    << "[http]\naddress = \"127.0.0.1\"\nport = " << http_port_ << "\n\n"
    << "[database]\nurl = \"" << database_url << "\"\npool_size = 2\nconnect_timeout_seconds = 2\n\n"
    << "[secrets]\nkey_file = \"secrets.key\"\n\n"
    << extra_toml << "\n";
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0 && running()) stop(SIGKILL, std::chrono::seconds(5));
}

void DaemonProcess::edit_config(const std::string& from, const std::string& to) {
  std::ifstream in(config_);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  auto at = text.find(from);
  if (at == std::string::npos) throw std::logic_error("not in the generated configuration: " + from);
  text.replace(at, from.size(), to);
  std::ofstream(config_) << text;
}

void DaemonProcess::start() {
  pid_ = fork();
  if (pid_ == 0) {
    int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    dup2(fd, 2);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    unsetenv("JOURNAL_STREAM");
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    for (auto& e : env_) putenv(e.data());
    execl(MAILGATE_BINARY, "mailgated", "serve", "--config", config_.c_str(), nullptr);
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    if (!running()) throw std::runtime_error("mailgated exited during start:\n" + log());
    if (ready_check_ ? ready_check_() : http_get(http_port_, "/healthz").status == 200) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("mailgated did not answer /healthz within 30 s:\n" + log());
}

bool DaemonProcess::running() {
  if (pid_ <= 0) return false;
  int status;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    pid_ = -1;
    return false;
  }
  return r == 0;
}

int DaemonProcess::stop(int signal, std::chrono::milliseconds timeout) {
  if (pid_ > 0) kill(pid_, signal);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!running()) return exit_status_;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

std::string DaemonProcess::log() const {
  std::ifstream in(log_);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace mailgate::test
