#include "tests/support/dns_server.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "tests/support/daemon_process.hpp"
#include "tests/support/pg_harness.hpp"
#include "tests/support/smtp_servers.hpp"

namespace mailgate::test {

namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_zone(const fs::path& file, const DnsZone& zone) {
  boost::json::array records;
  for (const auto& r : zone.records) {
    boost::json::array data;
    for (const auto& d : r.data) data.emplace_back(d);
    records.emplace_back(boost::json::object{{"name", r.name}, {"type", r.type}, {"data", std::move(data)}});
  }
  boost::json::array servfail, drop;
  for (const auto& n : zone.servfail) servfail.emplace_back(n);
  for (const auto& n : zone.drop) drop.emplace_back(n);
  const boost::json::object doc{{"records", std::move(records)}, {"servfail", std::move(servfail)}, {"drop", std::move(drop)},
                                {"ttl", zone.ttl},          {"negative_ttl", zone.negative_ttl}};
  const fs::path tmp = fs::path(file).concat(".new");
  std::ofstream(tmp) << boost::json::serialize(doc);
  fs::rename(tmp, file);  // a new inode: the server sees the change even within one mtime tick
}

}  // namespace

DnsServer::DnsServer(const DnsZone& zone) : dir_(temp_dir("dns-server")), port_(free_port()) {
  write_zone(dir_ / "zone.json", zone);
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    setpgid(0, 0);
    const std::string cmd = "exec /usr/bin/python3 '" + std::string(MAILGATE_SOURCE_DIR) + "/tests/support/dns_server.py' --port " +
                            std::to_string(port_) + " --zone '" + (dir_ / "zone.json").string() + "' --log '" +
                            (dir_ / "queries.log").string() + "' >>'" + (dir_ / "server.log").string() + "' 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  if (!wait_for_port(port_)) throw std::runtime_error("dns_server.py did not start: " + slurp(dir_ / "server.log"));
}

DnsServer::~DnsServer() {
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

void DnsServer::set_zone(const DnsZone& zone) { write_zone(dir_ / "zone.json", zone); }

std::vector<std::string> DnsServer::queries() const {
  std::vector<std::string> out;
  std::istringstream in(slurp(dir_ / "queries.log"));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

void DnsServer::clear_queries() { std::ofstream(dir_ / "queries.log", std::ios::trunc); }

}  // namespace mailgate::test
