// Pieces the end-to-end test and the fixture capture share: the real server process,
// the static page server, headless Chromium peers, polling and /metrics parsing.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';

import * as esbuild from 'esbuild';
import { chromium } from 'playwright-core';

export const E2E_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const REPO_ROOT = path.resolve(E2E_DIR, '..', '..');
export const FIXTURE_PATH = path.join(REPO_ROOT, 'tests', 'fixtures', 'chromium-rtp-parameters.json');
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
];
const SERVER_READY_TIMEOUT_MS = 30_000;
const SERVER_STOP_TIMEOUT_MS = 15_000;

/** Thrown inside a poll probe to stop polling at once (the condition can no longer come true). */
export class FatalError extends Error {}

/** Calls `probe` until it returns a truthy value, which is returned; throws at the deadline. */
export async function poll(probe, { timeoutMs = 20_000, intervalMs = 200, what }) {
  const deadline = Date.now() + timeoutMs;
  let last;
  let lastError;
  for (;;) {
    try {
      last = await probe();
      lastError = undefined;
      if (last) return last;
    } catch (error) {
      if (error instanceof FatalError) throw error;
      lastError = error;
    }
    if (Date.now() >= deadline) {
      const detail = lastError ? `last error: ${lastError.message}` : `last value: ${JSON.stringify(last)}`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${detail})`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** A FoundryVTT-style user id: 16 alphanumeric characters. */
export function foundryUserId() {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  return [...randomBytes(16)].map((b) => alphabet[b % alphabet.length]).join('');
}

const handedOutPorts = new Set();

/**
 * A loopback TCP port that is free now, from 10000-19999: below the kernel's ephemeral range
 * (32768 up), so no client connection can take it between this probe and the server's bind.
 * Never the same port twice in one test process.
 */
async function freeTcpPort() {
  for (let attempt = 0; attempt < 1_000; attempt++) {
    const port = randomInt(10_000, 20_000);
    if (handedOutPorts.has(port)) continue;
    const free = await new Promise((resolve) => {
      const probe = net.createServer();
      probe.once('error', () => resolve(false));
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
    });
    if (free) {
      handedOutPorts.add(port);
      return port;
    }
  }
  throw new Error('no free loopback port in 10000-19999');
}

/** A single media port above every range startServer picks (20000-60199), for MEDIASOUP_RTC_PORT. */
export function singleMediaPort() {
  return 61_000 + randomInt(0, 4_000);
}

/**
 * Starts the real mediasoup-server binary and waits for /readyz. Signaling listens on
 * `signalingIp`, media on `mediaIp` (also the announced ICE address), both 127.0.0.1 unless
 * the real-path test puts them on its veth address; /metrics stays on 127.0.0.1.
 * Its working directory is an empty temp dir, so no developer `.env` leaks in.
 */
export async function startServer({
  numWorkers = 2,
  mediaIp = '127.0.0.1',
  signalingIp = '127.0.0.1',
  env: extraEnv = {},
} = {}) {
  const bin = process.env.MEDIASOUP_SERVER_BIN ?? path.join(REPO_ROOT, 'target', 'release', 'mediasoup-server');
  if (!existsSync(bin)) {
    throw new Error(
      `server binary ${bin} not found: build it (bash worker-build/setup.sh && cargo build --release) ` +
        'or point MEDIASOUP_SERVER_BIN at it',
    );
  }
  const listenPort = await freeTcpPort();
  const metricsPort = await freeTcpPort();
  const rtcMinPort = 20_000 + 200 * randomInt(0, 200);
  const workDir = await mkdtemp(path.join(tmpdir(), 'mediasoup-e2e-server-'));
  const env = {
    ...process.env,
    MEDIASOUP_ANNOUNCED_IP: mediaIp,
    MEDIASOUP_RTC_LISTEN_IP: mediaIp,
    MEDIASOUP_LISTEN_ADDR: `${signalingIp}:${listenPort}`,
    MEDIASOUP_METRICS_ADDR: `127.0.0.1:${metricsPort}`,
    MEDIASOUP_NUM_WORKERS: String(numWorkers),
    MEDIASOUP_RTC_MIN_PORT: String(rtcMinPort),
    MEDIASOUP_RTC_MAX_PORT: String(rtcMinPort + 199),
    MEDIASOUP_STATS_INTERVAL_SECS: '1',
    ...extraEnv,
  };
  // setpriv --pdeathsig: the server gets SIGKILL when this process dies, even by SIGKILL
  // (the 'exit' handler below covers only orderly exits), so no server outlives the test.
  const child = spawn('setpriv', ['--pdeathsig', 'SIGKILL', '--', bin], {
    cwd: workDir,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = [];
  const keep = (chunk) => {
    output.push(chunk.toString());
    if (output.length > 2000) output.splice(0, output.length - 2000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let exitStatus;
  let stopping = false;
  exited.then((status) => {
    exitStatus = status;
  });
  // Settles only if the server exits on its own (a crash), never after stop().
  const died = exited.then((status) => (stopping ? new Promise(() => {}) : status));
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const baseUrl = `http://${signalingIp}:${listenPort}`;
  const server = {
    metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`,
    wsUrl: (room) => `ws://${signalingIp}:${listenPort}/${room}`,
    /** The `?token=...` query of `room`, as `mediasoup-server token <room>` prints it. */
    tokenQuery(room) {
      const result = spawnSync(bin, ['token', room], { env, encoding: 'utf8' });
      if (result.status !== 0) throw new Error(`mediasoup-server token ${room} failed: ${result.stderr}`);
      const url = new URL(result.stdout.trim());
      assert.equal(url.pathname, `/${room}`, `the printed URL names the room: ${url}`);
      return url.search;
    },
    signaling: { host: signalingIp, port: listenPort },
    pid: child.pid,
    // The ports media may use: the range, or in single-port mode the workers' own ports.
    rtcPorts: env.MEDIASOUP_RTC_PORT
      ? { min: Number(env.MEDIASOUP_RTC_PORT), max: Number(env.MEDIASOUP_RTC_PORT) + numWorkers - 1 }
      : { min: rtcMinPort, max: rtcMinPort + 199 },
    log: () => output.join(''),
    died,
    /** SIGTERM, then waits for the exit; returns {code, signal}. */
    async stop() {
      stopping = true;
      process.removeListener('exit', killOnExit);
      if (!exitStatus) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), SERVER_STOP_TIMEOUT_MS);
      const status = await exited;
      clearTimeout(timer);
      await rm(workDir, { recursive: true, force: true });
      return status;
    },
  };

  try {
    await poll(
      async () => {
        if (exitStatus) {
          throw new FatalError(`server exited early (${JSON.stringify(exitStatus)})`);
        }
        const response = await fetch(`${baseUrl}/readyz`);
        return response.status === 200;
      },
      { timeoutMs: SERVER_READY_TIMEOUT_MS, intervalMs: 100, what: `${baseUrl}/readyz to answer 200` },
    );
  } catch (error) {
    await server.stop();
    throw new Error(`${error.message}\n--- server output ---\n${server.log()}`);
  }
  return server;
}

/**
 * Serves the test page and its esbuild bundle (page script + mediasoup-client) on `host`
 * (127.0.0.1, a secure context; the real-path test serves it on its veth address and tells
 * Chromium to treat that origin as secure).
 */
/**
 * A raw WebSocket upgrade that is kept open: {status, body, socket, closed} where `closed`
 * resolves with the close code of the first close frame the server sends.
 */
export function openUpgrade({ host, port }, target, headers = {}) {
  return new Promise((resolve, reject) => {
    const request = http.request({
      host,
      port,
      path: target,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
        ...headers,
      },
    });
    request.on('upgrade', (response, socket, head) => {
      let buffer = head;
      const closed = new Promise((resolveClose) => {
        const look = () => {
          // Server frames are unmasked: byte 0 = FIN|opcode, byte 1 = length (< 126 here).
          while (buffer.length >= 2) {
            const length = buffer[1] & 0x7f;
            if (buffer.length < 2 + length) return;
            if ((buffer[0] & 0x0f) === 0x8) {
              resolveClose(length >= 2 ? buffer.readUInt16BE(2) : 1005);
              return;
            }
            buffer = buffer.subarray(2 + length);
          }
        };
        socket.on('data', (chunk) => {
          buffer = Buffer.concat([buffer, chunk]);
          look();
        });
        socket.on('close', () => resolveClose(null));
        look();
      });
      resolve({ status: response.statusCode, socket, closed });
    });
    request.on('response', (response) => {
      let body = '';
      response.on('data', (chunk) => {
        body += chunk;
      });
      response.on('end', () => resolve({ status: response.statusCode, body }));
    });
    request.on('error', reject);
    request.end();
  });
}

/** The HTTP status a WebSocket upgrade of `path` with `headers` gets from `{host, port}`. */
export async function upgradeStatus(server, path, headers = {}) {
  const { status, socket } = await openUpgrade(server, path, headers);
  socket?.destroy();
  return status;
}

export async function startPageServer({ host = '127.0.0.1' } = {}) {
  const bundle = await esbuild.build({
    entryPoints: [path.join(E2E_DIR, 'page', 'client.mjs')],
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: 'chrome111',
    write: false,
    logLevel: 'silent',
  });
  const files = {
    '/': { type: 'text/html; charset=utf-8', body: await readFile(path.join(E2E_DIR, 'page', 'index.html')) },
    '/client.js': { type: 'text/javascript; charset=utf-8', body: bundle.outputFiles[0].contents },
  };
  const httpServer = http.createServer((req, res) => {
    const pathname = new URL(req.url, 'http://localhost').pathname;
    const file = files[pathname];
    if (!file) {
      // The browser asks for /favicon.ico by itself; answer it without a console error.
      res.writeHead(pathname === '/favicon.ico' ? 204 : 404).end();
      return;
    }
    res.writeHead(200, { 'content-type': file.type, 'cache-control': 'no-store' }).end(file.body);
  });
  await new Promise((resolve) => httpServer.listen(0, host, resolve));
  return {
    url: `http://${host}:${httpServer.address().port}/`,
    close: () => new Promise((resolve) => httpServer.close(resolve)),
  };
}

/**
 * Throws unless loopback is the only network interface. Chromium gathers ICE candidates on
 * every interface, so outside a private namespace its media would use the machine's other
 * addresses; tests/e2e/netns.sh provides the loopback-only namespace.
 */
function assertLoopbackOnly() {
  const others = Object.entries(networkInterfaces())
    .filter(([, addresses]) => addresses.some((a) => !a.internal))
    .map(([name]) => name);
  if (others.length > 0) {
    throw new Error(
      `network interfaces besides loopback are up (${others.join(', ')}): run this through ` +
        'tests/e2e/netns.sh (tests/e2e/run.sh does), which gives it a loopback-only network namespace',
    );
  }
}

/**
 * Headless Debian Chromium with fake media devices and a fresh profile. By default it shares
 * the test's loopback-only namespace; with `realPath` (from createRealPath) it runs in that
 * path's browser namespace and loads the page from the server side of the veth pair. With
 * `anyNetwork` it runs in the machine's own network (the container test, whose server is
 * reached through ports the container runtime publishes on the host).
 */
export async function launchBrowser(pageUrl, { realPath, anyNetwork = false } = {}) {
  if (!realPath && !anyNetwork) assertLoopbackOnly();
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: run tests/e2e/setup.sh (installs apt chromium)`);
  }
  const userDataDir = await mkdtemp(path.join(tmpdir(), 'mediasoup-e2e-chromium-'));
  const args = realPath
    ? [
        ...CHROMIUM_ARGS.filter((a) => a !== '--allow-loopback-in-peer-connection'),
        // getUserMedia needs a secure context; the page comes from http://<veth address>.
        `--unsafely-treat-insecure-origin-as-secure=${new URL(pageUrl).origin}`,
      ]
    : CHROMIUM_ARGS;
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: realPath ? realPath.chromiumWrapper : CHROMIUM,
    headless: true,
    args,
  });
  const peers = [];
  return {
    version: context.browser()?.version() ?? null,
    /**
     * Opens a tab running the page script; `name` only labels its console output. `userId`
     * reuses another peer's user (a reload or second tab of the same user).
     */
    async newPeer(name, { userId } = {}) {
      const page = await context.newPage();
      const consoleLines = [];
      page.on('console', (msg) => consoleLines.push(`[${msg.type()}] ${msg.text()}`));
      page.on('pageerror', (error) => consoleLines.push(`[pageerror] ${error.message}`));
      await page.goto(pageUrl);
      await page.waitForFunction(() => window.e2e !== undefined && window.isSecureContext);
      const peer = new Peer(name, page, consoleLines, userId);
      peers.push(peer);
      return peer;
    },
    /** Console output and in-page errors of every peer, for failure reports. */
    diagnostics: () => peers.map((p) => `--- peer ${p.name} console ---\n${p.consoleLines.join('\n')}`).join('\n'),
    async close() {
      await context.close();
      await rm(userDataDir, { recursive: true, force: true });
    },
  };
}

/**
 * One page server and one Chromium for a whole test file: started before its first test and
 * closed after its last. Returns an object whose `browser` is set by then.
 */
export function browserForFile() {
  const shared = { browser: null, pageServer: null };
  before(async () => {
    shared.pageServer = await startPageServer();
    shared.browser = await launchBrowser(shared.pageServer.url);
  });
  after(async () => {
    await shared.browser?.close();
    await shared.pageServer?.close();
  });
  return shared;
}

/** One browser tab acting as a MediaSoupVTT client; methods call window.e2e in the page. */
export class Peer {
  constructor(name, page, consoleLines, userId = foundryUserId()) {
    this.name = name;
    this.page = page;
    this.consoleLines = consoleLines;
    this.userId = userId;
  }

  call(fn, ...args) {
    return this.page.evaluate(([fnName, fnArgs]) => window.e2e[fnName](...fnArgs), [fn, args]);
  }

  /** Joins like the module; `{forceTcp: true}` asks for TCP-only transports. Returns the answers. */
  join(wsUrl, options = {}) {
    return this.call('join', wsUrl, this.userId, options);
  }

  iceInfo() {
    return this.call('iceInfo');
  }

  /** {code, reason, wasClean} once the page's WebSocket closed, else null. */
  socketClosed() {
    return this.call('socketClosed');
  }

  /** The module's disconnect: producers and transports closed, then the socket. Keeps the tab. */
  disconnect() {
    return this.call('disconnect');
  }

  /** `options.codec`: a mime type to send instead of the default, e.g. 'video/VP9'. */
  produce(mediaTag, options = {}) {
    return this.call('produce', mediaTag, options);
  }

  sendRate() {
    return this.call('sendRate');
  }

  sendableCodecs(kind) {
    return this.call('sendableCodecs', kind);
  }

  stats() {
    return this.call('stats');
  }

  consumers() {
    return this.call('consumers');
  }

  notifications() {
    return this.call('notifications');
  }

  received() {
    return this.call('received');
  }

  sent() {
    return this.call('sent');
  }

  endedConsumers() {
    return this.call('endedConsumers');
  }

  errors() {
    return this.call('errors');
  }

  request(type, fields = {}) {
    return this.call('request', type, fields);
  }

  nextRequestId() {
    return this.call('nextRequestId');
  }

  sendFrame(text, requestId) {
    return this.call('sendFrame', text, requestId);
  }

  async leave() {
    await this.call('close');
    await this.page.close();
  }
}

/** Prometheus text exposition -> [{name, labels, value}] (comments and blank lines skipped). */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line);
    if (!match) throw new Error(`unparsable /metrics line: ${line}`);
    const labels = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[key] = value.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

/** A parsed scrape with lookups by metric name and label subset. */
export class Scrape {
  constructor(text) {
    this.text = text;
    this.samples = parseMetrics(text);
  }

  matching(name, labels = {}) {
    return this.samples.filter(
      (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
    );
  }

  has(name, labels = {}) {
    return this.matching(name, labels).length > 0;
  }

  /** Sum over the samples of `name` whose labels include `labels`; throws when there is none. */
  value(name, labels = {}) {
    const found = this.matching(name, labels);
    if (found.length === 0) {
      throw new Error(`/metrics has no sample ${name}${JSON.stringify(labels)}`);
    }
    return found.reduce((sum, s) => sum + s.value, 0);
  }
}

export async function scrape(server) {
  const response = await fetch(server.metricsUrl);
  if (response.status !== 200) {
    throw new Error(`GET ${server.metricsUrl} answered ${response.status}`);
  }
  return new Scrape(await response.text());
}

/** Runs `promtool check metrics` on a scrape; returns {status, output}. */
export function promtoolCheckMetrics(text) {
  const result = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if (result.error) {
    throw new Error(`promtool could not run (${result.error.message}); run tests/e2e/setup.sh (installs apt prometheus)`);
  }
  return { status: result.status, output: `${result.stdout}${result.stderr}`.trim() };
}

/**
 * Headless Debian Chromium with a fresh profile and `args` added to the usual flags, for a test
 * that drives a page of its own (the self-test page); in the loopback-only namespace.
 * Returns {context, close}.
 */
export async function launchChromium({ args = [] } = {}) {
  assertLoopbackOnly();
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: run tests/e2e/setup.sh (installs apt chromium)`);
  }
  const userDataDir = await mkdtemp(path.join(tmpdir(), 'mediasoup-e2e-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, ...args],
  });
  return {
    context,
    async close() {
      await context.close();
      await rm(userDataDir, { recursive: true, force: true });
    },
  };
}
