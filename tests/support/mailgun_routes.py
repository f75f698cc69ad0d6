#!/usr/bin/python3
"""A Mailgun route sender for tests: posts a message to a forward() URL as Mailgun does.

Written from Mailgun's public documentation ("Receiving Messages via HTTP through a forward()
action", "Securing Webhooks"):
- signature = hex HMAC-SHA256(key = the HTTP webhook signing key, msg = timestamp + token),
  token = 50 random characters, timestamp = Unix seconds;
- a URL ending in "mime" gets the raw message in the field body-mime (multipart/form-data);
- any other URL gets the parsed form: message-headers (JSON list of [name, value], order kept),
  body-plain, body-html, attachment-count and attachment-1..N file parts (multipart/form-data),
  or application/x-www-form-urlencoded when there are no attachments.

Python 3 standard library only. Usage (prints one JSON object on stdout):

  mailgun_routes.py send --url URL --key KEY --eml FILE [--form mime|fields] [--age SECONDS]
        [--token T] [--timestamp N] [--corrupt first|last] [--cafile CA] [--repeat N]
        [--extra-fields N] [--filler BYTES]
      -> {"status": 200, "body": "...", "token": "...", "timestamp": "...", "statuses": [...]}
      (--repeat posts the identical request N times on one connection; statuses lists them)

  mailgun_routes.py timing --url URL --key KEY --eml FILE --count N [--cafile CA]
      -> {"first_ms": median, "last_ms": median, "statuses": [distinct statuses]}
      Interleaves requests whose signature is wrong in its first and in its last hex digit.
"""
import argparse
import email
import email.policy
import hashlib
import hmac
import http.client
import json
import secrets
import ssl
import statistics
import sys
import time
import urllib.parse


def sign(key, timestamp, token):
    return hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def new_token():
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(50))


def unfold(value):
    # RFC 5322 unfolding: a line break followed by white space is removed, the space kept.
    return value.replace("\r\n", "\n").replace("\n ", " ").replace("\n\t", "\t")


def parsed_fields(raw):
    """The parsed form of a raw message, as Mailgun posts it: (fields, files)."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    headers = [[name, unfold(str(value))] for name, value in msg.items()]
    fields = [
        ("recipient", msg.get("To", "")),
        ("sender", msg.get("From", "")),
        ("from", msg.get("From", "")),
        ("subject", msg.get("Subject", "")),
        ("message-headers", json.dumps(headers)),
    ]
    plain = html = None
    files = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        filename = part.get_filename()
        payload = part.get_payload(decode=True) or b""
        if disposition != "attachment" and not filename and ctype in ("text/plain", "text/html"):
            text = payload.decode(part.get_content_charset() or "us-ascii", errors="replace")
            if ctype == "text/plain" and plain is None:
                plain = text
                continue
            if ctype == "text/html" and html is None:
                html = text
                continue
        files.append((filename or "", ctype, payload))
    fields.append(("body-plain", plain if plain is not None else ""))
    if html is not None:
        fields.append(("body-html", html))
    if files:
        fields.append(("attachment-count", str(len(files))))
    return fields, files


def multipart(fields, files):
    boundary = "mgr" + secrets.token_hex(16)
    out = []
    for name, value in fields:
        out.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n" % (boundary, name)).encode())
        out.append(value.encode() if isinstance(value, str) else value)
        out.append(b"\r\n")
    for i, (filename, ctype, data) in enumerate(files, 1):
        quoted = filename.replace("\\", "\\\\").replace('"', "%22")
        out.append(("--%s\r\nContent-Disposition: form-data; name=\"attachment-%d\"; filename=\"%s\"\r\n"
                    "Content-Type: %s\r\n\r\n" % (boundary, i, quoted, ctype)).encode())
        out.append(data)
        out.append(b"\r\n")
    out.append(("--%s--\r\n" % boundary).encode())
    return b"".join(out), "multipart/form-data; boundary=" + boundary


def build_body(raw, form, timestamp, token, signature, extra_fields=0, filler=0):
    auth = [("timestamp", timestamp), ("token", token), ("signature", signature)]
    extra = [("x-extra-%d" % i, "x") for i in range(extra_fields)]
    if filler:
        extra.append(("x-filler", "f" * filler))
    if form == "mime":
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        fields = [("recipient", msg.get("To", "")), ("sender", msg.get("From", "")), ("from", msg.get("From", "")),
                  ("subject", msg.get("Subject", "")), ("body-mime", raw)] + auth + extra
        return multipart(fields, [])
    fields, files = parsed_fields(raw)
    fields = fields + auth + extra
    if files:
        return multipart(fields, files)
    body = urllib.parse.urlencode(fields).encode()
    return body, "application/x-www-form-urlencoded"


class Poster:
    def __init__(self, url, cafile):
        self.url = urllib.parse.urlsplit(url)
        self.cafile = cafile
        self.conn = None

    def connect(self):
        if self.url.scheme == "https":
            ctx = ssl.create_default_context(cafile=self.cafile) if self.cafile else ssl.create_default_context()
            self.conn = http.client.HTTPSConnection(self.url.hostname, self.url.port, context=ctx, timeout=60)
        else:
            self.conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=60)

    def post(self, body, ctype):
        for attempt in (1, 2):
            if self.conn is None:
                self.connect()
            try:
                self.conn.request("POST", self.url.path, body=body, headers={"Content-Type": ctype})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return resp.status, data.decode(errors="replace")
            except (ConnectionError, http.client.HTTPException, ssl.SSLError, OSError):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    return 0, ""


def corrupt(signature, where):
    i = 0 if where == "first" else len(signature) - 1
    c = "0" if signature[i] != "0" else "1"
    return signature[:i] + c + signature[i + 1:]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["send", "timing"])
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--eml", required=True)
    p.add_argument("--form", default="mime", choices=["mime", "fields"])
    p.add_argument("--age", type=int, default=0)
    p.add_argument("--timestamp")
    p.add_argument("--token")
    p.add_argument("--corrupt", choices=["first", "last"])
    p.add_argument("--cafile")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--extra-fields", type=int, default=0)
    p.add_argument("--filler", type=int, default=0)
    a = p.parse_args()
    with open(a.eml, "rb") as f:
        raw = f.read()
    poster = Poster(a.url, a.cafile)

    if a.command == "send":
        timestamp = a.timestamp or str(int(time.time()) - a.age)
        token = a.token or new_token()
        signature = sign(a.key, timestamp, token)
        if a.corrupt:
            signature = corrupt(signature, a.corrupt)
        body, ctype = build_body(raw, a.form, timestamp, token, signature, a.extra_fields, a.filler)
        statuses = []
        text = ""
        for _ in range(a.repeat):
            status, text = poster.post(body, ctype)
            statuses.append(status)
        print(json.dumps({"status": statuses[-1], "body": text, "token": token, "timestamp": timestamp, "statuses": statuses}))
        return 0

    times = {"first": [], "last": []}
    statuses = set()
    for i in range(a.count):
        where = "first" if i % 2 == 0 else "last"
        timestamp = str(int(time.time()))
        token = new_token()
        body, ctype = build_body(raw, a.form, timestamp, token, corrupt(sign(a.key, timestamp, token), where))
        started = time.perf_counter()
        status, _ = poster.post(body, ctype)
        times[where].append((time.perf_counter() - started) * 1000.0)
        statuses.add(status)
    print(json.dumps({"first_ms": statistics.median(times["first"]), "last_ms": statistics.median(times["last"]),
                      "statuses": sorted(statuses)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
