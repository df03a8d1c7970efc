// End-to-end test of mediasoup-server: the real server binary with real mediasoup workers,
// headless Debian Chromium with fake camera/microphone, real mediasoup-client in the page,
// speaking the MediaSoupVTT protocol (/work/shared/PROTOCOL.md). Run: tests/e2e/run.sh
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';

import {
  FIXTURE_PATH,
  FatalError,
  REPO_ROOT,
  launchBrowser,
  poll,
  promtoolCheckMetrics,
  scrape,
  startPageServer,
  startServer,
} from './lib/harness.mjs';

const MEDIA_TIMEOUT_MS = 30_000;
const SIGNALING_TIMEOUT_MS = 15_000;

let pageServer;
let browser;

before(async () => {
  pageServer = await startPageServer();
  browser = await launchBrowser(pageServer.url);
});

after(async () => {
  await browser?.close();
  await pageServer?.close();
});

/**
 * Runs the steps of one scenario as subtests. After a failed step the rest are skipped
 * (they build on it), and the server's output and the pages' consoles are printed.
 */
function scenario(t, server) {
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
        console.error(`--- server output (last 80 lines) ---\n${serverLog}\n${browser.diagnostics()}`);
        throw error;
      }
    });
  };
}

/** Fails the poll at once when the page recorded an error (a consume that threw, a bad frame). */
async function assertNoPageErrors(peer) {
  const errors = await peer.errors();
  if (errors.length > 0) {
    throw new FatalError(`peer ${peer.name} recorded errors: ${errors.join('; ')}`);
  }
}

/** Closes the peers still connected; a failure here is reported but does not stop the cleanup. */
async function leaveAll(peers) {
  const results = await Promise.allSettled(peers.filter((p) => !p.page.isClosed()).map((p) => p.leave()));
  for (const result of results) {
    if (result.status === 'rejected') console.error(`leaving a peer failed: ${result.reason}`);
  }
}

const sortedIds = (ids) => [...ids].sort();

/** Waits until `peer` consumes exactly the producers `producerIds`. */
async function waitConsumersExactly(peer, producerIds) {
  const want = sortedIds(producerIds);
  return poll(
    async () => {
      await assertNoPageErrors(peer);
      const consumers = await peer.consumers();
      const have = sortedIds(consumers.map((c) => c.producerId));
      return JSON.stringify(have) === JSON.stringify(want) && consumers;
    },
    { timeoutMs: SIGNALING_TIMEOUT_MS, what: `peer ${peer.name} to consume exactly ${want.join(', ')}` },
  );
}

/**
 * getStats() twice: waits until every consumer of `producerIds` at `peer` received bytes,
 * then until each one received strictly more. Returns the two samples by producer id.
 */
async function assertBytesGrow(peer, producerIds) {
  const pick = (stats) => new Map(stats.consumers.map((c) => [c.producerId, c]));
  const first = await poll(
    async () => {
      await assertNoPageErrors(peer);
      const byProducer = pick(await peer.stats());
      return producerIds.every((id) => byProducer.get(id)?.bytesReceived > 0) && byProducer;
    },
    { timeoutMs: MEDIA_TIMEOUT_MS, what: `peer ${peer.name} to receive RTP bytes from ${producerIds.join(', ')}` },
  );
  const second = await poll(
    async () => {
      const byProducer = pick(await peer.stats());
      return producerIds.every((id) => byProducer.get(id)?.bytesReceived > first.get(id).bytesReceived) && byProducer;
    },
    { timeoutMs: MEDIA_TIMEOUT_MS, what: `inbound-rtp bytesReceived at peer ${peer.name} to keep growing` },
  );
  return { first, second };
}

/** The newProducer notifications `peer` got, by producer id. */
async function newProducersSeen(peer) {
  const notes = await peer.notifications();
  return new Map(notes.filter((n) => n.type === 'newProducer').map((n) => [n.producerId, n]));
}

async function waitNotification(peer, type, producerIds) {
  return poll(
    async () => {
      const notes = (await peer.notifications()).filter((n) => n.type === type);
      return producerIds.every((id) => notes.some((n) => n.producerId === id)) && notes;
    },
    { timeoutMs: SIGNALING_TIMEOUT_MS, what: `peer ${peer.name} to get ${type} for ${producerIds.join(', ')}` },
  );
}

function assertTransportAnswer(answer, what) {
  assert.equal(typeof answer.id, 'string', `${what}: id`);
  assert.ok(answer.iceParameters?.usernameFragment && answer.iceParameters?.password, `${what}: iceParameters`);
  assert.ok(Array.isArray(answer.iceCandidates) && answer.iceCandidates.length > 0, `${what}: iceCandidates`);
  for (const candidate of answer.iceCandidates) {
    assert.equal(candidate.address ?? candidate.ip, '127.0.0.1', `${what}: candidate uses MEDIASOUP_ANNOUNCED_IP`);
  }
  assert.ok(answer.dtlsParameters?.fingerprints?.length > 0, `${what}: dtlsParameters.fingerprints`);
}

/** Checks a newProducer notification the way the module reads it. */
function assertNewProducer(note, owner, producer) {
  assert.equal(note.userId, owner.userId, `newProducer ${producer.id}: userId is the owner's`);
  assert.equal(note.kind, producer.kind, `newProducer ${producer.id}: kind`);
  assert.equal(note.appData?.mediaTag, producer.mediaTag, `newProducer ${producer.id}: appData.mediaTag`);
  assert.ok(
    Array.isArray(note.appData?.rtpParameters?.codecs) && note.appData.rtpParameters.codecs.length > 0,
    `newProducer ${producer.id}: the module refuses to consume without appData.rtpParameters`,
  );
}

/** Codec mime types and header extension URIs: what stays stable between Chromium runs. */
function rtpShape(rtpParameters) {
  return {
    codecs: rtpParameters.codecs.map((c) => c.mimeType),
    headerExtensions: rtpParameters.headerExtensions.map((h) => h.uri).sort(),
  };
}

test('signaling and media: two peers, a late joiner, a departure, room isolation', async (t) => {
  const server = await startServer();
  const step = scenario(t, server);
  const [a, b, c, d] = await Promise.all(['A', 'B', 'C', 'D'].map((name) => browser.newPeer(name)));
  const table1 = server.wsUrl('table-1');
  const table2 = server.wsUrl('table-2');
  const produced = {};
  const joined = {};

  try {
    await step('A and B join table-1, produce mic + webcam and consume each other with growing audio and video bytes', async () => {
      for (const peer of [a, b]) {
        joined[peer.name] = await peer.join(table1);
        const { routerRtpCapabilities, sendTransport, recvTransport } = joined[peer.name];
        assert.ok(
          routerRtpCapabilities.codecs.some((codec) => codec.kind === 'audio') &&
            routerRtpCapabilities.codecs.some((codec) => codec.kind === 'video'),
          'router RTP capabilities offer an audio and a video codec',
        );
        assertTransportAnswer(sendTransport, `peer ${peer.name} producing transport`);
        assertTransportAnswer(recvTransport, `peer ${peer.name} consuming transport`);
        assert.notEqual(sendTransport.id, recvTransport.id, 'two distinct transports');
        produced[peer.name] = { mic: await peer.produce('mic'), webcam: await peer.produce('webcam') };
        assert.equal(produced[peer.name].mic.kind, 'audio');
        assert.equal(produced[peer.name].webcam.kind, 'video');
      }
      const ids = (name) => [produced[name].mic.id, produced[name].webcam.id];
      await waitConsumersExactly(a, ids('B'));
      await waitConsumersExactly(b, ids('A'));

      const seenByB = await newProducersSeen(b);
      const seenByA = await newProducersSeen(a);
      for (const tag of ['mic', 'webcam']) {
        assertNewProducer(seenByB.get(produced.A[tag].id), a, produced.A[tag]);
        assertNewProducer(seenByA.get(produced.B[tag].id), b, produced.B[tag]);
      }
      for (const peer of [a, b]) {
        const consumeIds = new Set((await peer.sent()).filter((m) => m.type === 'consume').map((m) => m.requestId));
        const answers = (await peer.received()).filter((m) => consumeIds.has(m.requestId));
        assert.equal(answers.length, 2, `peer ${peer.name} got an answer to each consume`);
        for (const answer of answers) {
          const data = answer.data;
          assert.ok(data && typeof data.id === 'string', `consume answer carries data.id: ${JSON.stringify(answer)}`);
          assert.ok(['audio', 'video'].includes(data.kind), 'consume answer kind');
          assert.ok(data.rtpParameters?.codecs?.length > 0, 'consume answer rtpParameters');
          assert.equal(data.producerPaused, false, 'consume answer producerPaused');
        }
      }

      for (const [peer, owner] of [[a, 'B'], [b, 'A']]) {
        const { second } = await assertBytesGrow(peer, ids(owner));
        assert.deepEqual(
          sortedIds([...second.values()].map((s) => s.kind)),
          ['audio', 'video'],
          `peer ${peer.name} receives both kinds`,
        );
      }
    });

    await step('Chromium produce rtpParameters match tests/fixtures/chromium-rtp-parameters.json', async () => {
      const produceRequests = (await a.sent()).filter((m) => m.type === 'produce');
      assert.equal(produceRequests.length, 2);
      for (const request of produceRequests) {
        assert.equal(request.transportId, joined.A.sendTransport.id, 'produce names the producing transport');
        assert.deepEqual(request.appData, {
          mediaTag: request.kind === 'audio' ? 'mic' : 'webcam',
          userId: a.userId,
        });
      }
      const refresh = 'refresh it with `tests/e2e/netns.sh node tests/e2e/capture-fixture.mjs`';
      assert.ok(existsSync(FIXTURE_PATH), `${path.relative(REPO_ROOT, FIXTURE_PATH)} is missing; ${refresh}`);
      const fixture = JSON.parse(await readFile(FIXTURE_PATH, 'utf8'));
      for (const kind of ['audio', 'video']) {
        const live = produceRequests.find((m) => m.kind === kind).rtpParameters;
        assert.deepEqual(
          rtpShape(live),
          rtpShape(fixture[kind]),
          `${kind} rtpParameters of this Chromium differ from the fixture; ${refresh}`,
        );
      }
    });

    await step('C joins table-1 late: newProducer for all 4 producers right after its consuming transport, then media of both kinds', async () => {
      await c.join(table1);
      const all = [produced.A.mic, produced.A.webcam, produced.B.mic, produced.B.webcam];
      await waitNotification(c, 'newProducer', all.map((p) => p.id));
      const received = await c.received();
      const consumingAnswerAt = received.findIndex((m) => m.requestId === 'req_2');
      assert.ok(consumingAnswerAt >= 0, 'C got the answer to its consuming createWebRtcTransport (req_2)');
      const seen = await newProducersSeen(c);
      for (const [owner, name] of [[a, 'A'], [b, 'B']]) {
        for (const tag of ['mic', 'webcam']) {
          const producer = produced[name][tag];
          assertNewProducer(seen.get(producer.id), owner, producer);
          const at = received.findIndex((m) => m.type === 'newProducer' && m.producerId === producer.id);
          assert.ok(at > consumingAnswerAt, `newProducer ${producer.id} arrives after the consuming transport answer`);
        }
      }
      await waitConsumersExactly(c, all.map((p) => p.id));
      await assertBytesGrow(c, all.map((p) => p.id));
    });

    await step('A closes its socket: B and C get producerClosed for both of its producers and drop those consumers', async () => {
      const gone = [produced.A.mic.id, produced.A.webcam.id];
      await a.leave();
      for (const peer of [b, c]) {
        await waitNotification(peer, 'producerClosed', gone);
        const remaining = await peer.consumers();
        assert.ok(remaining.every((x) => !gone.includes(x.producerId)), `peer ${peer.name} has no consumer of A left`);
        const ended = (await peer.endedConsumers()).filter((e) => gone.includes(e.producerId));
        assert.deepEqual(sortedIds(ended.map((e) => e.producerId)), sortedIds(gone));
        assert.ok(ended.every((e) => e.trackState === 'ended'), `peer ${peer.name}: A's tracks ended`);
      }
      await waitConsumersExactly(c, [produced.B.mic.id, produced.B.webcam.id]);
      await assertBytesGrow(c, [produced.B.mic.id, produced.B.webcam.id]);
    });

    await step('D in table-2 gets nothing from table-1, and table-1 gets nothing from D', async () => {
      await d.join(table2);
      produced.D = { mic: await d.produce('mic'), webcam: await d.produce('webcam') };
      // B restarts its webcam the module's way (new produce with the same mediaTag): C must
      // get producerClosed for the old producer and newProducer for the new one; D nothing.
      const oldWebcam = produced.B.webcam;
      produced.B.webcam = await b.produce('webcam');
      await waitNotification(c, 'producerClosed', [oldWebcam.id]);
      await waitNotification(c, 'newProducer', [produced.B.webcam.id]);
      await waitConsumersExactly(c, [produced.B.mic.id, produced.B.webcam.id]);
      await assertBytesGrow(c, [produced.B.webcam.id]);
      // A round trip on D's socket: anything queued for D before it has been delivered.
      await d.request('getRouterRtpCapabilities');

      const foreign = (await d.notifications()).filter(
        (n) => n.type === 'newProducer' && n.userId !== d.userId,
      );
      assert.deepEqual(foreign, [], 'D (table-2) got newProducer from another room');
      assert.deepEqual(await d.consumers(), [], 'D consumes nothing');
      const dStats = await d.stats();
      assert.equal(dStats.recvTransportInboundBytes, 0, 'D received no RTP');
      const dIds = [produced.D.mic.id, produced.D.webcam.id];
      for (const peer of [b, c]) {
        const leaked = (await peer.notifications()).filter((n) => dIds.includes(n.producerId));
        assert.deepEqual(leaked, [], `peer ${peer.name} (table-1) was told about D's producers`);
      }
    });
  } finally {
    await leaveAll([a, b, c, d]);
    const status = await server.stop();
    await step('SIGTERM stops the server with exit code 0', async () => {
      assert.deepEqual(status, { code: 0, signal: null });
    });
  }
});

const REQUEST_TYPES = ['getRouterRtpCapabilities', 'createWebRtcTransport', 'connectTransport', 'produce', 'consume'];
const KINDS = ['audio', 'video'];

/** [name, labels] of every series the contract says is present from start-up. */
function contractSeries() {
  const series = [
    ['mediasoup_server_build_info', {}],
    ['mediasoup_server_ready', {}],
    ['mediasoup_server_workers_configured', {}],
    ['mediasoup_server_workers_alive', {}],
    ['mediasoup_server_worker_deaths_total', {}],
    ['mediasoup_server_rooms', {}],
    ['mediasoup_server_peers', {}],
    ['mediasoup_server_dtls_connect_duration_seconds_count', {}],
    ['mediasoup_server_rtt_seconds_count', {}],
    ['mediasoup_server_bus_events_dropped_total', {}],
    ['process_cpu_seconds_total', {}],
    ['process_resident_memory_bytes', {}],
    ['process_open_fds', {}],
    ['process_start_time_seconds', {}],
  ];
  for (const direction of ['send', 'recv']) series.push(['mediasoup_server_transports', { direction }]);
  for (const kind of KINDS) {
    series.push(['mediasoup_server_producers', { kind }], ['mediasoup_server_consumers', { kind }]);
    series.push(['mediasoup_server_producer_score_count', { kind }], ['mediasoup_server_consumer_score_count', { kind }]);
    series.push(['mediasoup_server_packet_loss_ratio_count', { kind }]);
    for (const direction of ['in', 'out']) series.push(['mediasoup_server_media_bytes_total', { direction, kind }]);
    for (const type of ['nack', 'pli', 'fir']) series.push(['mediasoup_server_rtcp_feedback_total', { type, kind }]);
  }
  for (const stage of ['socket_opened', 'rtp_capabilities', 'transports_created', 'ice_connected', 'dtls_connected', 'first_media']) {
    series.push(['mediasoup_server_join_funnel_total', { stage }]);
  }
  for (const reason of ['bad_request', 'transport_failed', 'ice_failed', 'dtls_failed', 'disconnected_early']) {
    series.push(['mediasoup_server_join_failures_total', { reason }]);
  }
  for (const type of REQUEST_TYPES) {
    for (const outcome of ['ok', 'error']) series.push(['mediasoup_server_signaling_requests_total', { type, outcome }]);
    series.push(['mediasoup_server_signaling_request_duration_seconds_count', { type }]);
  }
  for (const worker of ['0', '1']) {
    series.push(['mediasoup_server_worker_request_duration_seconds_count', { worker }]);
    series.push(['mediasoup_server_worker_rooms', { worker }], ['mediasoup_server_worker_transports', { worker }]);
  }
  return series;
}

/** The object-count gauges, all of which are 0 in an empty server. */
function occupancy(metrics) {
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

const EMPTY = {
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
};

async function waitOccupancy(server, want, what) {
  let last;
  try {
    return await poll(
      async () => {
        last = occupancy(await scrape(server));
        return JSON.stringify(last) === JSON.stringify(want) && last;
      },
      { timeoutMs: SIGNALING_TIMEOUT_MS, what },
    );
  } catch (error) {
    assert.deepEqual(last, want, error.message);
    throw error;
  }
}

function assertPromtoolClean(metrics, when) {
  const { status, output } = promtoolCheckMetrics(metrics.text);
  assert.equal(status, 0, `promtool check metrics on the ${when} scrape exited ${status}:\n${output}`);
}

test('metrics: /metrics passes promtool and follows joins, media, errors and leaves', async (t) => {
  const server = await startServer();
  const step = scenario(t, server);
  const [e, f] = await Promise.all(['E', 'F'].map((name) => browser.newPeer(name)));
  const room = server.wsUrl('metrics-room');
  const produced = {};

  try {
    await step('start-up scrape passes promtool check metrics and has every contract series at rest', async () => {
      const metrics = await scrape(server);
      assertPromtoolClean(metrics, 'start-up');
      const missing = contractSeries().filter(([name, labels]) => !metrics.has(name, labels));
      assert.deepEqual(
        missing.map(([name, labels]) => `${name}${JSON.stringify(labels)}`),
        [],
        'series missing from the start-up scrape',
      );
      assert.equal(metrics.value('mediasoup_server_build_info'), 1);
      assert.equal(metrics.value('mediasoup_server_ready'), 1);
      assert.equal(metrics.value('mediasoup_server_workers_configured'), 2);
      assert.equal(metrics.value('mediasoup_server_workers_alive'), 2);
      assert.deepEqual(occupancy(metrics), EMPTY);
    });

    await step('peers/transports/producers/consumers gauges, join funnel and request counters rise as E and F join', async () => {
      for (const peer of [e, f]) {
        await peer.join(room);
        produced[peer.name] = { mic: await peer.produce('mic'), webcam: await peer.produce('webcam') };
      }
      await waitConsumersExactly(e, [produced.F.mic.id, produced.F.webcam.id]);
      await waitConsumersExactly(f, [produced.E.mic.id, produced.E.webcam.id]);
      await waitOccupancy(
        server,
        {
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
        },
        'the gauges to show 1 room, 2 peers, 4 transports, 4 producers, 4 consumers',
      );
      const requests = (m, outcome) =>
        Object.fromEntries(
          REQUEST_TYPES.map((type) => [type, m.value('mediasoup_server_signaling_requests_total', { type, outcome })]),
        );
      const wantOk = { getRouterRtpCapabilities: 2, createWebRtcTransport: 4, connectTransport: 4, produce: 4, consume: 4 };
      // Counters may trail the answers a little: wait until they reach their final values.
      const metrics = await poll(
        async () => {
          const m = await scrape(server);
          const ok = requests(m, 'ok');
          return (
            m.value('mediasoup_server_join_funnel_total', { stage: 'first_media' }) >= 2 &&
            m.value('mediasoup_server_dtls_connect_duration_seconds_count') >= 4 &&
            REQUEST_TYPES.every((type) => ok[type] >= wantOk[type]) &&
            m
          );
        },
        { timeoutMs: MEDIA_TIMEOUT_MS, what: 'first_media, DTLS durations and request counters to reach their values' },
      );
      for (const stage of ['socket_opened', 'rtp_capabilities', 'transports_created', 'ice_connected', 'dtls_connected']) {
        assert.ok(
          metrics.value('mediasoup_server_join_funnel_total', { stage }) >= 2,
          `join_funnel_total{stage="${stage}"} >= 2`,
        );
      }
      assert.deepEqual(requests(metrics, 'ok'), wantOk, 'signaling_requests_total{outcome="ok"} by type');
      assert.deepEqual(
        requests(metrics, 'error'),
        Object.fromEntries(REQUEST_TYPES.map((type) => [type, 0])),
        'signaling_requests_total{outcome="error"} by type',
      );
      for (const type of REQUEST_TYPES) {
        assert.equal(
          metrics.value('mediasoup_server_signaling_request_duration_seconds_count', { type }),
          wantOk[type],
          `signaling_request_duration_seconds_count{type="${type}"}`,
        );
      }
      assert.equal(metrics.value('mediasoup_server_dtls_connect_duration_seconds_count'), 4, 'one DTLS duration per transport');
    });

    await step('media_bytes_total grows in and out for audio and video; the live scrape passes promtool', async () => {
      const series = KINDS.flatMap((kind) => ['in', 'out'].map((direction) => ({ direction, kind })));
      const bytes = (m) => series.map((labels) => m.value('mediasoup_server_media_bytes_total', labels));
      const first = await poll(
        async () => {
          const values = bytes(await scrape(server));
          return values.every((v) => v > 0) && values;
        },
        { timeoutMs: MEDIA_TIMEOUT_MS, what: `media_bytes_total ${JSON.stringify(series)} to be > 0` },
      );
      const live = await poll(
        async () => {
          const m = await scrape(server);
          return bytes(m).every((v, i) => v > first[i]) && m;
        },
        { timeoutMs: MEDIA_TIMEOUT_MS, what: 'every media_bytes_total series to grow' },
      );
      for (const kind of KINDS) {
        assert.ok(live.value('mediasoup_server_producer_score_count', { kind }) > 0, `producer_score{kind="${kind}"} observed`);
        assert.ok(live.value('mediasoup_server_consumer_score_count', { kind }) > 0, `consumer_score{kind="${kind}"} observed`);
      }
      assertPromtoolClean(live, 'live');
    });

    await step('consume of an unknown producer answers {requestId, error}, counts outcome="error" and the socket keeps working', async () => {
      const before = (await scrape(server)).value('mediasoup_server_signaling_requests_total', { type: 'consume', outcome: 'error' });
      const rtpCapabilities = (await e.sent()).find((m) => m.type === 'consume').rtpCapabilities;
      const requestId = await e.nextRequestId();
      const frame = JSON.stringify({ type: 'consume', requestId, userId: e.userId, producerId: randomUUID(), rtpCapabilities });
      const answer = await e.sendFrame(frame, requestId);
      assert.equal(answer.requestId, requestId);
      assert.ok(typeof answer.error === 'string' && answer.error.length > 0, `error answer: ${JSON.stringify(answer)}`);
      assert.equal(answer.data, undefined, 'an error answer carries no data');
      await poll(
        async () =>
          (await scrape(server)).value('mediasoup_server_signaling_requests_total', { type: 'consume', outcome: 'error' }) ===
          before + 1,
        { timeoutMs: SIGNALING_TIMEOUT_MS, what: 'signaling_requests_total{type="consume",outcome="error"} to rise by 1' },
      );
      const capabilities = await e.request('getRouterRtpCapabilities');
      assert.ok(capabilities.codecs?.length > 0, 'a request after the error still gets its answer');
    });

    await step('after E and F leave, rooms/peers/transports/producers/consumers gauges are back to 0', async () => {
      await e.leave();
      await f.leave();
      await waitOccupancy(server, EMPTY, 'every occupancy gauge to return to 0');
    });
  } finally {
    await leaveAll([e, f]);
    const status = await server.stop();
    await step('SIGTERM stops the server with exit code 0', async () => {
      assert.deepEqual(status, { code: 0, signal: null });
    });
  }
});
