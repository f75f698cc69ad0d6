#include "tests/support/tcp_proxy.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <list>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/support/daemon_process.hpp"

namespace mailgate::test {

namespace {

void non_blocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

struct Conn {
  int client = -1, server = -1;
  std::string to_client, to_server;  // received, not yet written
  std::uint64_t from_server = 0;
  bool closing = false;  // cut: flush what is owed to the client, then close both sides
  bool cut = false;
};

void close_conn(Conn& c) {
  if (c.client >= 0) ::close(c.client);
  if (c.server >= 0) ::close(c.server);
  c.client = c.server = -1;
}

// Writes what it can; false when the peer is gone.
bool flush(int fd, std::string& pending) {
  while (!pending.empty()) {
    ssize_t n = ::send(fd, pending.data(), pending.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      pending.erase(0, static_cast<std::size_t>(n));
      continue;
    }
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
  }
  return true;
}

}  // namespace

TcpProxy::TcpProxy(std::uint16_t target_port) : target_port_(target_port) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = loopback(0);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_fd_, 64) != 0)
    throw std::runtime_error("tcp proxy: cannot listen on 127.0.0.1");
  socklen_t len = sizeof a;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  non_blocking(listen_fd_);
  if (::pipe(wake_fds_) != 0) throw std::runtime_error("tcp proxy: pipe");
  non_blocking(wake_fds_[0]);
  non_blocking(wake_fds_[1]);
  thread_ = std::thread([this] { run(); });
}

TcpProxy::~TcpProxy() {
  stopping_ = true;
  wake();
  if (thread_.joinable()) thread_.join();
  ::close(listen_fd_);
  ::close(wake_fds_[0]);
  ::close(wake_fds_[1]);
}

void TcpProxy::wake() {
  char c = 1;
  [[maybe_unused]] auto n = ::write(wake_fds_[1], &c, 1);
}

void TcpProxy::cut_after_server_bytes(std::uint64_t n) {
  cut_at_ = n;
  cut_done_ = false;
  cut_armed_ = true;
  wake();
}

void TcpProxy::rewrite_from_server(std::string from, std::string to) {
  std::lock_guard lock(rewrite_mutex_);
  rewrite_from_ = std::move(from);
  rewrite_to_ = std::move(to);
}

std::string TcpProxy::client_transcript() const {
  std::lock_guard lock(rewrite_mutex_);
  return transcript_;
}

int TcpProxy::drop_all() {
  std::lock_guard lock(drop_mutex_);
  drop_requested_ = true;
  wake();
  while (drop_requested_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return dropped_;
}

void TcpProxy::run() {
  std::list<Conn> conns;
  std::vector<pollfd> fds;
  std::vector<char> buffer(64 * 1024);
  while (!stopping_) {
    if (drop_requested_) {
      dropped_ = static_cast<int>(conns.size());
      for (auto& c : conns) close_conn(c);
      conns.clear();
      open_ = 0;
      drop_requested_ = false;
    }
    fds.clear();
    fds.push_back({wake_fds_[0], POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (auto& c : conns) {
      const short client_events = static_cast<short>((c.to_server.empty() && !c.closing ? POLLIN : 0) | (c.to_client.empty() ? 0 : POLLOUT));
      const short server_events = static_cast<short>((c.to_client.empty() && !c.closing ? POLLIN : 0) | (c.to_server.empty() ? 0 : POLLOUT));
      fds.push_back({c.client, client_events, 0});
      fds.push_back({c.server, server_events, 0});
    }
    if (::poll(fds.data(), fds.size(), 1000) < 0) continue;
    if (fds[0].revents) {
      char drain[64];
      while (::read(wake_fds_[0], drain, sizeof drain) > 0) {
      }
    }
    std::size_t i = 2;
    for (auto it = conns.begin(); it != conns.end(); i += 2) {
      Conn& c = *it;
      const short cr = fds[i].revents, sr = fds[i + 1].revents;
      bool alive = true;
      if (cr & POLLOUT) alive = flush(c.client, c.to_client) && alive;
      if (sr & POLLOUT) alive = flush(c.server, c.to_server) && alive;
      if (alive && (sr & (POLLIN | POLLHUP | POLLERR)) && c.to_client.empty() && !c.closing) {
        ssize_t n = ::recv(c.server, buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n > 0) {
          std::uint64_t take = static_cast<std::uint64_t>(n);
          if (cut_armed_ && c.from_server + take >= cut_at_) {
            take = cut_at_ > c.from_server ? cut_at_ - c.from_server : 0;
            cut_armed_ = false;
            c.closing = c.cut = true;
          }
          c.from_server += take;
          server_bytes_ += take;
          std::string chunk(buffer.data(), static_cast<std::size_t>(take));
          {
            std::lock_guard lock(rewrite_mutex_);
            if (!rewrite_from_.empty())
              for (auto at = chunk.find(rewrite_from_); at != std::string::npos; at = chunk.find(rewrite_from_, at + rewrite_to_.size()))
                chunk.replace(at, rewrite_from_.size(), rewrite_to_);
          }
          c.to_client += chunk;
          alive = flush(c.client, c.to_client);
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
          flush(c.client, c.to_client);  // the server went away: pass on what it said, then go too
          alive = false;
        }
      }
      if (alive && (cr & (POLLIN | POLLHUP | POLLERR)) && c.to_server.empty() && !c.closing) {
        ssize_t n = ::recv(c.client, buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n > 0) {
          client_bytes_ += static_cast<std::uint64_t>(n);
          {
            std::lock_guard lock(rewrite_mutex_);
            if (transcript_.size() < (4u << 20)) transcript_.append(buffer.data(), static_cast<std::size_t>(n));
          }
          c.to_server.append(buffer.data(), static_cast<std::size_t>(n));
          alive = flush(c.server, c.to_server);
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
          flush(c.server, c.to_server);
          alive = false;
        }
      }
      if (c.closing && c.to_client.empty()) alive = false;
      if (!alive) {
        if (c.cut) cut_done_ = true;
        close_conn(c);
        it = conns.erase(it);
        --open_;
      } else {
        ++it;
      }
    }
    if (fds[1].revents & POLLIN) {
      for (;;) {
        int client = ::accept(listen_fd_, nullptr, nullptr);
        if (client < 0) break;
        int server = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a = loopback(target_port_);
        if (::connect(server, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
          ::close(server);
          ::close(client);
          continue;
        }
        non_blocking(client);
        non_blocking(server);
        Conn c;
        c.client = client;
        c.server = server;
        conns.push_back(std::move(c));
        ++connections_;
        ++open_;
      }
    }
  }
  for (auto& c : conns) close_conn(c);
}

}  // namespace mailgate::test
