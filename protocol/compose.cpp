#include "protocol/compose.hpp"

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

void add_addresses(GMimeMessage* msg, GMimeAddressType type, const std::vector<MailAddress>& list, const std::string& field) {
  InternetAddressList* target = g_mime_message_get_addresses(msg, type);
  for (std::size_t i = 0; i < list.size(); ++i) {
    check_address(field + "[" + std::to_string(i) + "]", list[i]);
    Ptr<InternetAddress> a(internet_address_mailbox_new(list[i].name.c_str(), list[i].address.c_str()));
    internet_address_list_add(target, a.get());
  }
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
GMimePart* text_part(const char* subtype, const std::string& text) {
  if (plain_7bit(text)) {  // the same part as below, without the analysis
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

}  // namespace

std::string compose_message(const OutgoingMessage& m) {
  gmime::init();
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

  Ptr<GMimeMessage> msg(g_mime_message_new(TRUE));
  add_addresses(msg.get(), GMIME_ADDRESS_TYPE_FROM, {m.from}, "from");
  if (m.reply_to) add_addresses(msg.get(), GMIME_ADDRESS_TYPE_REPLY_TO, {*m.reply_to}, "reply_to");
  add_addresses(msg.get(), GMIME_ADDRESS_TYPE_TO, m.to, "to");
  add_addresses(msg.get(), GMIME_ADDRESS_TYPE_CC, m.cc, "cc");
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
    Ptr<GMimePart> t(text_part("plain", m.text_body)), h(text_part("html", m.html_body));
    g_mime_multipart_add(alt.get(), GMIME_OBJECT(t.get()));
    g_mime_multipart_add(alt.get(), GMIME_OBJECT(h.get()));
    body.reset(GMIME_OBJECT(alt.release()));
  } else {
    body.reset(GMIME_OBJECT(text ? text_part("plain", m.text_body) : text_part("html", m.html_body)));
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

}  // namespace mailgate
