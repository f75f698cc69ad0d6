// Reads the TOML file with toml++ and fills Config. A Reader walks one table: every key it is
// asked for is marked as used, and when the table is finished every key left over is reported as
// unknown. Problems are collected, not thrown one by one, so an operator sees them all at once.
#include "config/config.hpp"

#include <fstream>
#include <algorithm>
#include <cctype>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

namespace mailgate {

ConfigError::ConfigError(std::vector<std::string> problems)
    : std::runtime_error([&] {
        std::string s;
        for (const auto& p : problems) s += (s.empty() ? "" : "\n") + p;
        return s;
      }()),
      problems_(std::move(problems)) {}

namespace {

class Problems {
 public:
  explicit Problems(std::string file) : file_(std::move(file)) {}
  void add(const toml::source_region& where, std::string_view key, std::string_view what) {
    if (where.begin.line > 0)
      list_.push_back(fmt::format("{}:{}: {}: {}", file_, where.begin.line, key, what));
    else
      list_.push_back(fmt::format("{}: {}: {}", file_, key, what));
  }
  std::vector<std::string>& list() { return list_; }

 private:
  std::string file_;
  std::vector<std::string> list_;
};

class Reader {
 public:
  Reader(const toml::table* table, std::string prefix, Problems& problems)
      : table_(table), prefix_(std::move(prefix)), problems_(problems) {}
  Reader(const Reader&) = delete;  // the destructor reports unknown keys: exactly once

  ~Reader() {
    if (!table_) return;
    for (const auto& [k, v] : *table_) {
      if (used_.count(std::string(k.str()))) continue;
      std::string what = "unknown key";
      if (auto near = nearest(k.str())) what += fmt::format(" (did you mean {}?)", *near);
      problems_.add(v.source(), full(k.str()), what);
    }
  }

  Reader table(std::string_view key) {
    used_.insert(std::string(key));
    const toml::node* n = table_ ? table_->get(key) : nullptr;
    if (n && !n->is_table()) {
      problems_.add(n->source(), full(key), "must be a table");
      return Reader(nullptr, full(key), problems_);
    }
    return Reader(n ? n->as_table() : nullptr, full(key), problems_);
  }

  void string(std::string_view key, std::string& out, bool required = false) {
    if (const toml::node* n = get(key, required)) {
      if (auto v = n->value<std::string>())
        out = *v;
      else
        problems_.add(n->source(), full(key), "must be a string");
    }
  }

  void strings(std::string_view key, std::vector<std::string>& out) {
    if (const toml::node* n = get(key, false)) {
      const toml::array* a = n->as_array();
      std::vector<std::string> values;
      if (a)
        for (const auto& item : *a) {
          if (auto v = item.value<std::string>())
            values.push_back(*v);
          else
            a = nullptr;
        }
      if (a)
        out = std::move(values);
      else
        problems_.add(n->source(), full(key), "must be an array of strings");
    }
  }

  void boolean(std::string_view key, bool& out) {
    if (const toml::node* n = get(key, false)) {
      if (auto v = n->value_exact<bool>())
        out = *v;
      else
        problems_.add(n->source(), full(key), "must be true or false");
    }
  }

  template <class Int>
  void integer(std::string_view key, Int& out, std::int64_t min, std::int64_t max) {
    if (const toml::node* n = get(key, false)) {
      auto v = n->value_exact<std::int64_t>();
      if (!v)
        problems_.add(n->source(), full(key), "must be an integer");
      else if (*v < min || *v > max)
        problems_.add(n->source(), full(key), fmt::format("must be between {} and {}, not {}", min, max, *v));
      else
        out = static_cast<Int>(*v);
    }
  }

  void seconds(std::string_view key, std::chrono::seconds& out, std::int64_t min, std::int64_t max) {
    std::int64_t s = out.count();
    integer(key, s, min, max);
    out = std::chrono::seconds(s);
  }

  // Reports a value that parsed but is not acceptable.
  void invalid(std::string_view key, std::string_view why) {
    const toml::node* n = table_ ? table_->get(key) : nullptr;
    problems_.add(n ? n->source() : toml::source_region{}, full(key), why);
  }

 private:
  // The known key closest to a misspelt one, if it is within two edits.
  std::optional<std::string> nearest(std::string_view key) const {
    std::optional<std::string> best;
    std::size_t best_distance = 3;
    for (const auto& known : used_) {
      std::vector<std::size_t> row(known.size() + 1);
      for (std::size_t j = 0; j <= known.size(); ++j) row[j] = j;
      for (std::size_t i = 1; i <= key.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= known.size(); ++j) {
          std::size_t up = row[j];
          row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (key[i - 1] == known[j - 1] ? 0 : 1)});
          diagonal = up;
        }
      }
      if (row[known.size()] < best_distance) {
        best_distance = row[known.size()];
        best = known;
      }
    }
    return best;
  }

  const toml::node* get(std::string_view key, bool required) {
    used_.insert(std::string(key));
    const toml::node* n = table_ ? table_->get(key) : nullptr;
    if (!n && required) problems_.add(toml::source_region{}, full(key), "required key is missing");
    return n;
  }
  std::string full(std::string_view key) const {
    return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
  }

  const toml::table* table_;
  std::string prefix_;
  Problems& problems_;
  std::set<std::string> used_;
};

void read_daemon(Reader r, DaemonConfig& c) {
  r.integer("io_threads", c.io_threads, 1, 64);
  r.seconds("shutdown_grace_seconds", c.shutdown_grace, 0, 3600);
  r.seconds("mailbox_watch_seconds", c.mailbox_watch, 1, 3600);
  r.string("log_level", c.log_level);
  static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  if (!levels.count(c.log_level))
    r.invalid("log_level", "must be one of trace, debug, info, warn, error, critical, off");
}

void read_http(Reader r, HttpConfig& c) {
  r.string("address", c.address);
  r.integer("port", c.port, 0, 65535);
  r.integer("max_body_bytes", c.max_body_bytes, 1024, std::int64_t{1} << 34);
  r.integer("max_header_bytes", c.max_header_bytes, 1024, 1 << 20);
  r.seconds("read_timeout_seconds", c.read_timeout, 1, 3600);
  r.seconds("write_timeout_seconds", c.write_timeout, 1, 3600);
  std::string cert, key;
  r.string("tls_certificate", cert);
  r.string("tls_key", key);
  c.tls_certificate = cert;
  c.tls_key = key;
  if (c.address.empty()) r.invalid("address", "must not be empty");
  if (c.tls_certificate.empty() != c.tls_key.empty()) r.invalid("tls_key", "tls_certificate and tls_key go together");
}

void read_database(Reader r, DatabaseConfig& c) {
  r.string("url", c.url, /*required=*/true);
  r.integer("pool_size", c.pool_size, 1, 256);
  r.seconds("connect_timeout_seconds", c.connect_timeout, 1, 600);
  r.seconds("query_timeout_seconds", c.query_timeout, 1, 3600);
}

void read_secrets(Reader r, SecretsConfig& c) {
  std::string key_file;
  r.string("key_file", key_file);
  c.key_file = key_file;
}

void read_security(Reader r, SecurityConfig& c) { r.boolean("allow_private_hosts", c.allow_private_hosts); }

void read_tls(Reader r, TlsConfig& c) {
  std::string ca;
  r.string("ca_file", ca);
  c.ca_file = ca;
}

void read_imap(Reader r, ImapConfig& c) {
  r.integer("batch_size", c.batch_size, 1, 10000);
  r.seconds("idle_restart_seconds", c.idle_restart, 10, 29 * 60);
  std::int64_t hours = c.give_up_after.count();
  r.integer("give_up_after_hours", hours, 1, 24 * 365);
  c.give_up_after = std::chrono::hours(hours);
}

void read_messages(Reader r, MessagesConfig& c) {
  std::int64_t days = c.retention.count() / 24;
  r.integer("retention_days", days, 0, 3650);
  c.retention = std::chrono::hours(days * 24);
  r.seconds("purge_interval_seconds", c.purge_interval, 1, 24 * 3600);
}

void read_outbox(Reader r, OutboxConfig& c) {
  std::int64_t ms = c.poll.count();
  r.integer("poll_interval_ms", ms, 50, 60000);
  c.poll = std::chrono::milliseconds(ms);
  r.seconds("lease_seconds", c.lease, 5, 3600);
  r.seconds("retry_base_seconds", c.retry_base, 1, 3600);
  std::int64_t hours = c.max_age.count();
  r.integer("max_age_hours", hours, 1, 24 * 30);
  c.max_age = std::chrono::hours(hours);
  r.seconds("command_timeout_seconds", c.command_timeout, 1, 3600);
  r.string("helo_name", c.helo_name);
}

// "host:port" or "[v6]:port"; the port is required.
bool valid_listen_address(const std::string& s) {
  const auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) return false;
  const std::string port = s.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535) return false;
  const std::string host = s.substr(0, colon);
  return host.front() != '[' || host.back() == ']';
}

void read_smtp_receiver(Reader r, SmtpReceiverConfig& c) {
  r.strings("listen", c.listen);
  r.string("hostname", c.hostname);
  r.string("receive_domain", c.receive_domain);
  std::transform(c.receive_domain.begin(), c.receive_domain.end(), c.receive_domain.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  std::string cert, key;
  r.string("tls_certificate", cert);
  r.string("tls_key", key);
  c.tls_certificate = cert;
  c.tls_key = key;
  r.integer("max_line_length", c.max_line_length, 1000, 1 << 20);
  r.integer("max_recipients", c.max_recipients, 1, 10000);
  r.integer("max_message_bytes", c.max_message_bytes, 1024, std::int64_t{1} << 31);
  r.seconds("command_timeout_seconds", c.command_timeout, 1, 3600);
  r.seconds("data_timeout_seconds", c.data_timeout, 1, 3600);
  r.integer("max_sessions", c.max_sessions, 1, 100000);
  r.integer("max_sessions_per_ip", c.max_sessions_per_ip, 1, 100000);
  r.strings("dns_servers", c.dns_servers);
  std::int64_t ms = c.dns_timeout.count();
  r.integer("dns_timeout_ms", ms, 100, 60000);
  c.dns_timeout = std::chrono::milliseconds(ms);
  r.integer("dns_cache_entries", c.dns_cache_entries, 0, 1000000);
  r.integer("auth_threads", c.auth_threads, 1, 64);
  r.integer("commit_transactions", c.commit_transactions, 1, 16);
  r.integer("rejections_per_hour", c.rejections_per_hour, 0, 1000);
  for (const auto& a : c.listen)
    if (!valid_listen_address(a)) r.invalid("listen", fmt::format("\"{}\" is not host:port", a));
  if (!c.listen.empty() && c.receive_domain.empty()) r.invalid("receive_domain", "is required when listen is set");
  if (c.receive_domain.find_first_of("@ \t\r\n") != std::string::npos) r.invalid("receive_domain", "must be a domain name");
  if (c.tls_certificate.empty() != c.tls_key.empty()) r.invalid("tls_key", "tls_certificate and tls_key go together");
}

// An API base URL: https always (the tests' fakes serve TLS too), kept without a trailing slash.
void read_base_url(Reader& r, std::string_view key, std::string& out) {
  r.string(key, out);
  while (!out.empty() && out.back() == '/') out.pop_back();
  if (out.rfind("https://", 0) != 0 || out.size() <= 8) r.invalid(key, "must be an https:// URL");
}

void read_http_client(Reader r, HttpClientConfig& c) {
  r.seconds("connect_timeout_seconds", c.connect_timeout, 1, 600);
  r.seconds("request_timeout_seconds", c.request_timeout, 1, 3600);
  r.integer("max_response_bytes", c.max_response_bytes, 1024, std::int64_t{1} << 31);
  r.integer("max_idle_per_host", c.max_idle_per_host, 0, 64);
  r.seconds("idle_timeout_seconds", c.idle_timeout, 1, 3600);
}

void read_mailgun(Reader r, MailgunConfig& c) {
  read_base_url(r, "api_base_eu", c.api_base_eu);
  read_base_url(r, "api_base_us", c.api_base_us);
  r.seconds("webhook_max_age_seconds", c.webhook_max_age, 60, 7 * 24 * 3600);
  r.integer("webhook_max_bytes", c.webhook_max_bytes, 1024, std::int64_t{1} << 31);
  r.integer("webhook_max_fields", c.webhook_max_fields, 10, 100000);
}

void read_graph(Reader r, GraphConfig& c) {
  read_base_url(r, "api_base", c.api_base);
  read_base_url(r, "login_base", c.login_base);
  r.integer("max_concurrent_per_mailbox", c.max_concurrent_per_mailbox, 1, 16);
  r.integer("max_send_bytes", c.max_send_bytes, 1024, std::int64_t{1} << 30);
  r.integer("secret_expiry_warning_days", c.secret_expiry_warning_days, 0, 365);
  r.integer("page_size", c.page_size, 1, 1000);
}

}  // namespace

Config parse_config(std::string_view text, const std::filesystem::path& source_name) {
  Problems problems(source_name.string());
  Config config;
  config.path = source_name;
  toml::table root;
  try {
    root = toml::parse(text, source_name.string());
  } catch (const toml::parse_error& e) {
    problems.add(e.source(), "syntax", std::string(e.description()));
    throw ConfigError(std::move(problems.list()));
  }
  {
    Reader r(&root, "", problems);
    read_daemon(r.table("daemon"), config.daemon);
    read_http(r.table("http"), config.http);
    read_database(r.table("database"), config.database);
    read_secrets(r.table("secrets"), config.secrets);
    read_security(r.table("security"), config.security);
    read_tls(r.table("tls"), config.tls);
    read_imap(r.table("imap"), config.imap);
    read_messages(r.table("messages"), config.messages);
    read_outbox(r.table("outbox"), config.outbox);
    read_smtp_receiver(r.table("smtp_receiver"), config.smtp_receiver);
    read_http_client(r.table("http_client"), config.http_client);
    read_mailgun(r.table("mailgun"), config.mailgun);
    read_graph(r.table("graph"), config.graph);
  }
  if (!problems.list().empty()) throw ConfigError(std::move(problems.list()));
  return config;
}

Config load_config(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ConfigError({fmt::format("{}: cannot read the file", file.string())});
  std::ostringstream ss;
  ss << in.rdbuf();
  Config c = parse_config(ss.str(), file);
  // Relative paths in the file are relative to the file, not to the working directory.
  if (!c.secrets.key_file.empty() && c.secrets.key_file.is_relative())
    c.secrets.key_file = file.parent_path() / c.secrets.key_file;
  if (!c.tls.ca_file.empty() && c.tls.ca_file.is_relative()) c.tls.ca_file = file.parent_path() / c.tls.ca_file;
  for (auto* p : {&c.smtp_receiver.tls_certificate, &c.smtp_receiver.tls_key, &c.http.tls_certificate, &c.http.tls_key})
    if (!p->empty() && p->is_relative()) *p = file.parent_path() / *p;
  return c;
}

}  // namespace mailgate
