// Refreshes tests/fixtures/chromium-rtp-parameters.json: the rtpParameters that real
// headless Chromium (through mediasoup-client) sends in its `produce` requests to the real
// server, one audio (mic) and one video (webcam). The Rust protocol tests read this file.
//
// Usage (after tests/e2e/setup.sh and a release build of the server), from the repo root:
//   tests/e2e/netns.sh node tests/e2e/capture-fixture.mjs
import { writeFile } from 'node:fs/promises';
import path from 'node:path';

import { FIXTURE_PATH, REPO_ROOT, launchBrowser, startPageServer, startServer } from './lib/harness.mjs';

const server = await startServer();
const pageServer = await startPageServer();
const browser = await launchBrowser(pageServer.url);
try {
  const peer = await browser.newPeer('fixture');
  await peer.join(server.wsUrl('fixture'));
  await peer.produce('mic');
  await peer.produce('webcam');
  const produceRequests = (await peer.sent()).filter((m) => m.type === 'produce');
  const byKind = Object.fromEntries(produceRequests.map((m) => [m.kind, m.rtpParameters]));
  if (!byKind.audio || !byKind.video) {
    throw new Error(`expected an audio and a video produce request, got ${JSON.stringify(Object.keys(byKind))}`);
  }
  await writeFile(FIXTURE_PATH, `${JSON.stringify({ audio: byKind.audio, video: byKind.video }, null, 2)}\n`);
  console.log(`wrote ${path.relative(REPO_ROOT, FIXTURE_PATH)} (Chromium ${browser.version})`);
  await peer.leave();
} finally {
  await browser.close();
  await pageServer.close();
  const status = await server.stop();
  if (status.code !== 0) {
    console.error(`server exited with ${JSON.stringify(status)}`);
    process.exitCode = 1;
  }
}
