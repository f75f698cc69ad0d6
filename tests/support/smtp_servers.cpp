#include "tests/support/smtp_servers.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
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

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Starts `command` through /bin/sh in its own process group, output to `log`.
pid_t spawn(const std::string& command, const fs::path& log) {
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    setpgid(0, 0);
    const std::string full = "exec " + command + " >>'" + log.string() + "' 2>&1";
    execl("/bin/sh", "sh", "-c", full.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

void stop(pid_t& pid) {
  if (pid <= 0) return;
  kill(-pid, SIGTERM);
  for (int i = 0; i < 50; ++i) {
    if (waitpid(pid, nullptr, WNOHANG) == pid) {
      pid = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(-pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  pid = -1;
}

}  // namespace

TestCerts make_test_certs(const fs::path& dir, const std::string& name, const std::string& host_name) {
  fs::create_directories(dir);
  const std::string d = dir.string();
  if (!fs::exists(dir / "ca.pem") &&
      run_command("cd '" + d + "' && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=mailgate test CA' "
                  "-keyout ca.key -out ca.pem >/dev/null 2>&1") != 0)
    throw std::runtime_error("openssl: cannot make the test CA in " + d);
  std::ofstream(dir / (name + ".ext")) << "subjectAltName=DNS:" << host_name << ",IP:127.0.0.1\n";
  if (run_command("cd '" + d + "' && openssl req -newkey rsa:2048 -nodes -subj '/CN=" + host_name + "' -keyout " + name +
                  ".key -out " + name + ".csr >/dev/null 2>&1 && openssl x509 -req -in " + name +
                  ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile " + name + ".ext -out " + name +
                  ".pem >/dev/null 2>&1") != 0)
    throw std::runtime_error("openssl: cannot make the certificate " + name + " in " + d);
  return {dir / "ca.pem", dir / (name + ".pem"), dir / (name + ".key")};
}

bool wait_for_port(std::uint16_t port, int seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < end) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a = loopback(port);
    const bool ok = connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    close(s);
    if (ok) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

SmtpSink::SmtpSink(const std::string& options) : dir_(temp_dir("smtp-sink")), port_(free_port()) {
  fs::create_directories(dir_ / "dump");
  fs::permissions(dir_ / "dump", fs::perms::all);  // smtp-sink runs as nobody when we are root
  const std::string user = getuid() == 0 ? " -u nobody" : "";
  pid_ = spawn("/usr/sbin/smtp-sink" + user + " " + options + " -d '" + (dir_ / "dump").string() + "/m.' 127.0.0.1:" +
                   std::to_string(port_) + " 64",
               dir_ / "smtp-sink.log");
  if (!wait_for_port(port_)) throw std::runtime_error("smtp-sink did not start: " + slurp(dir_ / "smtp-sink.log"));
}

SmtpSink::~SmtpSink() {
  stop(pid_);
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

std::vector<std::string> SmtpSink::transactions() const {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir_ / "dump")) out.push_back(slurp(e.path()));
  return out;
}

PySmtpServer::PySmtpServer(PySmtpOptions o) : dir_(temp_dir("smtp-server")), port_(free_port()) {
  std::string cmd = "/usr/bin/python3 '" + std::string(MAILGATE_SOURCE_DIR) + "/tests/support/smtp_server.py' --port " + std::to_string(port_) +
                    " --out '" + (dir_ / "out").string() + "'";
  if (o.tls) {
    certs_ = make_test_certs(dir_ / "tls", "server", o.cert_host);
    cmd += " --cert '" + certs_.cert.string() + "' --key '" + certs_.key.string() + "'";
    if (o.require_tls) cmd += " --require-tls";
    if (o.implicit_tls) cmd += " --implicit-tls";
    if (o.login_only) cmd += " --login-only";
  }
  if (!o.user.empty()) cmd += " --user '" + o.user + "' --password '" + o.password + "'";
  if (!o.xoauth2_introspect.empty()) cmd += " --xoauth2-introspect '" + o.xoauth2_introspect + "'";
  if (o.fail_first) cmd += " --fail-first " + std::to_string(o.fail_first);
  if (o.pipelining) cmd += " --pipelining";
  if (o.hang_up_at) cmd += " --hang-up-at " + std::to_string(o.hang_up_at);
  for (const auto& r : o.reject) cmd += " --reject '" + r + "'";
  pid_ = spawn(cmd, dir_ / "server.log");
  if (!wait_for_port(port_)) throw std::runtime_error("smtp_server.py did not start: " + log());
}

PySmtpServer::~PySmtpServer() {
  stop(pid_);
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

std::string PySmtpServer::log() const { return slurp(dir_ / "server.log"); }

std::vector<ReceivedMail> PySmtpServer::received() const {
  std::vector<fs::path> files;
  if (fs::exists(dir_ / "out"))
    for (const auto& e : fs::directory_iterator(dir_ / "out"))
      if (e.path().extension() == ".eml") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::vector<ReceivedMail> out;
  for (const auto& f : files) {
    ReceivedMail m;
    m.raw = slurp(f);
    auto meta = boost::json::parse(slurp(fs::path(f).replace_extension(".json"))).as_object();
    m.from = meta.at("from").as_string().c_str();
    for (const auto& t : meta.at("to").as_array()) m.to.push_back(t.as_string().c_str());
    m.tls = meta.at("tls").as_bool();
    if (meta.at("login").is_string()) m.login = meta.at("login").as_string().c_str();
    m.client_port = static_cast<int>(meta.at("client_port").as_int64());
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace mailgate::test
