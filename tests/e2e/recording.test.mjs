// Per-speaker recording end to end (README, "Recording"): two Chromium peers with the fake
// microphone (a beep tone) in a recorded room, one replacing its microphone once; an excluded
// user in the same room and a peer in an unrecorded room. The files are checked with opus-tools
// (opusinfo validates, opusdec decodes: duration and loudness), the manifest against what the
// browsers sent. Run: tests/e2e/run.sh (or tests/e2e/netns.sh node --test tests/e2e/recording.test.mjs)
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { SIGNALING_TIMEOUT_MS, assertMediaDecodes, exchangeMedia, leaveAll, scenario, waitConsumersExactly } from './lib/checks.mjs';
import { foundryUserId, launchBrowser, poll, scrape, startPageServer, startServer } from './lib/harness.mjs';

// How long each microphone producer sends: the stimulus, not a synchronisation.
const SEND_MS = 5_000;
// Opus from Chromium: 20 ms per packet.
const PACKET_MS = 20;
// A decoded file may differ from what was sent by this share (RFC 7845 pre-skip, the packets
// in flight when a producer closed).
const DURATION_TOLERANCE = 0.05;
// int16 RMS under this is silence (the fake microphone's beep is far louder).
const SILENCE_RMS = 100;

let pageServer;
let browser;
let recordings;

before(async () => {
  for (const tool of ['opusinfo', 'opusdec']) {
    if (spawnSync(tool, ['--version']).error) throw new Error(`${tool} not found: run tests/e2e/setup.sh (apt opus-tools)`);
  }
  recordings = await mkdtemp(path.join(tmpdir(), 'mediasoup-e2e-recordings-'));
  pageServer = await startPageServer();
  browser = await launchBrowser(pageServer.url);
});

after(async () => {
  await browser?.close();
  await pageServer?.close();
  if (recordings) await rm(recordings, { recursive: true, force: true });
});

/** 16-bit PCM WAV -> {seconds, rms}; opusdec writes 48 kHz. */
function wavSummary(buffer) {
  assert.equal(buffer.toString('ascii', 0, 4), 'RIFF', 'opusdec wrote a WAV file');
  let offset = 12;
  let channels = 1;
  let rate = 48_000;
  while (offset + 8 <= buffer.length) {
    const id = buffer.toString('ascii', offset, offset + 4);
    let size = buffer.readUInt32LE(offset + 4);
    const body = offset + 8;
    if (id === 'fmt ') {
      channels = buffer.readUInt16LE(body + 2);
      rate = buffer.readUInt32LE(body + 4);
    } else if (id === 'data') {
      // opusdec writing to a file fixes the size afterwards; trust the file's length.
      size = Math.min(size, buffer.length - body);
      const samples = Math.floor(size / 2);
      let sum = 0;
      for (let i = 0; i < samples; i += 1) sum += buffer.readInt16LE(body + 2 * i) ** 2;
      return { seconds: samples / channels / rate, rms: Math.sqrt(sum / Math.max(samples, 1)) };
    }
    offset = body + size + (size % 2);
  }
  throw new Error('no data chunk in the WAV file');
}

function run(tool, args) {
  const result = spawnSync(tool, args, { encoding: 'utf8' });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

async function readManifest(sessionDir) {
  return JSON.parse(await readFile(path.join(sessionDir, 'manifest.json'), 'utf8'));
}

/** Packets a producer sent so far, from the page's outbound-rtp stats. */
async function packetsSent(peer, producerId) {
  const { producers } = await peer.stats();
  const producer = producers.find((p) => p.producerId === producerId);
  assert.ok(producer, `peer ${peer.name} still has producer ${producerId}`);
  return producer.packetsSent;
}

test('recording: per-speaker Ogg Opus files, a replaced microphone, the manifest; excluded and unrecorded peers write nothing', async (t) => {
  const excludedUser = foundryUserId();
  const server = await startServer({
    numWorkers: 1,
    env: {
      MEDIASOUP_RECORDINGS_DIR: recordings,
      MEDIASOUP_RECORD_ROOMS: 'rec-*',
      MEDIASOUP_RECORD_EXCLUDE_USERS: `someone-else,${excludedUser}`,
    },
  });
  const step = scenario(t, server, () => browser.diagnostics());
  const [a, b, x, u] = await Promise.all(['A', 'B', 'X', 'U'].map((name) => browser.newPeer(name)));
  x.userId = excludedUser;
  const peers = [a, b, x, u];
  const sent = {};
  let sessionDir;

  try {
    await step('A, B and excluded X produce mic in rec-table, U in plain; two recordings start', async () => {
      for (const peer of [a, b, x]) await peer.join(server.wsUrl('rec-table'));
      await u.join(server.wsUrl('plain'));
      for (const peer of peers) sent[peer.name] = [await peer.produce('mic')];
      await waitConsumersExactly(a, [sent.B[0].id, sent.X[0].id]);
      await waitConsumersExactly(b, [sent.A[0].id, sent.X[0].id]);
      await poll(async () => (await scrape(server)).value('mediasoup_server_recordings_active') === 2, {
        timeoutMs: SIGNALING_TIMEOUT_MS,
        what: 'mediasoup_server_recordings_active to be 2 (A and B, not X nor U)',
      });
      const rooms = await readdir(recordings);
      assert.deepEqual(rooms, ['rec-table'], 'only the recorded room has a directory');
      const sessions = await readdir(path.join(recordings, 'rec-table'));
      assert.equal(sessions.length, 1);
      assert.match(sessions[0], /^\d{8}T\d{6}Z$/, 'the session directory is named by its UTC start');
      sessionDir = path.join(recordings, 'rec-table', sessions[0]);
    });

    await step('A replaces its microphone once; then everyone leaves and every file is finished', async () => {
      await new Promise((resolve) => setTimeout(resolve, SEND_MS));
      sent.A[0].packets = await packetsSent(a, sent.A[0].id);
      sent.A.push(await a.produce('mic'));
      await new Promise((resolve) => setTimeout(resolve, SEND_MS));
      sent.A[1].packets = await packetsSent(a, sent.A[1].id);
      sent.B[0].packets = await packetsSent(b, sent.B[0].id);
      await leaveAll(peers);
      await poll(
        async () => {
          const manifest = await readManifest(sessionDir);
          const metrics = await scrape(server);
          return (
            manifest.files.length === 3 &&
            manifest.files.every((f) => f.endMs !== null) &&
            metrics.value('mediasoup_server_recordings_active') === 0 &&
            manifest
          );
        },
        { timeoutMs: SIGNALING_TIMEOUT_MS, what: 'three finished files in the manifest and no recording active' },
      );
      const metrics = await scrape(server);
      assert.ok(metrics.value('mediasoup_server_recording_bytes_total') > 0, 'bytes written are counted');
      assert.equal(metrics.value('mediasoup_server_recording_write_errors_total'), 0);
    });

    await step('the files: <userId>-<n>.opus, 0640, valid for opusinfo, decoded duration = what was sent, not silence', async () => {
      const expected = {
        [`${a.userId}-1.opus`]: sent.A[0],
        [`${a.userId}-2.opus`]: sent.A[1],
        [`${b.userId}-1.opus`]: sent.B[0],
      };
      const files = (await readdir(sessionDir)).filter((f) => f.endsWith('.opus')).sort();
      assert.deepEqual(files, Object.keys(expected).sort(), 'one file per recorded producer; X is excluded');
      for (const [file, producer] of Object.entries(expected)) {
        const full = path.join(sessionDir, file);
        assert.equal((await stat(full)).mode & 0o777, 0o640, `${file} is created 0640`);
        const info = run('opusinfo', [full]);
        assert.equal(info.status, 0, `opusinfo ${file}:\n${info.output}`);
        assert.doesNotMatch(info.output, /WARNING|ERROR/i, `opusinfo ${file} is clean:\n${info.output}`);
        const wav = `${full}.wav`;
        const decoded = run('opusdec', ['--quiet', full, wav]);
        assert.equal(decoded.status, 0, `opusdec ${file}:\n${decoded.output}`);
        const { seconds, rms } = wavSummary(await readFile(wav));
        await rm(wav);
        const sentSeconds = (producer.packets * PACKET_MS) / 1000;
        assert.ok(
          Math.abs(seconds - sentSeconds) <= sentSeconds * DURATION_TOLERANCE,
          `${file}: decoded ${seconds.toFixed(3)} s, sent ${sentSeconds.toFixed(3)} s (${producer.packets} packets)`,
        );
        assert.ok(rms > SILENCE_RMS, `${file}: RMS ${rms.toFixed(1)} is not silence`);
        console.log(`${file}: ${seconds.toFixed(3)} s decoded, ${sentSeconds.toFixed(3)} s sent, RMS ${rms.toFixed(0)}`);
      }
    });

    await step('the manifest: room, UTC start, each file with its producer and offsets; who spoke when', async () => {
      const manifest = await readManifest(sessionDir);
      assert.equal(manifest.room, 'rec-table');
      assert.match(manifest.startedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.equal(new Date(manifest.startedAt).getTime(), manifest.startedAtMs);
      const byFile = Object.fromEntries(manifest.files.map((f) => [f.file, f]));
      const a1 = byFile[`${a.userId}-1.opus`];
      const a2 = byFile[`${a.userId}-2.opus`];
      const b1 = byFile[`${b.userId}-1.opus`];
      assert.deepEqual(
        [a1.producerId, a2.producerId, b1.producerId, a1.userId, b1.userId],
        [sent.A[0].id, sent.A[1].id, sent.B[0].id, a.userId, b.userId],
      );
      assert.ok(a2.startMs >= a1.endMs, 'the replacement starts where the first microphone ended');
      assert.ok(b1.startMs <= a1.startMs + 1_000 && b1.endMs >= a2.endMs - 1_000, 'B spans both of A');
      // Manifest offsets are server time: from the producer's creation to its close, which
      // includes the first packet's trip (ICE, DTLS): a second of slack, plus 5 %.
      for (const [entry, producer] of [[a1, sent.A[0]], [a2, sent.A[1]], [b1, sent.B[0]]]) {
        const sentMs = producer.packets * PACKET_MS;
        const span = entry.endMs - entry.startMs;
        assert.ok(
          span >= sentMs * (1 - DURATION_TOLERANCE) && span <= sentMs * (1 + DURATION_TOLERANCE) + 1_000,
          `${entry.file}: manifest span ${span} ms, sent ${sentMs} ms`,
        );
      }
      for (const [user, entries] of [[a.userId, [a1, a2]], [b.userId, [b1]]]) {
        const stretches = manifest.speaking.filter((s) => s.userId === user);
        assert.ok(stretches.length > 0, `the speaking timeline has ${user}: ${JSON.stringify(manifest.speaking)}`);
        for (const s of stretches) {
          assert.ok(s.endMs !== null && s.endMs >= s.startMs, `a finished stretch: ${JSON.stringify(s)}`);
          const within = entries.some((f) => s.startMs >= f.startMs - 500 && s.endMs <= f.endMs + 500);
          assert.ok(within, `stretch ${JSON.stringify(s)} lies within one of ${user}'s files`);
        }
      }
      assert.ok(
        manifest.speaking.every((s) => s.userId !== excludedUser),
        'the excluded user is not in the speaking timeline',
      );
      assert.ok(!existsSync(path.join(recordings, 'plain')), 'the unrecorded room wrote nothing');
    });
  } finally {
    await leaveAll(peers);
    const status = await server.stop();
    assert.equal(status.code, 0, `server exit: ${JSON.stringify(status)}`);
  }
});

test('recording: a room whose files cannot be written keeps its media; the error is counted once', async (t) => {
  // A regular file where the room's directory must go: creating the session fails, for root too.
  const broken = path.join(recordings, 'broken');
  await mkdir(broken);
  await writeFile(path.join(broken, 'rec-broken'), 'not a directory\n');
  const server = await startServer({
    numWorkers: 1,
    env: { MEDIASOUP_RECORDINGS_DIR: broken, MEDIASOUP_RECORD_ROOMS: 'rec-*' },
  });
  const step = scenario(t, server, () => browser.diagnostics());
  const [a, b] = await Promise.all(['A', 'B'].map((name) => browser.newPeer(name)));
  try {
    await step('A and B exchange audio and video in the room while its recording fails', async () => {
      const joined = await exchangeMedia(a, b, server.wsUrl('rec-broken'));
      assert.ok(joined.A && joined.B);
      await poll(async () => (await scrape(server)).value('mediasoup_server_recording_write_errors_total') >= 1, {
        timeoutMs: SIGNALING_TIMEOUT_MS,
        what: 'the write error to be counted',
      });
    });
    await step('media keeps flowing after the error; no recording is active, one error counted', async () => {
      const producedBy = async (peer) => (await peer.consumers()).map((c) => c.producerId);
      await assertMediaDecodes(a, await producedBy(a));
      await assertMediaDecodes(b, await producedBy(b));
      const metrics = await scrape(server);
      assert.equal(metrics.value('mediasoup_server_recordings_active'), 0);
      assert.equal(metrics.value('mediasoup_server_recording_write_errors_total'), 1, 'one error for the room, not one per packet');
      const errorLines = server.log().split('\n').filter((line) => line.includes('ERROR') && line.includes('rec-broken'));
      assert.equal(errorLines.length, 1, `one error log line:\n${errorLines.join('\n')}`);
    });
  } finally {
    await leaveAll([a, b]);
    const status = await server.stop();
    assert.equal(status.code, 0, `server exit: ${JSON.stringify(status)}`);
  }
});
