#!/usr/bin/python3
"""A private authoritative DNS server for mailgate's tests, on dnslib (Debian's python3-dnslib).

Listens on 127.0.0.1:PORT over UDP and TCP and answers from ZONE, a JSON file:

    {"records": [{"name": "example.test", "type": "TXT", "data": ["v=spf1 ", "-all"]},
                 {"name": "mx.example.test", "type": "A", "data": ["192.0.2.1"]}],
     "servfail": ["broken.example.test"],   # answered with SERVFAIL
     "drop": ["silent.example.test"],       # never answered
     "ttl": 300,                             # of every record (default 0: not to be cached)
     "negative_ttl": 60}                     # > 0: negative answers carry an SOA with this
                                             # TTL and MINIMUM (RFC 2308); default 0: no SOA

TXT data are the record's character-strings (longer ones are split at 255 bytes); MX data are
"PREFERENCE HOST". A name with records answers NOERROR with those of the asked type (a CNAME is
followed, like a recursive server would); a name that only has names below it answers NOERROR
with no data (RFC 8020); any other name NXDOMAIN. UDP replies respect the client's EDNS0 size
(512 bytes without EDNS0) and are truncated (TC) beyond it, so that clients retry over TCP.
ZONE is read again whenever the file changes. Every question is appended to LOG as
"udp|tcp NAME TYPE". Prints "ready" once it listens.
"""
import argparse
import json
import os
import socketserver
import struct
import sys
import threading

from dnslib import CNAME, EDNS0, MX, PTR, QTYPE, RCODE, RR, SOA, TXT, A, AAAA, NS, DNSLabel, DNSRecord


class Zone:
    def __init__(self, path):
        self.path = path
        self.stamp = None
        self.lock = threading.Lock()
        self.load()

    def load(self):
        st = os.stat(self.path)
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self.stamp:
            return
        with open(self.path) as f:
            z = json.load(f)
        records = {}
        for r in z.get("records", []):
            records.setdefault(r["name"].lower().rstrip("."), []).append((r["type"].upper(), r["data"]))
        self.records = records
        self.servfail = {n.lower().rstrip(".") for n in z.get("servfail", [])}
        self.drop = {n.lower().rstrip(".") for n in z.get("drop", [])}
        self.ttl = int(z.get("ttl", 0))
        self.negative_ttl = int(z.get("negative_ttl", 0))
        self.stamp = stamp

    def rdata(self, rtype, data):
        if rtype == "TXT":
            parts = []
            for s in data:
                b = s.encode()
                parts.extend([b[i:i + 255] for i in range(0, len(b), 255)] or [b""])
            return TXT(parts)
        if rtype == "A":
            return A(data[0])
        if rtype == "AAAA":
            return AAAA(data[0])
        if rtype == "MX":
            pref, host = data[0].split()
            return MX(host, int(pref))
        if rtype == "PTR":
            return PTR(data[0])
        if rtype == "CNAME":
            return CNAME(data[0])
        if rtype == "NS":
            return NS(data[0])
        raise ValueError("unsupported type " + rtype)

    def answer(self, request):
        """The reply to `request`, or None to stay silent."""
        with self.lock:
            self.load()
            qname = str(request.q.qname).lower().rstrip(".")
            qtype = QTYPE[request.q.qtype]
            reply = request.reply()
            reply.header.aa = 1
            reply.header.ra = 1
            if qname in self.drop:
                return None
            if qname in self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            name = qname
            for _ in range(8):
                rrs = self.records.get(name)
                if rrs is None:
                    break
                cnames = [d for t, d in rrs if t == "CNAME"]
                if cnames and qtype != "CNAME":
                    reply.add_answer(RR(DNSLabel(name), QTYPE.CNAME, rdata=self.rdata("CNAME", cnames[0]), ttl=self.ttl))
                    name = cnames[0][0].lower().rstrip(".")
                    continue
                for t, d in rrs:
                    if t == qtype:
                        reply.add_answer(RR(DNSLabel(name), getattr(QTYPE, t), rdata=self.rdata(t, d), ttl=self.ttl))
                return self.negative(reply)
            exists = name in self.records or any(n.endswith("." + name) for n in self.records)
            if not exists and not reply.rr:
                reply.header.rcode = RCODE.NXDOMAIN
            return self.negative(reply)

    def negative(self, reply):
        """With negative_ttl, a reply without answers gets an SOA in its authority section."""
        if self.negative_ttl > 0 and not reply.rr:
            soa = SOA("ns.test", "hostmaster.test", (1, 3600, 600, 86400, self.negative_ttl))
            reply.add_auth(RR(DNSLabel("test"), QTYPE.SOA, rdata=soa, ttl=self.negative_ttl))
        return reply


class Server:
    def __init__(self, zone, log_path):
        self.zone = zone
        self.log = open(log_path, "a", buffering=1)
        self.log_lock = threading.Lock()

    def handle(self, data, proto):
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None
        with self.log_lock:
            self.log.write("%s %s %s\n" % (proto, str(request.q.qname).rstrip("."), QTYPE.get(request.q.qtype, request.q.qtype)))
        reply = self.zone.answer(request)
        if reply is None:
            return None
        limit = 65535
        if proto == "udp":
            opt = [r for r in request.ar if r.rtype == QTYPE.OPT]
            limit = max(512, min(opt[0].rclass, 4096)) if opt else 512
            if opt:
                reply.add_ar(EDNS0(udp_len=1232))
        packed = reply.pack()
        if len(packed) > limit:
            reply.rr = []
            reply.header.tc = 1
            packed = reply.pack()
        return packed


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--zone", required=True)
    p.add_argument("--log", required=True)
    args = p.parse_args()
    server = Server(Zone(args.zone), args.log)

    class Udp(socketserver.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            out = server.handle(data, "udp")
            if out is not None:
                sock.sendto(out, self.client_address)

    class Tcp(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                head = self.request.recv(2)
                if len(head) < 2:
                    return
                (n,) = struct.unpack("!H", head)
                data = b""
                while len(data) < n:
                    chunk = self.request.recv(n - len(data))
                    if not chunk:
                        return
                    data += chunk
                out = server.handle(data, "tcp")
                if out is None:
                    return
                self.request.sendall(struct.pack("!H", len(out)) + out)

    class UdpServer(socketserver.ThreadingUDPServer):
        daemon_threads = True

    class TcpServer(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    udp = UdpServer(("127.0.0.1", args.port), Udp)
    tcp = TcpServer(("127.0.0.1", args.port), Tcp)
    threading.Thread(target=udp.serve_forever, daemon=True).start()
    print("ready", flush=True)
    tcp.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
