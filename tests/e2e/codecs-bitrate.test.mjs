// What the README promises about media beyond VP8: Chromium producing VP9 and H264 through the
// server, decoded by the other peer in the codec it was sent in; and
// MEDIASOUP_MAX_INCOMING_BITRATE capping what a browser sends (through the REMB the server
// sends back, which lowers the browser's own bandwidth estimate). Run: tests/e2e/run.sh
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { assertMediaDecodes, leaveAll, scenario, waitConsumersExactly } from './lib/checks.mjs';
import { browserForFile, poll, startServer } from './lib/harness.mjs';

const shared = browserForFile();

test('VP9 and H264 from Chromium are forwarded and decoded as sent', async (t) => {
  const server = await startServer({ numWorkers: 1 });
  const step = scenario(t, server, () => shared.browser.diagnostics());
  const [a, b] = await Promise.all(['A', 'B'].map((name) => shared.browser.newPeer(name)));
  try {
    await a.join(server.wsUrl('codecs'));
    await b.join(server.wsUrl('codecs'));
    for (const mimeType of ['video/VP9', 'video/H264']) {
      await step(`${mimeType}: produced, consumed, decoded as ${mimeType}`, async () => {
        assert.ok(
          (await a.sendableCodecs('video')).includes(mimeType.toLowerCase()),
          `this Chromium can encode ${mimeType} (RTCRtpSender.getCapabilities)`,
        );
        // The same media tag: each produce replaces the previous camera (PROTOCOL.md).
        const produced = await a.produce('webcam', { codec: mimeType });
        assert.equal(produced.mimeType, mimeType, 'the producer was negotiated with the asked codec');
        await waitConsumersExactly(b, [produced.id]);
        const { second } = await assertMediaDecodes(b, [produced.id]);
        const received = second.get(produced.id);
        assert.ok(received.keyFramesDecoded > 0 && received.framesDecoded > 0, 'video frames decoded');
        assert.deepEqual([...new Set(received.mimeTypes)], [mimeType], `B decoded ${mimeType}`);
      });
    }
  } finally {
    await leaveAll([a, b]);
    await server.stop();
  }
});

/** Bits per second the browser's estimate allows and its senders really sent, over `windowMs`. */
async function sendRateOver(peer, windowMs) {
  const first = await peer.sendRate();
  await poll(async () => (await peer.sendRate()).timestamp - first.timestamp >= windowMs, {
    what: `${windowMs} ms of sending`,
    intervalMs: 250,
  });
  const second = await peer.sendRate();
  return {
    estimate: second.availableOutgoingBitrate,
    sent: ((second.bytesSent - first.bytesSent) * 8 * 1000) / (second.timestamp - first.timestamp),
  };
}

test('MEDIASOUP_MAX_INCOMING_BITRATE caps what a browser sends', async (t) => {
  const cap = 150_000;
  // Control: with the default cap (1.5 Mbit/s) the browser's estimate starts at its own
  // 300 kbit/s and grows, well above the small cap; with the small cap the server's REMB pulls
  // it down to the cap, and what the browser sends follows.
  for (const [label, env, check] of [
    ['default cap', {}, (rate) => rate.estimate > 2 * cap],
    [`cap ${cap} bit/s`, { MEDIASOUP_MAX_INCOMING_BITRATE: String(cap) }, (rate) => rate.estimate <= cap * 1.1 && rate.sent <= cap * 1.25],
  ]) {
    const server = await startServer({ numWorkers: 1, env });
    const step = scenario(t, server, () => shared.browser.diagnostics());
    const [a, b] = await Promise.all(['A', 'B'].map((name) => shared.browser.newPeer(name)));
    try {
      await step(`${label}: the sender's bandwidth estimate and send rate`, async () => {
        await a.join(server.wsUrl('bitrate'));
        await b.join(server.wsUrl('bitrate'));
        const produced = await a.produce('webcam');
        await waitConsumersExactly(b, [produced.id]);
        await assertMediaDecodes(b, [produced.id]);
        let last;
        await poll(
          async () => {
            last = await sendRateOver(a, 2_000);
            return check(last);
          },
          { timeoutMs: 30_000, intervalMs: 0, what: `${label}: the send rate to match` },
        ).catch((error) => {
          throw new Error(`${error.message}; last 2 s: ${JSON.stringify(last)}`);
        });
        console.log(`${label}: estimate ${Math.round(last.estimate)} bit/s, sent ${Math.round(last.sent)} bit/s`);
      });
    } finally {
      await leaveAll([a, b]);
      await server.stop();
    }
  }
});
