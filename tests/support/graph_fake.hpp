// GraphFake: tests/support/graph_fake.py (a fake Microsoft Graph and token endpoint, HTTPS with a
// certificate from its own test CA) run on 127.0.0.1 for one test, with its control API wrapped.
// The Python file's header documents every endpoint and control call; control() reaches any of
// them, the helpers below cover the common ones.
//
//   test::GraphFake graph;
//   daemon config: [tls] ca_file = graph.ca_file(), [graph] api_base = graph.api_base(),
//                  login_base = graph.login_base()
//   graph.add_message("info@coop.nl", mime);     // -> its Graph id
//   graph.sent();                                  // what sendMail received, decoded
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <sys/types.h>
#include <vector>

#include <boost/json/value.hpp>

#include "tests/support/smtp_servers.hpp"

namespace mailgate::test {

struct GraphFakeOptions {
  std::string tenant = "contoso-tenant";
  std::string client_id = "11111111-2222-3333-4444-555555555555";
  std::string client_secret = "s3cret~value";
  std::string user = "info@coop.nl";
};

struct GraphSent {
  std::string user, mime;
  double time = 0;
};

class GraphFake {
 public:
  explicit GraphFake(GraphFakeOptions options = {});
  ~GraphFake();
  GraphFake(const GraphFake&) = delete;

  const GraphFakeOptions& options() const { return options_; }
  std::uint16_t port() const { return port_; }
  std::filesystem::path ca_file() const { return certs_.ca; }
  std::string login_base() const { return "https://127.0.0.1:" + std::to_string(port_); }
  std::string api_base() const { return login_base() + "/v1.0"; }
  // Token introspection (RFC 7662) on the plain control port, for Dovecot's oauth2 passdb.
  std::string introspection_url() const { return "http://127.0.0.1:" + std::to_string(control_port_) + "/_introspect"; }
  // TOML for the daemon: [tls] and [graph] pointing at this fake.
  std::string daemon_toml(int max_concurrent = 4, int page_size = 100) const;

  // A control call (plain HTTP); throws unless it answers 200. Returns the JSON answer.
  boost::json::value control(const std::string& method, const std::string& path, const std::string& body = "{}") const;

  std::string add_message(const std::string& user, const std::string& mime);
  std::vector<std::string> add_messages(const std::string& user, const std::vector<std::string>& mimes);
  void throttle(int count, int status, int retry_after_seconds, const std::string& path_contains = "");
  void set_expired(bool expired);
  void set_client_secret(const std::string& secret);
  void set_value_delay_ms(int ms);
  std::vector<GraphSent> sent() const;
  boost::json::object stats() const;
  boost::json::array request_log() const;
  std::string log() const;  // the fake's stderr

 private:
  GraphFakeOptions options_;
  std::filesystem::path dir_;
  TestCerts certs_;
  std::uint16_t port_ = 0, control_port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace mailgate::test
