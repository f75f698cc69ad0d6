// Inbound SMTP benchmark (issue 6): durable accepted messages per second with SESSIONS concurrent
// Postfix smtp-source sessions of SIZE-byte messages, against three receivers in the same run:
//
//   - mailgated's trusted-receiver SMTP server ([smtp_receiver]), which answers 250 only after the
//     message is committed to PostgreSQL (a private cluster with fsync on), after SPF/DKIM/DMARC
//     through a DNS server on 127.0.0.1 (tests/support/dns_server.py);
//   - a private Postfix (a throw-away config_directory and queue_directory, smtpd on 127.0.0.1,
//     no qmgr: every message stays in the incoming queue, fsynced by cleanup before the 250);
//   - Postfix's smtp-sink, which stores nothing: the ceiling of the loopback path.
//
//   mailgate_bench_smtp_receive [--messages N] [--size BYTES] [--sessions N] [--modes fresh,reused]
//                               [--only mailgate,postfix,smtp-sink] [--rounds N] [--tls-messages N]
//                               [--tls-sessions N] [--no-tls] [--fsync on|off] [--pool-size N]
//                               [--max-sessions-per-ip N] [--dns-ttl SECONDS] [--perf] [--pg-statements]
//                               [--sql-after-migrate SQL] [--timeout SECONDS] [--keep]
//
// smtp-source runs `-s SESSIONS -m N -l SIZE -c`, with -d (mode "reused": each session keeps its
// connection) and without (mode "fresh": a new connection per message), timed from spawn to exit.
// Before each timed run every receiver gets a warm-up of SESSIONS messages (processes, pools,
// connections), not counted. After it, what the receiver holds is compared with what smtp-source
// counted as delivered (-c) and with N: rows in `messages` for the receiver address (mailgate),
// queue files (Postfix), smtp-sink's own counter. Any difference ends the run.
//
// smtp-source does not speak STARTTLS, so the TLS figures come from a small client here (the same
// message shape, N messages over --tls-sessions threads, EHLO + STARTTLS + EHLO per connection,
// no TLS session resumption), against mailgate and Postfix (smtp-sink has no TLS), with the same
// certificate (tests/support make_test_certs).
//
// mailgate runs on a fresh database each time (migrations, then one administration, one active
// receiver accepting any message (accepted_types '{}'), a whitelist entry for the sender's
// domain): the sender domain's SPF record covers 127.0.0.0/8, so the header From is authenticated
// by aligned SPF, as a real supplier's would be. Besides msgs/s it reports mailgated's peak RSS
// (VmHWM) and CPU, its PostgreSQL backends' CPU, the writing transactions and WAL fsyncs per
// message (the group commit's effect), the DNS queries per message and the DNS server's CPU.
// --perf records mailgated and its backends with `perf record -e cpu-clock -g` during each timed
// mailgate run and prints the hottest symbols. --pg-statements restarts the private PostgreSQL with
// pg_stat_statements and lists, after each mailgate run, the statements that took it the most time
// (it costs a little: leave it out for the figures). --sql-after-migrate runs SQL on each fresh
// database before mailgated starts, outside a transaction (given more than once: in order): to try
// a schema or server setting without rebuilding, e.g. "ALTER SYSTEM SET autovacuum_naptime = 1"
// then "SELECT pg_reload_conf()" (a fresh table is otherwise not analyzed during a run).
//
// --max-sessions-per-ip sets [smtp_receiver] max_sessions_per_ip (1000 here): at its default of
// 20, 20 sessions that reconnect after each message get 421 (bench/README.md).
// --dns-ttl is the TTL of the DNS server's records (300 here, a usual one for SPF and DMARC):
// mailgated keeps answers that long ([smtp_receiver] dns_cache_entries); 0 sends every question
// to the server, as without a cache.
// --rounds N runs everything N times, alternating receivers, and reports the median of each.
// --keep leaves the work directory (Postfix's, mailgated's configuration and logs, perf data).
//
// Everything listens on 127.0.0.1 only. bench/run-smtp-receive builds and runs it.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "store/migrate.hpp"
#include "tests/support/daemon_process.hpp"
#include "tests/support/dns_server.hpp"
#include "tests/support/pg_harness.hpp"
#include "tests/support/smtp_servers.hpp"

namespace {

namespace fs = std::filesystem;
using namespace mailgate;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* kSenderDomain = "leverancier.bench";
constexpr const char* kFrom = "piet@leverancier.bench";
constexpr const char* kHelo = "mta.leverancier.bench";
constexpr const char* kReceiveDomain = "ontvang.bench";
constexpr const char* kReceiverAddress = "zon-k7q2m9x4b8r3@ontvang.bench";  // as the API generates them
constexpr const char* kPostfixRecipient = "facturen@ontvang.bench";
constexpr const char* kSinkRecipient = "facturen@ontvang.bench";

volatile sig_atomic_t interrupted = 0;
void on_signal(int) { interrupted = 1; }

struct Options {
  int messages = 5000;
  int size = 10240;   // smtp-source -l: payload bytes, without its four header fields
  int sessions = 20;  // smtp-source -s
  std::vector<std::string> modes = {"fresh", "reused"};
  std::set<std::string> peers = {"mailgate", "postfix", "smtp-sink"};
  int rounds = 1;
  bool tls = true;
  int tls_messages = 1000;
  int tls_sessions = 4;
  bool fsync = true;
  int pool_size = 4;  // mailgated's [database] pool_size (config/mailgate.example.toml's default)
  int max_sessions_per_ip = 1000;  // [smtp_receiver]; the default (20) would refuse reconnecting sessions (bench/README.md)
  int dns_ttl = 300;
  bool perf = false;
  bool pg_statements = false;  // load pg_stat_statements and list the daemon's costliest statements
  std::vector<std::string> sql_after_migrate;  // run on mailgate's fresh database before the daemon starts, in order
  int timeout_s = 900;
  bool keep = false;
};

[[noreturn]] void usage(const std::string& problem) {
  if (!problem.empty()) std::cerr << "mailgate_bench_smtp_receive: " << problem << "\n";
  std::cerr << "usage: mailgate_bench_smtp_receive [--messages N] [--size BYTES] [--sessions N] [--modes fresh,reused]\n"
               "                                   [--only mailgate,postfix,smtp-sink] [--rounds N] [--tls-messages N]\n"
               "                                   [--tls-sessions N] [--no-tls] [--fsync on|off] [--pool-size N]\n"
               "                                   [--max-sessions-per-ip N] [--dns-ttl SECONDS] [--perf] [--pg-statements]\n"
               "                                   [--sql-after-migrate SQL] [--timeout SECONDS] [--keep]\n";
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

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
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
    } else if (a == "--size") {
      o.size = to_int(value(), a, 100, 100000000);
    } else if (a == "--sessions") {
      o.sessions = to_int(value(), a, 1, 500);
    } else if (a == "--modes") {
      o.modes = split_list(value());
      for (const auto& m : o.modes)
        if (m != "fresh" && m != "reused") usage("--modes takes fresh and/or reused, not '" + m + "'");
      if (o.modes.empty()) usage("--modes needs at least one mode");
    } else if (a == "--only") {
      o.peers.clear();
      for (const auto& p : split_list(value())) {
        if (p != "mailgate" && p != "postfix" && p != "smtp-sink") usage("--only takes mailgate, postfix and/or smtp-sink, not '" + p + "'");
        o.peers.insert(p);
      }
      if (o.peers.empty()) usage("--only needs at least one receiver");
    } else if (a == "--rounds") {
      o.rounds = to_int(value(), a, 1, 20);
    } else if (a == "--tls-messages") {
      o.tls_messages = to_int(value(), a, 1, 1000000);
    } else if (a == "--tls-sessions") {
      o.tls_sessions = to_int(value(), a, 1, 200);
    } else if (a == "--no-tls") {
      o.tls = false;
    } else if (a == "--fsync") {
      const std::string v = value();
      if (v != "on" && v != "off") usage("--fsync is on or off");
      o.fsync = v == "on";
    } else if (a == "--max-sessions-per-ip") {
      o.max_sessions_per_ip = to_int(value(), a, 1, 100000);
    } else if (a == "--dns-ttl") {
      o.dns_ttl = to_int(value(), a, 0, 86400);
    } else if (a == "--pool-size") {
      o.pool_size = to_int(value(), a, 2, 64);
    } else if (a == "--perf") {
      o.perf = true;
    } else if (a == "--pg-statements") {
      o.pg_statements = true;
    } else if (a == "--sql-after-migrate") {
      o.sql_after_migrate.push_back(value());
    } else if (a == "--timeout") {
      o.timeout_s = to_int(value(), a, 10, 86400);
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
// Measuring (the helpers of bench/outbox_send.cpp, plus a process tree's CPU).

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

double load_average() {
  std::ifstream in("/proc/loadavg");
  double load = 0;
  in >> load;
  return load;
}

// Warns when something else keeps the machine busy: the figures would not mean much.
void warn_if_busy(const std::string& before) {
  const double load = load_average();
  if (load > 0.5)
    std::cout << fmt::format("  warning: load average {:.2f} before {}: something else is running; its figures are not reliable\n", load,
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

// Fields of /proc/<pid>/stat after the command: [0] is field 3 (state). Empty when gone.
std::vector<std::string> proc_stat_fields(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  if (close == std::string::npos || close + 2 > stat.size()) return {};
  std::istringstream rest(stat.substr(close + 2));
  std::vector<std::string> fields;
  for (std::string f; rest >> f;) fields.push_back(f);
  return fields;
}

// User + system CPU seconds of a live process; with `reaped_children`, also those of its children
// that it has waited for (cutime, cstime).
double proc_cpu_seconds(pid_t pid, bool reaped_children = false) {
  const auto f = proc_stat_fields(pid);
  if (f.size() < 15) return 0;
  double ticks = std::stod(f[11]) + std::stod(f[12]);  // fields 14 and 15: utime, stime
  if (reaped_children) ticks += std::stod(f[13]) + std::stod(f[14]);  // 16, 17: cutime, cstime
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    const pid_t pid = std::stoi(name);
    const auto f = proc_stat_fields(pid);
    if (f.size() > 1 && std::stoi(f[1]) == parent) out.push_back(pid);  // field 4: ppid
  }
  return out;
}

// A process tree's CPU: the process, its live children, and the children it reaped. A child that
// exits between two readings moves from the second term to the third: differences stay right.
double tree_cpu_seconds(pid_t root) {
  double s = proc_cpu_seconds(root, true);
  for (pid_t c : children_of(root)) s += proc_cpu_seconds(c, true);
  return s;
}

// The first process whose command line contains every one of `needles` (NUL-separated args
// joined by spaces); -1 when none.
pid_t find_process(const std::vector<std::string>& needles) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::ifstream in(e.path() / "cmdline", std::ios::binary);
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    if (std::all_of(needles.begin(), needles.end(), [&](const std::string& n) { return cmd.find(n) != std::string::npos; }))
      return std::stoi(name);
  }
  return -1;
}

std::string first_line_of(const std::string& command) {
  std::string out;
  test::run_command(command + " 2>&1", &out);
  return out.substr(0, out.find('\n'));
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The last lines of a text.
std::string tail_of(const std::string& text, int lines = 30) {
  std::size_t at = text.size();
  for (int n = 0; n <= lines; ++n) {
    if (at == 0) return text;
    at = text.rfind('\n', at - 1);
    if (at == std::string::npos) return text;
  }
  return text.substr(at + 1);
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// ---------------------------------------------------------------------------------------------
// The clients.

struct ClientRun {
  double seconds = 0;
  long reported = 0;     // messages the client counted as accepted (smtp-source -c: DATA completed)
  double cpu_s = 0;      // the client's own CPU
  std::string output;    // smtp-source's output, or the TLS client's first error
  bool ok = false;
};

// smtp-source, timed from spawn to exit. Its -c counter ("\r1\r2...\rN\r\n") is on its output.
ClientRun run_smtp_source(std::uint16_t port, const std::string& rcpt, int messages, int sessions, int size, bool reuse,
                          const fs::path& log, int timeout_s) {
  const std::string target = "127.0.0.1:" + std::to_string(port);
  const std::string s = std::to_string(sessions), m = std::to_string(messages), l = std::to_string(size);
  std::vector<const char*> args = {"smtp-source", "-c", "-s", s.c_str(), "-m", m.c_str(), "-l", l.c_str(), "-f", kFrom,
                                   "-t",          rcpt.c_str(), "-M", kHelo};
  if (reuse) args.push_back("-d");
  args.push_back(target.c_str());
  args.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  const auto start = Clock::now();
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, "/usr/sbin/smtp-source", &actions, nullptr, const_cast<char* const*>(args.data()), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) throw std::runtime_error(std::string("cannot start /usr/sbin/smtp-source: ") + std::strerror(spawned));
  int status = 0;
  rusage ru{};
  const auto deadline = start + std::chrono::seconds(timeout_s);
  for (;;) {
    const pid_t r = wait4(pid, &status, WNOHANG, &ru);
    if (r == pid) break;
    if (interrupted || Clock::now() > deadline) {
      kill(pid, SIGKILL);
      wait4(pid, &status, 0, &ru);
      throw std::runtime_error(interrupted ? "interrupted" : "smtp-source did not finish within the timeout");
    }
    std::this_thread::sleep_for(1ms);
  }
  ClientRun run;
  run.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  run.cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  run.output = slurp(log);
  run.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  // The counter's "\rN" runs are read and left out of the text shown on failure.
  std::string text;
  for (std::size_t at = 0; at < run.output.size();) {
    if (run.output[at] != '\r') {
      text += run.output[at++];
      continue;
    }
    std::size_t end = at + 1;
    while (end < run.output.size() && std::isdigit(static_cast<unsigned char>(run.output[end]))) ++end;
    if (end > at + 1) run.reported = std::max(run.reported, std::stol(run.output.substr(at + 1, end - at - 1)));
    at = end;
  }
  run.output = text;
  return run;
}

// The message the TLS client sends: smtp-source's shape (From, To, Date, Message-Id, then `size`
// bytes of 80-character lines), dot-terminated.
std::string tls_message(const std::string& rcpt, int size) {
  std::string m = std::string("From: <") + kFrom + ">\r\nTo: <" + rcpt + ">\r\nDate: Mon, 30 Nov 2026 10:00:00 +0100\r\n" +
                  "Message-Id: <bench.tls@" + kHelo + ">\r\n\r\n";
  const std::string line = std::string(80, 'X') + "\r\n";
  for (int n = 0; n < size; n += static_cast<int>(line.size())) m += line;
  return m + ".\r\n";
}

// One blocking SMTP connection, plain until start_tls().
class SmtpClient {
 public:
  SmtpClient(std::uint16_t port, SSL_CTX* ctx) : ctx_(ctx) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error("socket failed");
    const int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{60, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in a = test::loopback(port);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd_);
      throw std::runtime_error(std::string("connect failed: ") + std::strerror(errno));
    }
  }
  ~SmtpClient() {
    if (ssl_) {
      SSL_shutdown(ssl_);
      SSL_free(ssl_);
    }
    ::close(fd_);
  }
  SmtpClient(const SmtpClient&) = delete;
  SmtpClient& operator=(const SmtpClient&) = delete;

  void send(const std::string& bytes) {
    for (std::size_t at = 0; at < bytes.size();) {
      long n = 0;
      if (ssl_) {
        n = SSL_write(ssl_, bytes.data() + at, static_cast<int>(bytes.size() - at));
      } else {
        n = ::send(fd_, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
      }
      if (n <= 0) throw std::runtime_error("write failed");
      at += static_cast<std::size_t>(n);
    }
  }
  // A whole reply (continuation lines included); throws unless it starts with `code`.
  std::string expect(const char* code) {
    std::string reply;
    for (;;) {
      const auto eol = buf_.find("\r\n");
      if (eol == std::string::npos) {
        char tmp[8192];
        const long n = ssl_ ? SSL_read(ssl_, tmp, sizeof tmp) : ::recv(fd_, tmp, sizeof tmp, 0);
        if (n <= 0) throw std::runtime_error("connection closed while waiting for " + std::string(code) + " (after: " + reply + ")");
        buf_.append(tmp, static_cast<std::size_t>(n));
        continue;
      }
      const std::string line = buf_.substr(0, eol);
      buf_.erase(0, eol + 2);
      reply += (reply.empty() ? "" : "\n") + line;
      if (line.size() < 4 || line[3] != '-') break;
    }
    if (reply.rfind(code, 0) != 0) throw std::runtime_error(std::string("expected ") + code + ", got: " + reply);
    return reply;
  }
  void command(const std::string& c, const char* code) {
    send(c + "\r\n");
    expect(code);
  }
  void start_tls() {
    command("STARTTLS", "220");
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    if (SSL_connect(ssl_) != 1) {
      char err[256] = {};
      ERR_error_string_n(ERR_get_error(), err, sizeof err);
      throw std::runtime_error(std::string("TLS handshake failed: ") + err);
    }
    buf_.clear();
  }

 private:
  SSL_CTX* ctx_;
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  std::string buf_;
};

// N messages over `sessions` threads, each connection: greeting, EHLO, STARTTLS, EHLO, then one
// transaction (fresh) or all of its share (reused), QUIT.
ClientRun run_tls_client(std::uint16_t port, const std::string& rcpt, int messages, int sessions, int size, bool reuse, int timeout_s) {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);  // opportunistic, as MTAs do; one certificate for both servers
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  const std::string data = tls_message(rcpt, size);
  std::atomic<int> next{0};
  std::atomic<long> delivered{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::string first_error;
  const auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  auto worker = [&] {
    try {
      std::unique_ptr<SmtpClient> c;
      while (!failed && !interrupted && Clock::now() < deadline && next.fetch_add(1) < messages) {
        if (!c) {
          c = std::make_unique<SmtpClient>(port, ctx.get());
          c->expect("220");
          c->command(std::string("EHLO ") + kHelo, "250");
          c->start_tls();
          c->command(std::string("EHLO ") + kHelo, "250");
        }
        c->command(std::string("MAIL FROM:<") + kFrom + ">", "250");
        c->command("RCPT TO:<" + rcpt + ">", "250");
        c->command("DATA", "354");
        c->send(data);
        c->expect("250");
        ++delivered;
        if (!reuse) {
          c->command("QUIT", "221");
          c.reset();
        }
      }
      if (c) c->command("QUIT", "221");
    } catch (const std::exception& e) {
      failed = true;
      std::lock_guard lock(error_mutex);
      if (first_error.empty()) first_error = e.what();
    }
  };
  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int i = 0; i < sessions; ++i) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  ClientRun run;
  run.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  rusage after{};
  getrusage(RUSAGE_SELF, &after);
  auto secs = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  run.cpu_s = secs(after.ru_utime) - secs(before.ru_utime) + secs(after.ru_stime) - secs(before.ru_stime);
  run.reported = delivered;
  run.ok = !failed && delivered == messages;
  run.output = first_error.empty() && !run.ok ? std::string(interrupted ? "interrupted" : "timed out") : first_error;
  return run;
}

// ---------------------------------------------------------------------------------------------
// The receivers.

struct Details {  // what a receiver adds to a run's row
  std::string text;
  double rss_mib = 0;  // mailgated's VmHWM
};

class Peer {
 public:
  virtual ~Peer() = default;
  virtual std::string name() const = 0;
  virtual bool tls() const = 0;
  virtual std::uint16_t port() const = 0;
  virtual std::string recipient() const = 0;
  virtual void prepare(const std::string& /*label*/) {}  // fresh state before a run, not timed
  virtual long stored() = 0;           // messages it holds (smtp-sink: counted) so far
  virtual long stored_settled(long expected) { (void)expected; return stored(); }
  virtual double cpu_seconds() = 0;    // its processes' CPU so far
  virtual void timed_start() {}        // just before the clock starts
  virtual void timed_stop() {}         // just after it stops
  virtual Details finish(long /*messages*/) { return {}; }  // after the run (stops what prepare() started)
};

// Postfix's smtp-sink on 127.0.0.1 (the outbox benchmark's), with its running counters (-c):
// "sess=S quit=Q mesg=M" after each session end, QUIT and end of DATA. It stores nothing.
class SinkReceiver : public Peer {
 public:
  explicit SinkReceiver(const fs::path& dir) : out_(dir / "smtp-sink.out"), port_(test::free_port()) {
    const std::string user = getuid() == 0 ? " -u nobody" : "";  // it refuses to run as root
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      setpgid(0, 0);
      const std::string command = "exec /usr/sbin/smtp-sink" + user + " -c 127.0.0.1:" + std::to_string(port_) + " 256 >" +
                                  shell_quote(out_.string()) + " 2>&1";
      execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    if (!test::wait_for_port(port_)) throw std::runtime_error("smtp-sink did not start: " + slurp(out_));
  }
  ~SinkReceiver() override {
    if (pid_ <= 0) return;
    kill(-pid_, SIGTERM);
    for (int i = 0; i < 50; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(20ms);
    }
    kill(-pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  std::string name() const override { return "smtp-sink"; }
  bool tls() const override { return false; }
  std::uint16_t port() const override { return port_; }
  std::string recipient() const override { return kSinkRecipient; }
  double cpu_seconds() override { return proc_cpu_seconds(pid_); }
  // The last complete "sess=S quit=Q mesg=M" (it reads only the end of the file).
  long stored() override {
    std::ifstream in(out_, std::ios::binary | std::ios::ate);
    const std::streamoff size = in.tellg();
    if (size <= 0) return 0;
    const std::streamoff from = std::max<std::streamoff>(0, size - 512);
    std::string tail(static_cast<std::size_t>(size - from), '\0');
    in.seekg(from);
    in.read(tail.data(), static_cast<std::streamsize>(tail.size()));
    for (auto at = tail.rfind("sess="); at != std::string::npos; at = at ? tail.rfind("sess=", at - 1) : std::string::npos) {
      long sessions = 0, messages = 0;
      if (std::sscanf(tail.c_str() + at, "sess=%ld quit=%*d mesg=%ld", &sessions, &messages) == 2) return messages;
    }
    return 0;
  }
  // smtp-sink prints its counter a moment after the client has its reply.
  long stored_settled(long expected) override {
    const auto end = Clock::now() + 3s;
    long n = stored();
    while (n < expected && Clock::now() < end) {
      std::this_thread::sleep_for(20ms);
      n = stored();
    }
    return n;
  }

 private:
  fs::path out_;
  std::uint16_t port_;
  pid_t pid_ = -1;
};

// A private Postfix: config_directory and queue_directory under `dir`, smtpd on 127.0.0.1 and a
// free port, cleanup writing (and fsyncing) the queue file before smtpd's 250, no qmgr and no
// delivery agents, so every message stays in the incoming queue and delivery costs nothing.
// Without qmgr, cleanup's inflow control would wait in_flow_delay (1 s) per message for a token
// that only qmgr hands out: in_flow_delay = 0. As root, master drops to the `postfix` user of
// Debian's package for its children. Its log goes to a file (postlogd).
class PostfixReceiver : public Peer {
 public:
  PostfixReceiver(const fs::path& dir, const test::TestCerts& certs) : dir_(dir), port_(test::free_port()) {
    if (getuid() != 0) throw std::runtime_error("the private Postfix needs root (master drops to the postfix user)");
    fs::create_directories(dir_ / "etc");
    fs::create_directories(dir_ / "queue");
    fs::create_directories(dir_ / "data");
    test::run_command("chown postfix: " + shell_quote((dir_ / "data").string()));
    fs::permissions(dir_ / "data", fs::perms::owner_all);
    // The postfix user reads the certificate and key from wherever they are: copies it can reach.
    fs::copy_file(certs.cert, dir_ / "etc" / "smtpd.pem", fs::copy_options::overwrite_existing);
    fs::copy_file(certs.key, dir_ / "etc" / "smtpd.key", fs::copy_options::overwrite_existing);
    const std::string d = dir_.string();
    std::ofstream(dir_ / "etc" / "main.cf")
        << "# mailgate_bench_smtp_receive: a throw-away instance\n"
        << "compatibility_level = 3.6\n"
        << "config_directory = " << d << "/etc\n"
        << "queue_directory = " << d << "/queue\n"
        << "data_directory = " << d << "/data\n"
        << "command_directory = /usr/sbin\ndaemon_directory = /usr/lib/postfix/sbin\nshlib_directory = /usr/lib/postfix\n"
        << "meta_directory = /etc/postfix\nmail_owner = postfix\nsetgid_group = postdrop\n"
        << "maillog_file = " << d << "/postfix.log\nmaillog_file_prefixes = " << d << "\n"
        << "myhostname = postfix.bench\nmydomain = postfix.bench\nmyorigin = $myhostname\n"
        << "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n"
        // The recipient's domain is local; with no local_recipient_maps every local part is taken
        // (no alias or passwd lookups); nothing is ever delivered.
        << "mydestination = $myhostname, " << kReceiveDomain << "\nlocal_recipient_maps =\nalias_maps =\nalias_database =\n"
        << "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"
        << "smtpd_banner = $myhostname ESMTP\nbiff = no\nsmtputf8_enable = no\n"
        << "in_flow_delay = 0\n"
        << "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = " << d << "/etc/smtpd.pem\nsmtpd_tls_key_file = " << d
        << "/etc/smtpd.key\n";
    // Debian's master.cf, cut to what smtpd and cleanup need, without chroot (the queue is here).
    std::ofstream(dir_ / "etc" / "master.cf")
        << "127.0.0.1:" << port_ << " inet n - n - - smtpd\n"
        << "cleanup   unix  n - n - 0 cleanup\n"
        << "rewrite   unix  - - n - - trivial-rewrite\n"
        << "bounce    unix  - - n - 0 bounce\n"
        << "defer     unix  - - n - 0 bounce\n"
        << "trace     unix  - - n - 0 bounce\n"
        << "verify    unix  - - n - 1 verify\n"
        << "proxymap  unix  - - n - - proxymap\n"
        << "anvil     unix  - - n - 1 anvil\n"
        << "tlsmgr    unix  - - n 1000? 1 tlsmgr\n"
        << "postlog   unix-dgram n - n - 1 postlogd\n";
    std::string out;
    if (test::run_command("/usr/sbin/postfix -c " + shell_quote(d + "/etc") + " start 2>&1", &out) != 0 || !test::wait_for_port(port_))
      throw std::runtime_error("the private Postfix did not start: " + out + "\n" + tail_of(slurp(dir_ / "postfix.log")));
    master_ = std::stoi(slurp(dir_ / "queue" / "pid" / "master.pid"));
  }
  ~PostfixReceiver() override {
    test::run_command("/usr/sbin/postfix -c " + shell_quote(dir_.string() + "/etc") + " stop >/dev/null 2>&1");
    for (int i = 0; i < 100 && kill(master_, 0) == 0; ++i) std::this_thread::sleep_for(50ms);
    if (kill(master_, 0) == 0) test::run_command("/usr/sbin/postfix -c " + shell_quote(dir_.string() + "/etc") + " abort >/dev/null 2>&1");
  }
  std::string name() const override { return "Postfix"; }
  bool tls() const override { return true; }
  std::uint16_t port() const override { return port_; }
  std::string recipient() const override { return kPostfixRecipient; }
  double cpu_seconds() override { return tree_cpu_seconds(master_); }
  // Queue files: everything in the queues a message can be in (incoming, since qmgr never runs).
  long stored() override {
    long n = 0;
    for (const char* q : {"incoming", "active", "deferred", "hold", "maildrop", "corrupt"}) {
      std::error_code ec;
      for (auto it = fs::recursive_directory_iterator(dir_ / "queue" / q, ec); !ec && it != fs::recursive_directory_iterator();
           it.increment(ec))
        if (it->is_regular_file()) ++n;
    }
    return n;
  }
  // An empty queue for each run, as mailgate gets a fresh database.
  void prepare(const std::string&) override {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir_ / "queue" / "incoming", ec)) fs::remove_all(e.path(), ec);
  }
  Details finish(long messages) override {
    Details d;
    const std::string log = slurp(dir_ / "postfix.log");
    std::size_t warnings = 0, at = 0;
    for (; (at = log.find(": warning: ", at)) != std::string::npos; ++at)
      if (std::string_view(log).substr(at + 11).rfind("unable to look up public/qmgr", 0) != 0) ++warnings;  // no qmgr: expected
    if (warnings > warnings_seen_)
      d.text = fmt::format("  Postfix's log has {} new warnings (besides the absent qmgr), the last lines:\n{}\n", warnings - warnings_seen_,
                           tail_of(log, 5));
    warnings_seen_ = warnings;
    (void)messages;
    return d;
  }

 private:
  fs::path dir_;
  std::uint16_t port_;
  pid_t master_ = -1;
  std::size_t warnings_seen_ = 0;
};

// mailgated with its [smtp_receiver] listener on a fresh database of the private cluster for each
// run; the receiver rows are inserted with SQL; the DNS server answers the sender domain's SPF
// and DMARC records.
class MailgateReceiver : public Peer {
 public:
  MailgateReceiver(test::PgCluster& pg, const fs::path& work, const test::TestCerts& certs, const Options& o)
      : pg_(pg), work_(work), certs_(certs), o_(o),
        dns_(test::DnsZone{{
            {kSenderDomain, "TXT", {"v=spf1 ip4:127.0.0.0/8 -all"}},
            {std::string("_dmarc.") + kSenderDomain, "TXT", {"v=DMARC1; p=reject"}},
        }, {}, {}, o.dns_ttl, o.dns_ttl}) {
    dns_pid_ = find_process({"dns_server.py", "--port " + std::to_string(dns_.port())});
  }
  std::string name() const override { return "mailgate"; }
  bool tls() const override { return true; }
  std::uint16_t port() const override { return smtp_port_; }
  std::string recipient() const override { return kReceiverAddress; }

  void prepare(const std::string& label) override {
    database_ = "bench_" + label;
    for (char& c : database_)
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    pqxx::connection admin(pg_.admin_url());
    pqxx::nontransaction(admin).exec("DROP DATABASE IF EXISTS " + database_);
    pqxx::nontransaction(admin).exec("CREATE DATABASE " + database_);
    const std::string url = pg_.url(database_);
    {
      pqxx::connection c(url);
      migrate(c);
      pqxx::work tx(c);
      const auto admin_id = tx.exec1("INSERT INTO administrations (name) VALUES ('Energiecoöperatie Zon & Wind') RETURNING id")[0].as<long>();
      receiver_id_ = tx.exec_params1("INSERT INTO receivers (administration_id, document_type, address, status, supplier_name, contact_email, "
                                     "accepted_types, activated_at) VALUES ($1, 'purchase_invoice', $2, 'active', 'Leverancier BV', "
                                     "'contact@leverancier.bench', '{}', now()) RETURNING id",
                                     admin_id, std::string(kReceiverAddress))[0]
                         .as<long>();
      tx.exec_params("INSERT INTO receiver_whitelist (receiver_id, kind, value) VALUES ($1, 'domain', $2)", receiver_id_,
                     std::string(kSenderDomain));
      if (o_.pg_statements) tx.exec("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
      tx.commit();
      for (const auto& sql : o_.sql_after_migrate) pqxx::nontransaction(c).exec(sql);  // ALTER SYSTEM too
    }
    smtp_port_ = test::free_port();
    daemon_ = std::make_unique<test::DaemonProcess>(
        url, "[smtp_receiver]\nlisten = [\"127.0.0.1:" + std::to_string(smtp_port_) + "\"]\nhostname = \"mx.mailgate.bench\"\n" +
                 "receive_domain = \"" + kReceiveDomain + "\"\ntls_certificate = \"" + certs_.cert.string() + "\"\ntls_key = \"" +
                 certs_.key.string() + "\"\ndns_servers = [\"" + dns_.address() + "\"]\nmax_sessions_per_ip = " +
                 std::to_string(o_.max_sessions_per_ip) + "\n");
    daemon_->edit_config("pool_size = 2", "pool_size = " + std::to_string(o_.pool_size));
    daemon_->edit_config("log_level = \"debug\"", "log_level = \"info\"");  // config/mailgate.example.toml's
    daemon_->start();
    if (!test::wait_for_port(smtp_port_)) throw std::runtime_error("mailgated's SMTP listener did not open:\n" + tail_of(daemon_->log()));
    db_ = std::make_unique<pqxx::connection>(url);
  }

  long stored() override {
    return pqxx::nontransaction(*db_).exec_params1("SELECT count(*) FROM messages WHERE receiver_id = $1", receiver_id_)[0].as<long>();
  }

  // The daemon, its PostgreSQL backends (reported apart in finish()), not the DNS server.
  double cpu_seconds() override { return daemon_ ? proc_cpu_seconds(daemon_->pid()) : 0; }

  void timed_start() override {
    const auto r = pqxx::nontransaction(*db_).exec1(
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8, "
        "(SELECT wal_sync FROM pg_stat_wal)");
    xid_before_ = r[0].as<long>();
    wal_before_ = r[1].as<double>();
    syncs_before_ = r[2].as<long>();
    backends_before_ = backend_cpu();
    dns_cpu_before_ = dns_pid_ > 0 ? proc_cpu_seconds(dns_pid_) : 0;
    dns_queries_before_ = dns_.queries().size();
    if (o_.pg_statements) pqxx::nontransaction(*db_).exec("SELECT pg_stat_statements_reset()");
    if (o_.perf) start_perf();
  }
  void timed_stop() override {
    if (perf_pid_ > 0) {
      kill(perf_pid_, SIGINT);
      waitpid(perf_pid_, nullptr, 0);
      perf_pid_ = -1;
    }
  }

  Details finish(long messages) override {
    Details d;
    const double n = static_cast<double>(std::max(1L, messages));
    const auto r = pqxx::nontransaction(*db_).exec1(
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8, "
        "pg_total_relation_size('messages')");
    const long xids = r[0].as<long>() - xid_before_;  // the next transaction id: every writing transaction took one
    const double wal_mib = (r[1].as<double>() - wal_before_) / (1024.0 * 1024.0);
    const double messages_mib = r[2].as<double>() / (1024.0 * 1024.0);
    const auto [backend_cpu_s, backends] = backend_cpu();
    const double dns_cpu = dns_pid_ > 0 ? proc_cpu_seconds(dns_pid_) - dns_cpu_before_ : 0;
    const double dns_queries = static_cast<double>(dns_.queries().size() - dns_queries_before_);
    d.rss_mib = proc_status_mib(daemon_->pid(), "VmHWM");
    const std::string log = daemon_->log();
    long accepted = 0, warnings = 0;
    {
      std::istringstream in(log);
      for (std::string line; std::getline(in, line);) {
        if (line.find("event=smtp_message ") != std::string::npos && line.find(" result=accepted ") != std::string::npos) ++accepted;
        if (line.find(" warning ") != std::string::npos || line.find(" error ") != std::string::npos) ++warnings;
      }
    }
    daemon_->stop(SIGTERM);
    std::this_thread::sleep_for(300ms);  // backends report their WAL statistics as they exit
    const long syncs = pqxx::nontransaction(*db_).exec1("SELECT wal_sync FROM pg_stat_wal")[0].as<long>() - syncs_before_;
    d.text = fmt::format(
        "  mailgated: peak RSS {:.1f} MiB; its {} PostgreSQL backends {:.2f} CPU s; {:.3f} writing transactions and {:.3f} WAL\n"
        "  fsyncs per message ({} and {}; the group commit's batches average {:.1f} messages), {:.1f} KiB of WAL per message;\n"
        "  messages table {:.1f} MiB; {:.1f} DNS queries per message, the DNS server (Python) {:.2f} CPU s; log: {} accepted\n"
        "  since start (warm-up included), {} warnings or errors.\n",
        d.rss_mib, backends, backend_cpu_s - backends_before_.first, xids / n, syncs / n, xids, syncs, xids > 0 ? n / xids : 0.0,
        wal_mib * 1024 / n, messages_mib, dns_queries / n, dns_cpu, accepted, warnings);
    if (warnings > 0) d.text += "  mailgated's log ends:\n" + tail_of(log, 8) + "\n";
    if (o_.pg_statements) d.text += statements(n);
    if (o_.perf && !perf_data_.empty()) d.text += perf_summary();
    db_.reset();
    if (!o_.keep) {
      const fs::path dir = daemon_->dir();
      daemon_.reset();
      std::error_code ec;
      fs::remove_all(dir, ec);
      pqxx::connection admin(pg_.admin_url());
      pqxx::nontransaction(admin).exec("DROP DATABASE IF EXISTS " + database_);
    } else {
      d.text += "  kept: " + daemon_->dir().string() + "\n";
      daemon_.reset();
    }
    return d;
  }

 private:
  // CPU seconds of the daemon's backends now, and how many there are.
  std::pair<double, int> backend_cpu() {
    double s = 0;
    int count = 0;
    for (const auto& row : pqxx::nontransaction(*db_).exec(
             "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")) {
      s += proc_cpu_seconds(row[0].as<int>());
      ++count;
    }
    return {s, count};
  }

  // The statements that took PostgreSQL the most execution time in this database since the reset.
  std::string statements(double n) {
    std::string out =
        "  pg_stat_statements, the daemon's costliest statements (execution and planning; commits and their fsyncs, round\n"
        "  trips and the daemon's own work are not in these):\n" +
        fmt::format("  {:>8} {:>8} {:>7} {:>8} {:>9}  {}\n", "exec ms", "plan ms", "calls", "per msg", "ms/call", "statement");
    for (const auto& r : pqxx::nontransaction(*db_).exec(
             "SELECT regexp_replace(query, '\\s+', ' ', 'g'), calls, total_exec_time, total_plan_time FROM pg_stat_statements "
             "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query NOT LIKE '%pg_stat%' "
             "AND query NOT LIKE '%pg_current_snapshot%' ORDER BY total_exec_time + total_plan_time DESC LIMIT 16")) {
      const long calls = r[1].as<long>();
      out += fmt::format("  {:>8.0f} {:>8.0f} {:>7} {:>8.2f} {:>9.3f}  {}\n", r[2].as<double>(), r[3].as<double>(), calls, calls / n,
                         calls ? (r[2].as<double>() + r[3].as<double>()) / calls : 0.0, r[0].as<std::string>().substr(0, 110));
    }
    return out;
  }

  void start_perf() {
    std::string pids = std::to_string(daemon_->pid());
    for (const auto& row : pqxx::nontransaction(*db_).exec(
             "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"))
      pids += "," + row[0].as<std::string>();
    perf_data_ = work_ / ("perf-" + database_ + ".data");
    const std::string command = "exec perf record -e cpu-clock -F 999 -g -p " + pids + " -o " + shell_quote(perf_data_.string()) +
                                " >" + shell_quote(perf_data_.string() + ".log") + " 2>&1";
    perf_pid_ = fork();
    if (perf_pid_ == 0) {
      execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    std::this_thread::sleep_for(300ms);  // perf attaches
  }

  std::string perf_summary() {
    std::string out;
    test::run_command("perf report -i " + shell_quote(perf_data_.string()) +
                          " --no-children --sort comm,dso,symbol --stdio -g none --percent-limit 0.7 2>/dev/null | grep -v '^#' | "
                          "grep -v '^$' | sed -e 's/  */ /g' -e 's/ - - *$//' | cut -c1-140 | head -40",
                      &out);
    std::string by_comm;
    test::run_command("perf report -i " + shell_quote(perf_data_.string()) +
                          " --no-children --sort comm --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | sed 's/  */ /g' | "
                          "head -12",
                      &by_comm);
    return "  perf (cpu-clock, mailgated and its backends; " + perf_data_.string() + "), by thread:\n" + by_comm +
           "  hottest symbols:\n" + out;
  }

  test::PgCluster& pg_;
  fs::path work_;
  test::TestCerts certs_;
  const Options& o_;
  test::DnsServer dns_;
  pid_t dns_pid_ = -1;
  std::uint16_t smtp_port_ = 0;
  std::string database_;
  long receiver_id_ = 0;
  std::unique_ptr<test::DaemonProcess> daemon_;
  std::unique_ptr<pqxx::connection> db_;
  long xid_before_ = 0, syncs_before_ = 0;
  double wal_before_ = 0;
  std::pair<double, int> backends_before_;
  double dns_cpu_before_ = 0;
  std::size_t dns_queries_before_ = 0;
  fs::path perf_data_;
  pid_t perf_pid_ = -1;
};

// ---------------------------------------------------------------------------------------------
// One run and the report.

struct Row {
  std::string receiver, mode;  // mode: "fresh", "reused", "tls fresh", "tls reused"
  long messages = 0;
  int sessions = 0;
  double seconds = 0;
  double server_cpu_s = 0, client_cpu_s = 0, machine_busy = 0, rss_mib = 0;
  double rate() const { return seconds > 0 ? messages / seconds : 0; }
};

std::string mode_label(const std::string& mode) {
  if (mode == "fresh") return "new connection per message";
  if (mode == "reused") return "connection reused";
  if (mode == "tls fresh") return "STARTTLS, new connection per msg";
  return "STARTTLS, connection reused";
}

void print_header() {
  std::cout << fmt::format("\n{:<10} {:<34} {:>8} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}\n", "receiver", "mode", "messages", "sess",
                           "seconds", "msgs/s", "srv CPU", "cli CPU", "machine", "peak RSS");
}

void print_row(const Row& r) {
  std::cout << fmt::format("{:<10} {:<34} {:>8} {:>5} {:>8.3f} {:>8.0f} {:>8.2f} {:>8.2f} {:>7.0f}% {:>9}\n", r.receiver,
                           mode_label(r.mode), r.messages, r.sessions, r.seconds, r.rate(), r.server_cpu_s, r.client_cpu_s,
                           100 * r.machine_busy, r.rss_mib > 0 ? fmt::format("{:.1f} MiB", r.rss_mib) : std::string("-"))
            << std::flush;
}

Row run_one(Peer& rx, const std::string& mode, const Options& o, const fs::path& work, int run_number) {
  const bool use_tls = mode.rfind("tls", 0) == 0;
  const bool reuse = mode.find("reused") != std::string::npos;
  const int messages = use_tls ? o.tls_messages : o.messages;
  const int sessions = use_tls ? o.tls_sessions : o.sessions;
  std::string label = fmt::format("{}_{}", run_number, mode);
  rx.prepare(label);
  const long base = rx.stored();
  // Warm-up: SESSIONS messages at once (processes, pools, connections, caches), not counted.
  const auto warm = run_smtp_source(rx.port(), rx.recipient(), sessions, sessions, o.size, false, work / "warm-up.log", 120);
  if (!warm.ok) throw std::runtime_error(rx.name() + " refused the warm-up:\n" + tail_of(warm.output, 10));
  const long before = rx.stored_settled(base + sessions);
  const double cpu_before = rx.cpu_seconds();
  warn_if_busy(rx.name() + ", " + mode_label(mode));
  rx.timed_start();
  const auto machine_before = CpuTimes::now();
  const ClientRun client = use_tls ? run_tls_client(rx.port(), rx.recipient(), messages, sessions, o.size, reuse, o.timeout_s)
                                   : run_smtp_source(rx.port(), rx.recipient(), messages, sessions, o.size, reuse,
                                                     work / "smtp-source.log", o.timeout_s);
  const double busy = CpuTimes::now().busy_since(machine_before);
  rx.timed_stop();
  const double cpu = rx.cpu_seconds() - cpu_before;
  const long stored = rx.stored_settled(before + messages) - before;
  Row row;
  row.receiver = rx.name();
  row.mode = mode;
  row.messages = stored;
  row.sessions = sessions;
  row.seconds = client.seconds;
  row.server_cpu_s = cpu;
  row.client_cpu_s = client.cpu_s;
  row.machine_busy = busy;
  const Details details = rx.finish(stored);
  row.rss_mib = details.rss_mib;
  print_row(row);
  std::cout << details.text << std::flush;
  if (!client.ok || stored != messages || client.reported != messages)
    throw std::runtime_error(fmt::format("{} ({}): the client counted {} messages accepted, {} holds {}, {} were sent{}:\n{}", rx.name(),
                                         mode_label(mode), client.reported, rx.name(), stored, messages,
                                         client.ok ? "" : "; the client failed", tail_of(client.output, 10)));
  return row;
}

// The run of median duration (the upper one of an even count).
Row median(std::vector<Row> runs) {
  std::sort(runs.begin(), runs.end(), [](const Row& a, const Row& b) { return a.rate() < b.rate(); });
  return runs[runs.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  spdlog::set_level(spdlog::level::warn);  // migrate() logs every migration it applies
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  fs::path work;
  try {
    std::cout << "mailgate inbound SMTP benchmark: " << o.messages << " messages of " << o.size << " bytes (smtp-source -l), "
              << o.sessions << " sessions";
    if (o.tls) std::cout << "; STARTTLS: " << o.tls_messages << " messages, " << o.tls_sessions << " sessions";
    std::cout << "\nPostfix " << first_line_of("dpkg-query -W -f '${Version}' postfix") << ", "
              << first_line_of("/usr/lib/postgresql/15/bin/postgres --version") << ", " << std::thread::hardware_concurrency()
              << " cores, load average " << fmt::format("{:.2f}", load_average()) << "\n"
              << std::flush;

    work = test::temp_dir("bench-smtp-receive");
    fs::permissions(work, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec | fs::perms::others_read |
                              fs::perms::others_exec);  // the postfix user reaches its directories
    const auto certs = test::make_test_certs(work / "certs", "mx", "localhost");

    std::optional<test::PgCluster> pg;  // before the receivers: destroyed after them
    std::vector<std::unique_ptr<Peer>> receivers;
    if (o.peers.count("smtp-sink")) receivers.push_back(std::make_unique<SinkReceiver>(work));
    if (o.peers.count("postfix")) receivers.push_back(std::make_unique<PostfixReceiver>(work / "postfix", certs));
    if (o.peers.count("mailgate")) {
      setenv("MAILGATE_PG_FSYNC", o.fsync ? "on" : "off", 1);  // read by tools/pg-cluster's initdb
      pg.emplace(work / "pg");
      if (o.pg_statements) {
        {
          pqxx::connection admin(pg->admin_url());
          pqxx::nontransaction(admin).exec("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'");
        }
        pg->stop();
        pg->start();
        pqxx::connection admin(pg->admin_url());  // known only once the library is loaded
        pqxx::nontransaction(admin).exec("ALTER SYSTEM SET pg_stat_statements.track_planning = on");
        pqxx::nontransaction(admin).exec("SELECT pg_reload_conf()");
      }
      pqxx::connection admin(pg->admin_url());
      const auto r = pqxx::nontransaction(admin).exec1(
          "SELECT current_setting('fsync'), current_setting('synchronous_commit'), current_setting('wal_sync_method'), "
          "current_setting('full_page_writes')");
      std::cout << "PostgreSQL: fsync " << r[0].c_str() << ", synchronous_commit " << r[1].c_str() << ", wal_sync_method "
                << r[2].c_str() << ", full_page_writes " << r[3].c_str() << "\n";
      if ((r[0].as<std::string>() == "on") != o.fsync) throw std::runtime_error("the private cluster's fsync is not what was asked");
      receivers.push_back(std::make_unique<MailgateReceiver>(*pg, work, certs, o));
    }

    std::vector<std::string> modes = o.modes;
    if (o.tls)
      for (const auto& m : o.modes) modes.push_back("tls " + m);
    std::map<std::pair<std::string, std::string>, std::vector<Row>> rows;
    int run_number = 0;
    for (int round = 1; round <= o.rounds; ++round) {
      if (o.rounds > 1) std::cout << "\nround " << round << " of " << o.rounds;
      print_header();
      for (const auto& mode : modes)
        for (auto& rx : receivers) {
          if (mode.rfind("tls", 0) == 0 && !rx->tls()) continue;
          if (interrupted) throw std::runtime_error("interrupted");
          rows[{mode, rx->name()}].push_back(run_one(*rx, mode, o, work, ++run_number));
        }
    }

    std::cout << "\n" << (o.rounds > 1 ? "medians of " + std::to_string(o.rounds) + " rounds (by msgs/s)" : std::string("result")) << ":";
    print_header();
    for (const auto& mode : modes)
      for (auto& rx : receivers)
        if (auto it = rows.find({mode, rx->name()}); it != rows.end()) print_row(median(it->second));
    std::cout << "\n";
    for (const auto& mode : modes) {
      auto rate = [&](const std::string& name) -> std::optional<double> {
        auto it = rows.find({mode, name});
        if (it == rows.end()) return std::nullopt;
        return median(it->second).rate();
      };
      const auto mg = rate("mailgate"), pf = rate("Postfix"), sink = rate("smtp-sink");
      if (mg && pf)
        std::cout << fmt::format("ratio mailgate / Postfix,   {:<34} {:.2f}   (goal: >= 2)\n", mode_label(mode) + ":", *mg / *pf);
      if (mg && sink) std::cout << fmt::format("ratio mailgate / smtp-sink, {:<34} {:.3f}\n", mode_label(mode) + ":", *mg / *sink);
    }
    std::cout << "\nseconds: the client from start to end (smtp-source from spawn to exit). messages: what the receiver\n"
                 "holds afterwards (rows in `messages` for the receiver address, Postfix's queue files, smtp-sink's\n"
                 "counter), checked against what the client counted as accepted. srv CPU: user + system of the\n"
                 "receiver's own processes during the run (mailgated alone: its PostgreSQL backends and the DNS\n"
                 "server are on the line below it; Postfix: master and all its children; smtp-sink: itself). cli\n"
                 "CPU: the client's. machine: all cores, all processes. Peak RSS: mailgated's VmHWM.\n";
  } catch (const std::exception& e) {
    std::cerr << "mailgate_bench_smtp_receive: " << e.what() << "\n";
    if (!work.empty()) std::cerr << "left for inspection: " << work.string() << "\n";
    return 1;
  }
  std::error_code ec;
  if (o.keep)
    std::cout << "kept: " << work.string() << "\n";
  else
    fs::remove_all(work, ec);
  return 0;
}
