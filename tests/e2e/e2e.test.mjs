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
  EMPTY,
  JOIN_FAILURES,
  JOIN_STAGES,
  KINDS,
  MEDIA_TIMEOUT_MS,
  REQUEST_TYPES,
  SIGNALING_TIMEOUT_MS,
  assertMediaDecodes,
  assertPromtoolClean,
  byLabel,
  leaveAll,
  newProducersSeen,
  occupancy,
  scenario,
  sortedIds,
  waitConsumersExactly,
  waitNotification,
  waitOccupancy,
  TWO_PEERS_IN_ONE_ROOM,
} from './lib/checks.mjs';
import { FIXTURE_PATH, REPO_ROOT, launchBrowser, poll, scrape, startPageServer, startServer } from './lib/harness.mjs';

// mediasoup sends bandwidth probation packets on this SSRC (mid "probator").
const PROBATOR_SSRC = 1234;

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

test('signaling and media: two peers, a late joiner, a departure, two rooms kept apart', async (t) => {
  const server = await startServer();
  const step = scenario(t, server, () => browser.diagnostics());
  const [a, b, c, d, g] = await Promise.all(['A', 'B', 'C', 'D', 'G'].map((name) => browser.newPeer(name)));
  const table1 = server.wsUrl('table-1');
  const table2 = server.wsUrl('table-2');
  const produced = {};
  const joined = {};

  try {
    await step('A and B join table-1, produce mic + webcam and consume each other: video frames and audio samples decode', async () => {
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
        const { second } = await assertMediaDecodes(peer, ids(owner));
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
      await assertMediaDecodes(c, all.map((p) => p.id));
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
      await assertMediaDecodes(c, [produced.B.mic.id, produced.B.webcam.id]);
    });

    await step('D and G in table-2 play only each other\'s media; nothing crosses between table-1 and table-2', async () => {
      for (const peer of [d, g]) {
        await peer.join(table2);
        produced[peer.name] = { mic: await peer.produce('mic'), webcam: await peer.produce('webcam') };
      }
      // B restarts its webcam the module's way (new produce with the same mediaTag): C must
      // get producerClosed for the old producer and newProducer for the new one; D and G nothing.
      const oldWebcam = produced.B.webcam;
      produced.B.webcam = await b.produce('webcam');
      await waitNotification(c, 'producerClosed', [oldWebcam.id]);
      await waitNotification(c, 'newProducer', [produced.B.webcam.id]);
      await waitConsumersExactly(c, [produced.B.mic.id, produced.B.webcam.id]);
      await assertMediaDecodes(c, [produced.B.webcam.id]);

      const ids = (name) => [produced[name].mic.id, produced[name].webcam.id];
      await waitConsumersExactly(d, ids('G'));
      await waitConsumersExactly(g, ids('D'));
      await assertMediaDecodes(d, ids('G'));
      await assertMediaDecodes(g, ids('D'));
      // A round trip on each socket: anything queued for it before has been delivered.
      for (const peer of [b, c, d, g]) await peer.request('getRouterRtpCapabilities');

      const table2Ids = [...ids('D'), ...ids('G')];
      for (const peer of [d, g]) {
        const foreign = (await peer.notifications()).filter(
          (n) => n.type === 'newProducer' && !table2Ids.includes(n.producerId),
        );
        assert.deepEqual(foreign, [], `${peer.name} (table-2) got newProducer from another room`);
        // Every RTP stream the browser's receiving PeerConnection has is one of its consumers
        // (or mediasoup's bandwidth probator, SSRC 1234, which mediasoup-client always receives).
        const stats = await peer.stats();
        assert.deepEqual(
          sortedIds(stats.recvTransportInbound.filter((s) => s.ssrc !== PROBATOR_SSRC).map((s) => String(s.ssrc))),
          sortedIds(stats.consumers.map((x) => String(x.ssrc))),
          `${peer.name}: inbound RTP streams are exactly its consumers' (SSRCs)`,
        );
      }
      for (const peer of [b, c]) {
        const leaked = (await peer.notifications()).filter((n) => table2Ids.includes(n.producerId));
        assert.deepEqual(leaked, [], `peer ${peer.name} (table-1) was told about table-2's producers`);
      }
      // The server's own count: no consumer crosses rooms. table-1: C consumes B's mic and
      // webcam (B consumes nobody: A left, C does not produce); table-2: D and G consume each other.
      await waitOccupancy(
        server,
        {
          rooms: 2,
          peers: 4,
          sendTransports: 4,
          recvTransports: 4,
          audioProducers: 3,
          videoProducers: 3,
          audioConsumers: 3,
          videoConsumers: 3,
          workerRooms: 2,
          workerTransports: 8,
        },
        'consumers only within each room: 3 audio + 3 video (C of B, D of G, G of D)',
      );
    });
  } finally {
    await leaveAll([a, b, c, d, g]);
    const status = await server.stop();
    await step('SIGTERM stops the server with exit code 0', async () => {
      assert.deepEqual(status, { code: 0, signal: null });
    });
  }
});

/** [name, labels] of every series the README's Metrics table promises from start-up. */
// Why the server refuses a connection or request (README, "Security").
const REFUSAL_REASONS = [
  'connections',
  'connections_per_ip',
  'token_missing',
  'token_invalid',
  'origin',
  'handshake_timeout',
  'room_full',
  'rooms',
  'request_rate',
  'user_id_taken',
  'app_data_size',
];

function contractSeries() {
  const series = [
    ['mediasoup_server_ready', {}],
    ['mediasoup_server_workers_configured', {}],
    ['mediasoup_server_workers_alive', {}],
    ['mediasoup_server_worker_deaths_total', {}],
    ['mediasoup_server_rooms', {}],
    ['mediasoup_server_peers', {}],
    ['mediasoup_server_stats_objects_skipped_total', {}],
    ['mediasoup_server_worker_log_lines_suppressed_total', {}],
    ['mediasoup_server_recordings_active', {}],
    ['mediasoup_server_recording_bytes_total', {}],
    ['mediasoup_server_recording_write_errors_total', {}],
    ['mediasoup_server_recording_packets_dropped_total', {}],
    ['process_cpu_seconds_total', {}],
    ['process_resident_memory_bytes', {}],
    ['process_open_fds', {}],
    ['process_start_time_seconds', {}],
  ];
  // A histogram is its _bucket{le="+Inf"}, _sum and _count series.
  const histogram = (name, labels = {}) => {
    series.push([`${name}_bucket`, { ...labels, le: '+Inf' }], [`${name}_sum`, labels], [`${name}_count`, labels]);
  };
  histogram('mediasoup_server_dtls_connect_duration_seconds');
  histogram('mediasoup_server_rtt_seconds');
  histogram('mediasoup_server_stats_poll_duration_seconds');
  for (const direction of ['send', 'recv']) series.push(['mediasoup_server_transports', { direction }]);
  for (const kind of KINDS) {
    series.push(['mediasoup_server_producers', { kind }], ['mediasoup_server_consumers', { kind }]);
    histogram('mediasoup_server_producer_score', { kind });
    histogram('mediasoup_server_consumer_score', { kind });
    histogram('mediasoup_server_packet_loss_ratio', { kind });
    for (const direction of ['in', 'out']) series.push(['mediasoup_server_media_bytes_total', { direction, kind }]);
    for (const type of ['nack', 'pli', 'fir']) series.push(['mediasoup_server_rtcp_feedback_total', { type, kind }]);
  }
  for (const stage of JOIN_STAGES) series.push(['mediasoup_server_join_funnel_total', { stage }]);
  for (const reason of JOIN_FAILURES) series.push(['mediasoup_server_join_failures_total', { reason }]);
  for (const type of REQUEST_TYPES) {
    for (const outcome of ['ok', 'error']) series.push(['mediasoup_server_signaling_requests_total', { type, outcome }]);
    histogram('mediasoup_server_signaling_request_duration_seconds', { type });
  }
  for (const protocol of ['udp', 'tcp']) series.push(['mediasoup_server_ice_selected_tuples_total', { protocol }]);
  for (const reason of REFUSAL_REASONS) series.push(['mediasoup_server_refusals_total', { reason }]);
  for (const worker of ['0', '1']) {
    histogram('mediasoup_server_worker_probe_duration_seconds', { worker });
    histogram('mediasoup_server_worker_request_duration_seconds', { worker });
    series.push(['mediasoup_server_worker_rooms', { worker }], ['mediasoup_server_worker_transports', { worker }]);
  }
  // The queued sinks every server runs (systemd only under systemd); the metrics have no queue.
  for (const sink of ['log']) series.push(['mediasoup_server_bus_events_dropped_total', { sink }]);
  return series;
}

/**
 * The metric names the README's "### Metrics" table lists (`_x` short for
 * `mediasoup_server_x`; histograms by their base name), so that a metric added there
 * without a series here fails the test.
 */
async function readmeMetricNames() {
  const readme = await readFile(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const section = readme.split(/^### Metrics$/m)[1]?.split(/^#{2,3} /m)[0];
  assert.ok(section, 'README.md has a "### Metrics" section');
  const names = new Set();
  for (const row of section.split('\n').filter((line) => line.startsWith('| `'))) {
    const firstCell = row.split('|')[1];
    for (const [, token] of firstCell.matchAll(/`([^`]+)`/g)) {
      const name = token.replace(/\{.*\}$/, '');
      names.add(name.startsWith('_') ? `mediasoup_server${name}` : name);
    }
  }
  assert.ok(names.size >= 25, `README Metrics table parsed to only ${names.size} names: ${[...names].join(', ')}`);
  return [...names];
}

test('metrics: /metrics passes promtool and follows joins, media, errors and leaves', async (t) => {
  const server = await startServer();
  const step = scenario(t, server, () => browser.diagnostics());
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
      const readmeNames = await readmeMetricNames();
      const contractNames = new Set(contractSeries().map(([name]) => name.replace(/_(bucket|sum|count)$/, '')));
      const uncovered = readmeNames.filter(
        (name) => !contractNames.has(name) && !name.startsWith('process_') && name !== 'mediasoup_server_build_info',
      );
      assert.deepEqual(uncovered, [], 'README Metrics table lists metrics that contractSeries() does not check');
      const absent = readmeNames.filter((name) => !metrics.samples.some((s) => s.name === name || s.name.startsWith(`${name}_`)));
      assert.deepEqual(absent, [], 'README Metrics table lists metrics the start-up scrape lacks');
      const [buildInfo] = metrics.matching('mediasoup_server_build_info');
      assert.match(buildInfo?.labels.version ?? '', /^\d+\.\d+\.\d+/, 'build_info{version} names the version');
      assert.equal(buildInfo.value, 1);
      assert.equal(metrics.value('mediasoup_server_ready'), 1);
      assert.equal(metrics.value('mediasoup_server_workers_configured'), 2);
      assert.equal(metrics.value('mediasoup_server_workers_alive'), 2);
      assert.deepEqual(occupancy(metrics), EMPTY);
      // Every counter and histogram is still at zero, but for what runs on its own.
      const moved = metrics.samples.filter(
        (s) =>
          s.name.startsWith('mediasoup_server_') &&
          (s.name.endsWith('_total') || s.name.endsWith('_count')) &&
          !s.name.startsWith('mediasoup_server_worker_probe_duration_seconds') &&
          !s.name.startsWith('mediasoup_server_worker_request_duration_seconds') &&
          !s.name.startsWith('mediasoup_server_stats_poll_duration_seconds') &&
          s.value !== 0,
      );
      assert.deepEqual(moved, [], 'counters at rest (only the worker probes and stats rounds run on their own)');
    });

    await step('peers/transports/producers/consumers gauges, request counters and the join funnel (once per peer and stage) as E and F join', async () => {
      for (const peer of [e, f]) {
        await peer.join(room);
        produced[peer.name] = { mic: await peer.produce('mic'), webcam: await peer.produce('webcam') };
      }
      await waitConsumersExactly(e, [produced.F.mic.id, produced.F.webcam.id]);
      await waitConsumersExactly(f, [produced.E.mic.id, produced.E.webcam.id]);
      await waitOccupancy(
        server,
        TWO_PEERS_IN_ONE_ROOM,
        'the gauges to show 1 room, 2 peers, 4 transports, 4 producers, 4 consumers',
      );
      const requests = (m, outcome) =>
        Object.fromEntries(
          REQUEST_TYPES.map((type) => [type, m.value('mediasoup_server_signaling_requests_total', { type, outcome })]),
        );
      const wantOk = {
        ...Object.fromEntries(REQUEST_TYPES.map((type) => [type, 0])),
        getRouterRtpCapabilities: 2,
        createWebRtcTransport: 4,
        connectTransport: 4,
        produce: 4,
        consume: 4,
      };
      const funnel = (m) => byLabel(m, 'mediasoup_server_join_funnel_total', 'stage', JOIN_STAGES);
      // Counters may trail the answers a little: wait until they reach their final values.
      const metrics = await poll(
        async () => {
          const m = await scrape(server);
          const ok = requests(m, 'ok');
          return (
            JOIN_STAGES.every((stage) => funnel(m)[stage] >= 2) &&
            m.value('mediasoup_server_dtls_connect_duration_seconds_count') >= 4 &&
            m.value('mediasoup_server_ice_selected_tuples_total') >= 4 &&
            REQUEST_TYPES.every((type) => ok[type] >= wantOk[type]) &&
            m
          );
        },
        { timeoutMs: MEDIA_TIMEOUT_MS, what: 'join funnel, DTLS durations, ICE tuples and request counters to reach their values' },
      );
      // Exactly once per peer and stage: E and F.
      assert.deepEqual(funnel(metrics), Object.fromEntries(JOIN_STAGES.map((stage) => [stage, 2])), 'join_funnel_total by stage');
      assert.deepEqual(
        byLabel(metrics, 'mediasoup_server_join_failures_total', 'reason', JOIN_FAILURES),
        Object.fromEntries(JOIN_FAILURES.map((reason) => [reason, 0])),
        'join_failures_total by reason',
      );
      // Over loopback every transport's ICE path is UDP.
      assert.ok(
        metrics.value('mediasoup_server_ice_selected_tuples_total', { protocol: 'udp' }) >= 4,
        'ice_selected_tuples_total{protocol="udp"}: at least one per transport',
      );
      assert.equal(metrics.value('mediasoup_server_ice_selected_tuples_total', { protocol: 'tcp' }), 0, 'no TCP path over loopback');
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
      // Scores come from the workers and samples from the 1 s stats rounds: wait for each.
      const observed = (m) => [
        ...KINDS.flatMap((kind) => [
          [`producer_score_count{kind="${kind}"}`, m.value('mediasoup_server_producer_score_count', { kind })],
          [`consumer_score_count{kind="${kind}"}`, m.value('mediasoup_server_consumer_score_count', { kind })],
          [`packet_loss_ratio_count{kind="${kind}"}`, m.value('mediasoup_server_packet_loss_ratio_count', { kind })],
        ]),
        ['stats_poll_duration_seconds_count', m.value('mediasoup_server_stats_poll_duration_seconds_count')],
      ];
      const live = await poll(
        async () => {
          const m = await scrape(server);
          return bytes(m).every((v, i) => v > first[i]) && observed(m).every(([, v]) => v > 0) && m;
        },
        {
          timeoutMs: MEDIA_TIMEOUT_MS,
          what: 'every media_bytes_total series to grow and scores, loss samples and stats rounds to be observed',
        },
      );
      // Nothing is over the per-round cap with 4 producers and 4 consumers.
      assert.equal(live.value('mediasoup_server_stats_objects_skipped_total'), 0, 'stats_objects_skipped_total');
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
      const metrics = await scrape(server);
      assert.deepEqual(
        byLabel(metrics, 'mediasoup_server_join_funnel_total', 'stage', JOIN_STAGES),
        Object.fromEntries(JOIN_STAGES.map((stage) => [stage, 2])),
        'join_funnel_total still exactly one per peer and stage after they left',
      );
      assert.deepEqual(
        byLabel(metrics, 'mediasoup_server_join_failures_total', 'reason', JOIN_FAILURES),
        Object.fromEntries(JOIN_FAILURES.map((reason) => [reason, 0])),
        'leaving after a complete join is no join failure',
      );
      assert.equal(metrics.value('mediasoup_server_worker_deaths_total'), 0, 'worker_deaths_total');
    });
  } finally {
    await leaveAll([e, f]);
    const status = await server.stop();
    await step('SIGTERM stops the server with exit code 0', async () => {
      assert.deepEqual(status, { code: 0, signal: null });
    });
  }
});
