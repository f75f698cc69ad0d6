// Outbox benchmark (issue 5): N messages of the same size sent to Postfix's smtp-sink, by Postfix's
// smtp-source and by mailgated emptying its outbox, one after the other in the same run against
// the same sink; prints messages/s of each, the ratio, and mailgated's peak RSS.
//
//   mailgate_bench_outbox [--messages N] [--size BYTES] [--sessions N] [--per-connection N[,N...]]
//                         [--fsync on|off] [--rounds N] [--timeout SECONDS] [--only smtp-source|mailgate] [--keep]
//                         [--poll-ms N] [--io-threads N] [--pg-statements] [--sql-after-migrate SQL]
//
// smtp-source runs `-s SESSIONS -m N -l SIZE` twice: with -d (each session keeps its connection
// for all its messages) and without (a new connection per message). mailgated gets a mailbox
// whose send_max_connections is SESSIONS, once per --per-connection value (default 20, the
// Strato limit, and 1000), on a fresh database: the N rows are inserted in one transaction
// (INSERT ... SELECT generate_series, as a group mailing would) and the clock runs from that
// commit until `SELECT count(*) FROM outbox WHERE state = 'sent'` is N (polled every 5 ms).
// The sink's own counter (smtp-sink -c) confirms that N messages arrived for each tool.
//
// mailgated does more than smtp-source: it reads each row from PostgreSQL, composes it with GMime,
// and files a copy of the composed bytes in the mailbox's "sent" folder through the ingest
// pipeline. It takes rows in chunks of 20 (claimed, loaded and composed in one transaction) and
// commits a chunk's outcomes in one transaction while the next chunk is on the wire.
//
// The machine is shared: when other work keeps the cores busy, the wall-clock figures (and so the
// ratio) mostly measure the scheduler. Each mailgate run therefore also prints the CPU it took per
// message (its own and its PostgreSQL backends'), which load changes much less.
//
// --rounds N runs everything N times, alternating, and reports the median of each.
// --keep leaves mailgated's directory (configuration, log) for inspection.
// --poll-ms sets mailgated's [outbox] poll_interval_ms (100 here; the shipped default is 1000).
// --io-threads sets mailgated's [daemon] io_threads (default 2, as shipped).
// --sql-after-migrate runs SQL on mailgate's fresh database before the daemon starts (and before
// the rows are queued): to try a schema change without rebuilding.
// --pg-statements restarts the private PostgreSQL with pg_stat_statements and lists, after each
// mailgated run, the statements that took PostgreSQL the most time (it costs a little: leave it
// out for the figures).
//
// Everything listens on 127.0.0.1 only: smtp-sink, PostgreSQL (a private cluster made for this
// run) and mailgated. bench/run-outbox builds and runs it.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/core.h>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "store/migrate.hpp"
#include "tests/support/daemon_process.hpp"
#include "tests/support/pg_harness.hpp"
#include "tests/support/smtp_servers.hpp"
#include "util/crypto.hpp"

namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace mailgate;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* kAdminEmail = "admin@example.nl";
constexpr const char* kAdminPassword = "Bench-Passw0rd";
constexpr const char* kFrom = "info@coop.nl";
constexpr const char* kTo = "jan@example.nl";

volatile sig_atomic_t interrupted = 0;
void on_signal(int) { interrupted = 1; }
void check_interrupted() {
  if (interrupted) throw std::runtime_error("interrupted");
}

struct Options {
  int messages = 2000;
  int size = 5000;  // bytes of message body (smtp-source -l: payload without headers)
  int sessions = 2;  // smtp-source -s; mailgate's send_max_connections
  std::vector<int> per_connection = {20, 1000};  // mailgate's send_max_per_connection, one run each
  bool fsync = true;  // PostgreSQL's
  std::string sql_after_migrate;  // an experiment on the schema, run before the daemon starts
  int timeout_s = 900;
  bool run_source = true, run_mailgate = true;
  bool keep = false;
  int rounds = 1;
  int poll_ms = 100;  // mailgated's [outbox] poll_interval_ms
  int io_threads = 2;  // mailgated's [daemon] io_threads
  bool pg_statements = false;  // load pg_stat_statements and list the daemon's costliest statements
};

[[noreturn]] void usage(const std::string& problem) {
  if (!problem.empty()) std::cerr << "mailgate_bench_outbox: " << problem << "\n";
  std::cerr << "usage: mailgate_bench_outbox [--messages N] [--size BYTES] [--sessions N] [--per-connection N[,N...]]\n"
               "                             [--fsync on|off] [--rounds N] [--timeout SECONDS] [--only smtp-source|mailgate] [--keep]\n"
               "                             [--poll-ms N] [--io-threads N] [--pg-statements] [--sql-after-migrate SQL]\n";
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
    } else if (a == "--size") {
      o.size = to_int(value(), a, 100, 10000000);
    } else if (a == "--sessions") {
      o.sessions = to_int(value(), a, 1, 50);  // the API's limit for send_max_connections
    } else if (a == "--per-connection") {
      o.per_connection.clear();
      std::istringstream list(value());
      for (std::string item; std::getline(list, item, ',');) o.per_connection.push_back(to_int(item, a, 1, 10000));
      if (o.per_connection.empty()) usage("--per-connection needs at least one number");
    } else if (a == "--fsync") {
      const std::string v = value();
      if (v != "on" && v != "off") usage("--fsync is on or off");
      o.fsync = v == "on";
    } else if (a == "--timeout") {
      o.timeout_s = to_int(value(), a, 10, 86400);
    } else if (a == "--only") {
      const std::string v = value();
      if (v != "smtp-source" && v != "mailgate") usage("--only is smtp-source or mailgate");
      o.run_source = v == "smtp-source";
      o.run_mailgate = v == "mailgate";
    } else if (a == "--rounds") {
      o.rounds = to_int(value(), a, 1, 20);
    } else if (a == "--keep") {
      o.keep = true;
    } else if (a == "--sql-after-migrate") {
      o.sql_after_migrate = value();
    } else if (a == "--io-threads") {
      o.io_threads = to_int(value(), a, 1, 64);
    } else if (a == "--poll-ms") {
      o.poll_ms = to_int(value(), a, 10, 60000);
    } else if (a == "--pg-statements") {
      o.pg_statements = true;
    } else if (a == "--help" || a == "-h") {
      usage("");
    } else {
      usage("unknown option " + a);
    }
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Measuring (the same helpers as bench/imap_import.cpp).

struct Result {
  std::string tool;
  int messages = 0;
  double seconds = 0;
  double rss_mib = 0;
  double cpu_s = 0;
  double machine_busy = 0;  // share of all cores busy during the run (every process)
  long sessions = 0;        // SMTP sessions smtp-sink saw
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

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// ---------------------------------------------------------------------------------------------
// The sink: Postfix's smtp-sink on 127.0.0.1, storing nothing (the loopback ceiling), with its
// running counters (-c) on standard output: "sess=S quit=Q mesg=M" after every session end, QUIT
// and end of DATA. One sink serves the whole run; each tool is checked by the difference.
// -a: no AUTH in its EHLO reply. smtp-sink answers AUTH with 250, not 235, which mailgate rightly
// takes for a failure; without the offer mailgate sends without authenticating, as smtp-source does.

class Sink {
 public:
  explicit Sink(const fs::path& dir) : out_(dir / "smtp-sink.out"), port_(test::free_port()) {
    const std::string user = getuid() == 0 ? " -u nobody" : "";  // it refuses to run as root
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      setpgid(0, 0);
      const std::string command = "exec /usr/sbin/smtp-sink" + user + " -a -c 127.0.0.1:" + std::to_string(port_) + " 256 >'" +
                                  out_.string() + "' 2>&1";
      execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    if (!test::wait_for_port(port_)) throw std::runtime_error("smtp-sink did not start: " + slurp(out_));
  }
  ~Sink() {
    if (pid_ <= 0) return;
    kill(-pid_, SIGTERM);
    for (int i = 0; i < 50; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(20ms);
    }
    kill(-pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  Sink(const Sink&) = delete;
  std::uint16_t port() const { return port_; }

  struct Counters {
    long sessions = 0, messages = 0;
  };
  // The last complete "sess=S quit=Q mesg=M" (it reads only the end of the file).
  Counters counters() const {
    std::ifstream in(out_, std::ios::binary | std::ios::ate);
    const std::streamoff size = in.tellg();
    if (size <= 0) return {};
    const std::streamoff from = std::max<std::streamoff>(0, size - 512);
    std::string tail(static_cast<std::size_t>(size - from), '\0');
    in.seekg(from);
    in.read(tail.data(), static_cast<std::streamsize>(tail.size()));
    for (auto at = tail.rfind("sess="); at != std::string::npos; at = at ? tail.rfind("sess=", at - 1) : std::string::npos) {
      Counters c;
      if (std::sscanf(tail.c_str() + at, "sess=%ld quit=%*d mesg=%ld", &c.sessions, &c.messages) == 2) return c;
    }
    return {};
  }
  // The counters once they have `messages` more than `before` (smtp-sink prints after each
  // transaction, a moment after the client has its reply), or after `wait`.
  Counters counters_after(const Counters& before, int messages, std::chrono::milliseconds wait = 3s) const {
    const auto end = Clock::now() + wait;
    Counters c = counters();
    while (c.messages - before.messages < messages && Clock::now() < end) {
      std::this_thread::sleep_for(20ms);
      c = counters();
    }
    std::this_thread::sleep_for(100ms);  // the last QUITs
    return counters();
  }

 private:
  fs::path out_;
  std::uint16_t port_;
  pid_t pid_ = -1;
};

// smtp-source: N messages of SIZE bytes in SESSIONS parallel sessions, timed from spawn to exit;
// CPU from wait4().
Result run_smtp_source(const Sink& sink, const Options& o, bool reuse, const fs::path& dir) {
  const fs::path log = dir / "smtp-source.log";
  const std::string port = "127.0.0.1:" + std::to_string(sink.port());
  const std::string sessions = std::to_string(o.sessions), messages = std::to_string(o.messages), size = std::to_string(o.size);
  std::vector<const char*> args = {"smtp-source", "-s", sessions.c_str(), "-m", messages.c_str(), "-l", size.c_str(),
                                   "-f", kFrom, "-t", kTo, "-M", "smtp-source.bench"};
  if (reuse) args.push_back("-d");
  args.push_back(port.c_str());
  args.push_back(nullptr);

  const auto before = sink.counters();
  warn_if_busy("smtp-source");
  const auto cpu_before = CpuTimes::now();
  const auto start = Clock::now();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, "/usr/sbin/smtp-source", &actions, nullptr, const_cast<char* const*>(args.data()), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) throw std::runtime_error(std::string("cannot start /usr/sbin/smtp-source: ") + std::strerror(spawned));
  int status = 0;
  rusage ru{};
  const auto deadline = start + std::chrono::seconds(o.timeout_s);
  // Peak RSS: the last VmHWM read while it runs (every millisecond). Not wait4()'s ru_maxrss: on
  // exec Linux carries the old address space's peak into it, and that is this process's (fork or
  // vfork alike), which is bigger than smtp-source.
  double hwm_mib = 0;
  for (;;) {
    hwm_mib = std::max(hwm_mib, proc_status_mib(pid, "VmHWM"));
    const pid_t r = wait4(pid, &status, WNOHANG, &ru);
    if (r == pid) break;
    if (interrupted || Clock::now() > deadline) {
      kill(pid, SIGKILL);
      wait4(pid, &status, 0, &ru);
      throw std::runtime_error(interrupted ? "interrupted" : "smtp-source did not finish within the timeout");
    }
    std::this_thread::sleep_for(1ms);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double busy = CpuTimes::now().busy_since(cpu_before);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("smtp-source failed (status " + std::to_string(status) + "):\n" + slurp(log));
  const auto after = sink.counters_after(before, o.messages);
  Result r;
  r.tool = "smtp-source";
  r.messages = static_cast<int>(after.messages - before.messages);
  r.sessions = after.sessions - before.sessions;
  r.seconds = seconds;
  r.machine_busy = busy;
  r.rss_mib = hwm_mib;
  r.cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  if (r.messages != o.messages)
    throw std::runtime_error("smtp-sink counted " + std::to_string(r.messages) + " messages from smtp-source, not " +
                             std::to_string(o.messages) + ":\n" + slurp(log));
  return r;
}

// ---------------------------------------------------------------------------------------------
// mailgated.

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

// The last lines of a log.
std::string log_tail(const std::string& log, int lines = 30) {
  std::size_t at = log.size();
  for (int n = 0; n <= lines; ++n) {  // the last character is a line end: one more
    if (at == 0) return log;
    at = log.rfind('\n', at - 1);
    if (at == std::string::npos) return log;
  }
  return log.substr(at + 1);
}

// What the event=outbox_sent lines of mailgated's log say (millisecond stamps).
struct LogFigures {
  int sent = 0, warnings = 0;
  std::optional<double> first, last;
  double stalls_s = 0;  // the sum of gaps of 50 ms or more between consecutive sends
  int stalls = 0;
  double worst_gap = 0;
};

LogFigures read_log(const std::string& log) {
  LogFigures f;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" warning ") != std::string::npos || line.find(" error ") != std::string::npos) ++f.warnings;
    if (line.find("event=outbox_sent ") == std::string::npos) continue;
    const auto t = log_time(line);
    if (!t) continue;
    ++f.sent;
    if (f.last) {
      const double gap = *t - *f.last;
      f.worst_gap = std::max(f.worst_gap, gap);
      if (gap >= 0.05) {
        f.stalls_s += gap;
        ++f.stalls;
      }
    }
    if (!f.first) f.first = t;
    f.last = t;
  }
  return f;
}

struct Statement {
  std::string query;
  long calls = 0;
  double total_ms = 0;
  long rows = 0;
};

struct MailgateRun {
  Result result;
  int per_connection = 0;
  LogFigures log;
  double committed_at = 0;  // wall clock, seconds since the epoch, when the rows were committed
  double insert_s = 0;      // the INSERT ... SELECT of N rows
  double pg_cpu_s = 0, pg_hwm_mib = 0;
  int pg_backends = 0;
  double raw_bytes = 0;  // mean composed size (of the sent copies)
  long write_transactions = 0;  // transactions that wrote (took a transaction id), in the whole cluster
  long wal_syncs = 0;           // WAL fsyncs (a group commit syncs several transactions at once)
  double wal_mib = 0;
  double outbox_mib = 0, messages_mib = 0;  // tables with their indexes and TOAST, at the end
  long sent_copies = 0;  // messages filed in the "sent" folder
  int samples = 0, samples_active = 0, samples_in_transaction = 0;  // of the daemon's backends, every 50 ms
  std::vector<Statement> statements;  // --pg-statements: the costliest, by total execution time
};

// The same body for every message: ASCII lines of up to 72 characters (7bit, no transfer encoding
// needed), CRLF, exactly `size` bytes.
std::string body_of(int size) {
  static const char* const words[] = {"factuur", "ledenvergadering", "zonnepanelen", "afrekening", "termijn", "betaling",
                                      "de",      "het",              "een",          "van",        "voor",    "met",
                                      "energie", "cooperatie",       "opbrengst",    "groet"};
  std::string body, line;
  std::size_t k = 0;
  while (body.size() < static_cast<std::size_t>(size)) {
    const std::string word = words[k++ % (sizeof words / sizeof *words)];
    if (line.size() + word.size() + 1 > 72) {
      body += line + "\r\n";
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
  }
  body.resize(static_cast<std::size_t>(size) - 2);
  while (!body.empty() && (body.back() == '\r' || body.back() == ' ')) body.pop_back();
  body.append(static_cast<std::size_t>(size) - 2 - body.size(), '.');
  return body + "\r\n";
}

// mailgated on a fresh database of the shared cluster; the mailbox is made through the API, the
// rows by SQL; timed from the rows' commit until every row is 'sent'.
//
// The clock stops at the first 5 ms tick at which `SELECT count(*) FROM outbox WHERE state =
// 'sent'` is N. That count is asked only once smtp-sink has counted N messages from mailgated
// (until then the sink's counter is polled, which costs PostgreSQL nothing): a sequential scan of
// the outbox every 5 ms, on the same 2 cores, would slow down what it measures. (Ticks of 50 ms
// had added 25 ms on average to runs of 0.7 s.) Rows that failed
// or wait for a retry are looked for once a second, and end the run.
MailgateRun run_mailgate(test::PgCluster& pg, const Sink& sink, const Options& o, int per_connection, int run_number,
                         std::vector<fs::path>& leftovers) {
  const std::string database = "bench" + std::to_string(run_number);
  pqxx::connection admin(pg.admin_url());
  pqxx::nontransaction(admin).exec("CREATE DATABASE " + database);
  const std::string url = pg.url(database);
  {
    pqxx::connection c(url);
    migrate(c);
    pqxx::work tx(c);
    const auto id = tx.exec_params1("INSERT INTO users (email, first_name, password_hash) VALUES ($1, 'Bench', $2) RETURNING id",
                                    std::string(kAdminEmail), password_hash(kAdminPassword))[0]
                        .as<std::int64_t>();
    tx.exec_params("INSERT INTO user_roles (user_id, role) VALUES ($1, 'admin')", id);
    if (o.pg_statements) tx.exec("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    if (!o.sql_after_migrate.empty()) tx.exec(o.sql_after_migrate);
    tx.commit();
  }

  test::DaemonProcess daemon(url, "[security]\nallow_private_hosts = true\n[outbox]\npoll_interval_ms = " + std::to_string(o.poll_ms) +
                                      "\nhelo_name = \"mailgate.bench\"\n");
  daemon.edit_config("pool_size = 2", "pool_size = 4");              // the default of config/mailgate.example.toml
  daemon.edit_config("io_threads = 2", "io_threads = " + std::to_string(o.io_threads));
  daemon.edit_config("log_level = \"debug\"", "log_level = \"info\"");  // likewise
  leftovers.push_back(daemon.dir());
  daemon.start();
  const auto port = daemon.http_port();

  json::object login{{"email", kAdminEmail}, {"password", kAdminPassword}};
  auto session = api(port, "", "POST", "/api/v1/session", json::serialize(login));
  if (session.status != 201) throw std::runtime_error("login failed: " + std::to_string(session.status) + " " + session.body);
  const std::string token(json::parse(session.body).at("token").as_string());

  json::object mailbox{{"display_name", "Coöperatie Zon"}, {"address", kFrom},         {"incoming_type", "none"},
                       {"outgoing_type", "smtp"},          {"smtp_host", "127.0.0.1"}, {"smtp_port", sink.port()},
                       {"smtp_security", "plain"},         {"smtp_password", "x"}};
  auto created = api(port, token, "POST", "/api/v1/mailboxes", json::serialize(mailbox));
  if (created.status != 201) throw std::runtime_error("creating the mailbox failed: " + std::to_string(created.status) + " " + created.body);
  const auto mailbox_id = json::parse(created.body).at("id").as_int64();
  json::object limits{{"send_max_connections", o.sessions}, {"send_max_per_connection", per_connection}, {"send_max_per_minute", 100000}};
  auto patched = api(port, token, "PATCH", "/api/v1/mailboxes/" + std::to_string(mailbox_id), json::serialize(limits));
  if (patched.status != 200) throw std::runtime_error("setting the limits failed: " + std::to_string(patched.status) + " " + patched.body);

  // Cluster-wide counters, read on the admin connection (another database): the next transaction
  // id (every transaction that writes takes one), the WAL position, and the WAL fsyncs (backends
  // report those when idle for a while or when they exit: read again after the daemon stopped).
  auto xid_and_wal = [&admin] {
    const auto r = pqxx::nontransaction(admin).exec1(
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8");
    return std::make_pair(r[0].as<long>(), r[1].as<double>());
  };
  auto wal_syncs = [&admin] { return pqxx::nontransaction(admin).exec1("SELECT wal_sync FROM pg_stat_wal")[0].as<long>(); };

  pqxx::connection db(url);
  const std::string body = body_of(o.size);
  MailgateRun run;
  run.per_connection = per_connection;
  if (o.pg_statements) pqxx::nontransaction(db).exec("SELECT pg_stat_statements_reset()");
  const auto sink_before = sink.counters();
  warn_if_busy("mailgate");
  const auto insert_start = Clock::now();
  {
    pqxx::work tx(db);
    tx.exec_params(
        "INSERT INTO outbox (kind, mailbox_id, to_addresses, subject, text_body, message_id) "
        "SELECT 'message', $1, ARRAY[$2::text], 'Bericht ' || n, $3, '<bench-' || n || '@coop.nl>' FROM generate_series(1, $4) n",
        mailbox_id, std::string(kTo), body, o.messages);
    tx.commit();
  }
  const auto start = Clock::now();
  run.committed_at = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  run.insert_s = std::chrono::duration<double>(start - insert_start).count();
  const auto [xid_before, wal_before] = xid_and_wal();
  const long syncs_before = wal_syncs();
  const auto cpu_before = CpuTimes::now();
  const auto deadline = start + std::chrono::seconds(o.timeout_s);
  int sent = 0, tick_number = 0;
  for (auto tick = start;; tick += 5ms, ++tick_number) {
    pqxx::nontransaction q(db);
    if (tick_number % 10 == 0) {  // every 50 ms
      bool active = false, in_transaction = false;
      for (const auto& row : q.exec("SELECT state FROM pg_stat_activity WHERE datname = current_database() AND "
                                    "pid <> pg_backend_pid() AND backend_type = 'client backend'")) {
        const std::string state = row[0].is_null() ? "" : row[0].as<std::string>();
        active = active || state == "active";
        in_transaction = in_transaction || state.rfind("idle in transaction", 0) == 0;
      }
      ++run.samples;
      run.samples_active += active;
      run.samples_in_transaction += !active && in_transaction;
    }
    if (sink.counters().messages - sink_before.messages >= o.messages) {
      sent = q.exec1("SELECT count(*) FROM outbox WHERE state = 'sent'")[0].as<int>();
      if (sent >= o.messages) break;
    }
    if (tick_number % 200 == 199) {
      const int bad = q.exec1("SELECT count(*) FROM outbox WHERE state IN ('failed', 'retrying')")[0].as<int>();
      if (bad > 0)
        throw std::runtime_error(std::to_string(bad) + " outbox rows failed or wait for a retry; mailgated's log ends:\n" +
                                 log_tail(daemon.log()));
    }
    check_interrupted();
    if (!daemon.running()) throw std::runtime_error("mailgated exited while sending:\n" + log_tail(daemon.log()));
    if (Clock::now() > deadline)
      throw std::runtime_error("mailgated did not send " + std::to_string(o.messages) + " messages within the timeout (smtp-sink counted " +
                               std::to_string(sink.counters().messages - sink_before.messages) + "); its log ends:\n" +
                               log_tail(daemon.log()));
    std::this_thread::sleep_until(tick + 5ms);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double busy = CpuTimes::now().busy_since(cpu_before);
  const auto [xid_after, wal_after] = xid_and_wal();
  const auto sink_after = sink.counters_after(sink_before, o.messages);

  run.result.tool = "mailgate";
  run.result.messages = static_cast<int>(sink_after.messages - sink_before.messages);
  run.result.sessions = sink_after.sessions - sink_before.sessions;
  run.result.seconds = seconds;
  run.result.machine_busy = busy;
  run.result.rss_mib = proc_status_mib(daemon.pid(), "VmHWM");
  run.result.cpu_s = proc_cpu_seconds(daemon.pid());
  run.write_transactions = xid_after - xid_before;
  run.wal_mib = (wal_after - wal_before) / (1024.0 * 1024.0);
  // The daemon's own PostgreSQL backends (its pool): CPU and peak RSS, reported apart.
  for (const auto& row : pqxx::nontransaction(db).exec(
           "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")) {
    const pid_t pid = row[0].as<int>();
    run.pg_cpu_s += proc_cpu_seconds(pid);
    run.pg_hwm_mib += proc_status_mib(pid, "VmHWM");
    ++run.pg_backends;
  }
  {
    pqxx::nontransaction q(db);
    run.raw_bytes = q.exec1("SELECT coalesce(avg(raw_size), 0) FROM messages WHERE source = 'sent'")[0].as<double>();
    run.sent_copies = q.exec1("SELECT count(*) FROM messages WHERE source = 'sent'")[0].as<long>();
    const auto sizes = q.exec1("SELECT pg_total_relation_size('outbox'), pg_total_relation_size('messages')");
    run.outbox_mib = sizes[0].as<double>() / (1024.0 * 1024.0);
    run.messages_mib = sizes[1].as<double>() / (1024.0 * 1024.0);
    if (o.pg_statements)
      for (const auto& r : q.exec("SELECT regexp_replace(query, '\\s+', ' ', 'g'), calls, total_exec_time, rows FROM pg_stat_statements "
                                  "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                                  "AND query NOT LIKE '%pg_stat_activity%' ORDER BY total_exec_time DESC LIMIT 15"))
        run.statements.push_back({r[0].as<std::string>(), r[1].as<long>(), r[2].as<double>(), r[3].as<long>()});
  }
  run.log = read_log(daemon.log());
  daemon.stop(SIGTERM);
  std::this_thread::sleep_for(300ms);  // its backends report their WAL statistics as they exit
  run.wal_syncs = wal_syncs() - syncs_before;
  if (run.result.messages != o.messages)
    throw std::runtime_error("smtp-sink counted " + std::to_string(run.result.messages) + " messages from mailgated, not " +
                             std::to_string(o.messages) + " (all " + std::to_string(sent) + " rows are 'sent')");
  return run;
}

// ---------------------------------------------------------------------------------------------
// Reporting.

void print_header() {
  std::cout << fmt::format("\n{:<34} {:>8} {:>9} {:>9} {:>9} {:>13} {:>7} {:>8}\n", "sender", "messages", "sessions", "seconds",
                           "msgs/s", "peak RSS MiB", "CPU s", "machine");
}

void print_row(const std::string& label, const Result& r) {
  std::cout << fmt::format("{:<34} {:>8} {:>9} {:>9.3f} {:>9.0f} {:>13.1f} {:>7.2f} {:>7.0f}%\n", label, r.messages, r.sessions,
                           r.seconds, r.messages / r.seconds, r.rss_mib, r.cpu_s, 100 * r.machine_busy)
            << std::flush;
}

// The run of median duration (the upper one of an even count).
template <class T, class Seconds>
T median(std::vector<T> runs, Seconds seconds) {
  std::sort(runs.begin(), runs.end(), [&](const T& a, const T& b) { return seconds(a) < seconds(b); });
  return runs[runs.size() / 2];
}

// Where mailgated's time went: PostgreSQL, what its backends were doing, its log.
void print_details(const MailgateRun& mg, const Options& o) {
  const auto& f = mg.log;
  const double n = o.messages;
  std::cout << fmt::format("  {} rows inserted in one transaction in {:.3f} s (not counted); composed size {:.0f} bytes on average;\n"
                           "  {} copies filed in \"sent\"; {} SMTP sessions for {} messages.\n",
                           o.messages, mg.insert_s, mg.raw_bytes, mg.sent_copies, mg.result.sessions, mg.result.messages);
  std::cout << fmt::format("  PostgreSQL: {:.2f} writing transactions and {:.2f} WAL fsyncs per message ({} and {}), {:.1f} MiB\n"
                           "  of WAL ({:.1f} KiB per message); outbox {:.1f} MiB, messages {:.1f} MiB at the end; {} backends of\n"
                           "  the daemon used {:.2f} CPU s (not in the row above).\n",
                           mg.write_transactions / n, mg.wal_syncs / n, mg.write_transactions, mg.wal_syncs, mg.wal_mib,
                           mg.wal_mib * 1024 / n, mg.outbox_mib, mg.messages_mib, mg.pg_backends, mg.pg_cpu_s);
  std::cout << fmt::format("  CPU per message: {:.3f} ms in mailgated, {:.3f} ms in its PostgreSQL backends, {:.3f} ms in all.\n",
                           1000 * mg.result.cpu_s / n, 1000 * mg.pg_cpu_s / n, 1000 * (mg.result.cpu_s + mg.pg_cpu_s) / n);
  if (mg.samples > 0)
    std::cout << fmt::format("  Sampled every 50 ms: PostgreSQL executing a statement of the daemon {:.0f} %, a transaction open\n"
                             "  but waiting for the daemon {:.0f} %, no transaction open (SMTP, or nothing) {:.0f} %.\n",
                             100.0 * mg.samples_active / mg.samples, 100.0 * mg.samples_in_transaction / mg.samples,
                             100.0 * (mg.samples - mg.samples_active - mg.samples_in_transaction) / mg.samples);
  if (f.first && f.last && f.sent > 1) {
    const double span = *f.last - *f.first;
    std::cout << fmt::format("  mailgated log: first event=outbox_sent {:.3f} s after the commit, last {:.3f} s; {} lines,\n"
                             "  {:.0f} msgs/s between the first and the last; {} gaps of 50 ms or more without a send, {:.2f} s\n"
                             "  in all ({:.0f} % of that span), the longest {:.3f} s; {} warnings or errors.\n",
                             *f.first - mg.committed_at, *f.last - mg.committed_at, f.sent, span > 0 ? (f.sent - 1) / span : 0.0,
                             f.stalls, f.stalls_s, span > 0 ? 100 * f.stalls_s / span : 0.0, f.worst_gap, f.warnings)
              << std::flush;
  }
  if (!mg.statements.empty()) {
    std::cout << "  pg_stat_statements, the daemon's costliest statements (execution only: commits and their fsyncs,\n"
                 "  round trips and the daemon's own work are not in these):\n";
    std::cout << fmt::format("  {:>9} {:>7} {:>9} {:>8}  {}\n", "total ms", "calls", "ms/call", "rows", "statement");
    for (const auto& st : mg.statements)
      std::cout << fmt::format("  {:>9.0f} {:>7} {:>9.3f} {:>8}  {}\n", st.total_ms, st.calls, st.calls ? st.total_ms / st.calls : 0.0,
                               st.rows, st.query.substr(0, 110));
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
    std::string per;
    for (int p : o.per_connection) per += (per.empty() ? "" : ", ") + std::to_string(p);
    std::cout << "mailgate outbox benchmark: " << o.messages << " messages of " << o.size << " bytes (body) to smtp-sink, " << o.sessions
              << " sessions; mailgate with " << per << " messages per connection\n"
              << "Postfix " << first_line_of("dpkg-query -W -f '${Version}' postfix") << " (smtp-source, smtp-sink), "
              << first_line_of("/usr/lib/postgresql/15/bin/postgres --version") << " fsync " << (o.fsync ? "on" : "off") << ", "
              << std::thread::hardware_concurrency() << " cores\n"
              << std::flush;

    const fs::path work = test::temp_dir("bench-outbox");
    leftovers.push_back(work);
    Sink sink(work);

    std::optional<test::PgCluster> pg;
    if (o.run_mailgate) {
      setenv("MAILGATE_PG_FSYNC", o.fsync ? "on" : "off", 1);  // read by tools/pg-cluster's initdb
      pg.emplace(work / "pg");
      if (o.pg_statements) {
        {
          pqxx::connection admin(pg->admin_url());
          pqxx::nontransaction(admin).exec("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'");
        }
        pg->stop();
        pg->start();
      }
    }

    std::vector<Result> reused_runs, fresh_runs;
    std::map<int, std::vector<MailgateRun>> mailgate_runs;
    int run_number = 0;
    for (int round = 1; round <= o.rounds; ++round) {
      const std::string of = o.rounds > 1 ? fmt::format(" (round {} of {})", round, o.rounds) : "";
      if (o.run_source) {
        std::cout << "running smtp-source" << of << " -d: every session keeps its connection\n" << std::flush;
        reused_runs.push_back(run_smtp_source(sink, o, true, work));
        print_row("smtp-source -d", reused_runs.back());
        std::cout << "running smtp-source" << of << ": a new connection per message\n" << std::flush;
        fresh_runs.push_back(run_smtp_source(sink, o, false, work));
        print_row("smtp-source", fresh_runs.back());
      }
      if (o.run_mailgate) {
        for (int p : o.per_connection) {
          std::cout << "running mailgated" << of << ": fresh database, " << o.sessions << " connections, " << p
                    << " messages per connection, poll_interval_ms " << o.poll_ms << "\n"
                    << std::flush;
          const auto mg = run_mailgate(*pg, sink, o, p, ++run_number, leftovers);
          mailgate_runs[p].push_back(mg);
          print_row(fmt::format("mailgate, {}/connection", p), mg.result);
          print_details(mg, o);
        }
      }
    }

    std::cout << "\n" << (o.rounds > 1 ? "medians of " + std::to_string(o.rounds) + " rounds" : std::string("result")) << ":";
    print_header();
    auto seconds_of = [](const Result& r) { return r.seconds; };
    std::optional<Result> reused;
    if (!reused_runs.empty()) {
      reused = median(reused_runs, seconds_of);
      print_row("smtp-source -d (connection reused)", *reused);
      print_row("smtp-source (one per message)", median(fresh_runs, seconds_of));
    }
    std::vector<std::pair<int, Result>> mailgate;
    for (const auto& [p, runs] : mailgate_runs) {
      const auto m = median(runs, [](const MailgateRun& r) { return r.result.seconds; });
      mailgate.emplace_back(p, m.result);
      print_row(fmt::format("mailgate, {} per connection", p), m.result);
    }
    if (reused)
      for (const auto& [p, r] : mailgate)
        std::cout << fmt::format("ratio mailgate ({} per connection) / smtp-source -d (msgs/s): {:.3f}   (goal: >= 0.80)\n", p,
                                 reused->seconds / r.seconds);
    std::cout << "\nseconds: smtp-source from spawn to exit; mailgate from the commit of the N outbox rows until all are\n"
                 "'sent' (polled every 5 ms). messages and sessions: what smtp-sink counted. Peak RSS: VmHWM\n"
                 "(smtp-source's read every millisecond while it runs). CPU s: user + system of that process only\n"
                 "(PostgreSQL is reported apart). Machine: all cores, all processes. mailgate also reads every row\n"
                 "from PostgreSQL, composes it with GMime and files a copy of the composed bytes in \"sent\" through\n"
                 "the ingest pipeline, committing the outcomes of each chunk of 20 while the next is sent;\n"
                 "smtp-source sends a generated payload and stores nothing.\n";
  } catch (const std::exception& e) {
    std::cerr << "mailgate_bench_outbox: " << e.what() << "\n";
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
