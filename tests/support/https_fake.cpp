#include "tests/support/https_fake.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <boost/json/parse.hpp>

#include "tests/support/daemon_process.hpp"
#include "tests/support/pg_harness.hpp"

namespace mailgate::test {

namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

HttpsFake::HttpsFake(const std::string& script, const std::vector<std::string>& args, const std::string& cert_host)
    : dir_(temp_dir("https-fake")), port_(free_port()) {
  certs_ = make_test_certs(dir_ / "tls", "server", cert_host);
  fs::create_directories(dir_ / "out");
  std::string cmd = "/usr/bin/python3 " + quote(std::string(MAILGATE_SOURCE_DIR) + "/tests/support/" + script) + " --port " +
                    std::to_string(port_) + " --cert " + quote(certs_.cert.string()) + " --key " + quote(certs_.key.string()) + " --out " +
                    quote((dir_ / "out").string());
  for (const auto& a : args) cmd += " " + quote(a);
  const fs::path log = dir_ / "server.log";
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    setpgid(0, 0);
    const std::string full = "exec " + cmd + " >>" + quote(log.string()) + " 2>&1";
    execl("/bin/sh", "sh", "-c", full.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  if (!wait_for_port(port_)) throw std::runtime_error(script + " did not start: " + this->log());
}

HttpsFake::~HttpsFake() {
  if (pid_ > 0) {
    kill(-pid_, SIGTERM);
    bool gone = false;
    for (int i = 0; i < 50 && !gone; ++i) {
      gone = waitpid(pid_, nullptr, WNOHANG) == pid_;
      if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!gone) {
      kill(-pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

std::string HttpsFake::log() const { return read_file(dir_ / "server.log"); }

std::vector<boost::json::object> HttpsFake::records() const {
  std::vector<boost::json::object> out;
  std::istringstream in(read_file(dir_ / "out" / "records.jsonl"));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(boost::json::parse(line).as_object());
  return out;
}

}  // namespace mailgate::test
