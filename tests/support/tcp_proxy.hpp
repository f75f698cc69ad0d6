// A small TCP proxy for tests that need the network to fail on cue: it listens on 127.0.0.1 on a
// free port and forwards every connection to 127.0.0.1:target_port, byte for byte (TLS passes
// through untouched), counting the bytes each way.
//
//   test::TcpProxy proxy(dovecot.imaps_port());
//   proxy.cut_after_server_bytes(2'000'000);   // the first connection to reach 2 MB is cut there
//   ... point the client at proxy.port() ...
//   proxy.drop_all();                           // every open connection, now
//
// A cut or a drop closes both sides: the client sees the server vanish (EOF or a truncated TLS
// stream), the server sees its client go. New connections are accepted and forwarded as before.
// One thread runs the proxy (poll), so the counters and cuts are exact.
#pragma once
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace mailgate::test {

class TcpProxy {
 public:
  explicit TcpProxy(std::uint16_t target_port);  // listening when it returns
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  std::uint16_t port() const { return port_; }

  // Arms a one-shot cut: the first connection that has received `n` bytes from the server (counted
  // from its start) gets exactly `n` bytes forwarded to the client and is then closed on both
  // sides. Later connections are not cut (until armed again).
  void cut_after_server_bytes(std::uint64_t n);
  bool cut_done() const { return cut_done_; }  // the armed cut happened

  // From now on, `from` in what the server sends is replaced by `to` before the client sees it
  // (say, a capability the client should not know of). Matched within one read from the server,
  // so meant for short lines such as a greeting. Counters and cuts see the server's bytes.
  void rewrite_from_server(std::string from, std::string to);

  // Closes every open connection now (both sides). Returns how many there were.
  int drop_all();

  // What clients sent, all connections in order of arrival (the first 4 MB): for asserting on
  // the commands of a plain-text connection.
  std::string client_transcript() const;

  std::uint64_t server_bytes() const { return server_bytes_; }  // forwarded server -> client, all connections
  std::uint64_t client_bytes() const { return client_bytes_; }  // forwarded client -> server
  int connections() const { return connections_; }              // accepted so far
  int open_connections() const { return open_; }

 private:
  void run();
  void wake();

  std::uint16_t target_port_, port_ = 0;
  int listen_fd_ = -1, wake_fds_[2] = {-1, -1};
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> cut_armed_{false}, cut_done_{false}, drop_requested_{false};
  std::atomic<std::uint64_t> cut_at_{0}, server_bytes_{0}, client_bytes_{0};
  std::atomic<int> connections_{0}, open_{0}, dropped_{0};
  std::mutex drop_mutex_;  // one drop_all() at a time
  mutable std::mutex rewrite_mutex_;  // also guards the transcript
  std::string transcript_;
  std::string rewrite_from_, rewrite_to_;
};

}  // namespace mailgate::test
