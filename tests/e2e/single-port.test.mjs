// Single-port media (MEDIASOUP_RTC_PORT) with real browsers: every candidate on the one port,
// audio and video decoded over UDP; then with UDP to that port dropped in this network
// namespace (nftables), the same over TCP on the same port. The server holds exactly one UDP and
// one TCP media socket throughout (ss). Run: tests/e2e/run.sh
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';

import { exchangeMedia, leaveAll, scenario } from './lib/checks.mjs';
import { browserForFile, singleMediaPort, startServer } from './lib/harness.mjs';

const shared = browserForFile();

function run(command, args, input) {
  const result = spawnSync(command, args, { input, encoding: 'utf8' });
  if (result.error) throw new Error(`${command} could not run (${result.error.message}): run tests/e2e/setup.sh`);
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

/** The local ports of the server's sockets of `protocol` ('udp' or 'tcp', listening ones). */
function serverPorts(pid, protocol) {
  const lines = run('ss', ['-H', '-n', '-p', protocol === 'udp' ? '-ua' : '-tl']).split('\n');
  return lines
    .filter((line) => line.includes(`pid=${pid},`))
    .map((line) => Number(line.trim().split(/\s+/)[3].split(':').pop()))
    .sort((a, b) => a - b);
}

/** Two peers join `room`, send microphone and camera, and must decode each other over `protocol`. */
async function mediaBetweenTwo(server, room, port, protocol) {
  const [a, b] = await Promise.all(['A', 'B'].map((name) => shared.browser.newPeer(name)));
  try {
    const joined = await exchangeMedia(a, b, server.wsUrl(room));
    for (const peer of [a, b]) {
      for (const transport of [joined[peer.name].sendTransport, joined[peer.name].recvTransport]) {
        const candidates = transport.iceCandidates.map((c) => `${c.protocol}:${c.port}`).sort();
        assert.deepEqual(candidates, [`tcp:${port}`, `udp:${port}`], `peer ${peer.name}: one UDP and one TCP candidate on the media port`);
      }
      const ice = await peer.iceInfo();
      for (const side of ['send', 'recv']) {
        assert.equal(ice[side]?.selected?.remoteProtocol, protocol, `peer ${peer.name} ${side}: ${JSON.stringify(ice[side])}`);
        assert.equal(ice[side]?.selected?.remotePort, port, `peer ${peer.name} ${side}: ${JSON.stringify(ice[side])}`);
      }
    }
    assert.deepEqual(serverPorts(server.pid, 'udp'), [port], 'the server has one UDP socket, on the media port');
    assert.ok(serverPorts(server.pid, 'tcp').filter((p) => p === port).length === 1, 'one TCP listener on the media port');
  } finally {
    await leaveAll([a, b]);
  }
}

test('single-port media: UDP, then TCP on the same port when UDP is dropped', async (t) => {
  assert.equal(process.env.E2E_IN_NETNS, '1', 'run through tests/e2e/netns.sh: the UDP drop must stay in its namespace');
  const port = singleMediaPort();
  const server = await startServer({ numWorkers: 1, env: { MEDIASOUP_RTC_PORT: String(port) } });
  const step = scenario(t, server, () => shared.browser.diagnostics());
  const table = `e2e_single_port_${process.pid}`;
  try {
    await step(`UDP: candidates, selected pairs and decoded media on port ${port}`, () =>
      mediaBetweenTwo(server, 'single-port-udp', port, 'udp'),
    );
    await step(`UDP to ${port} dropped: the same over TCP`, async () => {
      run('nft', ['-f', '-'], `table inet ${table} {
        chain input {
          type filter hook input priority filter; policy accept;
          udp dport ${port} counter drop
        }
      }
`);
      await mediaBetweenTwo(server, 'single-port-tcp', port, 'tcp');
      const dropped = Number(/counter packets (\d+)/.exec(run('nft', ['list', 'table', 'inet', table]))?.[1]);
      assert.ok(dropped > 0, `the rule dropped the browsers' UDP (${dropped} packets)`);
    });
  } finally {
    spawnSync('nft', ['delete', 'table', 'inet', table]);
    await server.stop();
  }
});
