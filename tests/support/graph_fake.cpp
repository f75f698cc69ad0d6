#include "tests/support/graph_fake.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "tests/support/daemon_process.hpp"
#include "tests/support/pg_harness.hpp"
#include "util/crypto.hpp"

namespace mailgate::test {

namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string sh_quote(const std::string& s) { return "'" + s + "'"; }

}  // namespace

GraphFake::GraphFake(GraphFakeOptions options) : options_(std::move(options)), dir_(temp_dir("graph-fake")) {
  certs_ = make_test_certs(dir_ / "tls", "server", "localhost");
  port_ = free_port();
  control_port_ = free_port();
  const std::string cmd = "exec /usr/bin/python3 '" + std::string(MAILGATE_SOURCE_DIR) + "/tests/support/graph_fake.py' --port " +
                          std::to_string(port_) + " --control-port " + std::to_string(control_port_) + " --cert " +
                          sh_quote(certs_.cert.string()) + " --key " + sh_quote(certs_.key.string()) + " --tenant " +
                          sh_quote(options_.tenant) + " --client-id " + sh_quote(options_.client_id) + " --client-secret " +
                          sh_quote(options_.client_secret) + " --user " + sh_quote(options_.user) + " >>'" +
                          (dir_ / "out.log").string() + "' 2>>'" + (dir_ / "err.log").string() + "'";
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    setpgid(0, 0);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  for (int i = 0; i < 200; ++i) {
    if (slurp(dir_ / "out.log").find("listening") != std::string::npos) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  throw std::runtime_error("graph_fake.py did not start: " + log());
}

GraphFake::~GraphFake() {
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

std::string GraphFake::daemon_toml(int max_concurrent, int page_size) const {
  return "[tls]\nca_file = \"" + ca_file().string() + "\"\n[graph]\napi_base = \"" + api_base() + "\"\nlogin_base = \"" +
         login_base() + "\"\nmax_concurrent_per_mailbox = " + std::to_string(max_concurrent) +
         "\npage_size = " + std::to_string(page_size) + "\n";
}

json::value GraphFake::control(const std::string& method, const std::string& path, const std::string& body) const {
  auto r = http_request(control_port_, method, path, body, "Content-Type: application/json\r\n");
  if (r.status != 200) throw std::runtime_error("graph fake control " + path + ": " + std::to_string(r.status) + " " + r.body);
  return json::parse(r.body);
}

std::string GraphFake::add_message(const std::string& user, const std::string& mime) { return add_messages(user, {mime}).at(0); }

std::vector<std::string> GraphFake::add_messages(const std::string& user, const std::vector<std::string>& mimes) {
  json::array list;
  for (const auto& m : mimes) list.push_back(json::object{{"mime_base64", base64_encode(m)}});
  const json::object req{{"user", user}, {"messages", std::move(list)}};
  auto out = control("POST", "/_control/messages", json::serialize(req));
  std::vector<std::string> ids;
  for (const auto& id : out.at("ids").as_array()) ids.emplace_back(id.as_string());
  return ids;
}

void GraphFake::throttle(int count, int status, int retry_after_seconds, const std::string& path_contains) {
  json::object req{{"count", count}, {"status", status}, {"retry_after", retry_after_seconds}};
  if (!path_contains.empty()) req["path"] = path_contains;
  control("POST", "/_control/throttle", json::serialize(req));
}

void GraphFake::set_expired(bool expired) {
  const json::object req{{"expired", expired}};
  control("POST", "/_control/credentials", json::serialize(req));
}

void GraphFake::set_client_secret(const std::string& secret) {
  const json::object req{{"client_secret", secret}};
  control("POST", "/_control/credentials", json::serialize(req));
}

void GraphFake::set_value_delay_ms(int ms) {
  const json::object req{{"value_ms", ms}};
  control("POST", "/_control/delay", json::serialize(req));
}

std::vector<GraphSent> GraphFake::sent() const {
  std::vector<GraphSent> out;
  const auto answer = control("GET", "/_control/sent");
  for (const auto& s : answer.as_array()) {
    GraphSent g;
    g.user = std::string(s.at("user").as_string());
    if (const auto* m = s.as_object().if_contains("mime_base64")) g.mime = base64_decode(std::string(m->as_string()));
    g.time = s.at("time").to_number<double>();
    out.push_back(std::move(g));
  }
  return out;
}

json::object GraphFake::stats() const { return control("GET", "/_control/stats").as_object(); }

json::array GraphFake::request_log() const { return control("GET", "/_control/log").as_array(); }

std::string GraphFake::log() const { return slurp(dir_ / "out.log") + slurp(dir_ / "err.log"); }

}  // namespace mailgate::test
