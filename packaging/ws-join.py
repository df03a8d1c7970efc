#!/usr/bin/env python3
"""Joins a room the way MediaSoupVTT does, up to its two WebRTC transports, over a bare
WebSocket (standard library only, so it runs in the minimal Debian root of nspawn-check.sh).

  ws-join.py HOST PORT ROOM

Checks that the router's RTP capabilities come back and that the send and receive transports
are created with ICE candidates whose UDP ports the worker really bound (/proc/net/udp*).
Exit status 0 when all of that holds, 1 with the reason otherwise.
"""
import base64
import json
import os
import socket
import struct
import sys


class WebSocket:
    def __init__(self, host, port, path):
        self.sock = socket.create_connection((host, port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise SystemExit("connection closed during the WebSocket handshake")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise SystemExit(f"WebSocket upgrade refused: {status.decode(errors='replace')}")

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise SystemExit("the server closed the WebSocket")
            data += chunk
        return data

    def send(self, obj):
        payload = json.dumps(obj).encode()
        n = len(payload)
        if n < 126:
            header = bytes([0x81, 0x80 | n])
        elif n < 65536:
            header = bytes([0x81, 0x80 | 126]) + struct.pack("!H", n)
        else:
            header = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self):
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise SystemExit("the server closed the WebSocket")
            if opcode in (0x9, 0xA):
                continue
            message += payload
            if b0 & 0x80:
                return json.loads(message)


def bound_udp_ports():
    ports = set()
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        with open(name) as f:
            for line in f.readlines()[1:]:
                ports.add(int(line.split()[1].rsplit(":", 1)[1], 16))
    return ports


def main(host, port, room):
    ws = WebSocket(host, int(port), "/" + room)
    user = "nspawncheckuser1"
    n = 0

    def request(kind, **fields):
        nonlocal n
        rid = f"req_{n}"
        n += 1
        ws.send(dict(type=kind, requestId=rid, userId=user, **fields))
        while True:
            msg = ws.recv()
            if msg.get("requestId") == rid:
                if "error" in msg:
                    raise SystemExit(f"{kind} failed: {msg['error']}")
                return msg.get("data", msg)

    caps = request("getRouterRtpCapabilities")
    if not caps.get("codecs"):
        raise SystemExit(f"no codecs in the router's RTP capabilities: {caps}")
    print(f"router RTP capabilities: {len(caps['codecs'])} codecs")
    sctp = {"numStreams": {"OS": 1024, "MIS": 1024}}
    for producing in (True, False):
        t = request("createWebRtcTransport", forceTcp=False, producing=producing,
                    consuming=not producing, sctpCapabilities=sctp)
        candidates = t.get("iceCandidates") or []
        if not t.get("id") or not candidates or not t.get("dtlsParameters"):
            raise SystemExit(f"incomplete transport: {t}")
        udp = [c for c in candidates if c.get("protocol") == "udp"]
        bound = bound_udp_ports()
        unbound = [c["port"] for c in udp if c["port"] not in bound]
        print(f"{'send' if producing else 'recv'} transport {t['id']}: " +
              ", ".join(f"{c['protocol']} {c.get('address') or c.get('ip')}:{c['port']}"
                        for c in candidates))
        if not udp or unbound:
            raise SystemExit(f"UDP candidate ports not bound by the worker: {unbound or 'no UDP'}")
    print("both transports created; their UDP ports are bound")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
