// A real (non-loopback) network path for the e2e test: a veth pair between the test's own
// private network namespace (tests/e2e/netns.sh; the server runs here) and a second, child
// namespace that only Chromium runs in. Both namespaces are anonymous and belong to processes
// of this test: when the test ends, however it ends, they and the veth pair are gone.
//
//   test namespace (netns.sh)              browser namespace (held by `unshare --net cat`)
//   lo 127.0.0.1: /metrics                 lo
//   e2e-srv 198.18.0.1/30  <--- veth --->  e2e-br 198.18.0.2/30: Chromium
//   server: signaling, UDP+TCP media
//
// 198.18.0.0/15 is the benchmarking range (RFC 2544): nothing outside these two namespaces.
import { execFile, spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const SERVER_IP = '198.18.0.1';
export const BROWSER_IP = '198.18.0.2';
const SERVER_DEV = 'e2e-srv';
const BROWSER_DEV = 'e2e-br';

async function ip(args, { netns } = {}) {
  const [cmd, argv] = netns ? ['nsenter', [`--net=${netns}`, '--', 'ip', ...args]] : ['ip', args];
  try {
    await run(cmd, argv);
  } catch (error) {
    throw new Error(`${cmd} ${argv.join(' ')} failed: ${error.stderr?.trim() || error.message}`);
  }
}

/**
 * Creates the browser namespace and the veth pair; returns {serverIp, browserIp,
 * chromiumWrapper (an executable that runs /usr/bin/chromium in the browser namespace), close()}.
 * Refuses to run outside netns.sh's private namespace, so it never touches the host's network.
 */
export async function createRealPath() {
  const others = Object.entries(networkInterfaces())
    .filter(([, addresses]) => addresses.some((a) => !a.internal))
    .map(([name]) => name);
  if (process.env.E2E_IN_NETNS !== '1' || others.length > 0) {
    throw new Error(
      'the real-path test creates network interfaces: it only runs inside the private, loopback-only ' +
        `namespace of tests/e2e/netns.sh (tests/e2e/run.sh does that); interfaces here: ${others.join(', ') || 'lo'}`,
    );
  }
  for (const tool of ['unshare', 'nsenter', 'ip', 'ss']) {
    await run('sh', ['-c', `command -v ${tool}`]).catch(() => {
      throw new Error(`'${tool}' is missing (Debian: apt-get install util-linux iproute2)`);
    });
  }

  // The holder keeps the browser namespace alive; it exits when this process goes away
  // (its stdin closes), and the namespace with it.
  const holder = spawn('unshare', ['--net', '--', 'cat'], { stdio: ['pipe', 'ignore', 'pipe'] });
  let holderError = '';
  holder.stderr.on('data', (chunk) => {
    holderError += chunk;
  });
  const holderExited = new Promise((resolve) => holder.once('exit', resolve));
  const netns = `/proc/${holder.pid}/ns/net`;
  const workDir = await mkdtemp(path.join(tmpdir(), 'mediasoup-e2e-realpath-'));
  const killHolder = () => holder.kill('SIGKILL');
  process.once('exit', killHolder);

  const close = async () => {
    process.removeListener('exit', killHolder);
    // Deleting one end deletes the pair; the namespace goes when its last process exits.
    await ip(['link', 'del', SERVER_DEV]).catch(() => {});
    holder.stdin.end();
    const timer = setTimeout(killHolder, 5_000);
    await holderExited;
    clearTimeout(timer);
    await rm(workDir, { recursive: true, force: true });
  };

  try {
    // Wait until unshare has switched namespaces (the holder's net ns differs from ours).
    const deadline = Date.now() + 5_000;
    for (;;) {
      const { stdout } = await run('readlink', [netns, '/proc/self/ns/net']).catch(() => ({ stdout: '' }));
      const [theirs, ours] = stdout.trim().split('\n');
      if (theirs && ours && theirs !== ours) break;
      if (holder.exitCode !== null || Date.now() > deadline) {
        throw new Error(`could not create the browser network namespace: ${holderError.trim() || 'timeout'}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await ip(['link', 'add', SERVER_DEV, 'type', 'veth', 'peer', 'name', BROWSER_DEV]);
    await ip(['link', 'set', BROWSER_DEV, 'netns', String(holder.pid)]);
    await ip(['addr', 'add', `${SERVER_IP}/30`, 'dev', SERVER_DEV]);
    await ip(['link', 'set', SERVER_DEV, 'up']);
    await ip(['link', 'set', 'lo', 'up'], { netns });
    await ip(['addr', 'add', `${BROWSER_IP}/30`, 'dev', BROWSER_DEV], { netns });
    await ip(['link', 'set', BROWSER_DEV, 'up'], { netns });
    // Chromium gathers host candidates only with a default route; it points at the server side,
    // whose namespace routes nowhere else.
    await ip(['route', 'add', 'default', 'via', SERVER_IP], { netns });

    const chromiumWrapper = path.join(workDir, 'chromium-in-netns');
    await writeFile(chromiumWrapper, `#!/bin/sh\nexec nsenter --net=${netns} -- /usr/bin/chromium "$@"\n`);
    await chmod(chromiumWrapper, 0o755);
    return { serverIp: SERVER_IP, browserIp: BROWSER_IP, netns, chromiumWrapper, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/**
 * Established TCP connections of this namespace from `localIp` ports min..max to `remoteIp`,
 * as `ss -tn` lists them: [{localPort, remotePort}].
 */
export async function establishedTcp({ localIp, remoteIp, min, max }) {
  const { stdout } = await run('ss', ['-Htn', 'state', 'established', 'src', localIp, 'dst', remoteIp]);
  const connections = [];
  for (const line of stdout.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 4) continue;
    const [local, remote] = fields.slice(-2);
    const localPort = Number(local.slice(local.lastIndexOf(':') + 1));
    const remotePort = Number(remote.slice(remote.lastIndexOf(':') + 1));
    if (localPort >= min && localPort <= max) connections.push({ localPort, remotePort });
  }
  return connections;
}

/** An IPv4 address as /proc/net/tcp writes it (little-endian hex). */
const procHex = (ipv4) =>
  ipv4
    .split('.')
    .map((octet) => Number(octet).toString(16).padStart(2, '0'))
    .reverse()
    .join('')
    .toUpperCase();

/**
 * The same as establishedTcp, read from /proc/net/tcp (the table `ss` prints) without
 * starting a process: cheap enough to sample several times a second.
 */
export async function establishedTcpFromProc({ localIp, remoteIp, min, max }) {
  const [local, remote] = [procHex(localIp), procHex(remoteIp)];
  const connections = [];
  for (const line of (await readFile('/proc/net/tcp', 'utf8')).split('\n').slice(1)) {
    const [, localAddress, remoteAddress, state] = line.trim().split(/\s+/);
    if (state !== '01' || !localAddress?.startsWith(`${local}:`) || !remoteAddress?.startsWith(`${remote}:`)) continue;
    const localPort = parseInt(localAddress.split(':')[1], 16);
    const remotePort = parseInt(remoteAddress.split(':')[1], 16);
    if (localPort >= min && localPort <= max) connections.push({ localPort, remotePort });
  }
  return connections;
}

/**
 * A TCP relay in front of the server's signaling port, on `host`. drop() resets both sides
 * (TCP RST, no WebSocket close frame): the server sees the connection die, as when a
 * player's network goes away. stall() stops relaying on the connections open now while
 * keeping them open (a network that went silent: the server's pings go unanswered);
 * dropStalled() then resets just those.
 */
export async function startTcpRelay({ host, target }) {
  const pairs = new Set();
  const relay = net.createServer((client) => {
    const upstream = net.connect(target);
    const pair = { client, upstream, stalled: false };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => relay.listen(0, host, resolve));
  return {
    port: relay.address().port,
    wsUrl: (room) => `ws://${host}:${relay.address().port}/${room}`,
    connections: () => pairs.size,
    drop() {
      for (const { client, upstream } of pairs) {
        upstream.resetAndDestroy();
        client.resetAndDestroy();
      }
      pairs.clear();
    },
    stall() {
      for (const pair of pairs) {
        pair.stalled = true;
        pair.client.unpipe(pair.upstream);
        pair.upstream.unpipe(pair.client);
        pair.client.pause();
        pair.upstream.pause();
      }
    },
    dropStalled() {
      for (const pair of [...pairs].filter((p) => p.stalled)) {
        pairs.delete(pair);
        pair.upstream.resetAndDestroy();
        pair.client.resetAndDestroy();
      }
    },
    close: () =>
      new Promise((resolve) => {
        for (const { client, upstream } of pairs) {
          client.destroy();
          upstream.destroy();
        }
        relay.close(resolve);
      }),
  };
}
