#include "tests/support/dkim_signer.hpp"

#include <fstream>
#include <stdexcept>

#include "tests/support/pg_harness.hpp"

namespace mailgate::test {

namespace fs = std::filesystem;

DkimSigner::DkimSigner() : dir_(temp_dir("dkim")) {
  const std::string d = dir_.string();
  if (run_command("openssl genrsa -out '" + d + "/key.pem' 2048 2>/dev/null") != 0) throw std::runtime_error("openssl genrsa failed");
  std::string pub;
  if (run_command("openssl rsa -in '" + d + "/key.pem' -pubout -outform DER 2>/dev/null | base64 -w0", &pub) != 0)
    throw std::runtime_error("openssl rsa failed");
  record_ = "v=DKIM1; k=rsa; p=" + pub;
}

DkimSigner::~DkimSigner() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

std::string DkimSigner::sign(const std::string& message, const std::string& domain, const std::string& selector, bool length) const {
  static int n = 0;
  const fs::path file = dir_ / ("msg" + std::to_string(++n) + ".eml");
  std::ofstream(file, std::ios::binary) << message;
  std::string signature;
  const std::string py =
      "import dkim,sys; m=open(sys.argv[1],'rb').read(); k=open(sys.argv[2],'rb').read(); "
      "sys.stdout.buffer.write(dkim.sign(m, sys.argv[3].encode(), sys.argv[4].encode(), k, "
      "include_headers=[b'from', b'to', b'subject', b'date', b'message-id'], length=sys.argv[5] == '1'))";
  if (run_command("/usr/bin/python3 -c \"" + py + "\" '" + file.string() + "' '" + (dir_ / "key.pem").string() + "' " + selector + " " +
                      domain + " " + (length ? "1" : "0"),
                  &signature) != 0 ||
      signature.rfind("DKIM-Signature:", 0) != 0)
    throw std::runtime_error("python3-dkim could not sign: " + signature);
  return signature + message;
}

}  // namespace mailgate::test
