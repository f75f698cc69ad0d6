#include "tests/support/dovecot.hpp"

#include <pwd.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "protocol/imap_parser.hpp"
#include "tests/support/daemon_process.hpp"
#include "tests/support/pg_harness.hpp"
#include "util/crypto.hpp"

namespace mailgate::test {

namespace fs = std::filesystem;

namespace {
void check(int status, const std::string& what) {
  if (status != 0) throw std::runtime_error(what + " failed with status " + std::to_string(status));
}

void chown_to(const fs::path& p, const std::string& user) {
  if (getuid() == 0) check(run_command("chown -R " + user + ": '" + p.string() + "'"), "chown " + p.string());
}

// Hands one path to the mail user (as root); a no-op otherwise.
void chown_one(const fs::path& p, const std::string& user) {
  if (getuid() != 0) return;
  const passwd* pw = getpwnam(user.c_str());
  if (!pw || ::chown(p.c_str(), pw->pw_uid, pw->pw_gid) != 0) throw std::runtime_error("chown " + p.string());
}
}  // namespace

Dovecot::Dovecot(const std::string& oauth2_introspection_url) : dir_(temp_dir("dovecot")), imap_port_(free_port()), imaps_port_(free_port()) {
  const bool root = getuid() == 0;
  mail_user_ = root ? "nobody" : getpwuid(getuid())->pw_name;
  fs::permissions(dir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec | fs::perms::others_read |
                            fs::perms::others_exec);
  fs::create_directories(dir_ / "home");
  fs::create_directories(dir_ / "run");
  chown_to(dir_ / "home", mail_user_);

  // A test CA and a server certificate for localhost / 127.0.0.1 signed by it.
  const std::string d = dir_.string();
  check(run_command("cd '" + d + "' && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=mailgate test CA' "
                    "-keyout ca.key -out ca.pem >/dev/null 2>&1 && "
                    "openssl req -newkey rsa:2048 -nodes -subj '/CN=localhost' -keyout server.key -out server.csr >/dev/null 2>&1 && "
                    "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext && "
                    "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext "
                    "-out server.pem >/dev/null 2>&1"),
        "generating the test certificates");

  fs::create_directories(dir_ / "users");
  if (!oauth2_introspection_url.empty())
    std::ofstream(dir_ / "oauth2.conf.ext") << "introspection_mode = post\nintrospection_url = " << oauth2_introspection_url
                                            << "\nusername_attribute = username\nactive_attribute = active\nactive_value = true\n";
  std::ofstream conf(dir_ / "dovecot.conf");
  conf << "instance_name = mailgate-test-" << imap_port_ << "\n"
       << "base_dir = " << d << "/run\n"
       << "state_dir = " << d << "/run/state\n"
       << "log_path = " << d << "/dovecot.log\n"
       << "protocols = imap\n"
       << "listen = 127.0.0.1, 127.0.0.2\n"  // .2 is not in the certificate: for host name checks
       << "ssl = yes\n"
       << "ssl_cert = <" << d << "/server.pem\n"
       << "ssl_key = <" << d << "/server.key\n"
       << "ssl_min_protocol = TLSv1.2\n"
       << "disable_plaintext_auth = no\n"
       << "auth_mechanisms = plain login" << (oauth2_introspection_url.empty() ? "" : " xoauth2") << "\n"
       << "auth_failure_delay = 0\n"  // tests log in wrongly on purpose; no need to wait
       << "auth_verbose = yes\n"
       << "login_trusted_networks = 127.0.0.0/8\n"
       << "default_internal_user = " << (root ? "dovecot" : mail_user_) << "\n"
       << "default_internal_group = " << (root ? "dovecot" : mail_user_) << "\n"
       << "default_login_user = " << (root ? "dovenull" : mail_user_) << "\n"
       << "first_valid_uid = 1\n"
       << "mail_location = maildir:~/Maildir\n"
       << "mail_privileged_group =\n"
       << "namespace inbox {\n  inbox = yes\n  separator = /\n}\n"
       // One passwd-file per user: a new user is a file Dovecot has never cached.
       << "passdb {\n  driver = passwd-file\n  mechanisms = plain login\n  args = username_format=%u " << d << "/users/%u\n}\n"
       << (oauth2_introspection_url.empty() ? "" : "passdb {\n  driver = oauth2\n  mechanisms = xoauth2\n  args = " + d + "/oauth2.conf.ext\n}\n")
       << "userdb {\n  driver = static\n  args = uid=" << mail_user_ << " gid=" << (root ? "nogroup" : mail_user_)
       << " home=" << d << "/home/%u\n}\n"
       << "service imap-login {\n  inet_listener imap {\n    address = 127.0.0.1, 127.0.0.2\n    port = " << imap_port_
       << "\n  }\n  inet_listener imaps {\n    address = 127.0.0.1, 127.0.0.2\n    port = " << imaps_port_ << "\n    ssl = yes\n  }\n}\n"
       << "service anvil {\n  chroot =\n}\nservice imap-login {\n  chroot =\n}\n"
       << "service stats {\n  unix_listener stats-reader {\n    mode = 0666\n  }\n  unix_listener stats-writer {\n    mode = 0666\n  }\n}\n"
       << "protocol imap {\n  mail_max_userip_connections = 100\n}\n";
  conf.close();
  start();
}

Dovecot::~Dovecot() {
  try {
    stop();
  } catch (...) {
  }
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

void Dovecot::start() {
  check(run_command("dovecot -c '" + (dir_ / "dovecot.conf").string() + "' 2>>'" + (dir_ / "dovecot.log").string() + "'"),
        "starting dovecot:\n" + log());
  for (int i = 0; i < 100; ++i) {
    if (run_command("python3 -c 'import socket,sys; socket.create_connection((\"127.0.0.1\", " + std::to_string(imap_port_) +
                        "), 0.2).close()' 2>/dev/null") == 0)
      return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("dovecot did not start listening:\n" + log());
}

void Dovecot::stop() {
  run_command("doveadm -c '" + (dir_ / "dovecot.conf").string() + "' stop >/dev/null 2>&1");
  for (int i = 0; i < 100; ++i) {
    if (!fs::exists(dir_ / "run" / "master.pid")) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void Dovecot::add_user(const std::string& user, const std::string& password) {
  if (user.find_first_of("/:.") != std::string::npos) throw std::invalid_argument("test user names are plain words");
  std::ofstream(dir_ / "users" / user) << user << ":{PLAIN.b64}" << base64_encode(password) << "::::::\n";
  fs::create_directories(maildir(user, "INBOX") / "new");
  chown_to(dir_ / "home", mail_user_);
}

fs::path Dovecot::maildir(const std::string& user, const std::string& folder) const {
  fs::path base = dir_ / "home" / user / "Maildir";
  if (folder == "INBOX") return base;
  // Maildir++ layout: ".Folder" with the name in modified UTF-7 and "/" as "."
  std::string name = imap::mailbox_encode(folder);
  for (auto& c : name)
    if (c == '/') c = '.';
  return base / ("." + name);
}

void Dovecot::create_folder(const std::string& user, const std::string& folder) {
  const fs::path box = maildir(user, folder);
  if (fs::exists(box / "tmp")) return;
  for (const char* sub : {"new", "cur", "tmp"}) fs::create_directories(box / sub);
  chown_to(dir_ / "home" / user, mail_user_);
}

int Dovecot::count(const std::string& user, const std::string& folder) const {
  const fs::path box = maildir(user, folder);
  int n = 0;
  for (const char* sub : {"new", "cur"}) {
    std::error_code ec;
    for (fs::directory_iterator it(box / sub, ec), end; !ec && it != end; it.increment(ec))
      if (it->is_regular_file()) ++n;
  }
  return n;
}

void Dovecot::deliver(const std::string& user, const std::string& folder, const std::string& raw_message) {
  const fs::path box = maildir(user, folder);
  create_folder(user, folder);
  const std::string name = std::to_string(time(nullptr)) + ".M" + std::to_string(++counter_) + "P" + std::to_string(getpid()) + ".test";
  {
    std::ofstream out(box / "tmp" / name, std::ios::binary);
    out << raw_message;
  }
  chown_one(box / "tmp" / name, mail_user_);
  fs::rename(box / "tmp" / name, box / "new" / name);
}

std::string Dovecot::log() const {
  std::ifstream in(dir_ / "dovecot.log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace mailgate::test
