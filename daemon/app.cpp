// Command-line entry: parses the command and its options, loads the configuration and hands
// over. Configuration problems print every problem (file:line: key: what) and exit 78.
#include "daemon/app.hpp"

#include <cstdio>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "config/config.hpp"
#include "daemon/logging.hpp"
#include "daemon/serve.hpp"
#include "rules/address.hpp"
#include "rules/password_policy.hpp"
#include "store/migrate.hpp"
#include "store/users.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace {

constexpr const char* kUsage = R"(usage: mailgated [COMMAND] [OPTIONS]

Commands:
  serve                  run the daemon (default)
  check-config [FILE]    validate a configuration file; exit 78 if it is not valid
  migrate                apply pending database migrations and exit
  user add --email E [--role ROLE]... [--first-name F] [--last-name L]
           [--password-stdin] [--if-no-admin]
                         create a user; without --password-stdin a one-time password is
                         generated and printed once. --if-no-admin: do nothing (exit 0) when an
                         active admin exists already
  version                print the version

Options:
  --config FILE          configuration file (default: $MAILGATE_CONFIG or /etc/mailgate/mailgate.toml)
)";

struct Args {
  std::vector<std::string> positional;
  std::multimap<std::string, std::string> options;  // --key value
  std::set<std::string> flags;                      // --flag
};

const std::set<std::string> kFlags = {"--password-stdin", "--if-no-admin", "--help"};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) == 0) {
      auto eq = s.find('=');
      if (eq != std::string::npos) {
        a.options.emplace(s.substr(0, eq), s.substr(eq + 1));
      } else if (kFlags.count(s)) {
        a.flags.insert(s);
      } else if (i + 1 < argc) {
        a.options.emplace(s, argv[++i]);
      } else {
        throw std::invalid_argument("option " + s + " needs a value");
      }
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

std::string option(const Args& a, const std::string& name, std::string fallback = {}) {
  auto it = a.options.find(name);
  return it == a.options.end() ? fallback : it->second;
}

std::filesystem::path config_path(const Args& a) {
  if (auto p = option(a, "--config"); !p.empty()) return p;
  if (const char* env = std::getenv("MAILGATE_CONFIG")) return env;
  return "/etc/mailgate/mailgate.toml";
}

std::string generate_password() {
  for (;;) {
    std::string p = random_token(12);  // 16 characters from [A-Za-z0-9_-]
    if (!password_policy_violation(p)) return p;
  }
}

int user_add(const Config& config, const Args& a) {
  auto email = normalize_email(option(a, "--email"));
  if (auto* e = std::get_if<AddressError>(&email)) {
    std::fprintf(stderr, "mailgated: --email: %s\n", e->reason.c_str());
    return 2;
  }
  NewUser u;
  u.email = email_match_key(std::get<std::string>(email));
  u.first_name = trim(option(a, "--first-name"));
  u.last_name = trim(option(a, "--last-name"));
  for (auto [it, end] = a.options.equal_range("--role"); it != end; ++it) u.roles.push_back(trim(it->second));
  if (u.roles.empty()) u.roles.push_back("admin");

  std::string password;
  const bool generated = !a.flags.count("--password-stdin");
  if (generated) {
    password = generate_password();
    u.password_must_change = true;
  } else {
    std::getline(std::cin, password);
    if (auto why = password_policy_violation(password)) {
      std::fprintf(stderr, "mailgated: password: %s\n", why->c_str());
      return 2;
    }
  }
  u.password_hash = password_hash(password);

  pqxx::connection conn(store_conninfo(config.database));
  migrate(conn);
  pqxx::work tx(conn);
  if (a.flags.count("--if-no-admin") && user_active_admin_exists(tx)) return 0;
  try {
    for (const auto& role : u.roles)
      if (tx.exec_params("SELECT 1 FROM roles WHERE name = $1", role).empty()) {
        std::fprintf(stderr, "mailgated: --role: no role named '%s' (admin, staff, readonly)\n", role.c_str());
        return 2;
      }
    auto id = user_create(tx, u, Actor{"cli", std::nullopt, "mailgated user add"});
    tx.commit();
    std::printf("created user %lld: %s\n", static_cast<long long>(id), u.email.c_str());
    if (generated) std::printf("one-time password (change it at first login): %s\n", password.c_str());
  } catch (const UserExists& e) {
    std::fprintf(stderr, "mailgated: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace

int mailgated_main(int argc, char** argv) {
  Args args;
  try {
    args = parse_args(argc, argv);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "mailgated: %s\n%s", e.what(), kUsage);
    return 2;
  }
  if (args.flags.count("--help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const std::string command = args.positional.empty() ? "serve" : args.positional[0];
  if (command == "version") {
    std::printf("mailgated %s\n", MAILGATE_VERSION);
    return 0;
  }
  const bool known = command == "serve" || command == "check-config" || command == "migrate" ||
                     (command == "user" && args.positional.size() == 2 && args.positional[1] == "add");
  if (!known) {
    std::fprintf(stderr, "mailgated: unknown command '%s'\n%s", command.c_str(), kUsage);
    return 2;
  }

  std::filesystem::path path = config_path(args);
  if (command == "check-config" && args.positional.size() > 1) path = args.positional[1];
  Config config;
  try {
    config = load_config(path);
  } catch (const ConfigError& e) {
    for (const auto& p : e.problems()) std::fprintf(stderr, "%s\n", p.c_str());
    std::fprintf(stderr, "mailgated: %s is not a valid configuration (%zu problem%s)\n", path.c_str(),
                 e.problems().size(), e.problems().size() == 1 ? "" : "s");
    return kExitConfig;
  }
  if (command == "check-config") {
    std::printf("%s: ok\n", path.c_str());
    return 0;
  }

  logging_setup(config.daemon.log_level);
  try {
    if (command == "migrate") {
      pqxx::connection conn(store_conninfo(config.database));
      auto applied = migrate(conn);
      std::printf("applied %zu migration(s); schema is at %d\n", applied.size(), migration_status(conn).applied);
      return 0;
    }
    if (command == "user") return user_add(config, args);
    return serve(config);
  } catch (const pqxx::broken_connection& e) {
    spdlog::critical("event=db_unavailable reason=\"{}\"", e.what());
    return 1;
  } catch (const std::exception& e) {
    spdlog::critical("event=failed command={} reason=\"{}\"", command, e.what());
    return 1;
  }
}

}  // namespace mailgate
