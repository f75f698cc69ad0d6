// A private Dovecot 2.3 for IMAP tests: its own configuration, certificate authority and
// server certificate (for "localhost" and 127.0.0.1), passwd-file users and Maildirs in a
// temporary directory, listening on 127.0.0.1 on free ports (143-style with STARTTLS, and
// implicit TLS). As root the master runs as root and mail processes as the unprivileged
// "nobody"; as another user everything runs as that user.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

namespace mailgate::test {

class Dovecot {
 public:
  // Starts it; throws with the log when it does not come up. With `oauth2_introspection_url`
  // it also offers AUTH=XOAUTH2, checking tokens at that RFC 7662 endpoint (Dovecot's oauth2
  // passdb; tests/support/graph_fake.py serves one).
  explicit Dovecot(const std::string& oauth2_introspection_url = {});
  ~Dovecot();  // stops it and removes the directory

  // Adds (or replaces) a user; any password works (stored base64-encoded).
  void add_user(const std::string& user, const std::string& password);
  // Writes a message straight into a user's Maildir folder ("INBOX" or a folder name in UTF-8,
  // created when missing); Dovecot sees it at the next sync or IDLE check.
  void deliver(const std::string& user, const std::string& folder, const std::string& raw_message);

  // Creates a user's folder (UTF-8 name, "/" between levels) without putting mail in it.
  void create_folder(const std::string& user, const std::string& folder);
  // How many messages a folder holds on disk (new/ and cur/ of its Maildir; 0 when it does not exist).
  int count(const std::string& user, const std::string& folder) const;

  void stop();
  void start();

  std::uint16_t imap_port() const { return imap_port_; }    // plain, STARTTLS offered
  std::uint16_t imaps_port() const { return imaps_port_; }  // implicit TLS
  std::filesystem::path ca_file() const { return dir_ / "ca.pem"; }
  std::filesystem::path dir() const { return dir_; }
  std::string log() const;

 private:
  std::filesystem::path maildir(const std::string& user, const std::string& folder) const;
  std::filesystem::path dir_;
  std::uint16_t imap_port_ = 0, imaps_port_ = 0;
  std::string mail_user_;
  unsigned long counter_ = 0;
};

}  // namespace mailgate::test
