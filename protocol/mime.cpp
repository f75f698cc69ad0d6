#include "protocol/mime.hpp"

#include <array>

#include "protocol/gmime_util.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace {

using gmime::init;
using gmime::valid_utf8;
template <class T>
using GPtr = gmime::Ptr<T>;

const char* warning_text(GMimeParserWarning w) {
  switch (w) {
    case GMIME_WARN_DUPLICATED_HEADER: return "duplicated header";
    case GMIME_WARN_DUPLICATED_PARAMETER: return "duplicated header parameter";
    case GMIME_WARN_UNENCODED_8BIT_HEADER: return "unencoded 8-bit header";
    case GMIME_WARN_INVALID_CONTENT_TYPE: return "invalid content type";
    case GMIME_WARN_INVALID_RFC2047_HEADER_VALUE: return "invalid RFC 2047 header value";
    case GMIME_WARN_MALFORMED_MULTIPART: return "malformed multipart";
    case GMIME_WARN_TRUNCATED_MESSAGE: return "truncated message";
    case GMIME_WARN_MALFORMED_MESSAGE: return "malformed message";
    case GMIME_CRIT_INVALID_HEADER_NAME: return "invalid header name";
    case GMIME_CRIT_CONFLICTING_HEADER: return "conflicting header";
    case GMIME_CRIT_CONFLICTING_PARAMETER: return "conflicting header parameter";
    case GMIME_CRIT_MULTIPART_WITHOUT_BOUNDARY: return "multipart without boundary";
    case GMIME_WARN_INVALID_PARAMETER: return "invalid header parameter";
    case GMIME_WARN_INVALID_ADDRESS_LIST: return "invalid address list";
    case GMIME_CRIT_NESTING_OVERFLOW: return "MIME nesting too deep";
    case GMIME_WARN_PART_WITHOUT_CONTENT: return "part without content";
    case GMIME_CRIT_PART_WITHOUT_HEADERS_OR_CONTENT: return "part without headers or content";
  }
  return "parser warning";
}

void on_warning(gint64 offset, GMimeParserWarning code, const gchar* item, gpointer user) {
  auto* warnings = static_cast<std::vector<std::string>*>(user);
  if (warnings->size() >= 50) return;  // a hostile message could produce millions
  std::string w = std::string(warning_text(code)) + " at byte " + std::to_string(offset);
  if (item) w += ": " + valid_utf8(item).substr(0, 200);
  warnings->push_back(std::move(w));
}

std::string decoded_content(GMimePart* part) {
  GMimeDataWrapper* content = g_mime_part_get_content(part);
  if (!content) return {};
  GPtr<GMimeStream> mem(g_mime_stream_mem_new());
  g_mime_data_wrapper_write_to_stream(content, mem.get());
  GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem.get()));
  return std::string(reinterpret_cast<const char*>(bytes->data), bytes->len);
}

struct Walk {
  ParsedMessage& out;
  std::string_view raw;
  std::vector<std::optional<ContentSpan>>* spans = nullptr;  // null: not wanted
  GByteArray* raw_bytes = nullptr;                           // GMime's copy of raw, which parts are windows on
};

// Decodes plain base64 as RFC 2045 writes it: the alphabet in whole quanta, line breaks and
// spaces between, padding only at the very end. Every decoder (GMime's, PostgreSQL's decode())
// reads such text alike. Anything else (a stray character a lenient decoder skips, padding in the
// middle, a cut quantum) returns false, and GMime decodes it its own way. One pass, quanta of four
// symbols at a time: a 500 KB attachment costs about as much as copying it.
bool decode_plain_base64(std::string_view s, std::string& out) {
  enum : unsigned char { kSpace = 64, kPad = 65, kBad = 255 };
  static const auto table = [] {
    std::array<unsigned char, 256> t{};
    t.fill(kBad);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (unsigned char v = 0; v < 64; ++v) t[static_cast<unsigned char>(alphabet[v])] = v;
    t[' '] = t['\t'] = t['\r'] = t['\n'] = kSpace;
    t['='] = kPad;
    return t;
  }();
  out.resize(s.size() / 4 * 3 + 3);
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  const auto* in = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t size = s.size();
  std::uint32_t acc = 0;
  int pending = 0, padding = 0;
  for (std::size_t i = 0; i < size;) {
    if (pending == 0 && i + 4 <= size) {  // the common case: a whole quantum
      const unsigned a = table[in[i]], b = table[in[i + 1]], c = table[in[i + 2]], d = table[in[i + 3]];
      if ((a | b | c | d) < 64) {
        if (padding) return false;
        const std::uint32_t q = a << 18 | b << 12 | c << 6 | d;
        o[0] = static_cast<unsigned char>(q >> 16);
        o[1] = static_cast<unsigned char>(q >> 8);
        o[2] = static_cast<unsigned char>(q);
        o += 3;
        i += 4;
        continue;
      }
    }
    const unsigned v = table[in[i++]];
    if (v < 64) {
      if (padding) return false;
      acc = acc << 6 | v;
      if (++pending == 4) {
        o[0] = static_cast<unsigned char>(acc >> 16);
        o[1] = static_cast<unsigned char>(acc >> 8);
        o[2] = static_cast<unsigned char>(acc);
        o += 3;
        acc = 0;
        pending = 0;
      }
    } else if (v == kPad) {
      ++padding;
    } else if (v != kSpace) {
      return false;
    }
  }
  if (padding == 0 && pending != 0) return false;
  if (padding == 2 && pending == 2) {
    *o++ = static_cast<unsigned char>(acc >> 4);
  } else if (padding == 1 && pending == 3) {
    *o++ = static_cast<unsigned char>(acc >> 10);
    *o++ = static_cast<unsigned char>(acc >> 2);
  } else if (padding != 0) {
    return false;
  }
  out.resize(static_cast<std::size_t>(o - reinterpret_cast<unsigned char*>(out.data())));
  return true;
}

// The part's content as a window on the message's own bytes: the parser keeps it as
// (bound_start, bound_end) of the message's stream (a copy would not say where it came from).
std::optional<std::pair<std::size_t, std::size_t>> raw_window(GMimeDataWrapper* content, const Walk& w) {
  GMimeStream* stream = g_mime_data_wrapper_get_stream(content);
  if (!stream || !GMIME_IS_STREAM_MEM(stream) || g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(stream)) != w.raw_bytes)
    return std::nullopt;
  const gint64 size = static_cast<gint64>(w.raw.size());
  const gint64 start = stream->bound_start, end = stream->bound_end < 0 ? size : stream->bound_end;
  if (start < 0 || end < start || end > size) return std::nullopt;
  return std::make_pair(static_cast<std::size_t>(start), static_cast<std::size_t>(end - start));
}

// An attachment's decoded bytes, and where they lie in the raw message when they can be had from
// there exactly: unencoded content, or plain base64 (decoded here, faster than GMime's filter
// stream). Anything else is decoded by GMime.
std::optional<ContentSpan> attachment_content(GMimePart* part, const Walk& w, std::string& data) {
  GMimeDataWrapper* content = g_mime_part_get_content(part);
  if (!content) return std::nullopt;
  if (const auto window = raw_window(content, w)) {
    const std::string_view bytes = w.raw.substr(window->first, window->second);
    switch (g_mime_data_wrapper_get_encoding(content)) {
      case GMIME_CONTENT_ENCODING_DEFAULT:
      case GMIME_CONTENT_ENCODING_7BIT:
      case GMIME_CONTENT_ENCODING_8BIT:
      case GMIME_CONTENT_ENCODING_BINARY:
        data.assign(bytes);
        return ContentSpan{window->first, window->second, false};
      case GMIME_CONTENT_ENCODING_BASE64:
        if (decode_plain_base64(bytes, data)) return ContentSpan{window->first, window->second, true};
        break;
      default:
        break;
    }
  }
  data = decoded_content(part);
  return std::nullopt;
}

void visit(GMimeObject* parent, GMimeObject* part, gpointer user) {
  (void)parent;
  auto& w = *static_cast<Walk*>(user);
  if (GMIME_IS_MESSAGE_PART(part)) {  // an attached message: kept whole, as message/rfc822
    GMimeMessage* inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(part));
    MailAttachment a;
    a.content_type = "message/rfc822";
    if (inner) {
      GPtr<GMimeStream> mem(g_mime_stream_mem_new());
      g_mime_object_write_to_stream(GMIME_OBJECT(inner), nullptr, mem.get());
      GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem.get()));
      a.data.assign(reinterpret_cast<const char*>(bytes->data), bytes->len);
      a.filename = valid_utf8(g_mime_message_get_subject(inner));
      a.filename = (a.filename.empty() ? std::string("message") : a.filename) + ".eml";
    }
    a.sha256_hex = sha256_hex(a.data);
    w.out.attachments.push_back(std::move(a));
    if (w.spans) w.spans->push_back(std::nullopt);  // re-serialised by GMime: not the raw bytes
    return;
  }
  if (!GMIME_IS_PART(part)) return;  // multiparts: their children are visited too
  GMimePart* p = GMIME_PART(part);
  GMimeContentType* ct = g_mime_object_get_content_type(part);
  const std::string type = ct ? std::string(g_mime_content_type_get_media_type(ct)) + "/" + g_mime_content_type_get_media_subtype(ct)
                              : std::string("text/plain");
  std::string lower = type;
  for (auto& c : lower) c = static_cast<char>(g_ascii_tolower(c));
  const bool attachment = g_mime_part_is_attachment(p);
  if (!attachment && GMIME_IS_TEXT_PART(part) && (lower == "text/plain" || lower == "text/html")) {
    std::string& body = lower == "text/plain" ? w.out.text_body : w.out.html_body;
    if (body.empty()) {
      char* text = g_mime_text_part_get_text(GMIME_TEXT_PART(part));
      if (text) {
        body = valid_utf8(text);
        g_free(text);
      } else {
        const std::string raw = decoded_content(p);
        body = valid_utf8(raw.data(), static_cast<gssize>(raw.size()));
        w.out.warnings.push_back("the " + lower + " body's charset could not be converted; shown with replacement characters");
      }
      return;
    }
  }
  MailAttachment a;
  a.content_type = lower;
  a.filename = valid_utf8(g_mime_part_get_filename(p));
  a.content_id = valid_utf8(g_mime_part_get_content_id(p));
  GMimeContentDisposition* d = g_mime_object_get_content_disposition(part);
  a.inline_part = d && !g_mime_content_disposition_is_attachment(d);
  auto span = attachment_content(p, w, a.data);
  a.sha256_hex = sha256_hex(a.data);
  if (w.spans) w.spans->push_back(span);
  w.out.attachments.push_back(std::move(a));
}

ParsedMessage parse(std::string_view raw, std::vector<std::optional<ContentSpan>>* spans);

}  // namespace

ParsedMessage parse_message(std::string_view raw) { return parse(raw, nullptr); }

ParsedMessage parse_message(std::string_view raw, std::vector<std::optional<ContentSpan>>& spans) {
  spans.clear();
  return parse(raw, &spans);
}

namespace {

ParsedMessage parse(std::string_view raw, std::vector<std::optional<ContentSpan>>* spans) {
  init();
  ParsedMessage out;
  out.sha256_hex = sha256_hex(raw);
  GMimeParserOptions* options = g_mime_parser_options_new();
  g_mime_parser_options_set_warning_callback(options, on_warning, &out.warnings);
  struct OptionsFree {
    GMimeParserOptions* o;
    ~OptionsFree() { g_mime_parser_options_free(o); }
  } free_options{options};

  GPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(raw.data(), raw.size()));
  GPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
  g_mime_parser_set_format(parser.get(), GMIME_FORMAT_MESSAGE);
  GPtr<GMimeMessage> message(g_mime_parser_construct_message(parser.get(), options));
  if (!message) {
    out.warnings.push_back("not a MIME message: stored raw only");
    return out;
  }
  GMimeMessage* m = message.get();
  out.message_id = valid_utf8(g_mime_message_get_message_id(m));
  out.subject = valid_utf8(g_mime_message_get_subject(m));
  if (GDateTime* date = g_mime_message_get_date(m)) out.date = g_date_time_to_unix(date);
  gmime::read_addresses(g_mime_message_get_from(m), out.from);
  gmime::read_addresses(g_mime_message_get_sender(m), out.sender);
  gmime::read_addresses(g_mime_message_get_reply_to(m), out.reply_to);
  gmime::read_addresses(g_mime_message_get_to(m), out.to);
  gmime::read_addresses(g_mime_message_get_cc(m), out.cc);
  if (const char* auto_submitted = g_mime_object_get_header(GMIME_OBJECT(m), "Auto-Submitted"))
    out.auto_submitted = g_ascii_strncasecmp(auto_submitted, "no", 2) != 0;

  Walk walk{out, raw, spans, g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(stream.get()))};
  if (GMimeObject* body = g_mime_message_get_mime_part(m)) {
    if (GMIME_IS_MULTIPART(body))
      g_mime_multipart_foreach(GMIME_MULTIPART(body), visit, &walk);
    else
      visit(nullptr, body, &walk);
  }
  return out;
}

}  // namespace

}  // namespace mailgate
