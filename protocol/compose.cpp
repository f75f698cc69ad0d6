#include "protocol/compose.hpp"

#include <set>
#include <string_view>

#include "protocol/gmime_util.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace {

template <class T>
using Ptr = gmime::Ptr<T>;

void check_header(const std::string& field, const std::string& value) {
  if (value.find_first_of(std::string("\r\n\0", 3)) != std::string::npos)
    throw ComposeError(field, field + " must not contain a line break");
}

void check_address(const std::string& field, const MailAddress& a) {
  check_header(field, a.name);
  check_header(field, a.address);
  if (a.address.empty() || a.address.find('@') == std::string::npos || a.address.find_first_of(" <>,;\"\t") != std::string::npos)
    throw ComposeError(field, field + " is not an e-mail address: " + a.address);
}

// `list` as GMime's (checked before: check_message()).
Ptr<InternetAddressList> address_list(const std::vector<MailAddress>& list) {
  Ptr<InternetAddressList> out(internet_address_list_new());
  for (const auto& a : list) {
    Ptr<InternetAddress> ia(internet_address_mailbox_new(a.name.c_str(), a.address.c_str()));
    internet_address_list_add(out.get(), ia.get());
  }
  return out;
}

void add_addresses(GMimeMessage* msg, GMimeAddressType type, const std::vector<MailAddress>& list) {
  if (list.empty()) return;  // appending even nothing would make GMime write an empty header
  internet_address_list_append(g_mime_message_get_addresses(msg, type), address_list(list).get());
}

// `text` in CRLF lines, as a 7bit part carries it (GMime's DOS newline filter).
std::string crlf_lines(const std::string& text) {
  std::string out;
  out.reserve(text.size() + text.size() / 32 + 2);
  for (std::size_t at = 0; at < text.size();) {
    const std::size_t lf = text.find('\n', at);
    if (lf == std::string::npos) {
      out.append(text, at, std::string::npos);
      break;
    }
    out.append(text, at, lf - at);
    if (lf == 0 || text[lf - 1] != '\r') out += '\r';
    out += '\n';
    at = lf + 1;
  }
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && g_ascii_strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// Whether GMime would send `text` as it is (7bit): ASCII without NUL or a bare CR, no line
// longer than 998 octets, none starting with "From " (which GMime protects with
// quoted-printable from mbox's From_ quoting). Most mail is; then GMime's two passes over it (the charset, then the
// encoding) are not needed, and they were the largest part of composing (bench/README.md).
bool plain_7bit(const std::string& text) {
  std::size_t line = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      line = 0;
      continue;
    }
    if (line == 0 && text.compare(i, 5, "From ") == 0) return false;
    if (c >= 0x80 || c == 0 || (c == '\r' && (i + 1 == text.size() || text[i + 1] != '\n'))) return false;
    if (c != '\r' && ++line > 998) return false;
  }
  return true;
}

// A text part in UTF-8, encoded so that it is 7-bit clean (quoted-printable for mostly-ASCII
// text, base64 otherwise, as GMime judges).
GMimePart* text_part(const char* subtype, const std::string& text, bool& as_is) {
  as_is = plain_7bit(text);
  if (as_is) {  // the same part as below, without the analysis
    GMimePart* part = GMIME_PART(g_mime_text_part_new_with_subtype(subtype));
    Ptr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(text.data(), text.size()));
    Ptr<GMimeDataWrapper> content(g_mime_data_wrapper_new_with_stream(stream.get(), GMIME_CONTENT_ENCODING_DEFAULT));
    g_mime_part_set_content(part, content.get());
    g_mime_object_set_content_type_parameter(GMIME_OBJECT(part), "charset", "utf-8");
    g_mime_part_set_content_encoding(part, GMIME_CONTENT_ENCODING_7BIT);
    return part;
  }
  GMimeTextPart* text_part = g_mime_text_part_new_with_subtype(subtype);
  GMimePart* part = GMIME_PART(text_part);
  g_mime_text_part_set_text(text_part, text.c_str());  // sets charset=utf-8 when needed
  g_mime_object_set_content_type_parameter(GMIME_OBJECT(part), "charset", "utf-8");
  g_mime_object_encode(GMIME_OBJECT(part), GMIME_ENCODING_CONSTRAINT_7BIT);
  // GMime leaves a NUL, a bare CR or a line over 998 octets in plain ASCII as 7bit, which SMTP
  // does not carry (RFC 5321 2.3.8, 4.5.3.1.6): quoted-printable encodes all three.
  if (g_mime_part_get_content_encoding(part) == GMIME_CONTENT_ENCODING_7BIT)
    g_mime_part_set_content_encoding(part, GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE);
  return part;
}

GMimePart* attachment_part(const OutgoingAttachment& a, std::size_t i) {
  const std::string field = "attachments[" + std::to_string(i) + "]";
  check_header(field + ".filename", a.filename);
  check_header(field + ".content_type", a.content_type);
  if (a.content_type.find('/') == std::string::npos) throw ComposeError(field + ".content_type", "not a content type: " + a.content_type);
  Ptr<GMimeContentType> type(g_mime_content_type_parse(nullptr, a.content_type.c_str()));
  if (!type || !g_mime_content_type_get_media_type(type.get()) || !g_mime_content_type_get_media_subtype(type.get()))
    throw ComposeError(field + ".content_type", "not a content type: " + a.content_type);
  GMimePart* part = g_mime_part_new_with_type(g_mime_content_type_get_media_type(type.get()), g_mime_content_type_get_media_subtype(type.get()));
  Ptr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(a.data.data(), a.data.size()));
  Ptr<GMimeDataWrapper> content(g_mime_data_wrapper_new_with_stream(stream.get(), GMIME_CONTENT_ENCODING_DEFAULT));
  g_mime_part_set_content(part, content.get());
  g_mime_part_set_content_encoding(part, GMIME_CONTENT_ENCODING_BASE64);
  g_mime_object_set_disposition(GMIME_OBJECT(part), "attachment");
  if (!a.filename.empty()) g_mime_part_set_filename(part, a.filename.c_str());
  return part;
}

// A multipart boundary that follows from the Message-ID: composing a row again (a retry, or
// after a crash) gives the same bytes, so the outbox need not keep them (store/outbox.hpp).
// 24 hex digits of a digest are as unlikely to occur in the content as GMime's random ones.
std::string boundary_for(const std::string& message_id, const char* part) {
  return "=_mg_" + sha256_hex(message_id + "/" + part).substr(0, 24);
}

// What composing refuses, before anything is built (ComposeError names the field).
void check_message(const OutgoingMessage& m) {
  check_address("from", m.from);
  if (m.reply_to) check_address("reply_to", *m.reply_to);
  check_header("subject", m.subject);
  check_header("message_id", m.message_id);
  if (m.message_id.empty() || m.message_id.find_first_of("<> ") != std::string::npos)
    throw ComposeError("message_id", "message_id must be an id-left@id-right without <>");
  for (const auto& [name, value] : m.extra_headers) {
    check_header("header " + name, name);
    check_header("header " + name, value);
  }
  for (std::size_t i = 0; i < m.to.size(); ++i) check_address("to[" + std::to_string(i) + "]", m.to[i]);
  for (std::size_t i = 0; i < m.cc.size(); ++i) check_address("cc[" + std::to_string(i) + "]", m.cc[i]);
}

// The composed bytes through GMime's object tree; `as_is`: whether every text part went as it
// is (plain_7bit).
std::string compose(const OutgoingMessage& m, bool& as_is) {
  gmime::init();
  check_message(m);
  Ptr<GMimeMessage> msg(g_mime_message_new(TRUE));
  add_addresses(msg.get(), GMIME_ADDRESS_TYPE_FROM, {m.from});
  if (m.reply_to) add_addresses(msg.get(), GMIME_ADDRESS_TYPE_REPLY_TO, {*m.reply_to});
  add_addresses(msg.get(), GMIME_ADDRESS_TYPE_TO, m.to);
  add_addresses(msg.get(), GMIME_ADDRESS_TYPE_CC, m.cc);
  g_mime_message_set_subject(msg.get(), m.subject.c_str(), "utf-8");
  g_mime_message_set_message_id(msg.get(), m.message_id.c_str());
  GDateTime* date = g_date_time_new_from_unix_utc(m.date);
  g_mime_message_set_date(msg.get(), date);
  g_date_time_unref(date);
  for (const auto& [name, value] : m.extra_headers)
    g_mime_object_set_header(GMIME_OBJECT(msg.get()), name.c_str(), value.c_str(), "utf-8");

  // Body: text, HTML, or both as alternatives; then attachments around it.
  Ptr<GMimeObject> body;
  const bool text = !m.text_body.empty() || m.html_body.empty();
  if (text && !m.html_body.empty()) {
    Ptr<GMimeMultipart> alt(g_mime_multipart_new_with_subtype("alternative"));
    g_mime_multipart_set_boundary(alt.get(), boundary_for(m.message_id, "alternative").c_str());
    bool text_as_is = false, html_as_is = false;
    Ptr<GMimePart> t(text_part("plain", m.text_body, text_as_is)), h(text_part("html", m.html_body, html_as_is));
    as_is = text_as_is && html_as_is;
    g_mime_multipart_add(alt.get(), GMIME_OBJECT(t.get()));
    g_mime_multipart_add(alt.get(), GMIME_OBJECT(h.get()));
    body.reset(GMIME_OBJECT(alt.release()));
  } else {
    body.reset(GMIME_OBJECT(text ? text_part("plain", m.text_body, as_is) : text_part("html", m.html_body, as_is)));
  }
  if (!m.attachments.empty()) {
    Ptr<GMimeMultipart> mixed(g_mime_multipart_new_with_subtype("mixed"));
    g_mime_multipart_set_boundary(mixed.get(), boundary_for(m.message_id, "mixed").c_str());
    g_mime_multipart_add(mixed.get(), body.get());
    for (std::size_t i = 0; i < m.attachments.size(); ++i) {
      Ptr<GMimePart> a(attachment_part(m.attachments[i], i));
      g_mime_multipart_add(mixed.get(), GMIME_OBJECT(a.get()));
    }
    body.reset(GMIME_OBJECT(mixed.release()));
  }
  g_mime_message_set_mime_part(msg.get(), body.get());

  GMimeFormatOptions* options = g_mime_format_options_new();
  g_mime_format_options_set_newline_format(options, GMIME_NEWLINE_FORMAT_DOS);
  char* s = g_mime_object_to_string(GMIME_OBJECT(msg.get()), options);
  g_mime_format_options_free(options);
  std::string out(s);
  g_free(s);
  return out;
}

// Appends a header as GMime formats it ("\n" line ends, folds included) in CRLF lines.
void append_header(std::string& out, const char* formatted) {
  const std::size_t start = out.size();
  for (const char* c = formatted; *c; ++c) {
    if (*c == '\n') out += '\r';
    out += *c;
  }
  if (out.size() == start || out.back() != '\n') out += "\r\n";
}

void address_header(std::string& out, const char* name, const std::vector<MailAddress>& list) {
  if (list.empty()) return;  // GMime leaves out a header without addresses
  const auto addresses = address_list(list);
  GString* line = g_string_new(name);
  g_string_append(line, ": ");
  internet_address_list_encode(addresses.get(), nullptr, line);
  append_header(out, line->str);
  g_string_free(line, TRUE);
}

// An unstructured header (Subject, Auto-Submitted, ...): RFC 2047 words where needed, folded.
void text_header(std::string& out, const std::string& name, const std::string& value) {
  char* encoded = g_mime_utils_header_encode_text(nullptr, value.c_str(), "utf-8");
  const std::string line = name + ": " + encoded;
  g_free(encoded);
  char* folded = g_mime_utils_unstructured_header_fold(nullptr, nullptr, line.c_str());
  append_header(out, folded);
  g_free(folded);
}

void text_part_bytes(std::string& out, const char* subtype, const std::string& body) {
  out += "Content-Type: text/";
  out += subtype;
  out += "; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n";
  out += crlf_lines(body);
}

// Each header field of `raw`'s header block as (name, raw value: what follows the colon, folds
// included), as GMime's parser splits them.
std::vector<std::pair<std::string_view, std::string>> header_fields(std::string_view raw) {
  std::vector<std::pair<std::string_view, std::string>> fields;
  std::size_t at = 0;
  while (at < raw.size()) {
    const std::size_t eol = raw.find("\r\n", at);
    if (eol == std::string_view::npos || eol == at) break;  // the blank line ends the header
    const std::string_view line = raw.substr(at, eol - at);
    if ((line[0] == ' ' || line[0] == '\t') && !fields.empty()) {
      fields.back().second.append("\r\n").append(line);
    } else {
      const std::size_t colon = line.find(':');
      if (colon == std::string_view::npos) break;
      fields.emplace_back(line.substr(0, colon), std::string(line.substr(colon + 1)));
    }
    at = eol + 2;
  }
  return fields;
}

void count_warning(gint64, GMimeParserWarning, const gchar*, gpointer user) { ++*static_cast<int*>(user); }

// The parse of a message composed here whose text parts went as they are, without GMime's
// parser (compose.hpp); false when the message is not one this covers.
bool parse_own(const OutgoingMessage& m, ComposedMessage& out) {
  std::vector<std::string> types;  // of the attachments, as the parser gives them
  for (const auto& a : m.attachments) {  // a message/rfc822 or multipart attachment is read as one
    Ptr<GMimeContentType> type(g_mime_content_type_parse(nullptr, a.content_type.c_str()));
    const char* media = type ? g_mime_content_type_get_media_type(type.get()) : nullptr;
    if (!media || iequals(media, "message") || iequals(media, "multipart")) return false;
    if (a.filename.find("=?") != std::string::npos) return false;  // GMime decodes RFC 2047 words even in a parameter
    std::string lower = std::string(media) + "/" + g_mime_content_type_get_media_subtype(type.get());
    for (auto& c : lower) c = static_cast<char>(g_ascii_tolower(c));
    types.push_back(std::move(lower));
  }
  ParsedMessage& p = out.parsed;
  int warnings = 0;
  GMimeParserOptions* options = g_mime_parser_options_new();
  g_mime_parser_options_set_warning_callback(options, count_warning, &warnings);
  struct OptionsFree {
    GMimeParserOptions* o;
    ~OptionsFree() { g_mime_parser_options_free(o); }
  } free_options{options};

  // The headers, as GMimeMessage reads them: address lists from the raw value; Subject, Date and
  // Message-Id from the unfolded, decoded value; the last one of each counts.
  std::set<std::string> seen;
  for (const auto& [name, raw_value] : header_fields(out.raw)) {
    std::string lower(name);
    for (auto& c : lower) c = static_cast<char>(g_ascii_tolower(c));
    if (!seen.insert(lower).second) return false;  // twice: leave it to the parser
    std::vector<MailAddress>* list = lower == "from" ? &p.from : lower == "sender" ? &p.sender : lower == "reply-to" ? &p.reply_to
                                   : lower == "to" ? &p.to : lower == "cc" ? &p.cc : nullptr;
    if (list) {
      Ptr<InternetAddressList> parsed(internet_address_list_parse(options, raw_value.c_str()));
      gmime::read_addresses(parsed.get(), *list);
      continue;
    }
    if (lower != "subject" && lower != "date" && lower != "message-id" && lower != "auto-submitted") continue;
    char* unfolded = g_mime_utils_header_unfold(raw_value.c_str());
    char* value = g_mime_utils_header_decode_text(options, unfolded);
    g_free(unfolded);
    if (lower == "subject") {
      p.subject = gmime::valid_utf8(value);
    } else if (lower == "date") {
      if (GDateTime* date = g_mime_utils_header_decode_date(value)) {
        p.date = g_date_time_to_unix(date);
        g_date_time_unref(date);
      }
    } else if (lower == "message-id") {
      char* id = g_mime_utils_decode_message_id(value);
      p.message_id = gmime::valid_utf8(id);
      g_free(id);
    } else {
      p.auto_submitted = g_ascii_strncasecmp(value, "no", 2) != 0;
    }
    g_free(value);
  }
  if (warnings) return false;

  // The bodies: in CRLF lines, as the parts carry them (they went as they are). A message of one
  // part ends in a line break (GMime adds it), which is then the body's.
  if (!m.text_body.empty() || m.html_body.empty()) p.text_body = crlf_lines(m.text_body);
  if (!m.html_body.empty()) p.html_body = crlf_lines(m.html_body);
  if (m.attachments.empty() && (m.text_body.empty() || m.html_body.empty())) {
    std::string& only = m.html_body.empty() ? p.text_body : p.html_body;
    if (!only.empty() && only.back() != '\n') only += "\r\n";
  }

  // The attachments: the last parts of multipart/mixed, each base64 up to the CRLF before the
  // next delimiter (as the parser's spans). Base64 has no '_', so no delimiter lies within one.
  if (!m.attachments.empty()) {
    const std::string delimiter = "\r\n--" + boundary_for(m.message_id, "mixed");
    std::size_t end = out.raw.rfind(delimiter + "--");
    if (end == std::string::npos) return false;
    out.spans.resize(m.attachments.size());
    for (std::size_t i = m.attachments.size(); i-- > 0;) {
      const std::size_t start = out.raw.rfind(delimiter + "\r\n", end - 1);
      if (start == std::string::npos) return false;
      const std::size_t content = out.raw.find("\r\n\r\n", start + delimiter.size());
      if (content == std::string::npos || content + 4 > end) return false;
      out.spans[i] = ContentSpan{content + 4, end - (content + 4), true};
      end = start;
    }
    for (std::size_t i = 0; i < m.attachments.size(); ++i) {
      const auto& a = m.attachments[i];
      MailAttachment copy;
      copy.content_type = std::move(types[i]);
      copy.filename = a.filename.empty() ? std::string() : gmime::valid_utf8(a.filename.c_str());
      copy.data = a.data;
      copy.sha256_hex = sha256_hex(copy.data);
      p.attachments.push_back(std::move(copy));
    }
  }
  p.sha256_hex = sha256_hex(out.raw);
  return true;
}

}  // namespace

// Written here instead of through a GMimeMessage tree: building and freeing that tree was most of
// composing. The headers are still GMime's (its address, RFC 2047 and folding functions), in the
// order GMime writes them.
std::optional<std::string> compose_message_direct(const OutgoingMessage& m) {
  if (!m.attachments.empty()) return std::nullopt;
  const bool text = !m.text_body.empty() || m.html_body.empty(), html = !m.html_body.empty();
  if ((text && !plain_7bit(m.text_body)) || (html && !plain_7bit(m.html_body))) return std::nullopt;
  for (const auto& [name, value] : m.extra_headers)  // the order of these is GMime's own
    if (iequals(name, "Date") || iequals(name, "From") || iequals(name, "Reply-To") || iequals(name, "Subject") || iequals(name, "Sender") ||
        iequals(name, "To") || iequals(name, "Cc") || iequals(name, "Bcc") || iequals(name, "Message-Id") || iequals(name, "MIME-Version") ||
        iequals(name, "Return-Path") || iequals(name, "Received") || g_ascii_strncasecmp(name.c_str(), "Content-", 8) == 0)
      return std::nullopt;
  gmime::init();
  check_message(m);
  std::string out;
  out.reserve(512 + m.text_body.size() + m.html_body.size() + (m.text_body.size() + m.html_body.size()) / 32);
  GDateTime* date = g_date_time_new_from_unix_utc(m.date);
  char* formatted = g_mime_utils_header_format_date(date);
  g_date_time_unref(date);
  out += "Date: ";
  out += formatted;
  out += "\r\n";
  g_free(formatted);
  address_header(out, "From", {m.from});
  if (m.reply_to) address_header(out, "Reply-To", {*m.reply_to});
  text_header(out, "Subject", m.subject);
  address_header(out, "To", m.to);
  address_header(out, "Cc", m.cc);
  out += "Message-Id: <" + m.message_id + ">\r\n";
  for (const auto& [name, value] : m.extra_headers) text_header(out, name, value);
  out += "MIME-Version: 1.0\r\n";
  if (text && html) {
    const std::string boundary = boundary_for(m.message_id, "alternative");
    out += "Content-Type: multipart/alternative; boundary=\"" + boundary + "\"\r\n\r\n--" + boundary + "\r\n";
    text_part_bytes(out, "plain", m.text_body);
    out += "\r\n--" + boundary + "\r\n";
    text_part_bytes(out, "html", m.html_body);
    out += "\r\n--" + boundary + "--\r\n";
  } else {
    text_part_bytes(out, text ? "plain" : "html", text ? m.text_body : m.html_body);
    if (out.back() != '\n') out += "\r\n";  // a message ends in a line break
  }
  return out;
}

std::string compose_message(const OutgoingMessage& m) {
  if (auto direct = compose_message_direct(m)) return std::move(*direct);
  bool as_is = false;
  return compose(m, as_is);
}

std::string compose_message_with_gmime(const OutgoingMessage& m) {
  bool as_is = false;
  return compose(m, as_is);
}

ComposedMessage compose_and_parse(const OutgoingMessage& m) {
  ComposedMessage out;
  bool as_is = true;  // what compose_direct() writes goes as it is
  if (auto direct = compose_message_direct(m))
    out.raw = std::move(*direct);
  else
    out.raw = compose(m, as_is);
  if (!as_is || !parse_own(m, out)) {
    out.spans.clear();
    out.parsed = parse_message(out.raw, out.spans);
    out.reparsed = true;
  }
  return out;
}

}  // namespace mailgate
