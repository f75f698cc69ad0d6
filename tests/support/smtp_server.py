#!/usr/bin/python3
"""A private SMTP server for mailgate's tests, on aiosmtpd (Debian's python3-aiosmtpd).

Listens on 127.0.0.1:PORT; with --cert/--key it offers STARTTLS (or, with --implicit-tls, speaks
TLS from the first byte, as on port 465) (and with --require-tls refuses
mail before it); with --user/--password it requires AUTH (PLAIN, LOGIN) over TLS. Every accepted
message is written byte-exact to OUT/<n>.eml with OUT/<n>.json holding the envelope, whether the
session was TLS, the authenticated login and the client's port (one port per connection).
--fail-first N answers the first N DATA with 451; --reject ADDRESS refuses that recipient with
550; --pipelining offers PIPELINING; --hang-up-at N drops the connection at the end of the Nth DATA,
unanswered and unstored. --xoauth2-introspect URL requires AUTH XOAUTH2 (the only mechanism offered, over TLS) and
checks its bearer token with RFC 7662 introspection at URL, as Office 365's SMTP checks the
Outlook-scope tokens of its tenant: the token must be active and name the SASL user. Prints
"ready" once it listens.
"""
import argparse
import asyncio
import base64
import binascii
import json
import os
import ssl
import urllib.parse
import urllib.request

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    def __init__(self, args):
        self.args = args
        self.count = 0
        self.data_seen = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        print("ehlo from port %d" % session.peer[1], flush=True)  # tests count connections by it
        if self.args.pipelining:  # aiosmtpd reads commands in order from its buffer: pipelining works
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.args.reject:
            return "550 5.1.1 <%s>: Recipient address rejected: no such user" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.data_seen += 1
        if self.data_seen == self.args.hang_up_at:  # the connection drops before an answer: nothing kept
            server.transport.close()
            return "421 4.4.2 closing"
        if self.data_seen <= self.args.fail_first:
            return "451 4.3.0 Temporary failure, try again later"
        self.count += 1
        name = os.path.join(self.args.out, "%06d" % self.count)
        with open(name + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content)
        meta = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "mail_options": envelope.mail_options,
            "tls": session.ssl is not None or self.args.implicit_tls,  # aiosmtpd sets ssl only after STARTTLS
            "login": getattr(session, "mailgate_login", None) if session.authenticated else None,
            "client_port": session.peer[1],
        }
        with open(name + ".json", "w") as f:
            json.dump(meta, f)
        os.rename(name + ".eml.tmp", name + ".eml")
        return "250 2.0.0 OK queued as %d" % self.count


class XoauthHandler(Handler):
    """Offers AUTH XOAUTH2: "user=U^Aauth=Bearer T^A^A" (base64), T checked by introspection."""

    async def auth_XOAUTH2(self, server, args):
        if len(args) < 2:
            await server.push("501 5.5.2 XOAUTH2 needs an initial response")
            return AuthResult(success=False, handled=True)
        try:
            fields = base64.b64decode(args[1], validate=True).decode().split("\x01")
        except (binascii.Error, UnicodeDecodeError):
            await server.push("501 5.5.2 Can't decode base64")
            return AuthResult(success=False, handled=True)
        user = next((f[5:] for f in fields if f.startswith("user=")), "")
        token = next((f[12:] for f in fields if f.startswith("auth=Bearer ")), "")
        body = urllib.parse.urlencode({"token": token}).encode()
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(
            None, lambda: json.load(urllib.request.urlopen(self.args.xoauth2_introspect, data=body, timeout=10)))
        print("AUTH XOAUTH2 user=%s active=%s username=%s" % (user, answer.get("active"), answer.get("username")), flush=True)
        if not answer.get("active") or answer.get("username", "").lower() != user.lower():
            return AuthResult(success=False, handled=False, message="535 5.7.3 Authentication unsuccessful")
        server.session.mailgate_login = user
        return AuthResult(success=True, auth_data=LoginPassword(user.encode(), b""))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--require-tls", action="store_true")
    p.add_argument("--implicit-tls", action="store_true")
    p.add_argument("--login-only", action="store_true", help="offer AUTH LOGIN but not PLAIN")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--reject", action="append", default=[])
    p.add_argument("--xoauth2-introspect")
    p.add_argument("--pipelining", action="store_true", help="offer PIPELINING (RFC 2920)")
    p.add_argument("--hang-up-at", type=int, default=0, help="drop the connection at the end of the Nth DATA")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)

    tls_context = None
    if args.cert:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.cert, args.key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login.decode() == args.user and auth_data.password.decode() == args.password
        if ok:
            session.mailgate_login = auth_data.login.decode()
        return AuthResult(success=ok, handled=False)

    handler = XoauthHandler(args) if args.xoauth2_introspect else Handler(args)

    def factory():
        kwargs = dict(hostname="sink.test", decode_data=False, enable_SMTPUTF8=True, data_size_limit=10 * 1024 * 1024)
        if tls_context and not args.implicit_tls:
            kwargs.update(tls_context=tls_context, require_starttls=args.require_tls)
        if args.user:
            # With implicit TLS aiosmtpd does not see the TLS (it tracks STARTTLS only): the whole
            # connection is TLS anyway.
            kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=not args.implicit_tls)
            if args.login_only:
                kwargs.update(auth_exclude_mechanism=["PLAIN"])
        elif args.xoauth2_introspect:
            kwargs.update(auth_required=True, auth_require_tls=not args.implicit_tls,
                          auth_exclude_mechanism=["PLAIN", "LOGIN"])
        return SMTP(handler, **kwargs)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(factory, "127.0.0.1", args.port, ssl=tls_context if args.implicit_tls else None))
    print("ready", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
