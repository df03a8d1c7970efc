#!/usr/bin/env python3
"""Sends real media through a running mediasoup-server and checks that it arrives.

  media-check.py HOST PORT ROOM [METRICS_URL]

Two WebRTC peers (aiortc, driven by pymediasoup's Device like mediasoup-client in a browser)
join ROOM over the MediaSoupVTT protocol (/work/shared/PROTOCOL.md): the sender produces an
audio track (opus) and a video track (VP8), the receiver consumes whatever `newProducer`
announces and reads the decoded frames. Passes when, within 30 s, the receiver's consumers
have received RTP packets and decoded frames of both kinds. With METRICS_URL it also checks
that mediasoup_server_media_bytes_total{direction="in"} and {direction="out"} grew (they
move with the stats polling, MEDIASOUP_STATS_INTERVAL_SECS).

Needs aiortc, pymediasoup and websockets (packaging/media-check.requirements.txt). Exit
status 0 when media flowed, 1 with the reason otherwise.
"""
import asyncio
import json
import os
import re
import sys
import time
import urllib.request

import websockets
from aiortc import AudioStreamTrack, VideoStreamTrack
from av import VideoFrame
from pymediasoup import AiortcHandler, Device
from pymediasoup.rtp_parameters import RtpCapabilities, RtpParameters

TIMEOUT = 30        # seconds for the media to arrive
MIN_PACKETS = 50    # per consumer: about 1 s of opus, a few video frames
MIN_FRAMES = 10     # decoded frames per consumer
SCTP = {"numStreams": {"OS": 1024, "MIS": 1024}}
T0 = time.monotonic()


def log(text):
    print(f"[{time.monotonic() - T0:5.1f} s] {text}", flush=True)


class SmallVideo(VideoStreamTrack):
    """160x120 frames at 15 fps: real VP8 with little CPU."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        self.n += 1
        frame = VideoFrame(width=160, height=120, format="yuv420p")
        for plane, value in zip(frame.planes, ((self.n * 7) % 256, 128, 128)):
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        return frame


class Peer:
    """One WebSocket peer: requests matched on requestId, notifications queued."""

    def __init__(self, url, user):
        self.url, self.user, self.n = url, user, 0
        self.pending, self.notifications = {}, asyncio.Queue()

    async def open(self):
        self.ws = await websockets.connect(self.url, max_size=None)
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        async for raw in self.ws:
            msg = json.loads(raw)
            rid = msg.get("requestId")
            if rid in self.pending:
                self.pending.pop(rid).set_result(msg)
            elif rid is None:
                await self.notifications.put(msg)

    async def request(self, request_type, **fields):
        rid = f"req_{self.n}"
        self.n += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        await self.ws.send(json.dumps(dict(type=request_type, requestId=rid, userId=self.user, **fields)))
        msg = await asyncio.wait_for(fut, 10)
        if "error" in msg:
            raise SystemExit(f"{self.user}: {request_type} failed: {msg['error']}")
        return msg.get("data", msg)

    async def transport(self, device, producing):
        t = await self.request("createWebRtcTransport", forceTcp=False, producing=producing,
                               consuming=not producing, sctpCapabilities=SCTP)
        # pymediasoup still reads the candidate address from `ip` (mediasoup < 3.12); the
        # server sends `address`, as mediasoup-client 3.x expects.
        candidates = [dict(c, ip=c.get("ip") or c.get("address")) for c in t["iceCandidates"]]
        args = dict(id=t["id"], iceParameters=t["iceParameters"],
                    iceCandidates=candidates, dtlsParameters=t["dtlsParameters"],
                    sctpParameters=t.get("sctpParameters"),
                    # No STUN: the server's candidates are reachable as they are (aiortc
                    # would otherwise ask stun.l.google.com, which a closed network never answers).
                    iceServers=[])
        tr = device.createSendTransport(**args) if producing else device.createRecvTransport(**args)
        log(f"{self.user}: {'send' if producing else 'recv'} transport, candidates " +
              ", ".join(f"{c['protocol']} {c.get('address') or c.get('ip')}:{c['port']}"
                        for c in t["iceCandidates"]))

        @tr.on("connect")
        async def on_connect(dtlsParameters):
            await self.request("connectTransport", transportId=tr.id,
                               dtlsParameters=dtlsParameters.model_dump(exclude_none=True))
        return tr


async def load_device(peer):
    caps = await peer.request("getRouterRtpCapabilities")
    device = Device(handlerFactory=AiortcHandler.createFactory(tracks=[]))
    await device.load(RtpCapabilities(**caps))
    return device


def media_bytes(url):
    """{direction: bytes} summed over kinds, from the server's /metrics."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {"in": 0.0, "out": 0.0}
    for m in re.finditer(r'^mediasoup_server_media_bytes_total\{([^}]*)\} (\S+)$', text, re.M):
        d = re.search(r'direction="(\w+)"', m.group(1))
        if d and d.group(1) in out:
            out[d.group(1)] += float(m.group(2))
    return out


async def main(host, port, room, metrics_url=None):
    url = f"ws://{host}:{port}/{room}"
    before = media_bytes(metrics_url) if metrics_url else None
    if before is not None:
        log(f"media bytes before: {before}")

    receiver = Peer(url, "mediacheckRecv01")
    await receiver.open()
    rdev = await load_device(receiver)
    recv_transport = await receiver.transport(rdev, producing=False)

    sender = Peer(url, "mediacheckSend01")
    await sender.open()
    sdev = await load_device(sender)
    send_transport = await sender.transport(sdev, producing=True)

    @send_transport.on("produce")
    async def on_produce(kind, rtpParameters, appData):
        data = await sender.request("produce", transportId=send_transport.id, kind=kind,
                                    rtpParameters=rtpParameters.model_dump(exclude_none=True),
                                    appData=appData)
        return data["id"]

    tracks = {"audio": AudioStreamTrack(), "video": SmallVideo()}
    for kind, tag in (("audio", "mic"), ("video", "webcam")):
        producer = await send_transport.produce(
            track=tracks[kind], stopTracks=False,
            appData={"mediaTag": tag, "userId": sender.user})
        log(f"sender: {kind} producer {producer.id}")

    consumers, frames = {}, {"audio": 0, "video": 0}

    async def read_frames(kind, track):
        while True:
            try:
                await track.recv()
            except Exception:
                return
            frames[kind] += 1

    deadline = time.monotonic() + TIMEOUT
    readers = []
    while len(consumers) < 2 and time.monotonic() < deadline:
        try:
            note = await asyncio.wait_for(receiver.notifications.get(), 1)
        except asyncio.TimeoutError:
            continue
        if note.get("type") != "newProducer" or note.get("userId") != sender.user:
            continue
        data = await receiver.request("consume", producerId=note["producerId"],
                                      rtpCapabilities=rdev.rtpCapabilities.model_dump(exclude_none=True))
        consumer = await recv_transport.consume(
            id=data["id"], producerId=data["producerId"], kind=data["kind"],
            rtpParameters=RtpParameters(**data["rtpParameters"]))
        consumers[data["kind"]] = consumer
        readers.append(asyncio.create_task(read_frames(data["kind"], consumer.track)))
        log(f"receiver: {data['kind']} consumer {consumer.id}")
    if len(consumers) < 2:
        raise SystemExit(f"the receiver got newProducer for {sorted(consumers)} only, expected audio and video")

    async def received(kind):
        """RTP packets the consumer's receiver counted (aiortc's inbound-rtp stats)."""
        packets = 0
        for report in await consumers[kind].getStats():
            for s in report.values():
                if getattr(s, "type", None) == "inbound-rtp":
                    packets += s.packetsReceived
        return packets

    stats = {}
    while time.monotonic() < deadline:
        stats = {k: await received(k) for k in consumers}
        if all(stats[k] >= MIN_PACKETS and frames[k] >= MIN_FRAMES for k in consumers):
            break
        await asyncio.sleep(0.5)
    for k in sorted(consumers):
        log(f"receiver: {k}: {stats.get(k, 0)} RTP packets, {frames[k]} frames decoded")
    short = [k for k in consumers if stats.get(k, 0) < MIN_PACKETS or frames[k] < MIN_FRAMES]
    if short:
        raise SystemExit(f"no media within {TIMEOUT} s for {short} "
                         f"(need {MIN_PACKETS} packets and {MIN_FRAMES} frames each)")

    if metrics_url:
        # The counters move at each stats poll; wait for both directions to grow.
        grow_deadline = time.monotonic() + 25
        while True:
            after = media_bytes(metrics_url)
            if (after["in"] > before["in"] and after["out"] > before["out"]) or time.monotonic() > grow_deadline:
                break
            await asyncio.sleep(1)
        log(f"media bytes after: {after}")
        if not (after["in"] > before["in"] and after["out"] > before["out"]):
            raise SystemExit("mediasoup_server_media_bytes_total did not grow in both directions")

    for r in readers:
        r.cancel()
    for t in (send_transport, recv_transport):
        await t.close()
    for p in (sender, receiver):
        await p.ws.close()
    log("media flowed: sender -> server -> receiver (audio and video)")
    # Done: skip asyncio's wait for aiortc's encoder threads (several seconds).
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    asyncio.run(main(*sys.argv[1:]))
