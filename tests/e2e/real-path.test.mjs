// End-to-end test over a real network path: the server in the test's private namespace on a
// veth address, Chromium in a second namespace behind the other end (lib/real-path.mjs), so
// Chromium sees the server's UDP and TCP candidates and really forms ICE-TCP connections
// (over loopback it never does). Peers then leave in every way a player can, round after
// round, while their media runs over UDP and ICE-TCP: the module's disconnect, closing the
// tab, a dropped connection, the same user reconnecting after its old connection went silent
// (the server takes a user id over only from a connection that no longer answers pings). The
// server must survive all of it and end with nothing left. Run: tests/e2e/run.sh
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';

import {
  EMPTY,
  JOIN_FAILURES,
  JOIN_STAGES,
  MEDIA_TIMEOUT_MS,
  SIGNALING_TIMEOUT_MS,
  assertMediaDecodes,
  assertPromtoolClean,
  byLabel,
  leaveAll,
  scenario,
  sortedIds,
  waitConsumersExactly,
  waitNotification,
  waitOccupancy,
  TWO_PEERS_IN_ONE_ROOM,
} from './lib/checks.mjs';
import { launchBrowser, poll, scrape, singleMediaPort, startPageServer, startServer, upgradeStatus } from './lib/harness.mjs';
import { createRealPath, establishedTcp, establishedTcpFromProc, startTcpRelay } from './lib/real-path.mjs';

const ROUNDS = Number(process.env.E2E_LEAVE_ROUNDS ?? 20);
// E2E_SINGLE_PORT=1: the same over the workers' one media port each (MEDIASOUP_RTC_PORT), where
// every ICE-TCP connection goes through the worker's WebRtcServer (tests/e2e/run.sh runs both).
const SINGLE_PORT = process.env.E2E_SINGLE_PORT === '1';
const T0 = Date.now();
const trace = process.env.E2E_TRACE ? (what) => console.log(`[${((Date.now() - T0) / 1000).toFixed(2)}] ${what}`) : () => {};
const MODES = ['disconnect', 'close-tab', 'drop', 'replace'];
// No close frame arrived (RFC 6455 7.1.5).
const ABNORMAL_CLOSE_CODE = 1006;

/** TCP-only (forceTcp) or not, for the peer leaving by MODES[mode] in `round`: each mode both ways. */
const forceTcpFor = (round, mode) => (round + mode) % 2 === 0;

/** The server's TCP candidate port of each transport in a join answer. */
function tcpPorts(joinAnswer) {
  return ['sendTransport', 'recvTransport'].map((which) => {
    const candidate = joinAnswer[which].iceCandidates.find((c) => c.protocol === 'tcp');
    assert.ok(candidate, `${which} offers a TCP candidate: ${JSON.stringify(joinAnswer[which].iceCandidates)}`);
    return candidate.port;
  });
}

test(`real network path${SINGLE_PORT ? ' (single media port)' : ''}: UDP and ICE-TCP over a veth pair, peers leaving four ways for many rounds`, async (t) => {
  const started = Date.now();
  const realPath = await createRealPath();
  let server;
  let pageServer;
  let browser;
  let relay;
  let stallRelay; // the reconnecting users' signaling: stalled before each takeover
  let sampling = false;
  let sampler;
  const peers = [];
  try {
    // As a public server is run: room tokens and the page's Origin required.
    pageServer = await startPageServer({ host: realPath.serverIp });
    server = await startServer({
      mediaIp: realPath.serverIp,
      signalingIp: realPath.serverIp,
      env: {
        MEDIASOUP_SECRET: randomBytes(24).toString('hex'),
        MEDIASOUP_ALLOWED_ORIGINS: new URL(pageServer.url).origin,
        ...(SINGLE_PORT ? { MEDIASOUP_RTC_PORT: String(singleMediaPort()) } : {}),
      },
    });
    browser = await launchBrowser(pageServer.url, { realPath });
    relay = await startTcpRelay({ host: realPath.serverIp, target: server.signaling });
    stallRelay = await startTcpRelay({ host: realPath.serverIp, target: server.signaling });
    const step = scenario(t, server, () => browser.diagnostics());
    // The room name with its token, as the module's URL carries it (the relays keep it too).
    const roomPath = `real-path${server.tokenQuery('real-path')}`;
    const room = server.wsUrl(roomPath);
    const tcpConnections = () =>
      establishedTcp({ localIp: realPath.serverIp, remoteIp: realPath.browserIp, ...server.rtcPorts });

    // Evidence collected over the rounds.
    const evidence = {
      tcpOnlyTransports: 0,
      tcpOnlyWithConnection: 0,
      udpTransports: 0,
      udpWithTcpConnection: 0,
      // UDP transports that had an ICE-TCP connection at any sample (Chromium opens them while
      // checking candidate pairs and drops them once UDP has won).
      udpEverTcp: 0,
      joined: 0,
      // By leave mode: transports that had an established ICE-TCP connection when they left.
      byMode: Object.fromEntries(MODES.map((mode) => [mode, { tcpOnly: 0, udpWithTcp: 0 }])),
    };

    // Samples /proc/net/tcp all along: which media ports ever had an established ICE-TCP connection.
    const everConnected = new Set();
    sampling = true;
    sampler = (async () => {
      while (sampling) {
        const sample = await establishedTcpFromProc({
          localIp: realPath.serverIp,
          remoteIp: realPath.browserIp,
          ...server.rtcPorts,
        }).catch(() => []);
        for (const c of sample) everConnected.add(c.localPort);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();

    const open = async (name, options) => {
      const peer = await browser.newPeer(name, options);
      peers.push(peer);
      return peer;
    };
    /**
     * Joins (optionally TCP-only), produces mic + webcam; returns {peer, ids, tcpPorts, forceTcp,
     * consumesAll}. S consumes everyone and everyone consumes S; the others do not consume each
     * other (`consumeFrom`), which keeps five peers' decoding affordable on two cores.
     */
    const enter = async (peer, { forceTcp, wsUrl = room }) => {
      const consumeFrom = host ? [host.peer.userId] : null;
      const answer = await peer.join(wsUrl, { forceTcp, consumeFrom });
      for (const which of ['sendTransport', 'recvTransport']) {
        const protocols = sortedIds(answer[which].iceCandidates.map((c) => c.protocol));
        assert.deepEqual(protocols, forceTcp ? ['tcp'] : ['tcp', 'udp'], `${peer.name} ${which} candidate protocols`);
        for (const candidate of answer[which].iceCandidates) {
          assert.equal(candidate.address ?? candidate.ip, realPath.serverIp, `${peer.name}: candidates on the veth address`);
        }
      }
      const mic = await peer.produce('mic');
      const webcam = await peer.produce('webcam');
      evidence.joined += 1;
      return { peer, ids: [mic.id, webcam.id], tcpPorts: tcpPorts(answer), forceTcp, consumesAll: !host };
    };

    /**
     * Waits until everyone in `members` consumes exactly what it should (S everyone, the others
     * S), media reached each of them (with `decode`, decodes), and every transport has the ICE
     * path it should: TCP-only transports an established TCP connection from the browser's
     * address to their port (`ss -tn` here) and a TCP pair selected in the browser; the others
     * a UDP pair (and maybe a TCP connection too). Returns the connections ss listed.
     */
    const settle = async (members, { decode = false } = {}) => {
      const consumed = (m) => members.filter((o) => o !== m && (m.consumesAll || o === host)).flatMap((o) => o.ids);
      await Promise.all(members.map((m) => waitConsumersExactly(m.peer, consumed(m), { timeoutMs: MEDIA_TIMEOUT_MS })));
      trace('settle: consumers complete');
      await Promise.all(
        members.map((m) => {
          const others = consumed(m);
          if (decode) return assertMediaDecodes(m.peer, others);
          return poll(
            async () => {
              const stats = await m.peer.stats();
              return others.every((id) => stats.consumers.find((c) => c.producerId === id)?.bytesReceived > 0);
            },
            { timeoutMs: MEDIA_TIMEOUT_MS, what: `${m.peer.name} to receive RTP from ${others.join(', ')}` },
          );
        }),
      );
      trace('settle: media arrived');
      const tcpOnlyPorts = members.filter((m) => m.forceTcp).flatMap((m) => m.tcpPorts);
      const connections = await poll(
        async () => {
          const list = await tcpConnections();
          return tcpOnlyPorts.every((port) => list.some((c) => c.localPort === port)) && list;
        },
        { timeoutMs: MEDIA_TIMEOUT_MS, what: `established ICE-TCP connections to ports ${tcpOnlyPorts.join(', ')}` },
      );
      const infos = await Promise.all(members.map((m) => m.peer.iceInfo()));
      for (const [index, m] of members.entries()) {
        const info = infos[index];
        for (const which of ['send', 'recv']) {
          const protocol = info[which]?.selected?.localProtocol;
          assert.equal(protocol, m.forceTcp ? 'tcp' : 'udp', `${m.peer.name} ${which}: the browser's selected ICE pair`);
          assert.equal(info[which].selected.remoteAddress, realPath.serverIp, `${m.peer.name} ${which}: remote address`);
        }
      }
      return connections;
    };

    const funnel = (m) => byLabel(m, 'mediasoup_server_join_funnel_total', 'stage', JOIN_STAGES);
    /**
     * Waits until every peer that joined so far has passed every join_funnel_total stage; returns
     * the scrape. first_media comes with the workers' first score event, which can follow the
     * first RTP by a second or more on a loaded machine: a peer that left before it would never
     * count it, so the rounds wait for it before their peers leave.
     */
    const funnelComplete = () =>
      poll(
        async () => {
          const m = await scrape(server);
          return JOIN_STAGES.every((stage) => funnel(m)[stage] >= evidence.joined) && m;
        },
        { timeoutMs: MEDIA_TIMEOUT_MS, what: `every join_funnel_total stage to reach ${evidence.joined}` },
      ).catch(async (error) => {
        throw new Error(`${error.message}: ${JSON.stringify(funnel(await scrape(server)))}`);
      });

    /** Counts, for the peers about to leave (in MODES order), which ICE-TCP connections exist now. */
    const recordTcp = (members, connections) => {
      members.forEach((m, index) => {
        const byMode = evidence.byMode[MODES[index]];
        for (const port of m.tcpPorts) {
          const has = connections.some((c) => c.localPort === port);
          if (m.forceTcp) {
            evidence.tcpOnlyTransports += 1;
            evidence.tcpOnlyWithConnection += Number(has);
            byMode.tcpOnly += Number(has);
          } else {
            evidence.udpTransports += 1;
            evidence.udpWithTcpConnection += Number(has);
            byMode.udpWithTcp += Number(has);
          }
        }
      });
    };
    /** After they left: which of the UDP transports ever had an ICE-TCP connection. */
    const recordEverTcp = (members) => {
      for (const m of members.filter((x) => !x.forceTcp)) {
        evidence.udpEverTcp += m.tcpPorts.filter((port) => everConnected.has(port)).length;
      }
    };

    let host; // S: stays the whole time, UDP
    let chain; // the peer the next round's reconnecting user replaces
    const baseline = TWO_PEERS_IN_ONE_ROOM;

    // The right origin with the room's token gets in: every join below.
    await step('the server refuses a missing token, another room\'s token and another origin', async () => {
      const origin = { Origin: new URL(pageServer.url).origin };
      assert.equal(await upgradeStatus(server.signaling, '/real-path', origin), 401, 'no token');
      assert.equal(await upgradeStatus(server.signaling, `/other${server.tokenQuery('real-path')}`, origin), 403, 'another room');
      assert.equal(await upgradeStatus(server.signaling, `/${roomPath}`, { Origin: 'http://evil.example' }), 403, 'another origin');
    });

    await step('S (UDP) and R0 (TCP-only) join over the veth pair and play each other\'s audio and video', async () => {
      host = await enter(await open('S'), { forceTcp: false });
      chain = await enter(await open('R0'), {
        forceTcp: forceTcpFor(1, MODES.indexOf('replace')),
        wsUrl: stallRelay.wsUrl(roomPath),
      });
      const connections = await settle([host, chain], { decode: true });
      assert.ok(chain.forceTcp, 'the first reconnecting user starts TCP-only');
      for (const port of chain.tcpPorts) {
        assert.ok(
          connections.some((c) => c.localPort === port),
          `ss shows an established TCP connection ${realPath.browserIp} -> ${realPath.serverIp}:${port}`,
        );
      }
      // The cheap /proc/net/tcp reader the sampler uses sees the same connections as ss.
      const fromProc = await establishedTcpFromProc({
        localIp: realPath.serverIp,
        remoteIp: realPath.browserIp,
        ...server.rtcPorts,
      });
      for (const port of chain.tcpPorts) {
        assert.ok(fromProc.some((c) => c.localPort === port), `/proc/net/tcp lists the connection to port ${port}`);
      }
      await waitOccupancy(server, baseline, 'S and R0 only');
      const metrics = await scrape(server);
      assert.ok(metrics.value('mediasoup_server_ice_selected_tuples_total', { protocol: 'tcp' }) >= 2, 'R0: two TCP tuples');
      assert.ok(metrics.value('mediasoup_server_ice_selected_tuples_total', { protocol: 'udp' }) >= 2, 'S: two UDP tuples');
    });

    for (let round = 1; round <= ROUNDS; round += 1) {
      const modes = MODES.map((mode, index) => `${mode}${forceTcpFor(round, index) ? ' (TCP-only)' : ''}`);
      await step(`round ${round}/${ROUNDS}: leave by ${modes.join(', ')}; the server cleans up`, async () => {
        const [a, b, c, next] = await Promise.all([
          open(`a${round}`),
          open(`b${round}`),
          open(`c${round}`),
          open(`R${round}`, { userId: chain.peer.userId }),
        ]);
        trace(`round ${round}: pages open`);
        const [ma, mb, mc] = await Promise.all([
          enter(a, { forceTcp: forceTcpFor(round, 0) }),
          enter(b, { forceTcp: forceTcpFor(round, 1) }),
          enter(c, { forceTcp: forceTcpFor(round, 2), wsUrl: relay.wsUrl(roomPath) }),
        ]);
        trace(`round ${round}: joined`);
        const leaving = [ma, mb, mc, chain];
        await funnelComplete();
        const connections = await settle([host, ...leaving]);
        trace(`round ${round}: settled`);
        recordTcp(leaving, connections);

        // All four leave at once, each its own way, while their ICE paths are up.
        const gone = leaving.flatMap((m) => m.ids);
        const replaced = chain;
        const nextForceTcp = forceTcpFor(round + 1, MODES.indexOf('replace'));
        let newChain;
        // The replaced user's signaling goes silent; its media paths stay up.
        stallRelay.stall();
        await Promise.all([
          a.disconnect(),
          b.page.close(),
          Promise.resolve().then(() => relay.drop()),
          enter(next, { forceTcp: nextForceTcp, wsUrl: stallRelay.wsUrl(roomPath) }).then((m) => {
            newChain = m;
          }),
        ]);
        trace(`round ${round}: left`);
        await waitNotification(host.peer, 'producerClosed', gone);
        trace(`round ${round}: producerClosed seen`);
        const dropped = await poll(() => c.socketClosed(), { timeoutMs: SIGNALING_TIMEOUT_MS, what: 'c: its socket to close' });
        assert.equal(dropped.code, ABNORMAL_CLOSE_CODE, `c: dropped without a close frame: ${JSON.stringify(dropped)}`);
        recordEverTcp(leaving);
        chain = newChain;
        // The takeover happened on the server (the newcomer joined as the same user, and only
        // S and it are left); the old page learns of it once its silent connection is reset.
        await waitOccupancy(server, baseline, `round ${round}: only S and ${chain.peer.name} left`);
        trace(`round ${round}: occupancy baseline`);
        stallRelay.dropStalled();
        const closed = await poll(() => replaced.peer.socketClosed(), {
          timeoutMs: SIGNALING_TIMEOUT_MS,
          what: `${replaced.peer.name}: its stalled socket to close`,
        });
        assert.equal(closed.code, ABNORMAL_CLOSE_CODE, `${replaced.peer.name} replaced: ${JSON.stringify(closed)}`);
        trace(`round ${round}: socket closes seen`);
        await Promise.all([a, c, replaced.peer].map((peer) => peer.page.close()));
        peers.splice(0, peers.length, ...peers.filter((p) => !p.page.isClosed()));
      });
    }

    await step('after the rounds: media still decodes; everyone leaves; every gauge is 0, no worker died', async () => {
      await settle([host, chain], { decode: true });
      const before = await funnelComplete();
      assert.deepEqual(
        funnel(before),
        Object.fromEntries(JOIN_STAGES.map((stage) => [stage, evidence.joined])),
        `join_funnel_total: exactly one per peer and stage (${evidence.joined} peers)`,
      );
      await host.peer.disconnect();
      await chain.peer.page.close();
      await waitOccupancy(server, EMPTY, 'every occupancy gauge to return to 0');
      const metrics = await scrape(server);
      assertPromtoolClean(metrics, 'final');
      assert.equal(metrics.value('mediasoup_server_worker_deaths_total'), 0, 'worker_deaths_total');
      assert.equal(metrics.value('mediasoup_server_workers_alive'), 2, 'workers_alive');
      assert.deepEqual(
        byLabel(metrics, 'mediasoup_server_join_failures_total', 'reason', JOIN_FAILURES),
        Object.fromEntries(JOIN_FAILURES.map((reason) => [reason, 0])),
        'join_failures_total by reason',
      );
      sampling = false;
      await sampler;
      const tuples = byLabel(metrics, 'mediasoup_server_ice_selected_tuples_total', 'protocol', ['udp', 'tcp']);
      // Every TCP-only transport had its ICE-TCP connection when its peer left.
      assert.equal(evidence.tcpOnlyWithConnection, evidence.tcpOnlyTransports, 'TCP-only transports with an ICE-TCP connection');
      assert.equal(evidence.tcpOnlyTransports, 4 * ROUNDS, 'half of the leaving peers were TCP-only, two transports each');
      // Each mode is TCP-only every other round.
      for (const mode of ROUNDS >= 2 ? MODES : []) {
        assert.ok(evidence.byMode[mode].tcpOnly > 0, `${mode}: peers left while holding ICE-TCP connections`);
      }
      // UDP transports get ICE-TCP connections too (Chromium checks every candidate pair), but
      // only for a while, and how long depends on the machine: seen on about half of them and on
      // a quarter still when they left on one, on a sixth and never at leave time on another. So
      // only their existence is asserted here; leaving with one open beside the selected UDP
      // path is tests/ice_tcp.rs's leaving_with_an_ice_tcp_connection_beside_the_selected_udp_path.
      if (ROUNDS >= 10) {
        assert.ok(evidence.udpEverTcp > 0, 'some UDP transport had an ICE-TCP connection as well');
      }
      assert.ok(tuples.tcp >= evidence.tcpOnlyTransports, `ice_selected_tuples_total{protocol="tcp"} ${tuples.tcp}`);
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      t.diagnostic(
        `${ROUNDS} rounds, ${evidence.joined} peers in ${seconds} s; at leave time ${evidence.tcpOnlyWithConnection}/` +
          `${evidence.tcpOnlyTransports} TCP-only transports and ${evidence.udpWithTcpConnection}/${evidence.udpTransports} ` +
          `UDP transports had an established ICE-TCP connection (ss), ${evidence.udpEverTcp} UDP transports at some point; by leave mode ${JSON.stringify(evidence.byMode)}; ` +
          `ice_selected_tuples_total ${JSON.stringify(tuples)}`,
      );
      console.log(`real-path evidence: ${JSON.stringify({ ...evidence, tuples, seconds })}`);
      const complaints = server.log().split('\n').filter((line) => / (WARN|ERROR) /.test(line));
      if (complaints.length > 0) {
        const examples = complaints.slice(0, 5).join(' | ');
        t.diagnostic(`the server logged ${complaints.length} WARN/ERROR lines, e.g.: ${examples}`);
      }
    });
  } finally {
    sampling = false;
    await sampler;
    if (browser) await leaveAll(peers);
    await browser?.close();
    await relay?.close();
    await stallRelay?.close();
    await pageServer?.close();
    const status = server ? await server.stop() : null;
    await realPath.close();
    if (server) {
      await t.test('SIGTERM stops the server with exit code 0', () => {
        assert.deepEqual(status, { code: 0, signal: null });
      });
    }
  }
});
