// The IMAP parser and encoders against a real Dovecot (tests/support/dovecot.hpp), over a plain
// loopback socket: LOGIN with passwords that need quoting or literals, folder names in modified
// UTF-7, and a FETCH of a delivered message, byte-exact.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "protocol/imap_parser.hpp"
#include "tests/support/dovecot.hpp"

namespace mailgate::imap {
namespace {

// A blocking line-level IMAP connection for the test; responses come from the real parser.
class Connection {
 public:
  // `source`: the local address to connect from (Dovecot's auth penalty is per client address).
  explicit Connection(std::uint16_t port, const char* source = "127.0.0.1") : parser_(16) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in local{};
    local.sin_family = AF_INET;
    inet_pton(AF_INET, source, &local.sin_addr);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) throw std::runtime_error("bind");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("connect");
  }
  ~Connection() { close(fd_); }
  void send(const std::string& s) { ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL); }

  // Reads until a response arrives; literal data of streamed literals is collected in `literal`.
  Response read() {
    for (;;) {
      while (auto e = parser_.next()) {
        if (e->kind == Event::Kind::error) throw std::runtime_error("parser: " + e->error);
        if (e->kind == Event::Kind::literal_begin) literal.clear();
        if (e->kind == Event::Kind::literal_data) literal += e->data;
        if (e->kind == Event::Kind::response) return e->response;
      }
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 5000) <= 0) throw std::runtime_error("timeout");
      char buf[4096];
      ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) throw std::runtime_error("closed");
      parser_.feed(std::string_view(buf, n));
    }
  }
  // Reads responses until the tagged one.
  Response until(const std::string& tag, std::vector<Response>* untagged = nullptr) {
    for (;;) {
      auto r = read();
      if (r.type == Response::Type::tagged && r.tag == tag) return r;
      if (untagged) untagged->push_back(r);
    }
  }
  // Sends an astring argument: quoted when possible, else a synchronising literal.
  void send_astring_command(const std::string& prefix, const std::vector<std::string>& args) {
    std::string line = prefix;
    for (const auto& a : args) {
      if (auto q = quote_astring(a)) {
        line += " " + *q;
        continue;
      }
      send(line + " " + literal_prefix(a.size(), false));
      auto cont = read();
      if (cont.type != Response::Type::continuation)
        throw std::runtime_error("no continuation for a literal: " + cont.status + " " + cont.text);
      line = a;
    }
    send(line + "\r\n");
  }

  std::string literal;

 private:
  int fd_;
  Parser parser_;
};

TEST(ImapAgainstDovecot, LoginWithAnyPasswordAndFetchByteExact) {
  test::Dovecot dovecot;
  const std::vector<std::pair<std::string, std::string>> users = {
      {"plain", "Eenvoudig1"}, {"quote", "with \"quotes\""}, {"backslash", "back\\slash"}, {"space", "a b c"},
      {"accent", "wachtwoord-é"}, {"brace", "{5}"}};
  for (const auto& [u, p] : users) dovecot.add_user(u, p);
  const std::string message = "From: a@example.nl\r\nSubject: test\r\n\r\nline one\r\n.dot line\r\n";
  dovecot.deliver("accent", "INBOX", message);
  dovecot.deliver("accent", "Verzonden & ontvangen/Entwürfe", message);

  int wrong_source = 10;
  for (const auto& [user, password] : users) {
    Connection c(dovecot.imap_port());
    auto greeting = c.read();
    ASSERT_EQ(greeting.status, "OK") << greeting.text;
    c.send_astring_command("a1 LOGIN", {user, password});
    auto r = c.until("a1");
    EXPECT_EQ(r.status, "OK") << user << ": " << r.text << "\n" << dovecot.log();

    const std::string source = "127.0.0." + std::to_string(wrong_source++);
    Connection wrong(dovecot.imap_port(), source.c_str());
    wrong.read();
    wrong.send_astring_command("b1 LOGIN", {user, password + "x"});
    auto refused = wrong.until("b1");
    EXPECT_EQ(refused.status, "NO") << user;
    ASSERT_FALSE(refused.code.empty());
    EXPECT_TRUE(refused.code[0].is_atom("AUTHENTICATIONFAILED")) << refused.text;
  }

  Connection c(dovecot.imap_port());
  c.read();
  c.send_astring_command("a1 LOGIN", {"accent", "wachtwoord-é"});
  ASSERT_EQ(c.until("a1").status, "OK");
  std::vector<Response> listed;
  c.send("a2 LIST \"\" \"*\"\r\n");
  ASSERT_EQ(c.until("a2", &listed).status, "OK");
  std::vector<std::string> names;
  for (const auto& l : listed)
    if (l.data.size() == 4 && l.data[0].is_atom("LIST")) names.push_back(mailbox_decode(l.data[3].as_text()));
  EXPECT_NE(std::find(names.begin(), names.end(), "Verzonden & ontvangen/Entwürfe"), names.end()) << ::testing::PrintToString(names);

  c.send("a3 SELECT " + *quote_astring(mailbox_encode("Verzonden & ontvangen/Entwürfe")) + "\r\n");
  ASSERT_EQ(c.until("a3").status, "OK");
  std::vector<Response> fetched;
  c.send("a4 UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[])\r\n");
  ASSERT_EQ(c.until("a4", &fetched).status, "OK");
  ASSERT_EQ(fetched.size(), 1u);
  EXPECT_EQ(c.literal, message) << "streamed literal arrives byte-exact";
}

}  // namespace
}  // namespace mailgate::imap
