// Assertions the e2e scenarios share: steps that stop after a failure, consumers, media that
// really decodes, notifications, the occupancy gauges and the metric contract.
import assert from 'node:assert/strict';

import { FatalError, poll, promtoolCheckMetrics, scrape } from './harness.mjs';

export const MEDIA_TIMEOUT_MS = 30_000;
export const SIGNALING_TIMEOUT_MS = 15_000;

/**
 * Runs the steps of one scenario as subtests. After a failed step the rest are skipped
 * (they build on it), and the server's output and the pages' consoles are printed.
 * `diagnostics()` returns the pages' consoles.
 */
export function scenario(t, server, diagnostics) {
  let failedStep = null;
  return async function step(name, body) {
    const skip = failedStep ? `skipped because "${failedStep}" failed` : false;
    await t.test(name, { skip }, async () => {
      try {
        await Promise.race([
          body(),
          server.died.then((status) => {
            throw new Error(`the server process died during this step: ${JSON.stringify(status)}`);
          }),
        ]);
      } catch (error) {
        failedStep = name;
        const serverLog = server.log().split('\n').slice(-80).join('\n');
        console.error(`--- server output (last 80 lines) ---\n${serverLog}\n${diagnostics()}`);
        throw error;
      }
    });
  };
}

/** Fails the poll at once when the page recorded an error (a consume that threw, a bad frame). */
export async function assertNoPageErrors(peer) {
  const errors = await peer.errors();
  if (errors.length > 0) {
    throw new FatalError(`peer ${peer.name} recorded errors: ${errors.join('; ')}`);
  }
}

/** Closes the peers still connected; a failure here is reported but does not stop the cleanup. */
export async function leaveAll(peers) {
  const results = await Promise.allSettled(peers.filter((p) => !p.page.isClosed()).map((p) => p.leave()));
  for (const result of results) {
    if (result.status === 'rejected') console.error(`leaving a peer failed: ${result.reason}`);
  }
}

export const sortedIds = (ids) => [...ids].sort();

/** Waits until `peer` consumes exactly the producers `producerIds`. */
export async function waitConsumersExactly(peer, producerIds, { timeoutMs = SIGNALING_TIMEOUT_MS } = {}) {
  const want = sortedIds(producerIds);
  return poll(
    async () => {
      await assertNoPageErrors(peer);
      const consumers = await peer.consumers();
      const have = sortedIds(consumers.map((c) => c.producerId));
      return JSON.stringify(have) === JSON.stringify(want) && consumers;
    },
    { timeoutMs, what: `peer ${peer.name} to consume exactly ${want.join(', ')}` },
  );
}

// What "media flows" means for one consumer between two getStats() samples taken at least
// MEDIA_WINDOW_MS apart: bytes keep arriving, and they are media the browser can play.
const MEDIA_WINDOW_MS = 1_500;
// Video: at least this many more frames decoded in the window (15 fps is sent).
const MIN_NEW_FRAMES = 5;
// Audio: at least this many more samples (48 kHz: 0.25 s) and at most this share concealed
// (NetEq fills gaps with concealment; all-concealment means nothing decodable arrived).
const MIN_NEW_SAMPLES = 12_000;
const MAX_CONCEALED_SHARE = 0.5;

function decodeProblems(before, now) {
  if (!now) return ['no consumer'];
  const problems = [];
  if (!(now.bytesReceived > (before?.bytesReceived ?? 0))) problems.push(`bytesReceived ${now.bytesReceived} not growing`);
  if (now.kind === 'video') {
    if (!(now.keyFramesDecoded > 0)) problems.push('no key frame decoded (keyFramesDecoded 0)');
    const frames = now.framesDecoded - (before?.framesDecoded ?? 0);
    if (!(frames >= MIN_NEW_FRAMES)) problems.push(`framesDecoded grew by ${frames} (< ${MIN_NEW_FRAMES})`);
  } else {
    const samples = now.totalSamplesReceived - (before?.totalSamplesReceived ?? 0);
    const concealed = now.concealedSamples - (before?.concealedSamples ?? 0);
    if (!(samples >= MIN_NEW_SAMPLES)) problems.push(`totalSamplesReceived grew by ${samples} (< ${MIN_NEW_SAMPLES})`);
    else if (!(concealed / samples <= MAX_CONCEALED_SHARE)) {
      problems.push(`${concealed} of ${samples} new samples concealed (> ${MAX_CONCEALED_SHARE * 100}%)`);
    }
  }
  return problems;
}

/**
 * Honest "media flows" check for every consumer of `producerIds` at `peer`: video decodes
 * (a key frame and a growing framesDecoded), audio decodes (totalSamplesReceived grows, not
 * mostly concealment), bytes grow. Waits for a first sample where every consumer received
 * something, then for a later one (>= MEDIA_WINDOW_MS on) that shows all of that.
 * Returns {first, second}, Maps by producer id of the page's per-consumer stats.
 */
export async function assertMediaDecodes(peer, producerIds, { timeoutMs = MEDIA_TIMEOUT_MS } = {}) {
  const pick = (stats) => new Map(stats.consumers.map((c) => [c.producerId, c]));
  const first = await poll(
    async () => {
      await assertNoPageErrors(peer);
      const byProducer = pick(await peer.stats());
      return producerIds.every((id) => byProducer.get(id)?.bytesReceived > 0) && byProducer;
    },
    { timeoutMs, what: `peer ${peer.name} to receive RTP bytes from ${producerIds.join(', ')}` },
  );
  const firstAt = Date.now();
  let problems;
  let last;
  const second = await poll(
    async () => {
      if (Date.now() - firstAt < MEDIA_WINDOW_MS) return false;
      const byProducer = pick(await peer.stats());
      last = byProducer;
      problems = producerIds
        .map((id) => [id, decodeProblems(first.get(id), byProducer.get(id))])
        .filter(([, p]) => p.length > 0);
      return problems.length === 0 && byProducer;
    },
    {
      timeoutMs,
      what: `peer ${peer.name} to decode the media of ${producerIds.join(', ')}`,
    },
  ).catch((error) => {
    const detail = (problems ?? [])
      .map(([id, p]) => {
        const [a, b] = [first.get(id), last?.get(id)];
        const counters = b ? `bytesReceived ${a.bytesReceived}->${b.bytesReceived}` : 'no stats';
        return `${id} (${a?.kind}, ${counters}): ${p.join(', ')}`;
      })
      .join('; ');
    throw new Error(`${error.message}: ${detail}`);
  });
  if (process.env.E2E_TRACE) {
    for (const id of producerIds) {
      const [a, b] = [first.get(id), second.get(id)];
      console.log(
        `media ${peer.name} <- ${id} ${b.kind}: bytes ${a.bytesReceived}->${b.bytesReceived} frames ${a.framesDecoded}->${b.framesDecoded} ` +
          `key ${b.keyFramesDecoded} samples ${a.totalSamplesReceived}->${b.totalSamplesReceived} concealed ${a.concealedSamples}->${b.concealedSamples}`,
      );
    }
  }
  return { first, second };
}

/**
 * Peers `a` and `b` join `wsUrl`, each sends microphone and camera, and each must decode the
 * other's media. Returns their join answers by peer name.
 */
export async function exchangeMedia(a, b, wsUrl) {
  const joined = {};
  const produced = {};
  for (const peer of [a, b]) {
    joined[peer.name] = await peer.join(wsUrl);
    produced[peer.name] = [(await peer.produce('mic')).id, (await peer.produce('webcam')).id];
  }
  await waitConsumersExactly(a, produced[b.name]);
  await waitConsumersExactly(b, produced[a.name]);
  await assertMediaDecodes(a, produced[b.name]);
  await assertMediaDecodes(b, produced[a.name]);
  return joined;
}

/** The newProducer notifications `peer` got, by producer id. */
export async function newProducersSeen(peer) {
  const notes = await peer.notifications();
  return new Map(notes.filter((n) => n.type === 'newProducer').map((n) => [n.producerId, n]));
}

export async function waitNotification(peer, type, producerIds, { timeoutMs = SIGNALING_TIMEOUT_MS } = {}) {
  return poll(
    async () => {
      const notes = (await peer.notifications()).filter((n) => n.type === type);
      return producerIds.every((id) => notes.some((n) => n.producerId === id)) && notes;
    },
    { timeoutMs, what: `peer ${peer.name} to get ${type} for ${producerIds.join(', ')}` },
  );
}

/** The object-count gauges, all of which are 0 in an empty server. */
export function occupancy(metrics) {
  return {
    rooms: metrics.value('mediasoup_server_rooms'),
    peers: metrics.value('mediasoup_server_peers'),
    sendTransports: metrics.value('mediasoup_server_transports', { direction: 'send' }),
    recvTransports: metrics.value('mediasoup_server_transports', { direction: 'recv' }),
    audioProducers: metrics.value('mediasoup_server_producers', { kind: 'audio' }),
    videoProducers: metrics.value('mediasoup_server_producers', { kind: 'video' }),
    audioConsumers: metrics.value('mediasoup_server_consumers', { kind: 'audio' }),
    videoConsumers: metrics.value('mediasoup_server_consumers', { kind: 'video' }),
    workerRooms: metrics.value('mediasoup_server_worker_rooms'),
    workerTransports: metrics.value('mediasoup_server_worker_transports'),
  };
}

export const EMPTY = Object.freeze({
  rooms: 0,
  peers: 0,
  sendTransports: 0,
  recvTransports: 0,
  audioProducers: 0,
  videoProducers: 0,
  audioConsumers: 0,
  videoConsumers: 0,
  workerRooms: 0,
  workerTransports: 0,
});

/** Two peers in one room, each producing audio and video and consuming the other's. */
export const TWO_PEERS_IN_ONE_ROOM = Object.freeze({
  rooms: 1,
  peers: 2,
  sendTransports: 2,
  recvTransports: 2,
  audioProducers: 2,
  videoProducers: 2,
  audioConsumers: 2,
  videoConsumers: 2,
  workerRooms: 1,
  workerTransports: 4,
});

export async function waitOccupancy(server, want, what, { timeoutMs = SIGNALING_TIMEOUT_MS } = {}) {
  let last;
  try {
    return await poll(
      async () => {
        last = occupancy(await scrape(server));
        return JSON.stringify(last) === JSON.stringify(want) && last;
      },
      { timeoutMs, what },
    );
  } catch (error) {
    assert.deepEqual(last, want, error.message);
    throw error;
  }
}

export function assertPromtoolClean(metrics, when) {
  const { status, output } = promtoolCheckMetrics(metrics.text);
  assert.equal(status, 0, `promtool check metrics on the ${when} scrape exited ${status}:\n${output}`);
}

/** Every request `type` of PROTOCOL.md, as the server labels them, plus `invalid`. */
export const REQUEST_TYPES = [
  'getRouterRtpCapabilities',
  'createWebRtcTransport',
  'connectTransport',
  'produce',
  'consume',
  'pauseProducer',
  'resumeProducer',
  'consumerPause',
  'consumerResume',
  'consumerClose',
  'invalid',
];
export const KINDS = ['audio', 'video'];
export const JOIN_STAGES = ['socket_opened', 'rtp_capabilities', 'transports_created', 'ice_connected', 'dtls_connected', 'first_media'];
export const JOIN_FAILURES = ['bad_request', 'transport_failed', 'ice_failed', 'dtls_failed', 'disconnected_early'];

/** Counter values by label value: {stage: n} for join_funnel_total etc. */
export function byLabel(metrics, name, label, values, fixed = {}) {
  return Object.fromEntries(values.map((v) => [v, metrics.value(name, { ...fixed, [label]: v })]));
}
