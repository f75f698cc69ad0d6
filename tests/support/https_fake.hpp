// A Python HTTPS fake for tests (tests/support/*.py, stdlib only), private on 127.0.0.1 with a
// free port and a certificate from its own test CA (make_test_certs). The script is started as
//   /usr/bin/python3 tests/support/<script> --port P --cert C --key K --out DIR [args...]
// and is expected to append one JSON object per line to DIR/records.jsonl for what it received.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <sys/types.h>
#include <vector>

#include <boost/json/object.hpp>

#include "tests/support/smtp_servers.hpp"

namespace mailgate::test {

class HttpsFake {
 public:
  // `cert_host`: the DNS name in the certificate (127.0.0.1 is always in it too).
  explicit HttpsFake(const std::string& script, const std::vector<std::string>& args = {}, const std::string& cert_host = "localhost");
  ~HttpsFake();
  HttpsFake(const HttpsFake&) = delete;

  std::uint16_t port() const { return port_; }
  std::filesystem::path ca_file() const { return certs_.ca; }
  const std::filesystem::path& dir() const { return dir_; }
  std::string url(const std::string& host = "localhost") const { return "https://" + host + ":" + std::to_string(port_); }
  std::vector<boost::json::object> records() const;  // DIR/records.jsonl, in order
  std::string log() const;

 private:
  std::filesystem::path dir_;
  TestCerts certs_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace mailgate::test
