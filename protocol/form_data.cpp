#include "protocol/form_data.hpp"

#include <optional>
#include <utility>

namespace mailgate::form {

namespace {

constexpr std::size_t kMaxPartHeaderBytes = 8 << 10;

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lowered(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = lower(c);
  return out;
}

bool is_space(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

FormError error(FormError::Kind kind, std::string message) { return FormError{kind, std::move(message)}; }

// "type; a=b; c=\"d\"": the lower-cased type and the parameters (names lower-cased, quoted
// strings unquoted with their backslash escapes). Nullopt when a parameter is broken.
struct HeaderValue {
  std::string type;
  std::vector<std::pair<std::string, std::string>> params;
  const std::string* param(std::string_view name) const {
    for (const auto& [k, v] : params)
      if (k == name) return &v;
    return nullptr;
  }
};

std::optional<HeaderValue> parse_header_value(std::string_view s) {
  HeaderValue hv;
  std::size_t i = s.find(';');
  hv.type = lowered(trim(s.substr(0, i)));
  while (i != std::string_view::npos && i < s.size()) {
    ++i;  // past ';'
    while (i < s.size() && is_space(s[i])) ++i;
    if (i == s.size()) break;  // a trailing ';'
    const std::size_t eq = s.find('=', i);
    if (eq == std::string_view::npos) return std::nullopt;
    std::string name = lowered(trim(s.substr(i, eq - i)));
    if (name.empty() || name.find_first_of(" \t\";") != std::string::npos) return std::nullopt;
    i = eq + 1;
    while (i < s.size() && is_space(s[i])) ++i;
    std::string value;
    if (i < s.size() && s[i] == '"') {
      ++i;
      bool closed = false;
      while (i < s.size()) {
        const char c = s[i++];
        if (c == '\\' && i < s.size()) {
          value.push_back(s[i++]);
        } else if (c == '"') {
          closed = true;
          break;
        } else {
          value.push_back(c);
        }
      }
      if (!closed) return std::nullopt;
      while (i < s.size() && is_space(s[i])) ++i;
      if (i < s.size() && s[i] != ';') return std::nullopt;
    } else {
      const std::size_t end = s.find(';', i);
      value = std::string(trim(s.substr(i, end == std::string_view::npos ? std::string_view::npos : end - i)));
      i = end;
      if (value.find_first_of(" \t\"") != std::string::npos) return std::nullopt;
    }
    hv.params.emplace_back(std::move(name), std::move(value));
    if (i == std::string_view::npos) break;
  }
  return hv;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX decoding (and '+' as a space when `plus`); nullopt on a broken escape.
std::optional<std::string> percent_decode(std::string_view s, bool plus) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '%') {
      if (s.size() - i < 3) return std::nullopt;
      const int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

FormResult parse_urlencoded(std::string_view body, const Limits& limits) {
  std::vector<Field> fields;
  std::size_t i = 0;
  while (i <= body.size()) {
    std::size_t amp = body.find('&', i);
    if (amp == std::string_view::npos) amp = body.size();
    const std::string_view pair = body.substr(i, amp - i);
    i = amp + 1;
    if (pair.empty()) continue;
    if (fields.size() == limits.max_fields)
      return error(FormError::Kind::too_many_fields, "more than " + std::to_string(limits.max_fields) + " form fields");
    const std::size_t eq = pair.find('=');
    auto name = percent_decode(pair.substr(0, eq), true);
    auto value = percent_decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1), true);
    if (!name || !value)
      return error(FormError::Kind::malformed, "a broken percent-escape in form field " + std::to_string(fields.size() + 1));
    Field f;
    f.name = std::move(*name);
    f.value = std::move(*value);
    fields.push_back(std::move(f));
  }
  return fields;
}

// The part headers [block) as (lower-cased name, value) pairs; folded lines are joined.
std::optional<std::vector<std::pair<std::string, std::string>>> parse_part_headers(std::string_view block) {
  std::vector<std::pair<std::string, std::string>> headers;
  std::size_t i = 0;
  while (i < block.size()) {
    std::size_t end = block.find("\r\n", i);
    if (end == std::string_view::npos) end = block.size();
    const std::string_view line = block.substr(i, end - i);
    i = end + 2;
    if (!line.empty() && is_space(line.front())) {
      if (headers.empty()) return std::nullopt;
      headers.back().second += " " + std::string(trim(line));
      continue;
    }
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    const std::string name = lowered(line.substr(0, colon));
    if (name.find_first_of(" \t") != std::string::npos) return std::nullopt;
    headers.emplace_back(name, std::string(trim(line.substr(colon + 1))));
  }
  return headers;
}

FormResult parse_multipart(std::string_view content_type, std::string_view body, const Limits& limits) {
  const std::string boundary = multipart_boundary(content_type);
  if (boundary.empty())
    return error(FormError::Kind::unsupported_type, "multipart/form-data without a valid boundary parameter");
  const std::string delimiter = "\r\n--" + boundary;

  // The first delimiter may open the body (no CRLF before it).
  std::size_t at;
  if (body.substr(0, delimiter.size() - 2) == std::string_view(delimiter).substr(2))
    at = delimiter.size() - 2;
  else if (auto f = body.find(delimiter); f != std::string_view::npos)
    at = f + delimiter.size();
  else
    return error(FormError::Kind::malformed, "the body holds no multipart delimiter for the boundary");

  std::vector<Field> fields;
  for (;;) {
    // After a delimiter: "--" closes the body; else padding and CRLF start the next part.
    if (body.substr(at, 2) == "--") return fields;
    while (at < body.size() && is_space(body[at])) ++at;
    if (body.substr(at, 2) != "\r\n")
      return error(FormError::Kind::malformed, "a multipart delimiter is not followed by CRLF");
    at += 2;
    if (fields.size() == limits.max_fields)
      return error(FormError::Kind::too_many_fields, "more than " + std::to_string(limits.max_fields) + " form fields");
    const std::string part_name = "part " + std::to_string(fields.size() + 1);

    std::size_t header_end;
    std::string_view block;
    if (body.substr(at, 2) == "\r\n") {
      header_end = at + 2;  // no headers at all
    } else {
      const auto e = body.find("\r\n\r\n", at);
      if (e == std::string_view::npos) return error(FormError::Kind::malformed, part_name + ": its headers do not end");
      block = body.substr(at, e - at);
      header_end = e + 4;
    }
    if (block.size() > kMaxPartHeaderBytes)
      return error(FormError::Kind::malformed, part_name + ": its headers are longer than 8 KiB");
    const auto headers = parse_part_headers(block);
    if (!headers) return error(FormError::Kind::malformed, part_name + ": a header line is malformed");

    Field field;
    field.content_type = "text/plain";
    bool disposition = false;
    std::optional<std::string> filename_ext;
    for (const auto& [name, value] : *headers) {
      if (name == "content-disposition") {
        auto hv = parse_header_value(value);
        if (!hv || hv->type != "form-data")
          return error(FormError::Kind::malformed, part_name + ": Content-Disposition is not form-data with valid parameters");
        const std::string* n = hv->param("name");
        if (!n) return error(FormError::Kind::malformed, part_name + ": Content-Disposition has no name");
        field.name = *n;
        if (const std::string* fn = hv->param("filename")) {
          field.filename = *fn;
          field.is_file = true;
        }
        if (const std::string* fx = hv->param("filename*")) {
          // RFC 5987: charset'language'percent-encoded
          const auto q1 = fx->find('\''), q2 = q1 == std::string::npos ? q1 : fx->find('\'', q1 + 1);
          auto decoded = q2 == std::string::npos ? std::nullopt : percent_decode(std::string_view(*fx).substr(q2 + 1), false);
          if (!decoded) return error(FormError::Kind::malformed, part_name + ": filename* is not RFC 5987 encoded");
          filename_ext = std::move(decoded);
        }
        disposition = true;
      } else if (name == "content-type") {
        if (!value.empty()) field.content_type = value;
      }
    }
    if (!disposition) return error(FormError::Kind::malformed, part_name + ": no Content-Disposition header");
    if (filename_ext) {
      field.filename = std::move(*filename_ext);
      field.is_file = true;
    }

    const auto next = body.find(delimiter, header_end);
    if (next == std::string_view::npos)
      return error(FormError::Kind::malformed, "field \"" + field.name + "\" is not closed by a delimiter (truncated body?)");
    field.value = std::string(body.substr(header_end, next - header_end));
    fields.push_back(std::move(field));
    at = next + delimiter.size();
  }
}

}  // namespace

std::string multipart_boundary(std::string_view content_type) {
  auto hv = parse_header_value(content_type);
  if (!hv) return "";
  const std::string* b = hv->param("boundary");
  if (!b || b->empty() || b->size() > 70) return "";
  // RFC 2046 bchars; a space may not end it.
  static constexpr std::string_view kAllowed =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ";
  if (b->find_first_not_of(kAllowed) != std::string::npos || b->back() == ' ') return "";
  return *b;
}

FormResult parse_form(std::string_view content_type, std::string_view body, const Limits& limits) {
  if (body.size() > limits.max_bytes)
    return error(FormError::Kind::too_large, "the form is larger than " + std::to_string(limits.max_bytes) + " bytes");
  auto hv = parse_header_value(content_type);
  const std::string type = hv ? hv->type : lowered(trim(content_type.substr(0, content_type.find(';'))));
  if (type == "multipart/form-data") return parse_multipart(content_type, body, limits);
  if (type == "application/x-www-form-urlencoded") return parse_urlencoded(body, limits);
  return error(FormError::Kind::unsupported_type,
               "Content-Type must be multipart/form-data or application/x-www-form-urlencoded, not \"" +
                   std::string(content_type.substr(0, 100)) + "\"");
}

const Field* find_field(const std::vector<Field>& fields, std::string_view name) {
  for (const auto& f : fields)
    if (f.name == name) return &f;
  return nullptr;
}

}  // namespace mailgate::form
