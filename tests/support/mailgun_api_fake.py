#!/usr/bin/python3
"""A fake of Mailgun's sending API for mailgate's tests, written from Mailgun's public
documentation ("Send a message in MIME format": POST /v3/{domain_name}/messages.mime,
multipart/form-data with `to` (one field per recipient) and `message` (the MIME file), HTTP Basic
auth with user "api" and the private API key). Python 3 standard library only.

  mailgun_api_fake.py --port P --cert C --key K --out DIR --api-key KEY --domain D [--domain D2]
                      [--fail SPEC]

HTTPS on 127.0.0.1:P. Any path prefix before /v3/ is accepted and recorded (so that a test can give
the EU and the US base different prefixes on one fake).

  POST {prefix}/v3/{domain}/messages.mime
    wrong or missing Basic credentials   401, body "Forbidden" (text/plain, as Mailgun answers)
    unknown domain                       404 {"message": "Domain not found: D"}
    no `to` or no `message`              400 {"message": "'to' parameter is missing"} / "Need at least one of 'text', 'html', 'message' or 'template' parameters specified"
    else                                 200 {"id": "<...@D>", "message": "Queued. Thank you."}
  --fail SPEC: the first POSTs that pass the checks above answer, in order, as SPEC says instead:
    comma-separated items: 429[:S] (Too many requests, Retry-After: S when given), 500, 503[:S],
    400 ({"message": "'to' parameter is not a valid address. please check documentation"}),
    401 ("Forbidden").

Every POST is appended to DIR/records.jsonl as one JSON object: {"time", "prefix", "domain",
"status", "to": [...], "message_base64" (byte-exact), "id"}.
"""
import argparse
import base64
import http.server
import json
import os
import re
import ssl
import sys
import threading
import time
import uuid

lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    context = None
    args = None
    failures = []

    def setup(self):
        self.request = self.context.wrap_socket(self.request, server_side=True)
        super().setup()

    def log_message(self, fmt, *args):
        sys.stderr.write("mailgun_api_fake: " + (fmt % args) + "\n")

    def reply(self, status, body, content_type="application/json", headers=()):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def record(self, entry):
        entry["time"] = time.time()
        with lock:
            with open(os.path.join(self.args.out, "records.jsonl"), "a") as f:
                f.write(json.dumps(entry) + "\n")

    def do_GET(self):
        self.reply(404, {"message": "not found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or "0")
        body = self.rfile.read(length)
        m = re.fullmatch(r"(.*)/v3/([^/]+)/messages\.mime", self.path.split("?")[0])
        if not m:
            self.reply(404, {"message": "not found"})
            return
        prefix, domain = m.group(1), m.group(2)
        entry = {"prefix": prefix, "domain": domain, "to": [], "message_base64": "", "id": ""}
        expected = "Basic " + base64.b64encode(("api:" + self.args.api_key).encode()).decode()
        if self.headers.get("Authorization") != expected:
            entry["status"] = 401
            self.record(entry)
            self.reply(401, b"Forbidden", "text/plain")
            return
        if domain not in self.args.domain:
            entry["status"] = 404
            self.record(entry)
            self.reply(404, {"message": "Domain not found: " + domain})
            return
        fields = parse_form(self.headers.get("Content-Type", ""), body)
        entry["to"] = [v.decode() for n, v in fields if n == "to"]
        msg = [v for n, v in fields if n == "message"]
        entry["message_base64"] = base64.b64encode(msg[0]).decode() if msg else ""
        if not entry["to"]:
            entry["status"] = 400
            self.record(entry)
            self.reply(400, {"message": "'to' parameter is missing"})
            return
        if not msg:
            entry["status"] = 400
            self.record(entry)
            self.reply(400, {"message": "Need at least one of 'text', 'html', 'message' or 'template' parameters specified"})
            return
        with lock:
            fail = Handler.failures.pop(0) if Handler.failures else None
        if fail:
            code, _, wait = fail.partition(":")
            entry["status"] = int(code)
            self.record(entry)
            headers = [("Retry-After", wait)] if wait else []
            if code == "429":
                self.reply(429, {"message": "Too many requests"}, headers=headers)
            elif code == "400":
                self.reply(400, {"message": "'to' parameter is not a valid address. please check documentation"})
            elif code == "401":
                self.reply(401, b"Forbidden", "text/plain")
            else:
                self.reply(int(code), {"message": "Internal Server Error"}, headers=headers)
            return
        entry["status"] = 200
        entry["id"] = "<%s.%s@%s>" % (time.strftime("%Y%m%d%H%M%S"), uuid.uuid4().hex[:16], domain)
        self.record(entry)
        self.reply(200, {"id": entry["id"], "message": "Queued. Thank you."})


def parse_form(content_type, body):
    """multipart/form-data (RFC 7578) -> [(name, bytes)], byte-exact."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/form-data") or not m:
        return []
    delimiter = b"\r\n--" + m.group(1).encode()
    out = []
    for part in (b"\r\n" + body).split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        name = re.search(rb'name="([^"]*)"', head)
        out.append((name.group(1).decode() if name else "", data))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--domain", action="append", default=[])
    p.add_argument("--fail", default="")
    a = p.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    Handler.context = ctx
    Handler.args = a
    Handler.failures = [f for f in a.fail.split(",") if f]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    print("listening on %d" % a.port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
