// SMTP peers for tests, all private on 127.0.0.1 with free ports:
// - SmtpSink: Postfix's smtp-sink (Debian's postfix), which can also refuse or hang up after
//   any command (-f, -r, -q, -Q options); every transaction is dumped to a file.
// - PySmtpServer: tests/support/smtp_server.py on aiosmtpd, with STARTTLS (a certificate from its
//   own test CA), AUTH, transient failures and refused recipients; keeps every message byte-exact.
// - make_test_certs(): a CA and a server certificate for localhost / 127.0.0.1 signed by it.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <sys/types.h>
#include <vector>

namespace mailgate::test {

struct TestCerts {
  std::filesystem::path ca, cert, key;
};
// In `dir`: ca.pem, <name>.pem and <name>.key for `host_name` (also valid for 127.0.0.1).
TestCerts make_test_certs(const std::filesystem::path& dir, const std::string& name = "server", const std::string& host_name = "localhost");

// Waits until 127.0.0.1:port accepts connections; false after `seconds`.
bool wait_for_port(std::uint16_t port, int seconds = 10);

class SmtpSink {
 public:
  explicit SmtpSink(const std::string& options = "");  // extra smtp-sink options, e.g. "-q ."
  ~SmtpSink();
  std::uint16_t port() const { return port_; }
  // Every dumped transaction (smtp-sink's X-* headers, then the message with LF line ends).
  std::vector<std::string> transactions() const;

 private:
  std::filesystem::path dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

struct PySmtpOptions {
  bool tls = false;          // offer STARTTLS
  bool require_tls = false;  // refuse MAIL before STARTTLS
  std::string user = {}, password = {};  // require AUTH
  int fail_first = 0;        // answer the first N DATA with 451
  std::vector<std::string> reject = {};  // recipients refused with 550
  std::string cert_host = "localhost";  // the name in the server certificate
  bool implicit_tls = false;  // TLS from the first byte (port 465 style) instead of STARTTLS
  bool login_only = false;    // offer AUTH LOGIN, not PLAIN
  bool pipelining = false;    // offer PIPELINING (RFC 2920)
  int hang_up_at = 0;         // drop the connection at the end of the Nth DATA, unanswered and unstored
  // Set: require AUTH XOAUTH2 (and offer nothing else), its bearer token checked at this RFC 7662
  // introspection URL (tests/support/graph_fake.py's /_introspect), as Office 365 does.
  std::string xoauth2_introspect = {};
};

struct ReceivedMail {
  std::string raw;  // byte-exact, as after DATA
  std::string from;
  std::vector<std::string> to;
  bool tls = false;
  std::string login;
  int client_port = 0;  // one per connection
};

class PySmtpServer {
 public:
  explicit PySmtpServer(PySmtpOptions options = {});
  ~PySmtpServer();
  std::uint16_t port() const { return port_; }
  std::filesystem::path ca_file() const { return certs_.ca; }
  std::vector<ReceivedMail> received() const;  // in order of acceptance
  std::string log() const;

 private:
  std::filesystem::path dir_;
  TestCerts certs_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace mailgate::test
