// DKIM for tests: an RSA key made with openssl, its DNS record, and signatures made with Debian's
// python3-dkim -- an implementation independent of the libopendkim that verifies them.
#pragma once
#include <filesystem>
#include <string>

namespace mailgate::test {

class DkimSigner {
 public:
  DkimSigner();  // a new 2048-bit key in a temporary directory
  ~DkimSigner();
  DkimSigner(const DkimSigner&) = delete;
  DkimSigner& operator=(const DkimSigner&) = delete;

  // The TXT record to publish at <selector>._domainkey.<domain>: "v=DKIM1; k=rsa; p=...".
  const std::string& record() const { return record_; }
  // `message` (CRLF line ends) with a DKIM-Signature by d=`domain` s=`selector` prepended,
  // covering From, To, Subject, Date and Message-ID; `length` adds l= (the body length signed).
  std::string sign(const std::string& message, const std::string& domain, const std::string& selector = "sel",
                   bool length = false) const;

 private:
  std::filesystem::path dir_;
  std::string record_;
};

}  // namespace mailgate::test
