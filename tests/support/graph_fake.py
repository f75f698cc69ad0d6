#!/usr/bin/python3
"""A fake Microsoft Graph and Microsoft identity platform token endpoint for mailgate's tests.

Written from Microsoft's public documentation (client credentials flow, message delta query,
message $value, user sendMail with MIME, throttling). Python 3 standard library only.

Two listeners on 127.0.0.1:
- --port: HTTPS (certificate --cert/--key, e.g. from the tests' make_test_certs CA). Both the token
  endpoint and the Graph API live here, so [graph] login_base = "https://127.0.0.1:PORT" and
  api_base = "https://127.0.0.1:PORT/v1.0".
- --control-port: plain HTTP, the tests' control API (below).
Port 0 picks a free port. Prints "listening PORT CONTROL_PORT" once both listen.

Identity (--tenant, --client-id, --client-secret, --user; more users appear when a message is
added for them):
  POST /{tenant}/oauth2/v2.0/token   form: grant_type=client_credentials, client_id,
      client_secret, scope (https://graph.microsoft.com/.default or
      https://outlook.office365.com/.default).
      200 {"token_type":"Bearer","expires_in":N,"ext_expires_in":N,"access_token":"..."}
      Errors as the platform gives them: {"error", "error_description" ("AADSTSnnnn: ..."),
      "error_codes", "timestamp", "trace_id", "correlation_id", "error_uri"}:
      unknown tenant 400 invalid_request AADSTS90002; wrong grant 400 unsupported_grant_type;
      unknown client 400 unauthorized_client AADSTS700016; wrong secret 401 invalid_client
      AADSTS7000215; expired-secret mode 401 invalid_client AADSTS7000222; bad scope 400
      invalid_scope AADSTS1002012.

Graph (every call needs "Authorization: Bearer <token>" of a token with the Graph scope: else 401
InvalidAuthenticationToken):
  GET /v1.0/users/{user}/mailFolders('inbox')/messages/delta   (also mailFolders/inbox)
      "Prefer: odata.maxpagesize=N" (default 10) answered with Preference-Applied. A round
      without a token lists every message present when the round began, N per page, each page
      with "@odata.nextLink" ($skiptoken) except the last, which has "@odata.deltaLink"
      ($deltatoken). Calling a deltaLink starts a round of what changed since: messages added,
      and removed ones as {"id", "@removed": {"reason": "deleted"}}. An unknown token: 410
      SyncStateNotFound. Items: {"@odata.type", "@odata.etag", "id", "receivedDateTime",
      "subject"}. Ids are immutable-id lookalikes (they contain '-', '_' and end with '=').
  GET /v1.0/users/{user}/messages/{id}/$value   the MIME bytes (404 ErrorItemNotFound if unknown).
  POST /v1.0/users/{user}/sendMail   Content-Type: text/plain, body = base64 of the MIME message:
      202, the decoded MIME recorded. Not base64: 400 ErrorMimeContentInvalidBase64String; over
      --max-send-bytes (4 MB) of MIME: 413 RequestEntityTooLarge; JSON bodies are recorded too
      (as "json") and answered 202.
  Other paths 404; "/v1.0" is optional in every Graph path.

Control API (plain HTTP on --control-port; JSON in and out):
  POST /_control/messages        {"user": U, "mime": "...", "subject": "..."} or
                                 {"user": U, "messages": [{"mime": ...} or {"mime_base64": ...}, ...]}
                                 -> {"ids": [...]} (added in order)
  POST /_control/delete          {"user": U, "id": ID}  (the next delta round reports it removed)
  POST /_control/throttle        {"count": K, "status": 429|503, "retry_after": S, "path": "substring"}
                                 the next K Graph requests (whose path contains "path", if given)
                                 answer status with Retry-After: S (omitted when S is null)
  POST /_control/credentials     {"client_secret": "...", "expired": true|false, "token_lifetime": N,
                                  "imap_user": U}
                                 any subset: the accepted secret, expired-secret mode, expires_in,
                                 the user /_introspect names (default --user)
  POST /_introspect              RFC 7662 token introspection (form token=...), for Dovecot's
                                 oauth2 passdb in XOAUTH2 tests: {"active": true, "username": U,
                                 "email": U, "scope", "exp"} for a live token of the Outlook scope
                                 (https://outlook.office365.com/.default), else {"active": false}
  POST /_control/delay           {"value_ms": N, "send_ms": M}  each $value answer waits N ms, each
                                 sendMail M ms (to catch a daemon mid-import, or to see concurrency)
  POST /_control/revoke_tokens   every access token issued so far stops working (401)
  POST /_control/reset           clears sent mail, the request log and the counters
  GET  /_control/sent            [{"user", "mime" (UTF-8, undecodable bytes replaced), "mime_base64"
                                  (byte-exact), "time"}] in order of arrival
  GET  /_control/stats           {"token_requests", "token_failures", "graph_requests", "introspections",
                                  "max_concurrent": {user: n}, "max_concurrent_all", "in_flight",
                                  "messages": {user: n}}
  GET  /_control/log             [{"start", "time", "method", "path", "status", "user"}] of Graph
                                 requests (when the request arrived and when it was answered:
                                 seconds, float, time.time())
"""
import argparse
import base64
import binascii
import datetime
import json
import os
import re
import secrets
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
OUTLOOK_SCOPE = "https://outlook.office365.com/.default"


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.tenant = args.tenant
        self.client_id = args.client_id
        self.client_secret = args.client_secret
        self.expired = False
        self.token_lifetime = 3599
        self.max_send_bytes = args.max_send_bytes
        self.tokens = {}  # token -> (scope, expires_at)
        self.seq = 0  # change counter: every add or delete takes the next number
        self.messages = {}  # user -> {id: {"seq", "mime", "subject", "received", "removed"}}
        self.messages[args.user.lower()] = {}
        self.rounds = {}  # skiptoken -> (user, since, until, offset); deltatoken -> (user, seq)
        self.throttle = None  # {"count", "status", "retry_after", "path"}
        self.value_delay = 0.0
        self.send_delay = 0.0
        self.sent = []
        self.log = []
        self.token_requests = 0
        self.token_failures = 0
        self.graph_requests = 0
        self.in_flight = {}
        self.in_flight_all = 0
        self.max_concurrent = {}
        self.max_concurrent_all = 0
        self.counter = 0
        self.imap_user = args.user  # whom an Outlook-scope token introspects as (XOAUTH2)
        self.introspections = 0

    def new_id(self):
        self.counter += 1
        raw = uuid.uuid4().bytes + self.counter.to_bytes(4, "big")
        # Immutable ids look like base64url with padding: "AAkALgAA...-_...="
        return "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A" + base64.urlsafe_b64encode(raw).decode().rstrip("=") + "AAA="

    def add_message(self, user, mime, subject=None):
        user = user.lower()
        box = self.messages.setdefault(user, {})
        self.seq += 1
        mid = self.new_id()
        if subject is None:
            m = re.search(r"^Subject: (.*)$", mime.decode("utf-8", "replace") if isinstance(mime, bytes) else mime, re.M | re.I)
            subject = m.group(1).strip() if m else ""
        box[mid] = {"seq": self.seq, "mime": mime if isinstance(mime, bytes) else mime.encode("utf-8"), "subject": subject,
                    "received": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "removed": False}
        return mid


def aad_error(status, error, code, text):
    now = datetime.datetime.now(datetime.timezone.utc)
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    return status, {
        "error": error,
        "error_description": "AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s" % (code, text, trace, corr, stamp),
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": "https://login.microsoftonline.com/error?code=%d" % code,
    }


def graph_error(status, code, message):
    return status, {"error": {"code": code, "message": message,
                              "innerError": {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                                             "request-id": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())}}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None
    base = ""  # https://127.0.0.1:PORT

    def setup(self):
        self.request.do_handshake()  # in this connection's thread (see TlsServer)
        super().setup()

    def log_message(self, fmt, *args):
        sys.stderr.write("graph_fake: " + (fmt % args) + "\n")

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def reply(self, status, payload, headers=(), content_type="application/json"):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.request_done()  # before the first byte: the client cannot see the answer while it still counts
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def dispatch(self, method):
        path = urllib.parse.urlsplit(self.path).path
        if re.fullmatch(r"/[^/]+/oauth2/v2\.0/token", path) and method == "POST":
            return self.token(path.split("/")[1])
        return self.graph(method)

    # --- token endpoint ------------------------------------------------------------------------

    def token(self, tenant):
        st = self.state
        form = urllib.parse.parse_qs(self.body().decode("utf-8", "replace"), keep_blank_values=True)
        get = lambda k: (form.get(k) or [""])[0]
        with st.lock:
            st.token_requests += 1
            if tenant != st.tenant:
                status, out = aad_error(400, "invalid_request", 90002, "Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud." % tenant)
            elif get("grant_type") != "client_credentials":
                status, out = aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type '%s'." % get("grant_type"))
            elif get("client_id") != st.client_id:
                status, out = aad_error(400, "unauthorized_client", 700016, "Application with identifier '%s' was not found in the directory '%s'." % (get("client_id"), tenant))
            elif st.expired:
                status, out = aad_error(401, "invalid_client", 7000222, "The provided client secret keys for app '%s' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds." % st.client_id)
            elif get("client_secret") != st.client_secret:
                status, out = aad_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'." % st.client_id)
            elif get("scope") not in (GRAPH_SCOPE, OUTLOOK_SCOPE):
                status, out = aad_error(400, "invalid_scope", 1002012, "The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)." % get("scope"))
            else:
                token = "eyJ0eXAiOiJKV1Qi." + secrets.token_urlsafe(32)
                st.tokens[token] = (get("scope"), time.time() + st.token_lifetime)
                status, out = 200, {"token_type": "Bearer", "expires_in": st.token_lifetime,
                                    "ext_expires_in": st.token_lifetime, "access_token": token}
            if status != 200:
                st.token_failures += 1
        self.reply(status, out, [("Cache-Control", "no-store, no-cache")])

    # --- Graph ---------------------------------------------------------------------------------

    def graph(self, method):
        st = self.state
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        if path.startswith("/v1.0/"):
            path = path[len("/v1.0"):]
        m = re.match(r"/users/([^/]+)", path)
        user = m.group(1).lower() if m else ""
        started = time.time()
        with st.lock:
            st.graph_requests += 1
            st.in_flight[user] = st.in_flight.get(user, 0) + 1
            st.in_flight_all += 1
            st.max_concurrent[user] = max(st.max_concurrent.get(user, 0), st.in_flight[user])
            st.max_concurrent_all = max(st.max_concurrent_all, st.in_flight_all)
        status = 500
        self.in_flight_user = user
        try:
            status = self.graph_call(method, path, split.query, user)
        finally:
            self.request_done()
            with st.lock:
                st.log.append({"start": started, "time": time.time(), "method": method, "path": self.path, "status": status, "user": user})

    def request_done(self):
        """A Graph request stops counting as in flight once its answer starts (or it failed)."""
        user = getattr(self, "in_flight_user", None)
        if user is None:
            return
        self.in_flight_user = None
        with self.state.lock:
            self.state.in_flight[user] -= 1
            self.state.in_flight_all -= 1

    def graph_call(self, method, path, query, user):
        st = self.state
        body = self.body() if method == "POST" else b""
        auth = self.headers.get("Authorization") or ""
        with st.lock:
            token = st.tokens.get(auth[len("Bearer "):]) if auth.startswith("Bearer ") else None
            t = st.throttle
            throttled = None
            if token and t and t["count"] > 0 and (not t.get("path") or t["path"] in self.path):
                t["count"] -= 1
                throttled = dict(t)
        if not token or token[0] != GRAPH_SCOPE or token[1] < time.time():
            status, out = graph_error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid." if token else "Access token is empty.")
            self.reply(status, out, [("WWW-Authenticate", 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize"')])
            return status
        if throttled:
            code = "TooManyRequests" if throttled["status"] == 429 else "ServiceUnavailable"
            status, out = graph_error(throttled["status"], code, "Application is over its MailboxConcurrency limit." if throttled["status"] == 429 else "Service unavailable.")
            hdrs = [] if throttled.get("retry_after") is None else [("Retry-After", str(throttled["retry_after"]))]
            self.reply(status, out, hdrs)
            return status

        m = re.fullmatch(r"/users/([^/]+)/mailFolders(?:\('inbox'\)|/inbox)/messages/delta", path, re.I)
        if m and method == "GET":
            return self.delta(user, urllib.parse.parse_qs(query))
        m = re.fullmatch(r"/users/([^/]+)/messages/([^/]+)/\$value", path)
        if m and method == "GET":
            with st.lock:
                msg = st.messages.get(user, {}).get(m.group(2))
                delay = st.value_delay
            if not msg or msg["removed"]:
                status, out = graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
                self.reply(status, out)
                return status
            if delay:
                time.sleep(delay)
            self.reply(200, msg["mime"], content_type="text/plain")
            return 200
        m = re.fullmatch(r"/users/([^/]+)/sendMail", path)
        if m and method == "POST":
            with st.lock:
                delay = st.send_delay
            if delay:
                time.sleep(delay)
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype == "application/json":
                with st.lock:
                    st.sent.append({"user": user, "json": body.decode("utf-8", "replace"), "time": time.time()})
                self.reply(202, b"", content_type="text/plain")
                return 202
            try:
                mime = base64.b64decode(body.strip(), validate=True)
            except (binascii.Error, ValueError):
                mime = None
            if not mime:
                status, out = graph_error(400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.")
                self.reply(status, out)
                return status
            if len(mime) > st.max_send_bytes:
                status, out = graph_error(413, "RequestEntityTooLarge", "The request is larger than the maximum allowed size.")
                self.reply(status, out)
                return status
            with st.lock:
                st.sent.append({"user": user, "mime": mime.decode("utf-8", "replace"),
                                "mime_base64": base64.b64encode(mime).decode(), "time": time.time()})
            self.reply(202, b"", content_type="text/plain")
            return 202
        status, out = graph_error(404, "ResourceNotFound" if method == "GET" else "BadRequest", "Resource not found for the segment '%s'." % path)
        self.reply(status, out)
        return status

    def delta(self, user, q):
        st = self.state
        size = 10
        prefer = self.headers.get("Prefer") or ""
        pm = re.search(r"odata\.maxpagesize=(\d+)", prefer)
        if pm:
            size = max(1, min(1000, int(pm.group(1))))
        link = "%s/v1.0/users/%s/mailFolders('inbox')/messages/delta" % (self.base, urllib.parse.quote(user, safe="@."))
        with st.lock:
            box = st.messages.setdefault(user, {})
            if "$skiptoken" in q:
                r = st.rounds.get("s:" + q["$skiptoken"][0])
                if not r or r[0] != user:
                    r = None
            elif "$deltatoken" in q:
                d = st.rounds.get("d:" + q["$deltatoken"][0])
                r = (user, d[1], st.seq, 0) if d and d[0] == user else None
            else:
                r = (user, 0, st.seq, 0)
            if r is None:
                status, out = graph_error(410, "SyncStateNotFound", "The sync state generation is not found or has expired.")
                self.reply(status, out)
                return status
            _, since, until, offset = r
            changed = sorted((m["seq"], mid, m) for mid, m in box.items() if since < m["seq"] <= until)
            if since == 0:
                changed = [c for c in changed if not c[2]["removed"]]  # a first round lists what is there
            page = changed[offset:offset + size]
            items = []
            for _, mid, m in page:
                if m["removed"]:
                    items.append({"@odata.type": "#microsoft.graph.message", "id": mid, "@removed": {"reason": "deleted"}})
                else:
                    items.append({"@odata.type": "#microsoft.graph.message", "@odata.etag": 'W/"CQAAABYAAAA%d"' % m["seq"],
                                  "id": mid, "receivedDateTime": m["received"], "subject": m["subject"]})
            out = {"@odata.context": "%s/v1.0/$metadata#Collection(message)" % self.base, "value": items}
            if offset + size < len(changed):
                token = secrets.token_urlsafe(24)
                st.rounds["s:" + token] = (user, since, until, offset + size)
                out["@odata.nextLink"] = link + "?$skiptoken=" + token
            else:
                token = secrets.token_urlsafe(24)
                st.rounds["d:" + token] = (user, until)
                out["@odata.deltaLink"] = link + "?$deltatoken=" + token
        self.reply(200, out, [("Preference-Applied", "odata.maxpagesize=%d" % size)])
        return 200


class ControlHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        st = self.state
        with st.lock:
            if self.path == "/_control/sent":
                return self.reply(200, st.sent)
            if self.path == "/_control/log":
                return self.reply(200, st.log)
            if self.path == "/_control/stats":
                return self.reply(200, {"token_requests": st.token_requests, "token_failures": st.token_failures,
                                        "graph_requests": st.graph_requests, "max_concurrent": st.max_concurrent,
                                        "max_concurrent_all": st.max_concurrent_all, "in_flight": st.in_flight_all,
                                        "introspections": st.introspections,
                                        "messages": {u: sum(1 for m in b.values() if not m["removed"]) for u, b in st.messages.items()}})
        self.reply(404, {"error": "unknown control path"})

    def do_POST(self):
        st = self.state
        n = int(self.headers.get("Content-Length") or 0)
        if self.path == "/_introspect":  # RFC 7662, for Dovecot's oauth2 passdb (XOAUTH2 tests)
            form = urllib.parse.parse_qs(self.rfile.read(n).decode("utf-8", "replace"))
            token = (form.get("token") or [""])[0]
            with st.lock:
                st.introspections += 1
                t = st.tokens.get(token)
                if t and t[0] == OUTLOOK_SCOPE and t[1] > time.time():
                    return self.reply(200, {"active": True, "scope": t[0], "username": st.imap_user, "email": st.imap_user,
                                            "exp": int(t[1])})
            return self.reply(200, {"active": False})
        try:
            req = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            return self.reply(400, {"error": "body is not JSON"})
        with st.lock:
            if self.path == "/_control/messages":
                user = req.get("user", "")
                msgs = req.get("messages") or [{"mime": req.get("mime", ""), "subject": req.get("subject")}]
                ids = [st.add_message(user, base64.b64decode(m["mime_base64"]) if "mime_base64" in m else m["mime"], m.get("subject"))
                       for m in msgs]
                return self.reply(200, {"ids": ids})
            if self.path == "/_control/delete":
                m = st.messages.get(req.get("user", "").lower(), {}).get(req.get("id"))
                if not m:
                    return self.reply(404, {"error": "no such message"})
                st.seq += 1
                m["seq"], m["removed"] = st.seq, True
                return self.reply(200, {})
            if self.path == "/_control/throttle":
                st.throttle = {"count": int(req.get("count", 1)), "status": int(req.get("status", 429)),
                               "retry_after": req.get("retry_after", 1), "path": req.get("path")}
                return self.reply(200, {})
            if self.path == "/_control/credentials":
                if "client_secret" in req:
                    st.client_secret = req["client_secret"]
                if "expired" in req:
                    st.expired = bool(req["expired"])
                if "imap_user" in req:
                    st.imap_user = req["imap_user"]
                if "token_lifetime" in req:
                    st.token_lifetime = int(req["token_lifetime"])
                return self.reply(200, {})
            if self.path == "/_control/delay":
                st.value_delay = float(req.get("value_ms", 0)) / 1000.0
                st.send_delay = float(req.get("send_ms", 0)) / 1000.0
                return self.reply(200, {})
            if self.path == "/_control/revoke_tokens":
                st.tokens.clear()
                return self.reply(200, {})
            if self.path == "/_control/reset":
                st.sent, st.log = [], []
                st.token_requests = st.token_failures = st.graph_requests = 0
                st.max_concurrent, st.max_concurrent_all = {}, 0
                return self.reply(200, {})
        self.reply(404, {"error": "unknown control path"})


class TlsServer(ThreadingHTTPServer):
    daemon_threads = True
    context = None

    def get_request(self):
        sock, addr = self.socket.accept()
        # The handshake runs in the connection's thread (first read), not in the accept loop.
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


class PlainServer(ThreadingHTTPServer):
    daemon_threads = True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--control-port", type=int, default=0)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--tenant", default="contoso-tenant")
    p.add_argument("--client-id", default="11111111-2222-3333-4444-555555555555")
    p.add_argument("--client-secret", default="s3cret~value")
    p.add_argument("--user", default="info@coop.nl")
    p.add_argument("--max-send-bytes", type=int, default=4 * 1024 * 1024)
    args = p.parse_args()

    state = State(args)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    TlsServer.context = ctx
    Handler.state = state
    ControlHandler.state = state
    api = TlsServer(("127.0.0.1", args.port), Handler)
    Handler.base = "https://127.0.0.1:%d" % api.server_address[1]
    control = PlainServer(("127.0.0.1", args.control_port), ControlHandler)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print("listening %d %d" % (api.server_address[1], control.server_address[1]), flush=True)
    try:
        api.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
