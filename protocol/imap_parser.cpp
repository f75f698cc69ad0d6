#include "protocol/imap_parser.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>

namespace mailgate::imap {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return std::toupper(static_cast<unsigned char>(x)) == std::toupper(static_cast<unsigned char>(y)); });
}

struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

bool atom_stop(char c) { return c == ' ' || c == '(' || c == ')' || c == '"' || c == '\r' || c == '\n'; }

// Parses tokens of `s` onto `stack` (stack.back() is the innermost open list).
template <class Frame>
void tokenize_into(std::string_view s, std::vector<Frame>& stack) {
  std::size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == ' ') {
      ++i;
    } else if (c == '(') {
      stack.emplace_back();
      ++i;
    } else if (c == ')') {
      if (stack.size() < 2) throw ParseError("unbalanced ')'");
      Value list;
      list.kind = Value::Kind::list;
      list.items = std::move(stack.back().items);
      stack.pop_back();
      stack.back().items.push_back(std::move(list));
      ++i;
    } else if (c == '"') {
      Value v;
      v.kind = Value::Kind::string;
      ++i;
      for (;;) {
        if (i >= s.size()) throw ParseError("unterminated quoted string");
        char q = s[i++];
        if (q == '"') break;
        if (q == '\\') {
          if (i >= s.size()) throw ParseError("unterminated quoted string");
          q = s[i++];
          if (q != '\\' && q != '"') throw ParseError("bad escape in quoted string");
        }
        v.text.push_back(q);
      }
      stack.back().items.push_back(std::move(v));
    } else if (c == '{') {
      throw ParseError("literal announced in the middle of a line");
    } else {
      std::size_t start = i;
      while (i < s.size() && !atom_stop(s[i])) {
        if (s[i] == '[') {  // BODY[HEADER.FIELDS (FROM TO)]<0>: the section is part of the atom
          int depth = 0;
          for (; i < s.size(); ++i) {
            if (s[i] == '[') ++depth;
            if (s[i] == ']' && --depth == 0) break;
          }
          if (i >= s.size()) throw ParseError("unterminated '[' in an atom");
        }
        ++i;
      }
      Value v;
      v.text = std::string(s.substr(start, i - start));
      if (iequals(v.text, "NIL")) {
        v.kind = Value::Kind::nil;
        v.text.clear();
      } else if (std::all_of(v.text.begin(), v.text.end(), [](unsigned char d) { return std::isdigit(d); }) && v.text.size() <= 19) {
        v.kind = Value::Kind::number;
        v.number = std::stoull(v.text);
      }
      stack.back().items.push_back(std::move(v));
    }
  }
}

// "{123}" or "{123+}" at the end of a segment: its size, and where it starts.
std::optional<std::pair<std::uint64_t, std::size_t>> trailing_literal(std::string_view seg) {
  if (seg.empty() || seg.back() != '}') return std::nullopt;
  auto open = seg.rfind('{');
  if (open == std::string_view::npos) return std::nullopt;
  auto digits = seg.substr(open + 1, seg.size() - open - 2);
  if (!digits.empty() && digits.back() == '+') digits.remove_suffix(1);
  if (digits.empty() || digits.size() > 12 || !std::all_of(digits.begin(), digits.end(), [](unsigned char d) { return std::isdigit(d); }))
    return std::nullopt;
  return std::make_pair(std::stoull(std::string(digits)), open);
}

}  // namespace

bool Value::is_atom(std::string_view a) const { return kind == Kind::atom && iequals(text, a); }

Parser::Parser(std::size_t inline_limit, std::size_t max_line) : inline_limit_(inline_limit), max_line_(max_line) {}

void Parser::feed(std::string_view bytes) {
  if (pos_ > 0) {  // views handed out before this call are now invalid
    buffer_.erase(0, pos_);
    pos_ = 0;
  }
  buffer_.append(bytes);
}

Event Parser::fail(std::string why) {
  failed_ = true;
  Event e{Event::Kind::error, {}, {}, 0, 0, std::move(why)};
  return e;
}

bool Parser::start_response(std::string_view line) {
  current_ = Response{};
  stack_.assign(1, Frame{});
  in_response_ = true;
  if (line == "+" || line.rfind("+ ", 0) == 0) {
    current_.type = Response::Type::continuation;
    current_.text = std::string(line.size() > 2 ? line.substr(2) : std::string_view{});
    return true;
  }
  auto sp = line.find(' ');
  if (sp == std::string_view::npos || sp == 0) throw ParseError("a response needs a tag and a body");
  const auto tag = line.substr(0, sp);
  current_.type = tag == "*" ? Response::Type::untagged : Response::Type::tagged;
  if (current_.type == Response::Type::tagged) current_.tag = std::string(tag);
  auto rest = line.substr(sp + 1);
  auto word_end = rest.find(' ');
  auto word = rest.substr(0, word_end);
  for (const char* st : {"OK", "NO", "BAD", "PREAUTH", "BYE"}) {
    if (!iequals(word, st)) continue;
    current_.status = st;
    std::string_view text = word_end == std::string_view::npos ? std::string_view{} : rest.substr(word_end + 1);
    if (!text.empty() && text.front() == '[') {
      int depth = 0;
      std::size_t close = 0;
      for (; close < text.size(); ++close) {
        if (text[close] == '[') ++depth;
        if (text[close] == ']' && --depth == 0) break;
      }
      if (close >= text.size()) throw ParseError("unterminated response code");
      std::vector<Frame> code(1);
      tokenize_into(text.substr(1, close - 1), code);
      if (code.size() != 1) throw ParseError("unbalanced parentheses in a response code");
      current_.code = std::move(code[0].items);
      text = text.substr(close + 1);
      if (!text.empty() && text.front() == ' ') text.remove_prefix(1);
    }
    current_.text = std::string(text);
    return true;
  }
  if (current_.type == Response::Type::tagged) throw ParseError("a tagged response must be OK, NO or BAD");
  tokenize_into(rest, stack_);
  return false;
}

void Parser::tokenize(std::string_view segment) { tokenize_into(segment, stack_); }

Response Parser::finish() {
  if (stack_.size() != 1) throw ParseError("unbalanced '(' at the end of a response");
  current_.data = std::move(stack_[0].items);
  stack_.clear();
  in_response_ = false;
  return std::move(current_);
}

std::optional<Event> Parser::next() {
  if (failed_) return std::nullopt;
  try {
    for (;;) {
      const std::size_t avail = buffer_.size() - pos_;
      if (literal_ == LiteralMode::streamed) {
        if (!literal_begun_) {
          literal_begun_ = true;
          return Event{Event::Kind::literal_begin, {}, {}, literal_size_, literal_seq_, {}};
        }
        if (literal_left_ == 0) {
          literal_ = LiteralMode::none;
          Value v;
          v.kind = Value::Kind::literal;
          v.literal_size = literal_size_;
          v.literal_seq = literal_seq_;
          stack_.back().items.push_back(std::move(v));
          return Event{Event::Kind::literal_end, {}, {}, literal_size_, literal_seq_, {}};
        }
        if (avail == 0) return std::nullopt;
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(avail, literal_left_));
        std::string_view chunk(buffer_.data() + pos_, n);
        pos_ += n;
        literal_left_ -= n;
        return Event{Event::Kind::literal_data, {}, chunk, 0, literal_seq_, {}};
      }
      if (literal_ == LiteralMode::inline_) {
        if (avail < literal_left_) return std::nullopt;
        Value v;
        v.kind = Value::Kind::string;
        v.text.assign(buffer_, pos_, static_cast<std::size_t>(literal_left_));
        pos_ += static_cast<std::size_t>(literal_left_);
        stack_.back().items.push_back(std::move(v));
        literal_ = LiteralMode::none;
        continue;
      }
      const auto eol = buffer_.find("\r\n", pos_);
      if (eol == std::string::npos) {
        if (avail > max_line_) return fail("a response line is longer than " + std::to_string(max_line_) + " bytes");
        return std::nullopt;
      }
      std::string_view seg(buffer_.data() + pos_, eol - pos_);
      pos_ = eol + 2;
      if (seg.find('\0') != std::string_view::npos) return fail("NUL byte in a response line");
      bool complete = false;
      std::optional<std::pair<std::uint64_t, std::size_t>> lit;
      if (!in_response_) {
        // A status response's text may end in "{5}" without being a literal; only data has literals.
        lit = trailing_literal(seg);
        auto head = lit ? seg.substr(0, lit->second) : seg;
        complete = start_response(head);
        if (complete && lit) {  // it was text after all
          current_.text += std::string(seg.substr(lit->second));
          lit.reset();
        }
        if (complete) return Event{Event::Kind::response, finish(), {}, 0, 0, {}};
      } else {
        lit = trailing_literal(seg);
        tokenize(lit ? seg.substr(0, lit->second) : seg);
      }
      if (!lit) return Event{Event::Kind::response, finish(), {}, 0, 0, {}};
      literal_size_ = literal_left_ = lit->first;
      if (lit->first <= inline_limit_) {
        literal_ = LiteralMode::inline_;
      } else {
        literal_ = LiteralMode::streamed;
        literal_begun_ = false;
        ++literal_seq_;
      }
    }
  } catch (const ParseError& e) {
    return fail(e.what());
  } catch (const std::out_of_range& e) {
    return fail("a number is too large");
  }
}

// --- encoders --------------------------------------------------------------------------------

std::optional<std::string> quote_astring(std::string_view s) {
  if (s.empty()) return std::string("\"\"");
  bool atom = true, quotable = true;
  for (unsigned char c : s) {
    if (c < 0x20 || c > 0x7e) atom = quotable = false;
    if (c == '(' || c == ')' || c == '{' || c == ' ' || c == '%' || c == '*' || c == '"' || c == '\\' || c == ']') atom = false;
  }
  if (atom) return std::string(s);
  if (!quotable) return std::nullopt;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

std::string literal_prefix(std::size_t size, bool non_synchronising) {
  return "{" + std::to_string(size) + (non_synchronising ? "+}\r\n" : "}\r\n");
}

namespace {

const char* kB64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

std::vector<char32_t> utf8_code_points(std::string_view s) {
  std::vector<char32_t> out;
  for (std::size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    if (extra < 0 || i + extra >= s.size() + (extra == 0)) throw std::invalid_argument("mailbox name is not UTF-8");
    char32_t cp = extra == 0 ? c : c & (0x3F >> extra);
    for (int k = 1; k <= extra; ++k) {
      unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 2) throw std::invalid_argument("mailbox name is not UTF-8");
      cp = (cp << 6) | (d & 0x3F);
    }
    out.push_back(cp);
    i += extra + 1;
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace

std::string mailbox_encode(std::string_view utf8) {
  const auto cps = utf8_code_points(utf8);
  std::string out;
  for (std::size_t i = 0; i < cps.size();) {
    char32_t c = cps[i];
    if (c >= 0x20 && c <= 0x7e) {
      out += c == '&' ? std::string("&-") : std::string(1, static_cast<char>(c));
      ++i;
      continue;
    }
    std::vector<unsigned char> units;  // UTF-16BE
    for (; i < cps.size() && !(cps[i] >= 0x20 && cps[i] <= 0x7e); ++i) {
      char32_t u = cps[i];
      if (u >= 0x10000) {
        u -= 0x10000;
        char32_t hi = 0xD800 + (u >> 10), lo = 0xDC00 + (u & 0x3FF);
        units.insert(units.end(), {static_cast<unsigned char>(hi >> 8), static_cast<unsigned char>(hi & 0xff),
                                   static_cast<unsigned char>(lo >> 8), static_cast<unsigned char>(lo & 0xff)});
      } else {
        units.insert(units.end(), {static_cast<unsigned char>(u >> 8), static_cast<unsigned char>(u & 0xff)});
      }
    }
    out.push_back('&');
    unsigned buffer = 0;
    int bits = 0;
    for (unsigned char b : units) {
      buffer = (buffer << 8) | b;
      bits += 8;
      while (bits >= 6) {
        out.push_back(kB64[(buffer >> (bits - 6)) & 0x3F]);
        bits -= 6;
      }
    }
    if (bits > 0) out.push_back(kB64[(buffer << (6 - bits)) & 0x3F]);
    out.push_back('-');
  }
  return out;
}

std::string mailbox_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    char c = s[i];
    if (c != '&') {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e)
        throw std::invalid_argument("mailbox name has a byte outside printable ASCII");
      out.push_back(c);
      ++i;
      continue;
    }
    auto end = s.find('-', i + 1);
    if (end == std::string_view::npos) throw std::invalid_argument("unterminated &...- sequence");
    if (end == i + 1) {
      out.push_back('&');
      i = end + 1;
      continue;
    }
    unsigned buffer = 0;
    int bits = 0;
    std::vector<std::uint16_t> units;
    std::vector<unsigned char> bytes;
    for (std::size_t k = i + 1; k < end; ++k) {
      const char* p = std::strchr(kB64, s[k]);
      if (!p || s[k] == '\0') throw std::invalid_argument("bad character in a modified base64 run");
      buffer = (buffer << 6) | static_cast<unsigned>(p - kB64);
      bits += 6;
      if (bits >= 8) {
        bytes.push_back(static_cast<unsigned char>((buffer >> (bits - 8)) & 0xff));
        bits -= 8;
      }
    }
    if (bytes.size() % 2) throw std::invalid_argument("modified base64 run is not whole UTF-16");
    for (std::size_t k = 0; k < bytes.size(); k += 2) units.push_back(static_cast<std::uint16_t>(bytes[k] << 8 | bytes[k + 1]));
    for (std::size_t k = 0; k < units.size(); ++k) {
      char32_t u = units[k];
      if (u >= 0xD800 && u <= 0xDBFF) {
        if (k + 1 >= units.size() || units[k + 1] < 0xDC00 || units[k + 1] > 0xDFFF) throw std::invalid_argument("broken surrogate pair");
        u = 0x10000 + ((u - 0xD800) << 10) + (units[++k] - 0xDC00);
      } else if (u >= 0xDC00 && u <= 0xDFFF) {
        throw std::invalid_argument("broken surrogate pair");
      }
      append_utf8(out, u);
    }
    i = end + 1;
  }
  return out;
}

}  // namespace mailgate::imap
