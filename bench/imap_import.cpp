// IMAP import benchmark (issue 4): one mailbox of N varied messages in a private Dovecot, imported
// by mbsync (isync) into a Maildir and by mailgated into PostgreSQL, one after the other in the
// same run; prints messages/s, MB/s, peak RSS and CPU time of each, and the ratio.
//
//   mailgate_bench_imap [--messages N] [--batch-size N] [--attachments PERCENT] [--attachment-kb MIN-MAX]
//                       [--contacts N] [--fsync on|off] [--timeout SECONDS] [--only mbsync|mailgate] [--keep]
//                       [--rounds N] [--sql-after-migrate SQL]
//
// --rounds N runs both N times, alternating (the machine's other load shifts), and reports the
// median of each.
// --keep leaves mbsync's Maildir and mailgated's directory (configuration, log) for inspection.
// --sql-after-migrate runs SQL on mailgate's fresh database before the daemon starts: to try a
// schema change (say, a column's TOAST storage) without rebuilding mailgated.
//
// Everything listens on 127.0.0.1 only: Dovecot (implicit TLS, its own CA), PostgreSQL (a private
// cluster made for this run) and mailgated. bench/run-imap builds and runs it.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cctype>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/core.h>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "store/migrate.hpp"
#include "tests/support/daemon_process.hpp"
#include "tests/support/dovecot.hpp"
#include "tests/support/pg_harness.hpp"
#include "util/crypto.hpp"

namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace mailgate;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* kUser = "bench";
constexpr const char* kImapPassword = "Bench-Imap-1";
constexpr const char* kAdminEmail = "admin@example.nl";
constexpr const char* kAdminPassword = "Bench-Passw0rd";

volatile sig_atomic_t interrupted = 0;
void on_signal(int) { interrupted = 1; }
void check_interrupted() {
  if (interrupted) throw std::runtime_error("interrupted");
}

struct Options {
  int messages = 10000;
  int batch_size = 100;
  int attach_percent = 20;
  int attach_min_kb = 50, attach_max_kb = 500;
  int contacts = 100;
  bool fsync = true;  // mbsync's FSync and PostgreSQL's fsync alike
  int timeout_s = 1800;
  bool run_mbsync = true, run_mailgate = true;
  bool keep = false;
  int rounds = 1;  // both tools this many times, alternating; the table shows medians
  std::string sql_after_migrate;  // an experiment on the schema, run before the daemon starts
};

[[noreturn]] void usage(const std::string& problem) {
  if (!problem.empty()) std::cerr << "mailgate_bench_imap: " << problem << "\n";
  std::cerr << "usage: mailgate_bench_imap [--messages N] [--batch-size N] [--attachments PERCENT] [--attachment-kb MIN-MAX]\n"
               "                           [--contacts N] [--fsync on|off] [--timeout SECONDS] [--only mbsync|mailgate] [--keep]\n"
               "                           [--rounds N] [--sql-after-migrate SQL]\n";
  std::exit(2);
}

int to_int(const std::string& s, const std::string& what, int lo, int hi) {
  try {
    std::size_t used = 0;
    int v = std::stoi(s, &used);
    if (used == s.size() && v >= lo && v <= hi) return v;
  } catch (const std::exception&) {
  }
  usage(what + " must be a number from " + std::to_string(lo) + " to " + std::to_string(hi) + ", not '" + s + "'");
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--messages") {
      o.messages = to_int(value(), a, 1, 1000000);
    } else if (a == "--batch-size") {
      o.batch_size = to_int(value(), a, 1, 10000);
    } else if (a == "--attachments") {
      o.attach_percent = to_int(value(), a, 0, 100);
    } else if (a == "--attachment-kb") {
      const std::string v = value();
      const auto dash = v.find('-');
      if (dash == std::string::npos) {
        o.attach_min_kb = o.attach_max_kb = to_int(v, a, 1, 50000);
      } else {
        o.attach_min_kb = to_int(v.substr(0, dash), a, 1, 50000);
        o.attach_max_kb = to_int(v.substr(dash + 1), a, o.attach_min_kb, 50000);
      }
    } else if (a == "--contacts") {
      o.contacts = to_int(value(), a, 0, 10000);
    } else if (a == "--fsync") {
      const std::string v = value();
      if (v != "on" && v != "off") usage("--fsync is on or off");
      o.fsync = v == "on";
    } else if (a == "--timeout") {
      o.timeout_s = to_int(value(), a, 10, 86400);
    } else if (a == "--only") {
      const std::string v = value();
      if (v != "mbsync" && v != "mailgate") usage("--only is mbsync or mailgate");
      o.run_mbsync = v == "mbsync";
      o.run_mailgate = v == "mailgate";
    } else if (a == "--sql-after-migrate") {
      o.sql_after_migrate = value();
    } else if (a == "--rounds") {
      o.rounds = to_int(value(), a, 1, 20);
    } else if (a == "--keep") {
      o.keep = true;
    } else if (a == "--help" || a == "-h") {
      usage("");
    } else {
      usage("unknown option " + a);
    }
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// The mailbox: a deterministic generator (the same N messages on every run and machine).

struct Rng {  // splitmix64
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }
  template <class T, std::size_t N>
  const T& pick(const T (&items)[N]) { return items[below(N)]; }
};

const char* const kWords[] = {
    "factuur", "bestelling", "levering", "offerte", "vergadering", "leden", "energie", "coöperatie", "zonnepanelen",
    "windmolen", "afrekening", "termijn", "betaling", "contract", "aansluiting", "meterstand", "jaarverslag", "notulen",
    "uitnodiging", "bijdrage", "het", "de", "een", "en", "van", "voor", "met", "op", "aan", "wij", "u", "uw", "graag",
    "bevestigen", "ontvangen", "januari", "maart", "café", "één", "€", "überweisung", "crème", "naïef", "daarom",
    "vriendelijke", "groet", "project", "dak", "opbrengst", "kWh", "rekening", "IBAN", "adres", "postcode", "week"};

const char* const kFirstNames[] = {"Jan", "Marieke", "Ahmed", "Sanne", "Pieter", "Fatima", "Kees", "Anouk", "Joris", "Eva"};
const char* const kLastNames[] = {"de Vries", "Jansen", "Bakker", "Visser", "Smit", "Müller", "Öztürk", "Dijkstra", "Mulder", "Boer"};

// Subjects with non-ASCII text; "{}" is the message number.
const char* const kIntlSubjects[] = {"Factuur € {} van de coöperatie", "Bestelling für Müller nr. {}", "Заказ №{} подтверждён",
                                     "注文 {} の確認", "Ελληνικά: παραγγελία {}", "Café „De Zon” — afrekening {}",
                                     "Ledenvergadering {}: één agendapunt erbij", "Überweisung {} erhalten ✓"};
const char* const kAsciiSubjects[] = {"Invoice {}", "Re: meter reading {}", "Offerte zonnepanelen {}", "Fwd: contract {}",
                                      "Vraag over aansluiting {}", "Notulen vergadering {}"};

bool is_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

// Splits UTF-8 text into pieces of at most `max` bytes, never inside a character.
std::vector<std::string> utf8_chunks(const std::string& s, std::size_t max) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t end = std::min(s.size(), i + max);
    while (end < s.size() && end > i + 1 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
    out.push_back(s.substr(i, end - i));
    i = end;
  }
  return out;
}

// RFC 2047 encoded words (B or Q), folded onto continuation lines.
std::string encode_words(const std::string& text, bool b_encoding) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (const auto& chunk : utf8_chunks(text, b_encoding ? 42 : 18)) {
    if (!out.empty()) out += "\r\n ";
    if (b_encoding) {
      out += "=?utf-8?b?" + base64_encode(chunk) + "?=";
      continue;
    }
    out += "=?utf-8?q?";
    for (unsigned char c : chunk) {
      if (std::isalnum(c)) {
        out.push_back(static_cast<char>(c));
      } else if (c == ' ') {
        out.push_back('_');
      } else {
        out.push_back('=');
        out.push_back(hex[c >> 4]);
        out.push_back(hex[c & 15]);
      }
    }
    out += "?=";
  }
  return out;
}

// Quoted-printable with soft line breaks (RFC 2045), CRLF line ends.
std::string quoted_printable(const std::string& text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  std::size_t line = 0;
  auto put = [&](const std::string& piece) {
    if (line + piece.size() > 75) {
      out += "=\r\n";
      line = 0;
    }
    out += piece;
    line += piece.size();
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
      out += "\r\n";
      line = 0;
      ++i;
    } else if ((c >= 33 && c <= 126 && c != '=') || (c == ' ' && i + 1 < text.size() && text[i + 1] != '\r')) {
      put(std::string(1, static_cast<char>(c)));
    } else {
      put(std::string{'=', hex[c >> 4], hex[c & 15]});
    }
  }
  return out;
}

std::string base64_lines(const std::string& data) {
  const std::string b = base64_encode(data);
  std::string out;
  out.reserve(b.size() + b.size() / 76 * 2 + 2);
  for (std::size_t i = 0; i < b.size(); i += 76) out += b.substr(i, 76) + "\r\n";
  return out;
}

std::string fill(const char* pattern, int n) {
  std::string s = pattern;
  const auto at = s.find("{}");
  if (at != std::string::npos) s.replace(at, 2, std::to_string(n));
  return s;
}

// Paragraphs of words, lines up to ~72 characters, CRLF; about `bytes` long.
std::vector<std::string> paragraphs(Rng& rng, std::size_t bytes) {
  std::vector<std::string> out;
  std::size_t total = 0;
  while (total < bytes) {
    std::string p, line;
    const std::size_t words = 20 + rng.below(60);
    for (std::size_t w = 0; w < words; ++w) {
      const std::string word = rng.pick(kWords);
      if (line.size() + word.size() + 1 > 72) {
        p += line + "\r\n";
        line.clear();
      }
      line += (line.empty() ? "" : " ") + word;
    }
    p += line + "\r\n";
    total += p.size() + 2;
    out.push_back(std::move(p));
  }
  return out;
}

struct Generated {
  std::string raw;
  bool attachment = false;
};

// Message i: 50 % plain text, 30 % text + HTML, `attach_percent` % text + HTML + a binary
// attachment of attach_min_kb..attach_max_kb (they replace plain ones first, then alternative ones).
Generated message(int i, const Options& o) {
  Rng rng{0x6d61696c67617465ULL ^ (static_cast<std::uint64_t>(i) * 0x100000001b3ULL)};
  Generated g;
  const int slot = i % 100;
  g.attachment = slot < o.attach_percent;
  const bool html = g.attachment || slot >= 70;
  const int sender = i % 500;  // contacts klant0..klant<contacts-1> exist in mailgate's CRM
  const std::string first = rng.pick(kFirstNames), last = rng.pick(kLastNames);
  const std::string name = first + " " + last;
  std::string subject = (i % 2) ? fill(rng.pick(kIntlSubjects), i) : fill(rng.pick(kAsciiSubjects), i);

  char date[64];
  const time_t when = 1735722000 + static_cast<time_t>(i) * 1733;  // from 2025-01-01, every ~29 minutes
  tm t{};
  gmtime_r(&when, &t);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &t);

  std::string h;
  h += "Return-Path: <klant" + std::to_string(sender) + "@example.nl>\r\n";
  h += "Received: from mx.example.nl (mx.example.nl [192.0.2.25]) by mail.coop.nl with ESMTPS id " + hex_encode(sha256(std::to_string(i))).substr(0, 12) +
       "\r\n\tfor <info@coop.nl>; " + date + "\r\n";
  h += "From: " + (is_ascii(name) ? "\"" + name + "\"" : encode_words(name, i % 3 == 0)) + " <klant" + std::to_string(sender) + "@example.nl>\r\n";
  h += "To: Info <info@coop.nl>\r\n";
  if (i % 7 == 0) h += "Cc: klant" + std::to_string((sender + 1) % 500) + "@example.nl, boekhouding@coop.nl\r\n";
  if (i % 11 == 0) h += "Reply-To: <antwoord" + std::to_string(sender) + "@example.org>\r\n";
  h += "Subject: " + (is_ascii(subject) ? subject : encode_words(subject, i % 4 == 1)) + "\r\n";
  h += std::string("Date: ") + date + "\r\n";
  h += "Message-ID: <bench." + std::to_string(i) + "." + hex_encode(sha256("m" + std::to_string(i))).substr(0, 8) + "@example.nl>\r\n";
  h += "MIME-Version: 1.0\r\n";

  const auto paras = paragraphs(rng, 400 + rng.below(6000));
  std::string text = "Beste " + first + ",\r\n\r\n";
  std::string html_body = "<html><body><p>Beste " + first + ",</p>\r\n";
  for (const auto& p : paras) {
    text += p + "\r\n";
    html_body += "<p>" + p + "</p>\r\n";
  }
  text += "Met vriendelijke groet,\r\n" + name + "\r\n";
  html_body += "<p>Met vriendelijke groet,<br>" + name + "</p></body></html>\r\n";

  const bool qp = i % 3 != 0;
  const std::string text_part = std::string("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: ") +
                                (qp ? "quoted-printable\r\n\r\n" + quoted_printable(text) : "8bit\r\n\r\n" + text);
  const std::string html_part = std::string("Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: ") +
                                (i % 2 ? "base64\r\n\r\n" + base64_lines(html_body) : "quoted-printable\r\n\r\n" + quoted_printable(html_body));
  const std::string alt = "=_alt_" + std::to_string(i);
  const std::string alternative = "Content-Type: multipart/alternative; boundary=\"" + alt + "\"\r\n\r\n--" + alt + "\r\n" + text_part +
                                  "\r\n--" + alt + "\r\n" + html_part + "\r\n--" + alt + "--\r\n";
  if (!html) {
    g.raw = h + text_part;
  } else if (!g.attachment) {
    g.raw = h + alternative;
  } else {
    const std::size_t kb = static_cast<std::size_t>(o.attach_min_kb) + rng.below(static_cast<std::size_t>(o.attach_max_kb - o.attach_min_kb + 1));
    std::string data = "%PDF-1.4\n%\xe2\xe3\xcf\xd3\n";
    data.reserve(kb * 1024);
    while (data.size() + 8 <= kb * 1024) {
      const std::uint64_t r = rng.next();
      data.append(reinterpret_cast<const char*>(&r), 8);
    }
    data.resize(kb * 1024, '\n');
    const std::string disposition = i % 2 ? "attachment; filename=\"factuur-" + std::to_string(i) + ".pdf\""
                                          : "attachment; filename*=utf-8''overzicht%20%E2%82%AC%20" + std::to_string(i) + ".pdf";
    const std::string mixed = "=_mixed_" + std::to_string(i);
    g.raw = h + "Content-Type: multipart/mixed; boundary=\"" + mixed + "\"\r\n\r\nThis is a multi-part message in MIME format.\r\n--" +
            mixed + "\r\n" + alternative + "\r\n--" + mixed + "\r\nContent-Type: application/pdf\r\nContent-Disposition: " + disposition +
            "\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64_lines(data) + "\r\n--" + mixed + "--\r\n";
  }
  return g;
}

// ---------------------------------------------------------------------------------------------
// Measuring.

struct Result {
  std::string tool;
  int messages = 0;
  double seconds = 0;
  double rss_mib = 0;
  double cpu_s = 0;
  double machine_busy = 0;  // share of all cores busy during the run (every process: Dovecot, PostgreSQL, ...)
};

// Busy and total jiffies of all cores, from /proc/stat.
struct CpuTimes {
  double busy = 0, total = 0;
  static CpuTimes now() {
    std::ifstream in("/proc/stat");
    std::string cpu;
    in >> cpu;
    CpuTimes t;
    double v = 0;
    for (int i = 0; i < 8 && in >> v; ++i) {
      t.total += v;
      if (i != 3 && i != 4) t.busy += v;  // idle, iowait
    }
    return t;
  }
  double busy_since(const CpuTimes& before) const {
    return total > before.total ? (busy - before.busy) / (total - before.total) : 0;
  }
};

// Warns when something else keeps the machine busy: the figures would not mean much.
void warn_if_busy(const std::string& before) {
  std::ifstream in("/proc/loadavg");
  double load = 0;
  in >> load;
  if (load > 0.5)
    std::cout << fmt::format("warning: load average {:.2f} before {}: something else is running; its figures are not reliable\n", load,
                             before);
}

// A "Vm..." line of /proc/<pid>/status in MiB; 0 when unreadable.
double proc_status_mib(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) return std::stod(line.substr(key.size() + 1)) / 1024.0;  // "VmHWM:   12345 kB"
  return 0;
}

// User + system CPU seconds of a live process.
double proc_cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int n = 3; rest >> field; ++n) {  // fields 14 and 15: utime, stime
    if (n == 14 || n == 15) ticks += std::stod(field);
    if (n == 15) break;
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::string first_line_of(const std::string& command) {
  std::string out;
  test::run_command(command + " 2>&1", &out);
  return out.substr(0, out.find('\n'));
}

std::size_t files_in(const fs::path& dir) {
  std::size_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file()) ++n;
  return n;
}

// mbsync pulls the INBOX into a fresh Maildir; timed from spawn to exit, peak RSS from wait4().
Result run_mbsync(const test::Dovecot& dovecot, const Options& o, const fs::path& dir) {
  // The Dovecot certificate is for "localhost" / IP 127.0.0.1; mbsync 1.4 checks DNS names only,
  // but trusts a certificate listed in CertificateFile as such: list the CA and the server's.
  {
    std::ofstream certs(dir / "certs.pem");
    certs << std::ifstream(dovecot.ca_file()).rdbuf() << std::ifstream(dovecot.dir() / "server.pem").rdbuf();
  }
  fs::create_directories(dir / "mail");
  {
    std::ofstream rc(dir / "mbsyncrc");
    rc << "FSync " << (o.fsync ? "yes" : "no") << "\n\n"
       << "IMAPAccount bench\nHost 127.0.0.1\nPort " << dovecot.imaps_port() << "\nUser " << kUser << "\nPass " << kImapPassword
       << "\nSSLType IMAPS\nCertificateFile " << (dir / "certs.pem").string() << "\n\n"
       << "IMAPStore remote\nAccount bench\n\n"
       << "MaildirStore local\nPath " << (dir / "mail").string() << "/\nInbox " << (dir / "mail" / "INBOX").string() << "\n\n"
       << "Channel bench\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Near\nSync Pull New\nSyncState *\n";
  }
  const fs::path log = dir / "mbsync.log";
  warn_if_busy("mbsync");
  const auto cpu_before = CpuTimes::now();
  const auto start = Clock::now();
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    FILE* f = std::fopen(log.c_str(), "w");
    if (f) {
      dup2(fileno(f), 1);
      dup2(fileno(f), 2);
    }
    execlp("mbsync", "mbsync", "-c", (dir / "mbsyncrc").c_str(), "bench", static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  rusage ru{};
  const auto deadline = start + std::chrono::seconds(o.timeout_s);
  for (;;) {
    const pid_t r = wait4(pid, &status, WNOHANG, &ru);
    if (r == pid) break;
    if (interrupted || Clock::now() > deadline) {
      kill(pid, SIGKILL);
      wait4(pid, &status, 0, &ru);
      throw std::runtime_error(interrupted ? "interrupted" : "mbsync did not finish within the timeout");
    }
    std::this_thread::sleep_for(2ms);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double busy = CpuTimes::now().busy_since(cpu_before);
  std::ifstream in(log);
  const std::string output((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("mbsync failed (status " + std::to_string(status) + "):\n" + output);
  Result r;
  r.tool = "mbsync";
  r.messages = static_cast<int>(files_in(dir / "mail" / "INBOX" / "cur") + files_in(dir / "mail" / "INBOX" / "new"));
  r.seconds = seconds;
  r.machine_busy = busy;
  r.rss_mib = static_cast<double>(ru.ru_maxrss) / 1024.0;
  r.cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  if (r.messages != o.messages)
    throw std::runtime_error("mbsync stored " + std::to_string(r.messages) + " messages, not " + std::to_string(o.messages) + ":\n" + output);
  return r;
}

test::HttpResult api(std::uint16_t port, const std::string& token, const std::string& method, const std::string& path,
                     const std::string& body) {
  std::string headers = "Content-Type: application/json\r\n";
  if (!token.empty()) headers += "Authorization: Bearer " + token + "\r\n";
  return test::http_request(port, method, path, body, headers, 30s);
}

// "2026-11-24T10:00:00.123Z ..." -> seconds since the epoch; nullopt when the line has no stamp.
std::optional<double> log_time(const std::string& line) {
  tm t{};
  int ms = 0;
  if (std::sscanf(line.c_str(), "%d-%d-%dT%d:%d:%d.%dZ", &t.tm_year, &t.tm_mon, &t.tm_mday, &t.tm_hour, &t.tm_min, &t.tm_sec, &ms) != 7)
    return std::nullopt;
  t.tm_year -= 1900;
  t.tm_mon -= 1;
  return static_cast<double>(timegm(&t)) + ms / 1000.0;
}

struct LogFigures {
  std::optional<double> connect, first_batch, last_batch;
  int batches = 0, first_batch_size = 0;
  std::vector<double> gaps;  // seconds between consecutive committed batches
};

LogFigures read_log(const std::string& log) {
  LogFigures f;
  std::istringstream in(log);
  std::string line;
  std::optional<double> previous;
  while (std::getline(in, line)) {
    const auto t = log_time(line);
    if (!t) continue;
    if (line.find("event=mailbox_connect") != std::string::npos && !f.connect) f.connect = t;
    if (line.find("event=mailbox_batch") == std::string::npos) continue;
    ++f.batches;
    if (!f.first_batch) {
      f.first_batch = t;
      const auto at = line.find("stored=");
      if (at != std::string::npos) f.first_batch_size = std::atoi(line.c_str() + at + 7);
    }
    if (previous) f.gaps.push_back(*t - *previous);
    previous = t;
    f.last_batch = t;
  }
  return f;
}

struct MailgateRun {
  Result result;
  LogFigures log;
  double created_at = 0;  // wall clock, seconds since the epoch
  double pg_cpu_s = 0, pg_hwm_mib = 0, db_mib = 0;
  int pg_backends = 0;
  int samples = 0, samples_active = 0, samples_in_transaction = 0;  // of the daemon's backends, every 100 ms
  std::map<std::string, int> waits;  // what an executing backend waited for ("CPU": nothing), per sample
};

// mailgated on a fresh database: the mailbox is created through the API, then the import is
// timed until `SELECT count(*) FROM messages` reaches N.
MailgateRun run_mailgate(const test::Dovecot& dovecot, const Options& o, std::vector<fs::path>& leftovers) {
  setenv("MAILGATE_PG_FSYNC", o.fsync ? "on" : "off", 1);  // read by tools/pg-cluster's initdb
  const fs::path pg_parent = test::temp_dir("bench-pg");
  leftovers.push_back(pg_parent);  // the cluster itself is destroyed when `pg` goes
  test::PgCluster pg(pg_parent / "data");
  {
    pqxx::connection admin(pg.admin_url());
    pqxx::nontransaction(admin).exec("CREATE DATABASE bench");
  }
  const std::string url = pg.url("bench");
  {
    pqxx::connection c(url);
    migrate(c);
    pqxx::work tx(c);
    const auto id = tx.exec_params1("INSERT INTO users (email, first_name, password_hash) VALUES ($1, 'Bench', $2) RETURNING id",
                                    std::string(kAdminEmail), password_hash(kAdminPassword))[0]
                        .as<std::int64_t>();
    tx.exec_params("INSERT INTO user_roles (user_id, role) VALUES ($1, 'admin')", id);
    if (!o.sql_after_migrate.empty()) tx.exec(o.sql_after_migrate);
    tx.commit();
  }

  test::DaemonProcess daemon(url, "[security]\nallow_private_hosts = true\n[tls]\nca_file = \"" + dovecot.ca_file().string() +
                                      "\"\n[imap]\nbatch_size = " + std::to_string(o.batch_size) + "\n");
  daemon.edit_config("pool_size = 2", "pool_size = 4");  // the default of config/mailgate.example.toml
  leftovers.push_back(daemon.dir());
  daemon.start();
  const auto port = daemon.http_port();

  json::object login{{"email", kAdminEmail}, {"password", kAdminPassword}};
  auto session = api(port, "", "POST", "/api/v1/session", json::serialize(login));
  if (session.status != 201) throw std::runtime_error("login failed: " + std::to_string(session.status) + " " + session.body);
  const std::string token(json::parse(session.body).at("token").as_string());

  // CRM contacts for the first senders, so that linking has work to do (messages come from 500).
  for (int k = 0; k < o.contacts; ++k) {
    json::object email{{"address", "klant" + std::to_string(k) + "@example.nl"}, {"primary", true}};
    json::object contact{{"type", "person"}, {"last_name", "Klant " + std::to_string(k)}, {"emails", json::array{email}}};
    auto r = api(port, token, "POST", "/api/v1/contacts", json::serialize(contact));
    if (r.status != 201) throw std::runtime_error("creating a contact failed: " + std::to_string(r.status) + " " + r.body);
  }

  json::object mailbox{{"display_name", "Info"},       {"address", "info@coop.nl"},         {"imap_host", "127.0.0.1"},
                       {"imap_port", dovecot.imaps_port()}, {"imap_security", "tls"},       {"imap_username", kUser},
                       {"imap_password", kImapPassword},   {"imap_after_import", "leave"}, {"outgoing_type", "smtp"},
                       {"smtp_host", "127.0.0.1"},         {"smtp_password", "x"}};
  const std::string mailbox_body = json::serialize(mailbox);
  pqxx::connection db(url);

  MailgateRun run;
  warn_if_busy("mailgate");
  const auto cpu_before = CpuTimes::now();
  run.created_at = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  const auto start = Clock::now();
  auto created = api(port, token, "POST", "/api/v1/mailboxes", mailbox_body);
  if (created.status != 201) throw std::runtime_error("creating the mailbox failed: " + std::to_string(created.status) + " " + created.body);
  const auto deadline = start + std::chrono::seconds(o.timeout_s);
  // Every 100 ms: the mailbox's IMAP cursor, committed in the same transaction as each batch (a
  // count(*) over `messages` every 100 ms would cost PostgreSQL a sequential scan of a growing
  // table while it imports, on the same 2 cores); count(*) confirms once the cursor is at the end.
  // The same tick samples what the daemon's PostgreSQL backends are doing.
  int count = 0;
  for (auto tick = start;; tick += 100ms) {
    pqxx::nontransaction q(db);
    const auto cursor = q.exec1("SELECT coalesce(max(last_uid), 0) FROM imap_cursors")[0].as<std::int64_t>();
    bool active = false, in_transaction = false;
    std::vector<std::string> waiting;
    for (const auto& row : q.exec("SELECT state, coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity "
                                  "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'")) {
      const std::string state = row[0].is_null() ? "" : row[0].as<std::string>();
      active = active || state == "active";
      in_transaction = in_transaction || state.rfind("idle in transaction", 0) == 0;
      if (state == "active") waiting.push_back(row[1].as<std::string>());
    }
    if (cursor > 0)
      for (const auto& w : waiting) ++run.waits[w];
    if (cursor > 0) {  // sampled from the first committed batch on
      ++run.samples;
      run.samples_active += active;
      run.samples_in_transaction += !active && in_transaction;
    }
    if (cursor >= o.messages) {
      count = q.exec1("SELECT count(*) FROM messages")[0].as<int>();
      if (count >= o.messages) break;
    }
    check_interrupted();
    if (!daemon.running()) throw std::runtime_error("mailgated exited during the import:\n" + daemon.log());
    if (Clock::now() > deadline)
      throw std::runtime_error("mailgated did not import " + std::to_string(o.messages) + " messages within the timeout (cursor at UID " +
                               std::to_string(cursor) + "); its log:\n" + daemon.log());
    std::this_thread::sleep_until(tick + 100ms);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  run.result.tool = "mailgate";
  run.result.messages = count;
  run.result.seconds = seconds;
  run.result.machine_busy = CpuTimes::now().busy_since(cpu_before);
  run.result.rss_mib = proc_status_mib(daemon.pid(), "VmHWM");
  run.result.cpu_s = proc_cpu_seconds(daemon.pid());
  // The daemon's own PostgreSQL backends (its pool): CPU and peak RSS, reported apart.
  for (const auto& row : pqxx::nontransaction(db).exec(
           "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")) {
    const pid_t pid = row[0].as<int>();
    run.pg_cpu_s += proc_cpu_seconds(pid);
    run.pg_hwm_mib += proc_status_mib(pid, "VmHWM");
    ++run.pg_backends;
  }
  run.db_mib = pqxx::nontransaction(db).exec1("SELECT pg_database_size(current_database())")[0].as<double>() / (1024.0 * 1024.0);
  run.log = read_log(daemon.log());
  daemon.stop(SIGTERM);
  return run;
}

void print_header() {
  std::cout << fmt::format("\n{:<10} {:>9} {:>9} {:>9} {:>8} {:>14} {:>8} {:>13}\n", "tool", "messages", "seconds", "msgs/s", "MB/s",
                           "peak RSS MiB", "CPU s", "machine busy");
}

void print_row(const Result& r, double raw_mb) {
  std::cout << fmt::format("{:<10} {:>9} {:>9.2f} {:>9.0f} {:>8.1f} {:>14.1f} {:>8.2f} {:>12.0f}%\n", r.tool, r.messages, r.seconds,
                           r.messages / r.seconds, raw_mb / r.seconds, r.rss_mib, r.cpu_s, 100 * r.machine_busy)
            << std::flush;
}

// The run of median duration (the upper one of an even count).
Result median(std::vector<Result> runs) {
  std::sort(runs.begin(), runs.end(), [](const Result& a, const Result& b) { return a.seconds < b.seconds; });
  return runs[runs.size() / 2];
}

// Where mailgated's time went: its PostgreSQL backends, what they were doing, and its log.
void print_details(const MailgateRun& mg, const Options& o) {
  const auto& f = mg.log;
  std::cout << fmt::format("  PostgreSQL (not in the row above): {} backends of the daemon used {:.2f} CPU s, VmHWM sum {:.1f} MiB\n"
                           "  (shared buffers included); database {:.0f} MiB.\n",
                           mg.pg_backends, mg.pg_cpu_s, mg.pg_hwm_mib, mg.db_mib);
  if (mg.samples > 0)
    std::cout << fmt::format("  Sampled every 100 ms after the first commit: PostgreSQL executing a statement {:.0f} %, a transaction\n"
                             "  open but PostgreSQL waiting for the daemon (parsing, round trips) {:.0f} %, no transaction open\n"
                             "  (IMAP fetch) {:.0f} %.\n",
                             100.0 * mg.samples_active / mg.samples, 100.0 * mg.samples_in_transaction / mg.samples,
                             100.0 * (mg.samples - mg.samples_active - mg.samples_in_transaction) / mg.samples);
  if (!mg.waits.empty()) {
    std::vector<std::pair<int, std::string>> waits;
    int total = 0;
    for (const auto& [what, n] : mg.waits) {
      waits.emplace_back(n, what);
      total += n;
    }
    std::sort(waits.rbegin(), waits.rend());
    std::string line;
    for (std::size_t i = 0; i < waits.size() && i < 6; ++i)
      line += fmt::format("{}{} {:.0f} %", i ? ", " : "", waits[i].second, 100.0 * waits[i].first / total);
    std::cout << "  An executing backend was (wait event; CPU: none): " << line << ".\n";
  }
  if (f.connect && f.first_batch && f.last_batch) {
    const double steady = f.batches > 1 ? (o.messages - f.first_batch_size) / (*f.last_batch - *f.first_batch) : 0;
    double worst = 0;
    for (double g : f.gaps) worst = std::max(worst, g);
    std::cout << fmt::format("  mailgated log: connected {:.2f} s after the mailbox was created; first batch committed after\n"
                             "  {:.2f} s; {} batches, {:.0f} msgs/s between the first and the last; {:.3f} s per batch on\n"
                             "  average, {:.3f} s at most.\n",
                             *f.connect - mg.created_at, *f.first_batch - mg.created_at, f.batches, steady,
                             f.gaps.empty() ? 0.0 : (*f.last_batch - *f.first_batch) / f.gaps.size(), worst)
              << std::flush;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  spdlog::set_level(spdlog::level::warn);  // migrate() logs every migration it applies
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  std::vector<fs::path> leftovers;
  try {
    std::cout << "mailgate IMAP import benchmark: " << o.messages << " messages, " << o.attach_percent << " % with a "
              << o.attach_min_kb << "-" << o.attach_max_kb << " KB attachment; mailgate batch size " << o.batch_size << "\n"
              << first_line_of("dovecot --version | sed 's/^/Dovecot /'") << ", " << first_line_of("mbsync --version")
              << ", " << first_line_of("/usr/lib/postgresql/15/bin/postgres --version") << ", " << std::thread::hardware_concurrency()
              << " cores\n"
              << std::flush;

    test::Dovecot dovecot;
    dovecot.add_user(kUser, kImapPassword);
    const auto gen_start = Clock::now();
    std::uint64_t raw_bytes = 0;
    int with_attachment = 0;
    for (int i = 0; i < o.messages; ++i) {
      check_interrupted();
      const auto g = message(i, o);
      raw_bytes += g.raw.size();
      with_attachment += g.attachment;
      dovecot.deliver(kUser, "INBOX", g.raw);
    }
    const double raw_mb = static_cast<double>(raw_bytes) / 1e6;
    std::cout << fmt::format("mailbox: {} messages, {:.1f} MB raw, {} with an attachment (generated and delivered in {:.1f} s)\n",
                             o.messages, raw_mb, with_attachment,
                             std::chrono::duration<double>(Clock::now() - gen_start).count())
              << std::flush;
    // Dovecot indexes a Maildir on first access; do that (and read every file once, for the
    // sizes) before either importer runs, so neither pays for it.
    const std::string conf = (dovecot.dir() / "dovecot.conf").string();
    if (test::run_command("doveadm -c '" + conf + "' fetch -u " + kUser + " 'uid size.virtual date.received' mailbox INBOX >/dev/null 2>&1") != 0)
      std::cout << "warning: doveadm could not index the mailbox beforehand; the first importer pays for it\n";

    std::vector<Result> mbsync_runs, mailgate_runs;
    for (int round = 1; round <= o.rounds; ++round) {
      const std::string of = o.rounds > 1 ? fmt::format(" (round {} of {})", round, o.rounds) : "";
      if (o.run_mbsync) {
        const fs::path dir = test::temp_dir("bench-mbsync");
        std::cout << "running mbsync" << of << ": Sync Pull New, IMAPS, into a Maildir, FSync " << (o.fsync ? "yes" : "no") << "\n"
                  << std::flush;
        try {
          mbsync_runs.push_back(run_mbsync(dovecot, o, dir));
        } catch (...) {
          leftovers.push_back(dir);
          throw;
        }
        print_row(mbsync_runs.back(), raw_mb);
        if (o.keep)
          leftovers.push_back(dir);
        else
          fs::remove_all(dir);
      }
      if (o.run_mailgate) {
        std::cout << "running mailgated" << of << ": fresh database, PostgreSQL fsync " << (o.fsync ? "on" : "off") << "\n" << std::flush;
        const auto mg = run_mailgate(dovecot, o, leftovers);
        mailgate_runs.push_back(mg.result);
        print_row(mg.result, raw_mb);
        print_details(mg, o);
      }
    }

    std::cout << "\n" << (o.rounds > 1 ? "medians of " + std::to_string(o.rounds) + " rounds" : std::string("result")) << ":";
    print_header();
    std::optional<Result> mbsync, mailgate;
    if (!mbsync_runs.empty()) print_row(*(mbsync = median(mbsync_runs)), raw_mb);
    if (!mailgate_runs.empty()) print_row(*(mailgate = median(mailgate_runs)), raw_mb);
    if (mbsync && mailgate)
      std::cout << fmt::format("\nratio mailgate/mbsync (msgs/s): {:.2f}   (goal: >= 1.00)\n", mbsync->seconds / mailgate->seconds);
    std::cout << "\nseconds: mbsync from spawn to exit; mailgate from POST /api/v1/mailboxes until all rows are in\n"
                 "`messages` (the IMAP cursor polled every 100 ms, then count(*)). MB = 10^6 bytes of raw messages.\n"
                 "Peak RSS: mbsync's ru_maxrss, mailgated's VmHWM. CPU s: user + system of that process only\n"
                 "(Dovecot is counted for neither; PostgreSQL is reported apart). Machine busy: all cores, all processes.\n";
  } catch (const std::exception& e) {
    std::cerr << "mailgate_bench_imap: " << e.what() << "\n";
    for (const auto& p : leftovers) std::cerr << "left for inspection: " << p.string() << "\n";
    return 1;
  }
  for (const auto& p : leftovers) {
    std::error_code ec;
    if (o.keep && !fs::is_empty(p, ec))
      std::cout << "kept: " << p.string() << "\n";
    else
      fs::remove_all(p, ec);
  }
  return 0;
}
