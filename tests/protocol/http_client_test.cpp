// protocol/http_client against tests/support/http_test_server.py (Python's http.server over TLS
// with a test CA): JSON, request bodies byte-exact, chunked responses, connection reuse and the
// retry on a kept-alive connection the server closed, certificate checks, deadlines, size limit;
// and the pure helpers (URLs, form encoding, multipart, Retry-After).
#include <gtest/gtest.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>

#include <chrono>
#include <thread>

#include "protocol/http_client.hpp"
#include "tests/support/https_fake.hpp"
#include "tests/support/run_coroutine.hpp"

namespace mailgate::http {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

class HttpClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server = new test::HttpsFake("http_test_server.py"); }
  static void TearDownTestSuite() {
    delete server;
    server = nullptr;
  }
  static ClientOptions options() {
    ClientOptions o;
    o.ca_file = server->ca_file().string();
    o.connect_timeout = 5s;
    o.request_timeout = 5s;
    return o;
  }
  static Request get(const std::string& target) {
    Request r;
    r.url = server->url() + target;
    return r;
  }
  static test::HttpsFake* server;
};
test::HttpsFake* HttpClientTest::server = nullptr;

TEST_F(HttpClientTest, GetsJson) {
  auto r = test::run_coroutine([](auto ex) -> asio::awaitable<Response> {
    Client client(ex, options());
    Request req = get("/json");
    co_return co_await client.send(std::move(req));
  });
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type").value_or(""), "application/json");
  auto doc = boost::json::parse(r.body).as_object();
  EXPECT_EQ(doc.at("hello").as_string(), "wereld");
  EXPECT_EQ(doc.at("agent").as_string(), "mailgate");
}

TEST_F(HttpClientTest, PostBodyArrivesByteExact) {
  std::string body;
  for (int i = 0; i < 300000; ++i) body += static_cast<char>(i * 7 % 256);  // every byte value, NULs and CR LF included
  auto r = test::run_coroutine([&](auto ex) -> asio::awaitable<Response> {
    Client client(ex, options());
    Request req;
    req.method = "POST";
    req.url = server->url() + "/echo";
    req.headers.push_back({"Content-Type", "application/octet-stream"});
    req.body = body;
    co_return co_await client.send(std::move(req));
  });
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("X-Got-Length").value_or(""), std::to_string(body.size()));
  EXPECT_EQ(r.header("X-Got-Type").value_or(""), "application/octet-stream");
  EXPECT_TRUE(r.body == body) << "the body came back different";
}

TEST_F(HttpClientTest, ChunkedAndCloseDelimitedResponses) {
  auto [chunked, until_close] = test::run_coroutine([](auto ex) -> asio::awaitable<std::pair<Response, Response>> {
    Client client(ex, options());
    Request a = get("/chunked"), b = get("/until-close");
    auto ra = co_await client.send(std::move(a));
    auto rb = co_await client.send(std::move(b));
    co_return std::make_pair(std::move(ra), std::move(rb));
  });
  EXPECT_EQ(chunked.status, 200);
  std::string expected = "Hallo in ";
  for (int i = 0; i < 1000; ++i) expected += "stukjes";
  expected += "!";
  EXPECT_EQ(chunked.body, expected);
  EXPECT_EQ(until_close.body, "tot het einde");
}

TEST_F(HttpClientTest, KeepsConnectionsAliveAndRetriesOneTheServerClosed) {
  auto [first, last, opened, bye] = test::run_coroutine([](auto ex) -> asio::awaitable<std::tuple<int, int, std::size_t, std::string>> {
    Client client(ex, options());
    Request c0 = get("/connections");
    Response r0 = co_await client.send(std::move(c0));
    const int first = std::stoi(r0.body);
    for (int i = 0; i < 5; ++i) {
      Request j = get("/json");
      co_await client.send(std::move(j));
    }
    Request c1 = get("/connections");
    Response r1 = co_await client.send(std::move(c1));
    const int after_six = std::stoi(r1.body);
    EXPECT_EQ(after_six, first) << "seven requests, one connection";
    EXPECT_EQ(client.connections_opened(), 1u);
    // The server answers, then closes the connection it let the client keep: the next request
    // meets a dead connection before any byte of an answer and goes again on a fresh one.
    Request tc = get("/then-close");
    Response rb = co_await client.send(std::move(tc));
    std::string bye = rb.body;
    asio::steady_timer pause(ex, 200ms);
    co_await pause.async_wait(asio::use_awaitable);
    Request c2 = get("/connections");
    Response r2 = co_await client.send(std::move(c2));
    const int last = std::stoi(r2.body);
    co_return std::make_tuple(first, last, client.connections_opened(), bye);
  });
  EXPECT_EQ(bye, "bye");
  EXPECT_EQ(last, first + 1) << "a second connection after the server closed the first";
  EXPECT_EQ(opened, 2u) << "the retry opened exactly one more";
}

TEST_F(HttpClientTest, RefusesAWrongHostNameAndAnUnknownCa) {
  test::HttpsFake other("http_test_server.py", {}, "other.example");
  auto [wrong_name, unknown_ca] = test::run_coroutine([&](auto ex) -> asio::awaitable<std::pair<std::string, std::string>> {
    std::string a, b;
    {
      ClientOptions o = options();
      o.ca_file = other.ca_file().string();
      Client client(ex, o);
      Request r;
      r.url = other.url("localhost") + "/json";  // the certificate names other.example
      try {
        co_await client.send(std::move(r));
      } catch (const Error& e) {
        a = std::string(to_string(e.kind)) + ": " + e.what();
      }
    }
    {
      ClientOptions o = options();
      o.ca_file.clear();  // the system's CAs only
      Client client(ex, o);
      Request r = get("/json");
      try {
        co_await client.send(std::move(r));
      } catch (const Error& e) {
        b = std::string(to_string(e.kind)) + ": " + e.what();
      }
    }
    co_return std::make_pair(a, b);
  });
  EXPECT_EQ(wrong_name.rfind("tls: ", 0), 0u) << wrong_name;
  EXPECT_EQ(unknown_ca.rfind("tls: ", 0), 0u) << unknown_ca;
}

TEST_F(HttpClientTest, TimesOutAndLimitsTheResponseSize) {
  auto [timeout, too_large, fine, took] = test::run_coroutine([](auto ex) -> asio::awaitable<std::tuple<std::string, std::string, std::size_t, double>> {
    ClientOptions o = options();
    o.request_timeout = 1s;
    o.max_response_bytes = 100000;
    Client client(ex, o);
    std::string t, l;
    const auto start = std::chrono::steady_clock::now();
    Request slow = get("/slow?s=4");
    try {
      co_await client.send(std::move(slow));
    } catch (const Error& e) {
      t = to_string(e.kind);
    }
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    Request big = get("/big?n=100001");
    try {
      co_await client.send(std::move(big));
    } catch (const Error& e) {
      l = to_string(e.kind);
    }
    Request ok = get("/big?n=100000");
    auto r = co_await client.send(std::move(ok));
    co_return std::make_tuple(t, l, r.body.size(), took);
  });
  EXPECT_EQ(timeout, "timeout");
  EXPECT_GE(took, 0.9);
  EXPECT_LT(took, 3.0);
  EXPECT_EQ(too_large, "too_large");
  EXPECT_EQ(fine, 100000u);
}

TEST_F(HttpClientTest, RetryAfterAndRefusedUrls) {
  auto r = test::run_coroutine([](auto ex) -> asio::awaitable<Response> {
    Client client(ex, options());
    Request req = get("/retry-after?v=7");
    co_return co_await client.send(std::move(req));
  });
  EXPECT_EQ(r.status, 429);
  ASSERT_TRUE(r.retry_after());
  EXPECT_EQ(r.retry_after()->count(), 7);
  EXPECT_THROW(parse_url("http://example.org/"), Error);
  EXPECT_THROW(parse_url("https://user:pw@example.org/"), Error);
  EXPECT_THROW(parse_url("https:///x"), Error);
  EXPECT_THROW(parse_url("https://example.org:99999/"), Error);
}

TEST(HttpHelpers, UrlsFormsMultipartAndRetryAfter) {
  auto u = parse_url("https://api.eu.mailgun.net/v3/mg.coop.nl/messages.mime");
  EXPECT_EQ(u.host, "api.eu.mailgun.net");
  EXPECT_EQ(u.port, 443);
  EXPECT_EQ(u.target, "/v3/mg.coop.nl/messages.mime");
  u = parse_url("https://127.0.0.1:8443?x=1#frag");
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, 8443);
  EXPECT_EQ(u.target, "/?x=1");
  u = parse_url("https://[::1]:9/a");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 9);

  EXPECT_EQ(form_urlencode({{"grant_type", "client_credentials"}, {"scope", "https://graph.microsoft.com/.default"}, {"x", "a b&c=é"}}),
            "grant_type=client_credentials&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&x=a%20b%26c%3D%C3%A9");
  EXPECT_EQ(basic_auth("api", "key-123"), "Basic YXBpOmtleS0xMjM=");

  Multipart m;
  m.field("to", "jan@example.nl");
  m.file("message", "message.mime", "message/rfc822", "Subject: x\r\n\r\nbody\r\n");
  const std::string ct = m.content_type(), body = m.body();
  const std::string boundary = ct.substr(ct.find("boundary=") + 9);
  EXPECT_EQ(ct.rfind("multipart/form-data; boundary=", 0), 0u);
  EXPECT_EQ(body, "--" + boundary + "\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\njan@example.nl\r\n--" + boundary +
                      "\r\nContent-Disposition: form-data; name=\"message\"; filename=\"message.mime\"\r\nContent-Type: message/rfc822\r\n\r\n"
                      "Subject: x\r\n\r\nbody\r\n\r\n--" +
                      boundary + "--\r\n");

  Response r;
  r.headers.push_back({"retry-after", " 120 "});
  EXPECT_EQ(r.retry_after()->count(), 120);
  r.headers[0].value = "Wed, 21 Oct 2015 07:28:00 GMT";  // in the past
  EXPECT_EQ(r.retry_after()->count(), 0);
  r.headers[0].value = "soon";
  EXPECT_FALSE(r.retry_after());
}

}  // namespace
}  // namespace mailgate::http
