#include "protocol/smtp_client.hpp"

#include <deque>

#include "util/crypto.hpp"

namespace mailgate::smtp {

namespace asio = boost::asio;
using asio::awaitable;

const char* to_string(Step s) {
  switch (s) {
    case Step::connect: return "connect";
    case Step::tls: return "tls";
    case Step::greeting: return "greeting";
    case Step::ehlo: return "ehlo";
    case Step::auth: return "auth";
    case Step::mail: return "mail";
    case Step::rcpt: return "rcpt";
    case Step::data: return "data";
  }
  return "?";
}

namespace {

bool eight_bit(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return true;
  return false;
}

}  // namespace

struct Client::Impl {
  Impl(asio::any_io_executor ex, Account account, Timeouts timeouts)
      : account(std::move(account)), timeouts(timeouts), conn(ex, this->account.endpoint) {}

  Account account;
  Timeouts timeouts;
  net::Connection conn;
  ReplyParser parser;
  std::string input;
  Capabilities caps;
  std::size_t accepted = 0;
  bool open = false, broken = false;
  // The envelope sent after the last message's content (RFC 2920), its replies not read yet.
  struct Announced {
    std::string from;
    std::vector<std::string> to;
  };
  std::optional<Announced> announced;
  bool quit_sent = false;  // with the last message's content: the goodbye is still to be read
  std::deque<std::string> transcript;

  void note(const std::string& line) {
    transcript.push_back(line);
    if (transcript.size() > 20) transcript.pop_front();
  }

  // Runs a network operation, turning connection errors into a transient Failure of `step`.
  [[noreturn]] void net_failed(const net::Error& e, Step step) {
    broken = true;
    conn.close();
    const bool tls_problem = e.kind == net::Error::Kind::tls;
    throw Failure(tls_problem ? Step::tls : step, false, e.what());
  }

  awaitable<Reply> read_reply(Step step, std::chrono::milliseconds timeout) {
    for (;;) {
      std::optional<Reply> r;
      try {
        r = parser.next();
      } catch (const ProtocolError& e) {
        broken = true;
        conn.close();
        throw Failure(step, false, std::string("the server does not speak SMTP: ") + e.what());
      }
      if (r) {
        note("S: " + r->text());
        if (r->code == 421) {  // the server is closing the connection
          broken = true;
          conn.close();
          throw Failure(step, false, r->text(), r->code);
        }
        co_return *r;
      }
      input.clear();
      std::optional<net::Error> failed;
      try {
        co_await conn.read_some(input, timeout);
      } catch (const net::Error& e) {
        failed = e;
      }
      if (failed) net_failed(*failed, step);
      parser.feed(input);
    }
  }

  awaitable<void> write(const std::string& data, Step step, std::chrono::milliseconds timeout) {
    std::optional<net::Error> failed;
    try {
      co_await conn.write(data, timeout);
    } catch (const net::Error& e) {
      failed = e;
    }
    if (failed) net_failed(*failed, step);
  }

  // `shown` replaces the line in the transcript (credentials).
  awaitable<Reply> command(const std::string& line, Step step, const char* shown = nullptr) {
    note("C: " + (shown ? std::string(shown) : line.substr(0, line.size() - 2)));
    co_await write(line, step, timeouts.command);
    co_return co_await read_reply(step, timeouts.command);
  }

  [[noreturn]] static void refused(const Reply& r, Step step) { throw Failure(step, r.permanent(), r.text(), r.code); }

  awaitable<void> ehlo() {
    Reply r = co_await command("EHLO " + account.helo_name + "\r\n", Step::ehlo);
    if (r.code == 250) {
      caps = parse_ehlo(r);
      co_return;
    }
    r = co_await command("HELO " + account.helo_name + "\r\n", Step::ehlo);
    if (r.code != 250) refused(r, Step::ehlo);
    caps = Capabilities{};
  }

  awaitable<void> open_connection() {
    std::optional<net::Error> failed;
    try {
      co_await conn.connect(timeouts.connect);
    } catch (const net::Error& e) {
      failed = e;
    }
    if (failed) net_failed(*failed, Step::connect);
    Reply greeting = co_await read_reply(Step::greeting, timeouts.command);
    if (greeting.code != 220) refused(greeting, Step::greeting);
    co_await ehlo();
    if (account.endpoint.security == "starttls") {
      if (!caps.starttls) {
        broken = true;
        conn.close();
        throw Failure(Step::tls, false, "the server does not offer STARTTLS and this mailbox requires TLS; nothing was sent");
      }
      Reply r = co_await command("STARTTLS\r\n", Step::tls);
      if (r.code != 220) refused(r, Step::tls);
      parser = ReplyParser();  // anything the server sent before the handshake is not trusted
      std::optional<net::Error> tls_failed;
      try {
        co_await conn.start_tls(timeouts.command);
      } catch (const net::Error& e) {
        tls_failed = e;
      }
      if (tls_failed) net_failed(*tls_failed, Step::tls);
      co_await ehlo();
    }
    if (!account.username.empty()) co_await authenticate();
    open = true;
  }

  awaitable<void> authenticate() {
    if (caps.auth.empty()) {  // as Postfix does: a server that offers no AUTH gets the mail without it
      note("(the server offers no AUTH: sending without authentication)");
      co_return;
    }
    if (!conn.tls() && account.endpoint.security != "plain")
      throw Failure(Step::auth, true, "refusing to send credentials over a connection without TLS");
    Reply r;
    if (!account.oauth_token.empty()) {
      if (!caps.auth.count("XOAUTH2")) throw Failure(Step::auth, true, "the server does not offer AUTH XOAUTH2");
      r = co_await command("AUTH XOAUTH2 " + sasl_xoauth2(account.username, account.oauth_token) + "\r\n", Step::auth, "AUTH XOAUTH2 ***");
      if (r.code == 334) r = co_await command("\r\n", Step::auth, "");  // the error challenge: answer empty, the failure follows
    } else if (caps.auth.count("PLAIN")) {
      r = co_await command("AUTH PLAIN " + sasl_plain(account.username, account.password) + "\r\n", Step::auth, "AUTH PLAIN ***");
    } else if (caps.auth.count("LOGIN")) {
      r = co_await command("AUTH LOGIN\r\n", Step::auth);
      if (r.code == 334) r = co_await command(base64_encode(account.username) + "\r\n", Step::auth, "***");
      if (r.code == 334) r = co_await command(base64_encode(account.password) + "\r\n", Step::auth, "***");
    } else {
      throw Failure(Step::auth, true, "the server offers no authentication mechanism this client supports (PLAIN, LOGIN, XOAUTH2)");
    }
    if (r.code != 235) refused(r, Step::auth);
  }

  // The MAIL and RCPT commands of a transaction; throws (before anything is written) when the
  // server cannot take it.
  std::vector<std::string> envelope_lines(const Envelope& env, const std::string& message) const {
    if (env.to.empty()) throw Failure(Step::rcpt, true, "no recipients");
    if (caps.size && *caps.size && message.size() > *caps.size)
      throw Failure(Step::mail, true,
                    "the message (" + std::to_string(message.size()) + " bytes) is larger than the server accepts (" +
                        std::to_string(*caps.size) + " bytes)");
    bool utf8_addresses = eight_bit(env.from);
    for (const auto& a : env.to) utf8_addresses = utf8_addresses || eight_bit(a);
    if (utf8_addresses && !caps.smtputf8) throw Failure(Step::mail, true, "a non-ASCII address needs SMTPUTF8, which the server does not offer");
    std::vector<std::string> lines;
    try {
      lines.push_back(mail_from(env.from, message.size(), caps, eight_bit(message), utf8_addresses));
      for (const auto& a : env.to) lines.push_back(rcpt_to(a));
    } catch (const std::invalid_argument& e) {
      throw Failure(Step::rcpt, true, std::string("invalid address: ") + e.what());
    }
    return lines;
  }

  // Appends a pipelined envelope and its DATA to `out` (RFC 2920).
  void pipeline_envelope(const std::vector<std::string>& lines, std::string& out) {
    for (const auto& line : lines) {
      out += line;
      note("C: " + line.substr(0, line.size() - 2));
    }
    out += "DATA\r\n";
    note("C: DATA");
  }

  // The replies to a pipelined MAIL, RCPTs and DATA; throws (the transaction reset) unless the
  // server waits for the content.
  awaitable<void> envelope_replies(const Envelope& env, SendResult& result) {
    std::size_t good = 0;
    std::optional<Reply> mail_refusal;
    Reply mail = co_await read_reply(Step::mail, timeouts.command);
    if (mail.code != 250) mail_refusal = mail;
    for (std::size_t i = 0; i < env.to.size(); ++i) {
      Reply r = co_await read_reply(Step::rcpt, timeouts.command);
      if (r.code == 250 || r.code == 251)
        ++good;
      else
        result.refused.push_back({env.to[i], r});
    }
    Reply data = co_await read_reply(Step::data, timeouts.command);
    if (data.code == 354 && (mail_refusal || good == 0)) {
      // The server would take data although nothing can be delivered: end it empty.
      co_await write(".\r\n", Step::data, timeouts.command);
      co_await read_reply(Step::data, timeouts.data_end);
    }
    if (mail_refusal) co_await fail_transaction(*mail_refusal, Step::mail);
    if (good == 0) co_await fail_recipients(result.refused);
    if (data.code != 354) co_await fail_transaction(data, Step::data);
  }

  awaitable<SendResult> send(const Envelope& env, const std::string& message, const After& after) {
    if (!open || broken || quit_sent) throw Failure(Step::connect, false, "the connection is not open");
    SendResult result;
    if (announced) {  // the envelope went with the content of the message before
      const bool same = announced->from == env.from && announced->to == env.to;
      announced.reset();
      if (!same) {
        broken = true;
        conn.close();
        throw Failure(Step::mail, false, "the message is not the one announced on this connection; the connection was dropped");
      }
      co_await envelope_replies(env, result);
    } else {
      const auto envelope = envelope_lines(env, message);
      if (caps.pipelining) {  // RFC 2920: MAIL, every RCPT and DATA in one write, then the replies in order
        std::string batch;
        pipeline_envelope(envelope, batch);
        co_await write(batch, Step::mail, timeouts.command);
        co_await envelope_replies(env, result);
      } else {
        Reply mail = co_await command(envelope[0], Step::mail);
        if (mail.code != 250) co_await fail_transaction(mail, Step::mail);
        std::size_t good = 0;
        for (std::size_t i = 0; i < env.to.size(); ++i) {
          Reply r = co_await command(envelope[i + 1], Step::rcpt);
          if (r.code == 250 || r.code == 251)
            ++good;
          else
            result.refused.push_back({env.to[i], r});
        }
        if (good == 0) co_await fail_recipients(result.refused);
        Reply data = co_await command("DATA\r\n", Step::data);
        if (data.code != 354) co_await fail_transaction(data, Step::data);
      }
    }
    note("C: <message, " + std::to_string(message.size()) + " bytes>");
    std::string content = dot_stuff(message);
    // RFC 2920 lets the content head a pipelined group: the next message's envelope goes in the
    // same write, and its replies are read by the next send(). One that the server cannot take
    // is not announced: the next send() reports why.
    std::optional<Announced> announcing;
    if (after.next && caps.pipelining) {
      const Outgoing& next = *after.next;
      std::optional<std::vector<std::string>> lines;
      try {
        lines = envelope_lines(*next.envelope, *next.message);
      } catch (const Failure&) {
      }
      if (lines) {
        pipeline_envelope(*lines, content);
        announcing = Announced{next.envelope->from, next.envelope->to};
      }
    }
    const bool quitting = after.quit && !after.next && caps.pipelining;
    if (quitting) {
      content += "QUIT\r\n";
      note("C: QUIT");
    }
    co_await write(content, Step::data, timeouts.data_end);
    announced = std::move(announcing);
    quit_sent = quitting;
    result.reply = co_await read_reply(Step::data, timeouts.data_end);
    if (result.reply.code != 250) {
      // The reply ends the transaction; with the next envelope (or QUIT) already on its way there
      // is nothing to reset.
      if (announced || quit_sent) refused(result.reply, Step::data);
      co_await fail_transaction(result.reply, Step::data);
    }
    ++accepted;
    co_return result;
  }

  // Resets the transaction so the connection stays usable, then throws.
  awaitable<void> fail_transaction(const Reply& r, Step step) {
    if (!broken) {
      note("C: RSET");
      bool reset = false;
      try {
        co_await write("RSET\r\n", step, timeouts.command);
        reset = (co_await read_reply(step, timeouts.command)).code == 250;
      } catch (const Failure&) {
      }
      if (!reset) {
        broken = true;
        conn.close();
      }
    }
    refused(r, step);
  }

  awaitable<void> fail_recipients(const std::vector<Refused>& refused_list) {
    // Permanent only when every recipient was refused permanently.
    bool permanent = !refused_list.empty();
    std::string text;
    for (const auto& r : refused_list) {
      permanent = permanent && r.reply.permanent();
      text += (text.empty() ? "" : "; ") + r.address + ": " + r.reply.text();
    }
    Reply combined{refused_list.empty() ? 554 : refused_list.front().reply.code, {text}};
    if (!permanent && combined.code >= 500) combined.code = 450;
    co_await fail_transaction(combined, Step::rcpt);
  }
};

Client::Client(asio::any_io_executor executor, Account account, Timeouts timeouts)
    : impl_(std::make_shared<Impl>(executor, std::move(account), timeouts)) {}

Client::~Client() { impl_->conn.close(); }

awaitable<void> Client::open() {
  auto impl = impl_;
  co_await impl->open_connection();
}

awaitable<SendResult> Client::send(const Envelope& envelope, const std::string& message, After after) {
  auto impl = impl_;
  co_return co_await impl->send(envelope, message, after);
}

awaitable<void> Client::quit() {
  auto impl = impl_;
  if (impl->announced) {
    // A DATA is outstanding: QUIT would be read as content. Dropping the connection discards
    // the transaction (RFC 5321 4.1.1.4: nothing is delivered without the final dot).
    impl->note("(a message was announced but not sent: the connection is dropped)");
    impl->broken = true;
  }
  if (impl->open && !impl->broken && impl->quit_sent) {  // QUIT went with the last content
    try {
      co_await impl->read_reply(Step::data, std::chrono::seconds(5));
    } catch (const std::exception&) {
    }
  } else if (impl->open && !impl->broken) {
    try {
      impl->note("C: QUIT");
      co_await impl->conn.write("QUIT\r\n", std::chrono::seconds(5));
      impl->input.clear();
      co_await impl->conn.read_some(impl->input, std::chrono::seconds(5));
    } catch (const std::exception&) {
    }
  }
  impl->open = false;
  impl->conn.close();
}

void Client::close() {
  impl_->broken = true;
  impl_->conn.close();
}

const Capabilities& Client::capabilities() const { return impl_->caps; }
std::size_t Client::sent() const { return impl_->accepted; }
bool Client::usable() const { return impl_->open && !impl_->broken && !impl_->quit_sent; }

std::string Client::transcript_tail() const {
  std::string out;
  for (const auto& l : impl_->transcript) out += l + "\n";
  return out;
}

}  // namespace mailgate::smtp
