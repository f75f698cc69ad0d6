// config/: the TOML configuration file parsed into a typed, validated struct.
//
// Contract: load_config() either returns a Config in which every value is usable, or throws
// ConfigError listing every problem found (unknown key, wrong type, missing required key,
// impossible value), each naming the key and its line. The daemon exits with EX_CONFIG (78).
// Each key's name and default live next to the field it fills, in config.cpp's readers.
#pragma once
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace mailgate {

inline constexpr int kExitConfig = 78;  // EX_CONFIG from sysexits.h

struct DaemonConfig {
  int io_threads = 2;
  std::chrono::seconds shutdown_grace{10};
  // How often the inbound supervisors look for mailboxes to start that this daemon's API did not
  // tell them about (another daemon on the same database, SQL); the API wakes them at once.
  std::chrono::seconds mailbox_watch{2};
  std::string log_level = "info";
};

struct HttpConfig {
  std::string address = "127.0.0.1";
  std::uint16_t port = 8080;
  std::size_t max_body_bytes = 1 << 20;
  std::size_t max_header_bytes = 16 << 10;
  std::chrono::seconds read_timeout{30};
  std::chrono::seconds write_timeout{30};
  // PEM certificate chain and key: when both are set the listener speaks HTTPS only (the
  // Mailgun webhook needs HTTPS; or leave them empty behind a TLS-terminating reverse proxy).
  std::filesystem::path tls_certificate;
  std::filesystem::path tls_key;
};

struct DatabaseConfig {
  std::string url;  // required: libpq connection URI or key=value string
  int pool_size = 4;
  std::chrono::seconds connect_timeout{5};
  std::chrono::seconds query_timeout{30};
};

struct SecretsConfig {
  // File holding the 32-byte key (raw or 64 hex characters) that encrypts secrets at rest.
  // Empty: $CREDENTIALS_DIRECTORY/secrets-key (systemd LoadCredential=).
  std::filesystem::path key_file;
};

struct SecurityConfig {
  // Mailbox server hosts in loopback or private ranges are refused unless this is true.
  bool allow_private_hosts = false;
};

struct TlsConfig {
  // Extra certificate authorities (PEM file) trusted for outgoing connections (IMAP, SMTP,
  // HTTPS), beside the system's: an on-premise CA, or a test's. Empty: the system's only.
  std::filesystem::path ca_file;
};

struct ImapConfig {
  int batch_size = 100;                         // messages fetched and committed together
  std::chrono::seconds idle_restart{28 * 60};   // IDLE is re-issued before the 29-minute limit
  std::chrono::hours give_up_after{24};         // failing longer than this: mailbox "failed"
};

struct MessagesConfig {
  std::chrono::hours retention{30 * 24};      // removed (soft-deleted) messages are purged after this
  std::chrono::seconds purge_interval{3600};  // how often the purge runs
};

struct OutboxConfig {
  std::chrono::milliseconds poll{1000};       // how often due rows are looked for (new rows wake it at once)
  std::chrono::seconds lease{120};            // a claimed row whose daemon went silent this long is taken back
  std::chrono::seconds retry_base{60};        // transient failure: retry after base * 2^(attempt-1), at most 1 h
  std::chrono::hours max_age{48};             // ... until the row is this old: then it fails
  std::chrono::seconds command_timeout{300};  // SMTP: per command (RFC 5321 4.5.3.2); the end of DATA gets twice this
  std::string helo_name;                      // EHLO name; default: the host name
};

// The trusted-receiver SMTP server (issue 6). Off unless `listen` names at least one address.
struct SmtpReceiverConfig {
  std::vector<std::string> listen;             // "127.0.0.1:25", "[::]:2525"
  std::string hostname;                        // greeting, EHLO and Authentication-Results name; default: the host name
  std::string receive_domain;                  // receivers' addresses are <slug>-<random>@receive_domain (required with listen)
  std::filesystem::path tls_certificate;       // PEM chain; with tls_key: STARTTLS is offered
  std::filesystem::path tls_key;
  std::size_t max_line_length = 1000;          // data line, with CRLF (RFC 5321 4.5.3.1.6)
  std::size_t max_recipients = 100;            // per message
  std::size_t max_message_bytes = 25 << 20;    // SIZE
  std::chrono::seconds command_timeout{300};   // waiting for a command (RFC 5321 4.5.3.2.7: 5 min)
  std::chrono::seconds data_timeout{600};      // the whole DATA phase
  int max_sessions = 500;                      // at once, in total
  int max_sessions_per_ip = 20;                // at once, per client address
  std::vector<std::string> dns_servers;        // for SPF, DKIM and DMARC; "ip" or "ip:port"; empty: /etc/resolv.conf
  std::chrono::milliseconds dns_timeout{5000};
  std::size_t dns_cache_entries = 10000;      // answers kept for their TTL (at most 1 h); 0: none
  int auth_threads = 4;                        // threads running the (blocking) SPF/DKIM/DMARC checks
  int rejections_per_hour = 5;                 // rejection mails per receiver (its supplier contact) per hour
  int commit_transactions = 1;                 // the group commit's transactions in flight at once
};

// Outgoing HTTPS (protocol/http_client: Mailgun's API, Microsoft Graph, the token endpoint).
struct HttpClientConfig {
  std::chrono::seconds connect_timeout{10};
  std::chrono::seconds request_timeout{60};      // the whole exchange, body included
  std::size_t max_response_bytes = 64 << 20;     // a Graph $value of a large message fits
  int max_idle_per_host = 4;                     // kept-alive connections reused per scheme://host:port
  std::chrono::seconds idle_timeout{60};         // an idle connection is closed after this
};

// Mailgun (issue 7). The API hosts are the documented ones; tests point them at a local fake.
struct MailgunConfig {
  std::string api_base_eu = "https://api.eu.mailgun.net";
  std::string api_base_us = "https://api.mailgun.net";
  // Webhooks: timestamps older (or further in the future) than this are refused. Mailgun retries
  // a failed webhook for 8 hours; the window covers that with room to spare.
  std::chrono::seconds webhook_max_age{9 * 3600 - 60 * 30};  // 8.5 h
  std::size_t webhook_max_bytes = 40 << 20;      // one forwarded message with its form encoding
  std::size_t webhook_max_fields = 1000;         // form fields (attachment-N included)
};

// Microsoft 365 through Microsoft Graph (issue 7). Tests point both bases at a local fake.
struct GraphConfig {
  std::string api_base = "https://graph.microsoft.com/v1.0";
  std::string login_base = "https://login.microsoftonline.com";  // {login_base}/{tenant}/oauth2/v2.0/token
  int max_concurrent_per_mailbox = 4;            // requests at once per mailbox (Graph's limit)
  std::size_t max_send_bytes = 4 << 20;          // sendMail's raw MIME limit (documented 4 MB)
  int secret_expiry_warning_days = 14;           // warn this many days before ms365_secret_expires_on
  int page_size = 100;                           // Prefer: odata.maxpagesize for delta pages
};

struct Config {
  std::filesystem::path path;  // the file it came from
  DaemonConfig daemon;
  HttpConfig http;
  DatabaseConfig database;
  SecretsConfig secrets;
  SecurityConfig security;
  TlsConfig tls;
  ImapConfig imap;
  MessagesConfig messages;
  OutboxConfig outbox;
  SmtpReceiverConfig smtp_receiver;
  HttpClientConfig http_client;
  MailgunConfig mailgun;
  GraphConfig graph;
};

class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

Config load_config(const std::filesystem::path& file);
Config parse_config(std::string_view toml_text, const std::filesystem::path& source_name);

}  // namespace mailgate
