#include "protocol/smtp_session.hpp"

#include <cctype>

namespace mailgate::smtpd {

namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

bool non_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return true;
  return false;
}

// "FROM:<a@b> SIZE=10" after the verb: the path and the parameters; nullopt when malformed.
struct Path {
  std::string address;
  std::vector<std::string> params;  // "SIZE=10", upper-cased keyword, value as given
};

std::optional<Path> parse_path(std::string_view rest, std::string_view keyword) {
  if (rest.size() < keyword.size() || upper(rest.substr(0, keyword.size())) != keyword) return std::nullopt;
  rest.remove_prefix(keyword.size());
  if (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);  // "FROM: <a@b>", common enough to accept
  if (rest.empty() || rest.front() != '<') return std::nullopt;
  const auto close = rest.find('>');
  if (close == std::string_view::npos) return std::nullopt;
  Path p;
  p.address = std::string(rest.substr(1, close - 1));
  for (unsigned char c : p.address)
    if (c <= 0x20 || c == 0x7f || c == '<') return std::nullopt;
  if (p.address.size() > 320) return std::nullopt;
  if (!p.address.empty() && p.address.front() == '@') {  // a source route "@a,@b:user@c": ignore the route (RFC 5321 4.1.1.3)
    const auto colon = p.address.find(':');
    if (colon == std::string::npos) return std::nullopt;
    p.address.erase(0, colon + 1);
  }
  rest.remove_prefix(close + 1);
  while (!rest.empty()) {
    if (rest.front() != ' ') return std::nullopt;
    rest.remove_prefix(1);
    const auto end = rest.find(' ');
    const auto param = rest.substr(0, end);
    if (!param.empty()) {
      const auto eq = param.find('=');
      p.params.push_back(upper(param.substr(0, eq)) + (eq == std::string_view::npos ? "" : std::string(param.substr(eq))));
    }
    if (end == std::string_view::npos) break;
    rest.remove_prefix(end);
  }
  return p;
}

}  // namespace

Session::Session(Settings settings) : settings_(std::move(settings)) {}

Event Session::reply(int code, const std::string& enhanced, const std::string& text) {
  Event e;
  e.kind = Event::Kind::reply;
  e.text = std::to_string(code) + " " + (enhanced.empty() ? "" : enhanced + " ") + text + "\r\n";
  return e;
}

Event Session::syntax_error(const std::string& enhanced, const std::string& text, int code) {
  if (++errors_ >= settings_.limits.errors_before_close) {
    state_ = State::closed;
    Event e{Event::Kind::close, "421 4.7.0 " + settings_.hostname + " Too many errors, closing the connection\r\n", {}, {}, {}};
    return e;
  }
  return reply(code, enhanced, text);
}

Event Session::greeting() { return reply(220, "", settings_.hostname + " ESMTP mailgate"); }

Event Session::timed_out() {
  state_ = State::closed;
  return Event{Event::Kind::close, "421 4.4.2 " + settings_.hostname + " Timeout, closing the connection\r\n", {}, {}, {}};
}

void Session::feed(std::string_view bytes) {
  if (state_ != State::closed) in_.append(bytes);
}

void Session::reset_transaction() {
  envelope_.from.clear();
  envelope_.to.clear();
  envelope_.smtputf8 = envelope_.eight_bit = false;
  declared_size_.reset();
  if (state_ != State::fresh) state_ = State::ready;
}

std::optional<Event> Session::next() {
  if (pending_reply_) {
    Event e = std::move(*pending_reply_);
    pending_reply_.reset();
    return e;
  }
  switch (state_) {
    case State::closed:
    case State::waiting: return std::nullopt;
    case State::data: return data_bytes();
    default: break;
  }
  const auto end = in_.find('\n');
  if (end == std::string::npos) {
    if (in_.size() > settings_.limits.command_line) {
      in_.clear();
      state_ = State::closed;
      return Event{Event::Kind::close, "500 5.5.2 Line too long, closing the connection\r\n", {}, {}, {}};
    }
    return std::nullopt;
  }
  std::string line = in_.substr(0, end + 1);
  in_.erase(0, end + 1);
  if (line.size() > settings_.limits.command_line) return syntax_error("5.5.2", "Line too long");
  if (line.size() < 2 || line[line.size() - 2] != '\r') return syntax_error("5.5.2", "Bare LF is not allowed: end lines with CRLF");
  line.resize(line.size() - 2);
  if (line.find('\r') != std::string::npos || line.find('\0') != std::string::npos)
    return syntax_error("5.5.2", "Bare CR or NUL is not allowed");
  return command(line);
}

std::optional<Event> Session::command(const std::string& line) {
  const auto space = line.find(' ');
  const std::string verb = upper(line.substr(0, space));
  const std::string arg = space == std::string::npos ? "" : line.substr(space + 1);
  const auto& limits = settings_.limits;

  if (verb == "EHLO" || verb == "HELO") {
    if (arg.empty() || arg.find(' ') != std::string::npos) return reply(501, "5.5.4", "Syntax: " + verb + " hostname");
    state_ = State::ready;
    reset_transaction();
    envelope_.helo = arg;
    esmtp_ = verb == "EHLO";
    if (!esmtp_) return reply(250, "", settings_.hostname);
    std::string text = "250-" + settings_.hostname + "\r\n250-PIPELINING\r\n250-SIZE " + std::to_string(limits.message) +
                       "\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n";
    if (settings_.tls_available && !tls_) text += "250-STARTTLS\r\n";
    text += "250 2.0.0 Ok\r\n";  // the last line carries no keyword: nothing follows it
    return Event{Event::Kind::reply, text, {}, {}, {}};
  }
  if (verb == "NOOP") return reply(250, "2.0.0", "Ok");
  if (verb == "RSET") {
    if (!arg.empty()) return reply(501, "5.5.4", "Syntax: RSET");
    reset_transaction();
    return reply(250, "2.0.0", "Ok");
  }
  if (verb == "QUIT") {
    state_ = State::closed;
    return Event{Event::Kind::close, "221 2.0.0 Bye\r\n", {}, {}, {}};
  }
  if (verb == "VRFY") return reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery");
  if (verb == "HELP") return reply(214, "2.0.0", "See RFC 5321");
  if (verb == "STARTTLS") {
    if (!arg.empty()) return reply(501, "5.5.4", "Syntax: STARTTLS");
    if (tls_) return reply(503, "5.5.1", "TLS is already active");
    if (!settings_.tls_available) return reply(454, "4.7.0", "TLS not available");
    in_.clear();  // whatever the client pipelined after STARTTLS is not trusted (RFC 3207)
    state_ = State::waiting;
    return Event{Event::Kind::start_tls, "220 2.0.0 Ready to start TLS\r\n", {}, {}, {}};
  }
  if (verb == "MAIL") {
    if (state_ == State::fresh) return reply(503, "5.5.1", "Send EHLO or HELO first");
    if (state_ != State::ready) return reply(503, "5.5.1", "Nested MAIL command");
    auto path = parse_path(arg, "FROM:");
    if (!path) return syntax_error("5.5.4", "Syntax: MAIL FROM:<address>", 501);
    bool utf8 = false;
    for (const auto& p : path->params) {
      if (p.rfind("SIZE=", 0) == 0) {
        const auto v = p.substr(5);
        if (v.empty() || v.size() > 18 || v.find_first_not_of("0123456789") != std::string::npos) return reply(501, "5.5.4", "Bad SIZE value");
        declared_size_ = static_cast<std::size_t>(std::stoull(v));
        if (*declared_size_ > limits.message) return reply(552, "5.3.4", "Message size exceeds fixed limit");
      } else if (p == "BODY=8BITMIME" && esmtp_) {
        envelope_.eight_bit = true;
      } else if (p == "BODY=7BIT" && esmtp_) {
      } else if (p == "SMTPUTF8" && esmtp_) {
        utf8 = true;
      } else {
        return reply(555, "5.5.4", "Unsupported MAIL parameter " + p);
      }
    }
    if (non_ascii(path->address) && !utf8) return reply(553, "5.6.7", "A non-ASCII address needs SMTPUTF8");
    envelope_.from = path->address;
    envelope_.smtputf8 = utf8;
    state_ = State::mail;
    return reply(250, "2.1.0", "Ok");
  }
  if (verb == "RCPT") {
    if (state_ != State::mail && state_ != State::rcpt) return reply(503, "5.5.1", "Need MAIL command");
    auto path = parse_path(arg, "TO:");
    if (!path || path->address.empty()) return syntax_error("5.5.4", "Syntax: RCPT TO:<address>", 501);
    if (!path->params.empty()) return reply(555, "5.5.4", "Unsupported RCPT parameter " + path->params.front());
    if (non_ascii(path->address) && !envelope_.smtputf8) return reply(553, "5.6.7", "A non-ASCII address needs SMTPUTF8");
    if (envelope_.to.size() >= limits.recipients) return reply(452, "4.5.3", "Too many recipients");
    pending_rcpt_ = path->address;
    state_ = State::waiting;
    Event e;
    e.kind = Event::Kind::check_rcpt;
    e.address = pending_rcpt_;
    return e;
  }
  if (verb == "DATA") {
    if (!arg.empty()) return reply(501, "5.5.4", "Syntax: DATA");
    if (state_ == State::mail) return reply(554, "5.5.1", "No valid recipients");
    if (state_ != State::rcpt) return reply(503, "5.5.1", "Need RCPT command");
    state_ = State::data;
    data_.clear();
    data_size_ = line_length_ = 0;
    data_bare_ = data_too_big_ = data_line_too_long_ = false;
    line_start_ = true;
    return reply(354, "", "End data with <CR><LF>.<CR><LF>");
  }
  if (verb == "AUTH" || verb == "BDAT" || verb == "EXPN" || verb == "ETRN" || verb == "TURN")
    return reply(502, "5.5.1", verb + " is not offered by this server");
  return syntax_error("5.5.2", "Command not recognized");
}

std::optional<Event> Session::data_bytes() {
  const auto& limits = settings_.limits;
  for (;;) {
    const auto end = in_.find('\n');
    if (end == std::string::npos) {
      // An unfinished line: keep it (bounded), but never let one line fill the memory.
      if (in_.size() > limits.data_line + 1) {
        data_line_too_long_ = true;
        line_start_ = false;
        const char last = in_.back();
        in_.clear();
        if (last == '\r') in_.push_back('\r');
      }
      return std::nullopt;
    }
    std::string line = in_.substr(0, end + 1);
    in_.erase(0, end + 1);
    const bool crlf = line.size() >= 2 && line[line.size() - 2] == '\r';
    if (line_start_ && line == ".\r\n") break;  // the one true end of data
    const bool starts_line = line_start_;
    line_start_ = crlf;
    if (!crlf) data_bare_ = true;                                                       // bare LF
    if (line.find('\r') < line.size() - (crlf ? 2 : 1)) data_bare_ = true;             // bare CR inside
    if (line.size() > limits.data_line) data_line_too_long_ = true;
    if (starts_line && line[0] == '.') line.erase(0, 1);  // dot-unstuffing
    data_size_ += line.size();
    if (data_size_ > limits.message) {
      data_too_big_ = true;
      data_.clear();
      data_.shrink_to_fit();
    }
    if (!data_too_big_) data_ += line;
  }
  Envelope envelope = envelope_;
  envelope.tls = tls_;
  std::string data = std::move(data_);
  data_.clear();
  if (data_bare_ || data_too_big_ || data_line_too_long_) {
    reset_transaction();
    if (data_too_big_) return reply(552, "5.3.4", "Message size exceeds fixed limit");
    if (data_bare_) return reply(554, "5.6.0", "Message contains a bare CR or LF; refused (lines must end with CRLF)");
    return reply(554, "5.6.0", "Message has a line longer than " + std::to_string(limits.data_line) + " bytes; refused");
  }
  state_ = State::waiting;
  Event e;
  e.kind = Event::Kind::message;
  e.envelope = std::move(envelope);
  e.data = std::move(data);
  return e;
}

void Session::answer_rcpt(RcptVerdict verdict) {
  if (state_ != State::waiting || pending_rcpt_.empty()) return;
  const std::string address = pending_rcpt_;
  pending_rcpt_.clear();
  state_ = envelope_.to.empty() ? State::mail : State::rcpt;
  Event e;
  switch (verdict) {
    case RcptVerdict::accept:
      envelope_.to.push_back(address);
      state_ = State::rcpt;
      e = reply(250, "2.1.5", "Ok");
      break;
    case RcptVerdict::unknown: e = reply(550, "5.1.1", "<" + address + ">: Recipient address rejected: User unknown"); break;
    case RcptVerdict::need_tls: e = reply(530, "5.7.0", "<" + address + ">: Must issue a STARTTLS command first"); break;
    case RcptVerdict::defer: e = reply(451, "4.3.0", "<" + address + ">: Temporary lookup failure, try again later"); break;
    case RcptVerdict::later: e = reply(452, "4.5.3", "<" + address + ">: Too many recipients: send this one in a new message"); break;
  }
  pending_reply_ = std::move(e);
}

void Session::answer_message(int code, const std::string& enhanced, const std::string& text) {
  if (state_ != State::waiting || !pending_rcpt_.empty()) return;
  state_ = State::ready;
  reset_transaction();
  pending_reply_ = reply(code, enhanced, text);
}

void Session::tls_started() {
  tls_ = true;
  in_.clear();
  state_ = State::fresh;  // RFC 3207: the client starts again with EHLO
  esmtp_ = false;
  envelope_ = Envelope{};
}

}  // namespace mailgate::smtpd
