#!/usr/bin/python3
"""A small HTTPS/1.1 server for protocol/http_client's tests (stdlib only).

  http_test_server.py --port P --cert C --key K [--out DIR]

Paths:
  GET  /json                 a JSON document
  POST /echo                 the request body back; X-Got-Length, X-Got-Type, X-Got-Method headers
  GET  /chunked              a chunked response (several chunks, one of them empty-ish)
  GET  /connections          how many TCP connections were accepted so far (text)
  GET  /then-close           an ordinary keep-alive answer, after which the server closes the
                             connection without saying so (as a server whose idle timer fired)
  GET  /slow?s=N             answers after N seconds
  GET  /big?n=N              N bytes of body
  GET  /retry-after?v=V      429 with Retry-After: V
  GET  /until-close          a body delimited by closing the connection (no length, no chunks)
"""
import argparse
import http.server
import json
import ssl
import sys
import threading
import time
import urllib.parse

lock = threading.Lock()
connections = 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    context = None

    def setup(self):
        global connections
        with lock:
            connections += 1
        self.request = self.context.wrap_socket(self.request, server_side=True)
        super().setup()

    def log_message(self, fmt, *args):
        sys.stderr.write("http_test_server: " + (fmt % args) + "\n")

    def reply(self, status, body, content_type="text/plain", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/json":
            self.reply(200, json.dumps({"hello": "wereld", "n": 1, "agent": self.headers.get("User-Agent", "")}).encode(), "application/json")
        elif url.path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in [b"Hallo ", b"in ", b"stukjes" * 1000, b"!"]:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
                time.sleep(0.01)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        elif url.path == "/connections":
            with lock:
                n = connections
            self.reply(200, str(n).encode())
        elif url.path == "/then-close":
            self.reply(200, b"bye")
            self.close_connection = True
        elif url.path == "/slow":
            time.sleep(float(q.get("s", "5")))
            self.reply(200, b"late")
        elif url.path == "/big":
            self.reply(200, b"x" * int(q.get("n", "1000")))
        elif url.path == "/retry-after":
            self.reply(429, b"slow down", extra=[("Retry-After", q.get("v", "2"))])
        elif url.path == "/until-close":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"tot het einde")
            self.wfile.flush()
            self.close_connection = True
        else:
            self.reply(404, b"not found")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.reply(200, body, "application/octet-stream",
                   [("X-Got-Length", str(len(body))), ("X-Got-Type", self.headers.get("Content-Type", "")), ("X-Got-Method", "POST")])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--out")  # unused: nothing is recorded
    a = p.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    Handler.context = ctx
    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    print("listening on %d" % a.port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
