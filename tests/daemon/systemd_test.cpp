// The systemd contract: READY=1 only once the listener answers, watchdog keep-alives from the
// event loop, STOPPING=1 on SIGTERM; and a unit file that systemd itself accepts.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <poll.h>

#include "tests/support/daemon_process.hpp"
#include "tests/support/pg_harness.hpp"

namespace mailgate {
namespace {

using namespace std::chrono_literals;

// A notification socket as systemd provides it: AF_UNIX datagrams, one message per datagram.
class NotifySocket {
 public:
  explicit NotifySocket(const std::filesystem::path& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("bind notify socket");
  }
  ~NotifySocket() {
    close(fd_);
    unlink(path_.c_str());
  }
  // The next datagram, or "" after `timeout`.
  std::string next(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return {};
    char buf[4096];
    ssize_t n = recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, n) : std::string();
  }

 private:
  std::filesystem::path path_;
  int fd_;
};

TEST(Systemd, ReadyAfterListeningThenWatchdogThenStopping) {
  test::DaemonProcess d(test::fresh_database());
  const auto sock_path = d.dir() / "notify.sock";
  NotifySocket notify(sock_path);
  d.set_env("NOTIFY_SOCKET=" + sock_path.string());
  d.set_env("WATCHDOG_USEC=400000");
  d.start();

  std::string ready;
  for (int i = 0; i < 20 && ready.find("READY=1") == std::string::npos; ++i) ready = notify.next(2s);
  ASSERT_NE(ready.find("READY=1"), std::string::npos) << d.log();
  EXPECT_TRUE(d.log().find("event=migrations_current") < d.log().find("event=listening"))
      << "migrations run before the listener opens\n" << d.log();

  int pings = 0;
  const auto until = std::chrono::steady_clock::now() + 1200ms;
  while (std::chrono::steady_clock::now() < until)
    if (notify.next(300ms) == "WATCHDOG=1") ++pings;
  EXPECT_GE(pings, 3) << "a keep-alive every WATCHDOG_USEC/2 = 200 ms";

  kill(d.pid(), SIGTERM);
  bool stopping = false;
  for (int i = 0; i < 20 && !stopping; ++i) stopping = notify.next(1s).find("STOPPING=1") != std::string::npos;
  EXPECT_TRUE(stopping);
  EXPECT_EQ(d.stop(0, 10s), 0) << d.log();
}

TEST(Systemd, UnitFileVerifies) {
  if (test::run_command("command -v systemd-analyze >/dev/null") != 0) GTEST_SKIP() << "systemd-analyze is not installed";
  auto dir = test::temp_dir("unit");
  std::ifstream in(std::string(MAILGATE_SOURCE_DIR) + "/systemd/mailgated.service");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string unit = ss.str();
  for (auto at = unit.find("/usr/bin/mailgated"); at != std::string::npos; at = unit.find("/usr/bin/mailgated", at + 1))
    unit.replace(at, 18, MAILGATE_BINARY);
  EXPECT_NE(unit.find("Type=notify"), std::string::npos);
  EXPECT_NE(unit.find("LoadCredential=secrets-key:"), std::string::npos);
  EXPECT_NE(unit.find("WatchdogSec="), std::string::npos);
  std::ofstream(dir / "mailgated.service") << unit;
  std::string out;
  int status = test::run_command("systemd-analyze verify --man=no " + (dir / "mailgated.service").string() + " 2>&1", &out);
  // Unknown users and missing /etc files are facts of the build machine, not faults of the unit.
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(out.find("Unknown key"), std::string::npos) << out;
  EXPECT_EQ(out.find("Invalid"), std::string::npos) << out;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace mailgate
