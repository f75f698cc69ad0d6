#include "protocol/mailgun_webhook.hpp"

#include <cstdlib>

#include "util/crypto.hpp"

namespace mailgate::mailgun {

namespace {

std::string lower_hex(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

bool ascii_ci_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// Base64 in lines of 76 characters (RFC 2045).
std::string base64_lines(std::string_view data) {
  const std::string b = base64_encode(data);
  std::string out;
  out.reserve(b.size() + b.size() / 76 * 2 + 2);
  for (std::size_t i = 0; i < b.size(); i += 76) {
    out.append(b, i, 76);
    out += "\r\n";
  }
  return out;
}

// A header value safe on one logical line: CR/LF only as folding (followed by space or tab).
std::string header_safe(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    const char c = v[i];
    if (c == '\r' || c == '\n') {
      std::size_t j = i;
      while (j < v.size() && (v[j] == '\r' || v[j] == '\n')) ++j;
      if (j < v.size() && (v[j] == ' ' || v[j] == '\t')) {
        out += "\r\n";
      } else if (j < v.size()) {
        out += ' ';
      }
      i = j - 1;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

bool is_ascii_token(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x21 || c > 0x7e || c == '"' || c == '\\') return false;
  return true;
}

bool is_printable_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

// filename="..." for printable ASCII, else RFC 2231 filename*=UTF-8''...
std::string filename_param(std::string_view name) {
  if (is_printable_ascii(name) && name.find_first_of("\"\\") == std::string_view::npos)
    return "filename=\"" + std::string(name) + "\"";
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = "filename*=UTF-8''";
  for (unsigned char c : name) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_') {
      out.push_back(static_cast<char>(c));
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string text_part(std::string_view subtype, std::string_view body) {
  return "Content-Type: text/" + std::string(subtype) + "; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
         base64_lines(body);
}

std::string attachment_part(const RebuildAttachment& a) {
  std::string type = a.content_type.empty() ? "application/octet-stream" : header_safe(a.content_type);
  std::string s = "Content-Type: " + type + "\r\n";
  s += "Content-Transfer-Encoding: base64\r\n";
  const std::string disposition = a.content_id.empty() ? "attachment" : "inline";
  s += "Content-Disposition: " + disposition + (a.filename.empty() ? "" : "; " + filename_param(a.filename)) + "\r\n";
  if (!a.content_id.empty()) s += "Content-ID: <" + header_safe(a.content_id) + ">\r\n";
  s += "\r\n" + base64_lines(a.data);
  return s;
}

std::string multipart(std::string_view subtype, const std::string& boundary, const std::vector<std::string>& parts) {
  std::string s = "Content-Type: multipart/" + std::string(subtype) + "; boundary=\"" + boundary + "\"\r\n\r\n";
  for (const auto& p : parts) s += "--" + boundary + "\r\n" + p + "\r\n";
  s += "--" + boundary + "--\r\n";
  return s;
}

}  // namespace

bool signature_valid(std::string_view signing_key, std::string_view timestamp, std::string_view token,
                     std::string_view signature) {
  std::string data;
  data.reserve(timestamp.size() + token.size());
  data.append(timestamp).append(token);
  const std::string expected = hex_encode(hmac_sha256(signing_key, data));  // lower-case, 64 characters
  // The length is no secret; the bytes are compared without an early exit.
  return constant_time_equal(expected, lower_hex(signature));
}

std::string sign(std::string_view signing_key, std::string_view timestamp, std::string_view token) {
  std::string data(timestamp);
  data.append(token);
  return hex_encode(hmac_sha256(signing_key, data));
}

TimestampCheck check_timestamp(std::string_view timestamp, std::int64_t now_unix, std::chrono::seconds max_age) {
  if (timestamp.empty() || timestamp.size() > 12 || timestamp.find_first_not_of("0123456789") != std::string_view::npos)
    return TimestampCheck::malformed;
  const std::int64_t t = std::strtoll(std::string(timestamp).c_str(), nullptr, 10);
  const std::int64_t age = now_unix - t;
  return std::llabs(age) > max_age.count() ? TimestampCheck::out_of_window : TimestampCheck::ok;
}

std::string rebuild_message(const RebuildInput& in) {
  // The boundary: a digest of everything that goes into the message, so the same fields give the
  // same bytes. Base64 lines and our own part headers never hold "=_".
  std::string identity;
  for (const auto& [k, v] : in.headers) identity += sha256(k) + sha256(v);
  identity += in.text_body ? "T" + sha256(*in.text_body) : "-";
  identity += in.html_body ? "H" + sha256(*in.html_body) : "-";
  for (const auto& a : in.attachments) identity += sha256(a.filename) + sha256(a.content_type) + sha256(a.data) + sha256(a.content_id);
  const std::string digest = sha256_hex(identity).substr(0, 32);
  const std::string mixed = "=_mailgate_m_" + digest, alternative = "=_mailgate_a_" + digest;

  std::string out;
  for (const auto& [name, value] : in.headers) {
    if (ascii_ci_equal(name, "MIME-Version") || ascii_ci_equal(name, "Content-Type") ||
        ascii_ci_equal(name, "Content-Transfer-Encoding"))
      continue;
    if (name.empty() || !is_ascii_token(name) || name.find(':') != std::string::npos) continue;  // not a field name
    out += name + ": " + header_safe(value) + "\r\n";
  }
  out += "MIME-Version: 1.0\r\n";

  std::vector<std::string> bodies;
  if (in.text_body) bodies.push_back(text_part("plain", *in.text_body));
  if (in.html_body) bodies.push_back(text_part("html", *in.html_body));
  if (bodies.empty()) bodies.push_back(text_part("plain", ""));
  const std::string body = bodies.size() == 1 ? bodies[0] : multipart("alternative", alternative, bodies);
  if (in.attachments.empty()) {
    out += body;
    return out;
  }
  std::vector<std::string> parts{body};
  for (const auto& a : in.attachments) parts.push_back(attachment_part(a));
  out += multipart("mixed", mixed, parts);
  return out;
}

}  // namespace mailgate::mailgun
