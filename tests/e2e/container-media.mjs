// Media through a container's published ports (packaging/docker/test.sh runs this; not part of
// `node --test tests/e2e/`): two Chromium peers join CONTAINER_WS_URL, send microphone and
// camera, and must decode each other's media over the single media port CONTAINER_MEDIA_PORT.
//   CONTAINER_WS_URL=ws://10.0.0.5:13000/table CONTAINER_MEDIA_PORT=40000 node tests/e2e/container-media.mjs
import assert from 'node:assert/strict';

import { exchangeMedia, leaveAll } from './lib/checks.mjs';
import { launchBrowser, startPageServer } from './lib/harness.mjs';

const wsUrl = process.env.CONTAINER_WS_URL;
const mediaPort = Number(process.env.CONTAINER_MEDIA_PORT);
if (!wsUrl || !mediaPort) {
  console.error('set CONTAINER_WS_URL and CONTAINER_MEDIA_PORT (see the comment at the top)');
  process.exit(2);
}

const pageServer = await startPageServer();
const browser = await launchBrowser(pageServer.url, { anyNetwork: true });
try {
  const [a, b] = await Promise.all(['A', 'B'].map((name) => browser.newPeer(name)));
  const joined = await exchangeMedia(a, b, wsUrl);
  for (const peer of [a, b]) {
    for (const transport of [joined[peer.name].sendTransport, joined[peer.name].recvTransport]) {
      const ports = new Set(transport.iceCandidates.map((c) => c.port));
      assert.deepEqual([...ports], [mediaPort], `peer ${peer.name}: every candidate on the one media port`);
    }
    const ice = await peer.iceInfo();
    for (const side of ['send', 'recv']) {
      assert.equal(ice[side]?.selected?.remotePort, mediaPort, `peer ${peer.name} ${side}: media went to port ${mediaPort}`);
      console.log(`peer ${peer.name} ${side}: ${ice[side].selected.remoteProtocol} to ${ice[side].selected.remoteAddress}:${mediaPort}`);
    }
  }
  console.log('container media: both peers decode each other\'s audio and video');
  await leaveAll([a, b]);
} catch (error) {
  console.error(browser.diagnostics());
  throw error;
} finally {
  await browser.close();
  await pageServer.close();
}
