#include "protocol/smtp_wire.hpp"

#include <algorithm>
#include <cctype>

#include "util/crypto.hpp"

namespace mailgate::smtp {

namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

bool is_enhanced(std::string_view s) {
  // class "." subject "." detail: 2|4|5 . 1-3 digits . 1-3 digits
  if (s.size() < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.') return false;
  std::size_t i = 2, digits = 0;
  for (; i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])); ++i) ++digits;
  if (digits == 0 || digits > 3 || i >= s.size() || s[i] != '.') return false;
  digits = 0;
  for (++i; i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])); ++i) ++digits;
  return digits > 0 && digits <= 3 && i == s.size();
}

}  // namespace

std::string Reply::text() const {
  std::string out = std::to_string(code);
  for (std::size_t i = 0; i < lines.size(); ++i) out += (i ? " / " : " ") + lines[i];
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string Reply::enhanced() const {
  if (lines.empty()) return {};
  const std::string& first = lines.front();
  const auto word = first.substr(0, first.find(' '));
  return is_enhanced(word) ? word : std::string();
}

void ReplyParser::feed(std::string_view bytes) { buffer_.append(bytes); }

std::optional<Reply> ReplyParser::next() {
  for (;;) {
    const auto end = buffer_.find('\n');
    if (end == std::string::npos) {
      if (buffer_.size() > kMaxReplyLine) throw ProtocolError("reply line longer than " + std::to_string(kMaxReplyLine) + " bytes");
      return std::nullopt;
    }
    if (end == 0 || buffer_[end - 1] != '\r') throw ProtocolError("reply line ends in a bare LF");
    if (end + 1 > kMaxReplyLine) throw ProtocolError("reply line longer than " + std::to_string(kMaxReplyLine) + " bytes");
    const std::string line = buffer_.substr(0, end - 1);
    buffer_.erase(0, end + 1);
    if (line.size() < 3 || !std::all_of(line.begin(), line.begin() + 3, [](char c) { return c >= '0' && c <= '9'; }) || line[0] < '2' ||
        line[0] > '5')
      throw ProtocolError("reply line without a code: " + line.substr(0, 80));
    const int code = std::stoi(line.substr(0, 3));
    const char sep = line.size() > 3 ? line[3] : ' ';
    if (sep != ' ' && sep != '-') throw ProtocolError("reply code not followed by space or hyphen: " + line.substr(0, 80));
    if (partial_ && partial_->code != code)
      throw ProtocolError("multi-line reply changes its code from " + std::to_string(partial_->code) + " to " + std::to_string(code));
    if (!partial_) partial_ = Reply{code, {}};
    partial_->lines.push_back(line.size() > 4 ? line.substr(4) : std::string());
    if (sep == ' ') {
      Reply done = std::move(*partial_);
      partial_.reset();
      return done;
    }
  }
}

Capabilities parse_ehlo(const Reply& ehlo) {
  Capabilities c;
  for (std::size_t i = 1; i < ehlo.lines.size(); ++i) {
    const std::string line = upper(ehlo.lines[i]);
    const std::string keyword = line.substr(0, line.find(' '));
    const std::string rest = line.size() > keyword.size() ? line.substr(keyword.size() + 1) : "";
    if (keyword == "STARTTLS") c.starttls = true;
    else if (keyword == "PIPELINING") c.pipelining = true;
    else if (keyword == "8BITMIME") c.eightbitmime = true;
    else if (keyword == "SMTPUTF8") c.smtputf8 = true;
    else if (keyword == "ENHANCEDSTATUSCODES") c.enhanced_status = true;
    else if (keyword == "CHUNKING") c.chunking = true;
    else if (keyword == "SIZE") {
      c.size = 0;
      if (!rest.empty() && rest.size() < 19 && std::all_of(rest.begin(), rest.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
        c.size = static_cast<std::size_t>(std::stoull(rest));
    } else if (keyword == "AUTH" || keyword.rfind("AUTH=", 0) == 0) {
      std::string list = keyword == "AUTH" ? rest : line.substr(5);
      for (std::size_t at = 0; at < list.size();) {
        const auto space = list.find(' ', at);
        const auto mech = list.substr(at, space == std::string::npos ? std::string::npos : space - at);
        if (!mech.empty()) c.auth.insert(mech);
        if (space == std::string::npos) break;
        at = space + 1;
      }
    }
  }
  return c;
}

std::string path_of(std::string_view address) {
  if (address.size() > 320) throw std::invalid_argument("address longer than 320 bytes");
  for (unsigned char ch : address)
    if (ch < 0x21 || ch == 0x7f || ch == '<' || ch == '>') throw std::invalid_argument("address contains a control character, space or angle bracket");
  if (!address.empty() && address.find('@') == std::string_view::npos) throw std::invalid_argument("address without @");
  return "<" + std::string(address) + ">";
}

std::string mail_from(std::string_view address, std::size_t size, const Capabilities& caps, bool eight_bit, bool utf8_addresses) {
  std::string out = "MAIL FROM:" + path_of(address);
  if (caps.size) out += " SIZE=" + std::to_string(size);
  if (eight_bit && caps.eightbitmime) out += " BODY=8BITMIME";
  if (utf8_addresses && caps.smtputf8) out += " SMTPUTF8";
  return out + "\r\n";
}

std::string rcpt_to(std::string_view address) {
  if (address.empty()) throw std::invalid_argument("empty recipient");
  return "RCPT TO:" + path_of(address) + "\r\n";
}

std::string sasl_plain(std::string_view user, std::string_view password) {
  std::string raw;
  raw.push_back('\0');
  raw.append(user);
  raw.push_back('\0');
  raw.append(password);
  return base64_encode(raw);
}

std::string sasl_xoauth2(std::string_view user, std::string_view token) {
  return base64_encode("user=" + std::string(user) + "\x01" + "auth=Bearer " + std::string(token) + "\x01\x01");
}

std::string dot_stuff(std::string_view message) {
  std::string out;
  out.reserve(message.size() + message.size() / 50 + 8);
  const char* p = message.data();
  const char* const end = p + message.size();
  while (p < end) {  // a line at a time: its text copied whole, its break (CRLF, CR or LF) as CRLF
    if (*p == '.') out.push_back('.');
    const char* brk = std::find_if(p, end, [](char c) { return c == '\r' || c == '\n'; });
    out.append(p, brk);
    out += "\r\n";
    if (brk == end) break;
    p = brk + ((*brk == '\r' && brk + 1 < end && brk[1] == '\n') ? 2 : 1);
  }
  out += ".\r\n";
  return out;
}

}  // namespace mailgate::smtp
