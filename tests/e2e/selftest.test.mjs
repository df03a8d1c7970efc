// The self-test page (README, "Self-test page") in headless Chromium against the real server:
// UDP working, UDP dropped in this network namespace (nftables), a server with a secret and an
// Origin allowlist (plus the self-test rooms' limits), the README's nginx config with TLS on a
// sub-path, and the committed bundle matching what build.sh makes of its sources.
// Run: tests/e2e/netns.sh node --test tests/e2e/selftest.test.mjs (after tests/e2e/setup.sh)
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';

import { REPO_ROOT, launchChromium, openUpgrade, poll, scrape, startServer } from './lib/harness.mjs';

const SELFTEST_DIR = path.join(REPO_ROOT, 'src', 'selftest');
const VERDICT_TIMEOUT_MS = 60_000;
const SECRET = 'a self-test secret of some length';
const FOREIGN_ORIGIN = 'https://vtt.example.org';

/** Opens the self-test page at `url`, clicks "Run the test" and returns what it concluded. */
async function runPage(context, url) {
  const page = await context.newPage();
  const consoleLines = [];
  page.on('console', (msg) => consoleLines.push(`[${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (error) => consoleLines.push(`[pageerror] ${error.message}`));
  try {
    const response = await page.goto(url);
    assert.equal(response.status(), 200, `GET ${url}`);
    await page.click('#run');
    await page.waitForSelector('#verdict[data-done="true"]', { timeout: VERDICT_TIMEOUT_MS });
    return await page.evaluate(() => ({
      ...document.getElementById('verdict').dataset,
      text: document.getElementById('verdict').textContent,
      advice: document.getElementById('advice').textContent,
      steps: [...document.querySelectorAll('#steps li')].map((li) => `${li.dataset.state}: ${li.textContent}`),
      details: document.getElementById('details').textContent,
      consoleLines: [],
    })).then((result) => ({ ...result, consoleLines }));
  } catch (error) {
    error.message += `\n--- page console ---\n${consoleLines.join('\n')}`;
    throw error;
  } finally {
    await page.close();
  }
}

function describe(result) {
  return JSON.stringify(result, null, 2);
}

/** The server's UDP and TCP media ports named in a result, as numbers. */
const ports = (text) => (text ? text.split(',').map(Number) : []);

function assertMediaFlowed(result, server) {
  assert.ok(Number(result.bytesReceived) > 0, `bytes received: ${describe(result)}`);
  assert.ok(Number(result.bytesSent) > 0, `bytes sent: ${describe(result)}`);
  assert.ok(Number(result.samples) > 0, `samples decoded: ${describe(result)}`);
  assert.ok(Number.isFinite(Number(result.rttMs)), `round-trip time shown: ${describe(result)}`);
  for (const port of [...ports(result.port), ...ports(result.udpPorts)]) {
    assert.ok(port >= server.rtcPorts.min && port <= server.rtcPorts.max, `port ${port} in the media range: ${describe(result)}`);
  }
  assert.equal(result.address, '127.0.0.1', describe(result));
  // The receiver heard the sender's 440 Hz tone (WebAudio analyser on the consumed track).
  assert.equal(result.audible, 'true', `the tone came back: ${describe(result)}`);
  assert.ok(Math.abs(Number(result.toneHz) - 440) < 30, `loudest at ${result.toneHz} Hz`);
  const cspErrors = result.consoleLines.filter((l) => /Content Security Policy|Refused to/i.test(l));
  assert.deepEqual(cspErrors, [], 'no CSP violations');
}

test('self-test page over UDP: says UDP, names the port, shows bytes and RTT; files served with their headers', async (t) => {
  const server = await startServer({ numWorkers: 1 });
  const browser = await launchChromium();
  t.after(async () => {
    await browser.close();
    await server.stop();
  });
  const base = `http://${server.signaling.host}:${server.signaling.port}/`;
  for (const [file, type] of [
    ['', 'text/html; charset=utf-8'],
    ['selftest/selftest.js', 'text/javascript; charset=utf-8'],
    ['selftest/selftest.css', 'text/css; charset=utf-8'],
  ]) {
    const response = await fetch(base + file);
    assert.equal(response.status, 200, file);
    assert.equal(response.headers.get('content-type'), type, file);
    assert.equal(response.headers.get('cache-control'), 'no-store', file);
    assert.match(response.headers.get('content-security-policy'), /default-src 'none'; script-src 'self';/, file);
    await response.arrayBuffer();
  }
  assert.equal((await fetch(`${base}selftest/nothing`)).status, 404);

  const started = Date.now();
  const result = await runPage(browser.context, base);
  t.diagnostic(`verdict after ${Date.now() - started} ms: ${result.text}`);
  t.diagnostic(`rtt ${result.rttMs} ms, bytes sent ${result.bytesSent} received ${result.bytesReceived}, samples ${result.samples}, tone heard: ${result.audible} (loudest at ${result.toneHz} Hz)`);
  assert.equal(result.verdict, 'udp', describe(result));
  assert.equal(result.protocol, 'udp', describe(result));
  const mediaPorts = ports(result.port);
  assert.ok(mediaPorts.length >= 1, describe(result));
  assert.match(result.text, /^Media works over UDP \(server ports? /, describe(result));
  for (const port of mediaPorts) assert.ok(result.text.includes(String(port)), `the verdict names port ${port}`);
  assert.equal(result.wsSecure, 'false');
  assert.equal(result.viaProxy, 'false');
  assert.ok(result.wsUrl.startsWith(`ws://127.0.0.1:${server.signaling.port}/selftest-`), result.wsUrl);
  assertMediaFlowed(result, server);
  assert.ok(result.steps.some((s) => s.startsWith('ok: WebSocket reachable')), describe(result));
});

/** Runs `nft` with `script` on stdin; throws with its output when it fails. */
function nft(args, script) {
  const result = spawnSync('nft', args, { input: script, encoding: 'utf8' });
  if (result.error) throw new Error(`nft could not run (${result.error.message}): run tests/e2e/setup.sh (installs apt nftables)`);
  if (result.status !== 0) throw new Error(`nft ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

test('self-test page with UDP to the media ports dropped: says TCP only and names the UDP port to open', async (t) => {
  // The rule goes into this test's own network namespace (netns.sh), never the machine's.
  assert.equal(process.env.E2E_IN_NETNS, '1', 'run through tests/e2e/netns.sh: the UDP drop must stay in its namespace');
  const server = await startServer({ numWorkers: 1 });
  const browser = await launchChromium();
  const table = `e2e_selftest_${process.pid}`;
  const { min, max } = server.rtcPorts;
  nft(['-f', '-'], `table inet ${table} {
    chain input {
      type filter hook input priority filter; policy accept;
      udp dport ${min}-${max} counter drop
    }
  }
`);
  t.after(async () => {
    nft(['delete', 'table', 'inet', table]);
    await browser.close();
    await server.stop();
  });

  const result = await runPage(browser.context, `http://${server.signaling.host}:${server.signaling.port}/`);
  const dropped = /counter packets (\d+)/.exec(nft(['list', 'table', 'inet', table]))?.[1];
  t.diagnostic(`verdict: ${result.text}`);
  t.diagnostic(`advice: ${result.advice}`);
  t.diagnostic(`UDP packets dropped by the rule: ${dropped}`);
  assert.ok(Number(dropped) > 0, `the rule dropped the browser's UDP (${dropped} packets)`);
  assert.equal(result.verdict, 'tcp-only', describe(result));
  assert.equal(result.protocol, 'tcp', describe(result));
  assert.match(result.text, /^TCP only: UDP ports? \d+/, describe(result));
  const udpPorts = ports(result.udpPorts);
  assert.ok(udpPorts.length >= 1, describe(result));
  for (const port of udpPorts) {
    assert.ok(result.text.includes(`${port}`), `the verdict names UDP port ${port}: ${result.text}`);
    assert.ok(result.advice.includes(`${port}`), `the advice names UDP port ${port}: ${result.advice}`);
  }
  assert.match(result.advice, /allow incoming UDP/, describe(result));
  // Media still flowed, over the server's TCP media port(s).
  for (const port of ports(result.port)) assert.ok(ports(result.tcpPorts).includes(port), describe(result));
  assertMediaFlowed(result, server);
});


test('self-test page with a secret and an Origin allowlist: works, rooms take 2 peers and close after their lifetime', async (t) => {
  const lifetimeSecs = 12;
  const server = await startServer({
    numWorkers: 1,
    env: {
      MEDIASOUP_SECRET: SECRET,
      MEDIASOUP_ALLOWED_ORIGINS: FOREIGN_ORIGIN,
      MEDIASOUP_TEST_SELF_TEST_SECS: String(lifetimeSecs),
    },
  });
  const browser = await launchChromium();
  const held = [];
  t.after(async () => {
    for (const h of held) h.socket?.destroy();
    await browser.close();
    await server.stop();
  });
  const { host, port } = server.signaling;
  const ownOrigin = `http://${host}:${port}`;

  const result = await runPage(browser.context, `${ownOrigin}/`);
  t.diagnostic(`verdict: ${result.text}`);
  assert.equal(result.verdict, 'udp', describe(result));
  assertMediaFlowed(result, server);

  // A room of its own, and its token, from the session endpoint.
  const session = await (await fetch(`${ownOrigin}/selftest/session`)).json();
  assert.match(session.room, /^selftest-[0-9a-f]{32}$/);
  assert.match(session.token, /^[0-9a-f]{64}$/);
  assert.equal(session.lifetimeSecs, lifetimeSecs);
  const target = `/${session.room}?token=${session.token}`;
  const own = { Origin: ownOrigin };
  assert.equal((await openUpgrade(server.signaling, target, { Origin: 'https://evil.example' })).status, 403, 'a foreign Origin');
  assert.equal((await openUpgrade(server.signaling, `/${session.room}`, own)).status, 401, 'no token');
  const other = await (await fetch(`${ownOrigin}/selftest/session`)).json();
  assert.equal((await openUpgrade(server.signaling, `/${session.room}?token=${other.token}`, own)).status, 403, "another room's token");
  const unminted = `selftest-${randomBytes(16).toString('hex')}`;
  assert.equal((await openUpgrade(server.signaling, `/${unminted}${server.tokenQuery(unminted)}`, own)).status, 403, 'a room the server did not mint');
  // The page's own origin is only good for self-test rooms: a table still needs an allowed Origin.
  assert.equal((await openUpgrade(server.signaling, `/table${server.tokenQuery('table')}`, own)).status, 403, 'a table room from the self-test origin');

  const fullBefore = (await scrape(server)).value('mediasoup_server_refusals_total', { reason: 'room_full' });
  for (const headers of [own, { Origin: FOREIGN_ORIGIN }]) {
    const peer = await openUpgrade(server.signaling, target, headers);
    held.push(peer);
    assert.equal(peer.status, 101, `peer ${held.length} admitted`);
  }
  const third = await openUpgrade(server.signaling, target, own);
  held.push(third);
  assert.equal(third.status, 503, 'a third peer is refused');
  assert.match(third.body, /full/);
  await poll(
    async () => (await scrape(server)).value('mediasoup_server_refusals_total', { reason: 'room_full' }) === fullBefore + 1,
    { what: 'the refusal counted as room_full' },
  );

  // The server closes the room at the end of its lifetime.
  const started = Date.now();
  const codes = await Promise.race([
    Promise.all(held.slice(0, 2).map((h) => h.closed)),
    new Promise((_, reject) => setTimeout(() => reject(new Error('the self-test room was not closed in time')), (lifetimeSecs + 10) * 1000)),
  ]);
  t.diagnostic(`room closed ${Date.now() - started} ms after the peers joined; close codes ${codes}`);
  assert.deepEqual(codes, [1000, 1000]);
  assert.equal((await openUpgrade(server.signaling, target, own)).status, 403, 'an expired room cannot be joined');
});

test('self-test page behind nginx (the README config, TLS, sub-path /vtt/): reaches a verdict over wss', async (t) => {
  if (!existsSync('/usr/sbin/nginx')) throw new Error('nginx is missing: run tests/e2e/setup.sh (installs apt nginx)');
  const server = await startServer({
    numWorkers: 1,
    env: { MEDIASOUP_SECRET: SECRET, MEDIASOUP_ALLOWED_ORIGINS: FOREIGN_ORIGIN },
  });
  const dir = await mkdtemp(path.join(tmpdir(), 'mediasoup-e2e-nginx-'));
  const cert = spawnSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
      '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')],
    { encoding: 'utf8' },
  );
  assert.equal(cert.status, 0, `openssl: ${cert.stderr}`);
  // The location block exactly as README.md shows it, pointed at this server.
  const readme = await readFile(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const block = /## Running behind nginx[^]*?```nginx\n([^]*?)```/.exec(readme)?.[1];
  assert.ok(block?.includes('location /vtt/'), 'README.md has the nginx block');
  const location = block.replace('http://127.0.0.1:3000/', `http://${server.signaling.host}:${server.signaling.port}/`);
  assert.notEqual(location, block, 'the README block proxies to 127.0.0.1:3000');
  const nginxPort = await new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
  await writeFile(
    path.join(dir, 'nginx.conf'),
    `worker_processes 1;
error_log ${dir}/error.log info;
pid ${dir}/nginx.pid;
events { worker_connections 64; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${nginxPort} ssl;
    ssl_certificate ${dir}/cert.pem;
    ssl_certificate_key ${dir}/key.pem;
${location}
  }
}
`,
  );
  const nginx = spawn('setpriv', ['--pdeathsig', 'SIGKILL', '--', '/usr/sbin/nginx', '-p', dir, '-c', path.join(dir, 'nginx.conf'), '-g', 'daemon off;'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let nginxOutput = '';
  nginx.stdout.on('data', (c) => (nginxOutput += c));
  nginx.stderr.on('data', (c) => (nginxOutput += c));
  let nginxExit = null;
  nginx.on('exit', (code, signal) => {
    nginxExit = { code, signal };
  });
  const browser = await launchChromium({ args: ['--ignore-certificate-errors'] });
  t.after(async () => {
    await browser.close();
    if (!nginxExit) {
      const exited = new Promise((resolve) => nginx.once('exit', resolve));
      nginx.kill('SIGQUIT');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
    await server.stop();
  });
  const pageUrl = `https://127.0.0.1:${nginxPort}/vtt/`;
  await poll(
    () =>
      new Promise((resolve, reject) => {
        if (nginxExit) reject(new Error(`nginx exited: ${JSON.stringify(nginxExit)} ${nginxOutput}`));
        https
          .get(pageUrl, { rejectUnauthorized: false }, (response) => {
            response.resume();
            resolve(response.statusCode === 200);
          })
          .on('error', reject);
      }),
    { what: `nginx to serve ${pageUrl}` },
  );

  const result = await runPage(browser.context, pageUrl);
  t.diagnostic(`verdict: ${result.text}`);
  t.diagnostic(`details: ${result.details}`);
  assert.equal(result.verdict, 'udp', `${describe(result)}\n--- nginx error.log ---\n${await readFile(path.join(dir, 'error.log'), 'utf8').catch(() => '')}`);
  assert.equal(result.wsSecure, 'true', describe(result));
  assert.equal(result.viaProxy, 'true', 'the server saw the proxy');
  assert.ok(result.wsUrl.startsWith(`wss://127.0.0.1:${nginxPort}/vtt/selftest-`), result.wsUrl);
  assertMediaFlowed(result, server);
  const access = await readFile(path.join(dir, 'access.log'), 'utf8');
  assert.match(access, /GET \/vtt\/selftest\/session /, 'the session request went through nginx');
  assert.match(access, /GET \/vtt\/selftest-[0-9a-f]{32}\?token=[0-9a-f]{64} HTTP\/1.1" 101 /, 'the WebSockets went through nginx');
});

test('the committed self-test bundle is what build.sh makes of its sources', async () => {
  const modules = path.join(SELFTEST_DIR, 'node_modules');
  assert.ok(existsSync(path.join(modules, 'esbuild')), `${modules} is missing: run tests/e2e/setup.sh (npm ci there)`);
  const { build } = await import(pathToFileURL(path.join(SELFTEST_DIR, 'build.mjs')).href);
  const built = await build();
  const committed = await readFile(path.join(SELFTEST_DIR, 'selftest.js'), 'utf8');
  assert.ok(committed === built, 'src/selftest/selftest.js differs from its sources: run bash src/selftest/build.sh and commit it');
  assert.match(committed, /mediasoup-client 3\.18\.7 \(ISC\)\n\nISC License/, "mediasoup-client's license notice is kept");
  // The pinned versions are the ones installed.
  for (const [name, version] of [['mediasoup-client', '3.18.7'], ['esbuild', '0.28.2']]) {
    const manifest = JSON.parse(await readFile(path.join(modules, name, 'package.json'), 'utf8'));
    assert.equal(manifest.version, version, name);
  }
});
