// The self-test page's script (README, "Self-test page"). Bundled with mediasoup-client into
// selftest.js by build.sh; the server embeds and serves that file.
//
// Two peers on two WebSockets speak the MediaSoupVTT protocol exactly as the module does
// (PROTOCOL.md): getRouterRtpCapabilities, createWebRtcTransport (producing, then consuming),
// connectTransport when mediasoup-client asks, produce with appData {mediaTag: 'mic', userId},
// consume on newProducer. The sender produces a generated tone (WebAudio, no microphone), the
// receiver consumes it; the browser's WebRTC statistics then tell which path media took.
//
// Every URL is relative to the page, and the WebSocket URL comes from `location`, so the page
// works at http://host:3000/ as well as at https://host/vtt/ behind a reverse proxy.
import { Device } from 'mediasoup-client';

const REQUEST_TIMEOUT_MS = 10_000;
const SOCKET_OPEN_TIMEOUT_MS = 15_000;
const ICE_TIMEOUT_MS = 20_000;
const MEDIA_TIMEOUT_MS = 15_000;
/** After audio first arrives, how long to keep measuring (round-trip time, bytes). */
const MEASURE_MS = 3_000;
const POLL_MS = 250;
const TONE_HZ = 440;

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- what the page shows

function step(id, state, text) {
  let item = $(`step-${id}`);
  if (!item) {
    item = document.createElement('li');
    item.id = `step-${id}`;
    $('steps').append(item);
  }
  item.dataset.state = state;
  item.textContent = text;
  // Listed in the order they complete.
  $('steps').append(item);
}

function detail(id, label, value) {
  let dd = $(`detail-${id}`);
  if (!dd) {
    const dt = document.createElement('dt');
    dt.textContent = label;
    dd = document.createElement('dd');
    dd.id = `detail-${id}`;
    $('details').append(dt, dd);
  }
  dd.textContent = value;
}

/** The final word: `kind` is stable for tests (data-verdict), `text` and `advice` for people. */
function verdict(kind, state, text, advice = '', data = {}) {
  const element = $('verdict');
  element.textContent = text;
  element.dataset.state = state;
  element.dataset.verdict = kind;
  for (const [key, value] of Object.entries(data)) {
    if (value !== undefined && value !== null) element.dataset[key] = String(value);
  }
  $('advice').textContent = advice;
  element.dataset.done = 'true';
}

const plural = (n, one, many) => (n === 1 ? one : many);
const list = (items) =>
  items.length <= 1 ? items.join('') : `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
const formatBytes = (n) => (n < 10_000 ? `${n} bytes` : `${(n / 1024).toFixed(0)} KiB`);

function describeError(error) {
  return error?.message ?? String(error);
}

// ---------------------------------------------------------------- signaling, as the module does

/** A FoundryVTT-style user id: 16 alphanumeric characters. */
function userId() {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  return [...crypto.getRandomValues(new Uint8Array(16))].map((b) => alphabet[b % alphabet.length]).join('');
}

class SignalingError extends Error {}

class Peer {
  constructor(name) {
    this.name = name;
    this.userId = userId();
    this.nextRequest = 0;
    this.pending = new Map();
    this.socket = null;
    this.closed = null;
    this.onNotification = () => {};
  }

  /** Opens the WebSocket; rejects with a SignalingError saying what the browser saw. */
  open(url) {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url);
      this.socket = socket;
      let opened = false;
      const timer = setTimeout(() => {
        reject(new SignalingError(`it did not open within ${SOCKET_OPEN_TIMEOUT_MS / 1000} s`));
        socket.close();
      }, SOCKET_OPEN_TIMEOUT_MS);
      socket.addEventListener('open', () => {
        opened = true;
        clearTimeout(timer);
        resolve();
      });
      socket.addEventListener('close', ({ code, reason }) => {
        clearTimeout(timer);
        this.closed = { code, reason };
        if (!opened) {
          reject(
            new SignalingError(
              code === 1006
                ? 'the connection failed or the server refused it (closed with code 1006 before it opened)'
                : `closed with code ${code}${reason ? ` (${reason})` : ''} before it opened`,
            ),
          );
        }
        for (const { reject: fail, timer: t, type } of this.pending.values()) {
          clearTimeout(t);
          fail(new SignalingError(`${type}: the WebSocket closed (code ${code}${reason ? `, ${reason}` : ''})`));
        }
        this.pending.clear();
      });
      socket.addEventListener('message', (event) => this.onMessage(event));
    });
  }

  onMessage(event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message.requestId !== undefined) {
      const pending = this.pending.get(message.requestId);
      if (!pending) return;
      this.pending.delete(message.requestId);
      clearTimeout(pending.timer);
      if (message.error !== undefined) pending.reject(new SignalingError(`${pending.type}: ${message.error}`));
      else pending.resolve(message.data ?? message);
      return;
    }
    this.onNotification(message);
  }

  request(type, fields = {}) {
    const requestId = `req_${this.nextRequest++}`;
    return new Promise((resolve, reject) => {
      if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
        reject(new SignalingError(`${type}: the WebSocket is not open`));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new SignalingError(`${type} got no answer within ${REQUEST_TIMEOUT_MS / 1000} s`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(requestId, { type, resolve, reject, timer });
      this.socket.send(JSON.stringify({ type, requestId, userId: this.userId, ...fields }));
    });
  }

  /** The module's join: capabilities, then the producing and the consuming transport. */
  async join() {
    const routerRtpCapabilities = await this.request('getRouterRtpCapabilities');
    if (!routerRtpCapabilities || Object.keys(routerRtpCapabilities).length === 0) {
      throw new SignalingError('getRouterRtpCapabilities answered with no capabilities');
    }
    this.device = new Device();
    await this.device.load({ routerRtpCapabilities });
    const transport = async (producing) => {
      const params = await this.request('createWebRtcTransport', {
        forceTcp: false,
        producing,
        consuming: !producing,
        sctpCapabilities: this.device.sctpCapabilities,
      });
      const created = producing
        ? this.device.createSendTransport(params)
        : this.device.createRecvTransport(params);
      created.on('connect', ({ dtlsParameters }, callback, errback) => {
        this.request('connectTransport', { transportId: created.id, dtlsParameters }).then(() => callback(), errback);
      });
      return { transport: created, params };
    };
    this.send = await transport(true);
    this.send.transport.on('produce', ({ kind, rtpParameters, appData }, callback, errback) => {
      this.request('produce', { transportId: this.send.transport.id, kind, rtpParameters, appData }).then(
        ({ id }) => callback({ id }),
        errback,
      );
    });
    this.recv = await transport(false);
  }

  close() {
    this.producer?.close();
    this.consumer?.close();
    this.send?.transport.close();
    this.recv?.transport.close();
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) this.socket.close(1000);
  }
}

// ---------------------------------------------------------------- ports and statistics

/** The ports and addresses of a transport's ICE candidates, by protocol. */
function candidatePorts(paramsList) {
  const ports = { udp: new Set(), tcp: new Set(), addresses: new Set() };
  for (const params of paramsList) {
    for (const candidate of params.iceCandidates ?? []) {
      const protocol = String(candidate.protocol).toLowerCase();
      if (protocol in ports) ports[protocol].add(candidate.port);
      ports.addresses.add(candidate.address ?? candidate.ip);
    }
  }
  const sorted = (set) => [...set].sort((a, b) => a - b);
  return { udp: sorted(ports.udp), tcp: sorted(ports.tcp), addresses: [...ports.addresses] };
}

/** The candidate pair a transport's PeerConnection uses now, as the browser reports it. */
async function selectedPath(transport) {
  const report = await transport.getStats();
  const all = [...report.values()];
  const pairId = all.find((s) => s.type === 'transport' && s.selectedCandidatePairId)?.selectedCandidatePairId;
  const pair = pairId
    ? report.get(pairId)
    : all.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
  if (!pair) return { report, pair: null };
  const local = report.get(pair.localCandidateId);
  const remote = report.get(pair.remoteCandidateId);
  return {
    report,
    pair: {
      protocol: String(remote?.protocol ?? local?.protocol ?? '').toLowerCase(),
      address: remote?.address ?? remote?.ip,
      port: remote?.port,
      localType: local?.candidateType,
      rttMs: typeof pair.currentRoundTripTime === 'number' ? pair.currentRoundTripTime * 1000 : null,
    },
  };
}

function audioInbound(report) {
  const inbound = [...report.values()].filter((s) => s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) === 'audio');
  const total = (field) => inbound.reduce((sum, s) => sum + (s[field] ?? 0), 0);
  return {
    bytes: total('bytesReceived'),
    packets: total('packetsReceived'),
    samples: total('totalSamplesReceived'),
    energy: total('totalAudioEnergy'),
    level: Math.max(0, ...inbound.map((s) => s.audioLevel ?? 0)),
  };
}

function audioOutbound(report) {
  return [...report.values()]
    .filter((s) => s.type === 'outbound-rtp')
    .reduce((sum, s) => sum + (s.bytesSent ?? 0), 0);
}

/** Resolves when `transport` is connected; rejects when it fails or the deadline passes. */
function connected(transport, deadlineMs) {
  return new Promise((resolve, reject) => {
    const check = (state) => {
      if (state === 'connected' || state === 'completed') {
        clearTimeout(timer);
        resolve();
      } else if (state === 'failed' || state === 'closed') {
        clearTimeout(timer);
        reject(new Error(`its connection state became ${state}`));
      }
    };
    const timer = setTimeout(
      () => reject(new Error(`not connected after ${deadlineMs / 1000} s (state: ${transport.connectionState})`)),
      deadlineMs,
    );
    transport.on('connectionstatechange', check);
    check(transport.connectionState);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function isPrivateAddress(address) {
  return /^(10\.|127\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|169\.254\.|::1$|f[cd]|fe80)/i.test(String(address));
}

// ---------------------------------------------------------------- the test

let running = false;

async function run() {
  if (running) return;
  running = true;
  const button = $('run');
  button.disabled = true;
  $('steps').replaceChildren();
  $('details').replaceChildren();
  delete $('verdict').dataset.done;
  $('verdict').dataset.state = 'running';
  $('verdict').textContent = 'Running…';
  $('advice').textContent = '';
  const peers = [];
  let audio = null;
  try {
    await test(peers, (context) => {
      audio = context;
    });
  } catch (error) {
    verdict('error', 'fail', `The test stopped: ${describeError(error)}`, 'Run it again; if it keeps failing, tell the server\'s operator what it says.');
  } finally {
    for (const peer of peers) peer.close();
    audio?.close().catch(() => {});
    step('cleanup', 'ok', 'Test room left; the server closes it.');
    running = false;
    button.disabled = false;
    button.textContent = 'Run the test again';
  }
}

async function test(peers, keepAudio) {
  const secure = location.protocol === 'https:';
  const signalingPort = location.port || (secure ? '443' : '80');
  detail('page', 'Page', location.href);

  // The tone first, while the click still counts as a user gesture (autoplay policy).
  const audio = new AudioContext();
  keepAudio(audio);
  await audio.resume().catch(() => {});
  const oscillator = new OscillatorNode(audio, { type: 'sine', frequency: TONE_HZ });
  const gain = new GainNode(audio, { gain: 0.3 });
  const destination = audio.createMediaStreamDestination();
  oscillator.connect(gain).connect(destination);
  oscillator.start();
  const [toneTrack] = destination.stream.getAudioTracks();

  // 1. A throw-away room from the server.
  step('session', 'running', 'Asking the server for a private test room…');
  let session;
  try {
    const response = await fetch('selftest/session', { cache: 'no-store', credentials: 'omit' });
    const text = await response.text();
    if (!response.ok) {
      step('session', 'fail', `The server refused a test room: HTTP ${response.status}`);
      const busy = response.status === 503;
      verdict(
        busy ? 'busy' : 'no-session',
        'fail',
        busy ? `The server is busy: ${text.trim()}` : `The server did not start a test (HTTP ${response.status}): ${text.trim()}`,
        busy ? 'Wait a minute and run the test again.' : '',
        { httpStatus: response.status },
      );
      return;
    }
    session = JSON.parse(text);
  } catch (error) {
    step('session', 'fail', `Could not reach the server: ${describeError(error)}`);
    verdict('no-session', 'fail', `Cannot reach the server's self-test: ${describeError(error)}`);
    return;
  }
  step('session', 'ok', `Test room ready (it lasts ${session.lifetimeSecs} s).`);

  // 2. The signaling WebSocket, where the page came from.
  const url = new URL(encodeURIComponent(session.room), location.href);
  url.protocol = secure ? 'wss:' : 'ws:';
  url.search = session.token ? `?token=${session.token}` : '';
  url.hash = '';
  const shownUrl = `${url.origin.replace(/^http/, 'ws')}${url.pathname}`;
  const seen = session.seen ?? {};
  const proxied = seen.viaProxy ? 'through a reverse proxy (the server saw X-Forwarded-For from a trusted proxy)' : 'directly (no reverse proxy seen)';
  detail('ws', 'WebSocket', `${shownUrl} (${secure ? 'wss: TLS' : 'ws: no TLS'}), ${proxied}`);
  detail('client', 'Your address as the server sees it', seen.client ?? 'unknown');
  step('ws', 'running', `Opening the signaling WebSocket ${shownUrl}…`);
  const sender = new Peer('sender');
  const receiver = new Peer('receiver');
  peers.push(sender, receiver);
  try {
    await sender.open(url.href);
    await receiver.open(url.href);
  } catch (error) {
    step('ws', 'fail', `WebSocket failed: ${describeError(error)}`);
    const advice = secure
      ? 'Check the reverse proxy in front of the server: it must forward WebSocket upgrades for this path ' +
        '(the README\'s nginx block: proxy_http_version 1.1, the Upgrade and Connection headers, proxy_read_timeout). ' +
        'If the server has MEDIASOUP_ALLOWED_ORIGINS set, the proxy must pass the Host header ($host).'
      : `Check that TCP port ${signalingPort} of the server is open in its firewall and forwarded by your router, ` +
        'and that nothing between you and the server (a company proxy, antivirus) blocks WebSockets.';
    verdict('no-websocket', 'fail', `Cannot reach the signaling WebSocket at ${shownUrl}: ${describeError(error)}`, advice, {
      wsUrl: shownUrl,
    });
    return;
  }
  step('ws', 'ok', `WebSocket reachable: ${shownUrl} (${secure ? 'wss, TLS' : 'ws, no TLS'}; ${proxied}).`);

  // 3. Join like the module, both peers.
  step('join', 'running', 'Joining the test room (as MediaSoupVTT does)…');
  await sender.join();
  await receiver.join();
  // The transports media uses: the sender's producing one and the receiver's consuming one.
  const ports = candidatePorts([sender.send.params, receiver.recv.params]);
  const serverAddress = ports.addresses.join(', ');
  detail('candidates', 'Server media address', `${serverAddress}: UDP ${ports.udp.join(', ') || 'none'}, TCP ${ports.tcp.join(', ') || 'none'}`);
  step('join', 'ok', `Joined; the server offers media on ${serverAddress}, UDP ${plural(ports.udp.length, 'port', 'ports')} ${list(ports.udp.map(String)) || 'none'}, TCP ${plural(ports.tcp.length, 'port', 'ports')} ${list(ports.tcp.map(String)) || 'none'}.`);

  // 4. Send the tone, receive it.
  const consumed = new Promise((resolve, reject) => {
    receiver.onNotification = (message) => {
      if (message.type !== 'newProducer' || message.userId === receiver.userId) return;
      (async () => {
        const data = await receiver.request('consume', {
          producerId: message.producerId,
          rtpCapabilities: receiver.device.rtpCapabilities,
        });
        receiver.consumer = await receiver.recv.transport.consume({
          id: data.id,
          producerId: data.producerId,
          kind: data.kind,
          rtpParameters: data.rtpParameters,
        });
        return receiver.consumer;
      })().then(resolve, reject);
    };
  });
  step('media', 'running', `Sending a ${TONE_HZ} Hz tone through the server…`);
  sender.producer = await sender.send.transport.produce({
    track: toneTrack,
    appData: { mediaTag: 'mic', userId: sender.userId },
  });
  const consumer = await Promise.race([
    consumed,
    sleep(REQUEST_TIMEOUT_MS).then(() => {
      throw new SignalingError(`the server announced no producer within ${REQUEST_TIMEOUT_MS / 1000} s`);
    }),
  ]);
  // Played (muted) so that the browser decodes it; nothing is heard.
  const element = document.createElement('audio');
  element.muted = true;
  element.autoplay = true;
  element.srcObject = new MediaStream([consumer.track]);
  element.hidden = true;
  document.body.append(element);
  // And listened to: the level and the loudest frequency of what came back.
  const analyser = new AnalyserNode(audio, { fftSize: 4096 });
  audio.createMediaStreamSource(new MediaStream([consumer.track])).connect(analyser);
  const listen = () => {
    const wave = new Float32Array(analyser.fftSize);
    analyser.getFloatTimeDomainData(wave);
    const rms = Math.sqrt(wave.reduce((sum, v) => sum + v * v, 0) / wave.length);
    const spectrum = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(spectrum);
    let loudest = 0;
    for (let i = 1; i < spectrum.length; i++) if (spectrum[i] > spectrum[loudest]) loudest = i;
    return { rms, hz: (loudest * audio.sampleRate) / analyser.fftSize };
  };

  // 5. ICE: did the media transports connect, over what?
  const udpAdvice = (what) => `UDP ${plural(ports.udp.length, 'port', 'ports')} ${list(ports.udp.map(String))}${what}`;
  const rangeNote =
    ports.udp.length > 1
      ? ' (this server gives each transport its own port from its media range, MEDIASOUP_RTC_MIN_PORT to MEDIASOUP_RTC_MAX_PORT: open that whole range)'
      : '';
  try {
    await Promise.all([connected(sender.send.transport, ICE_TIMEOUT_MS), connected(receiver.recv.transport, ICE_TIMEOUT_MS)]);
  } catch (error) {
    step('ice', 'fail', `Media could not connect: ${describeError(error)}`);
    const privateHint =
      ports.addresses.some(isPrivateAddress) && !isPrivateAddress(location.hostname) && location.hostname !== 'localhost'
        ? ` The server announces ${serverAddress}, a private address: set MEDIASOUP_ANNOUNCED_IP to its public address.`
        : '';
    verdict(
      'no-media',
      'fail',
      `No media: neither UDP nor TCP reached the server's media ${plural(ports.udp.length + ports.tcp.length, 'port', 'ports')} at ${serverAddress}. ` +
        `Open ${udpAdvice('')} and TCP ${plural(ports.tcp.length, 'port', 'ports')} ${list(ports.tcp.map(String))}.`,
      `On the server's firewall (and the router forwarding to it), allow incoming ${udpAdvice('')} and TCP ${list(ports.tcp.map(String))}${rangeNote}.${privateHint}`,
      { udpPorts: ports.udp.join(','), tcpPorts: ports.tcp.join(','), address: serverAddress, wsUrl: shownUrl },
    );
    return;
  }
  step('ice', 'ok', 'Media transports connected (ICE and DTLS done).');

  // 6. Measure: bytes flowing both ways, audio decoded, the path and its round-trip time.
  const deadline = Date.now() + MEDIA_TIMEOUT_MS;
  let firstAudioAt = null;
  let start = null;
  let last = null;
  let sentBytes = 0;
  let rtts = [];
  let paths = [];
  let loudest = null;
  while (Date.now() < deadline) {
    const [recvPath, sendPath] = await Promise.all([selectedPath(receiver.recv.transport), selectedPath(sender.send.transport)]);
    const inbound = audioInbound(await consumer.getStats());
    sentBytes = audioOutbound(await sender.producer.getStats());
    start ??= inbound;
    last = inbound;
    const heardNow = listen();
    if (heardNow.rms > (loudest?.rms ?? 0)) loudest = heardNow;
    paths = [sendPath.pair, recvPath.pair].filter(Boolean);
    rtts = paths.map((p) => p.rttMs).filter((v) => typeof v === 'number');
    const rtt = rtts.length ? Math.max(...rtts) : null;
    detail('bytes', 'Audio bytes', `sent ${formatBytes(sentBytes)}, received ${formatBytes(inbound.bytes)} (${inbound.packets} packets)`);
    if (rtt !== null) detail('rtt', 'Round-trip time', `${rtt.toFixed(1)} ms`);
    const flowing = inbound.bytes > start.bytes && inbound.samples > 0;
    if (flowing && firstAudioAt === null) {
      firstAudioAt = Date.now();
      step('media', 'running', 'The tone is coming back; measuring…');
    }
    if (firstAudioAt !== null && Date.now() - firstAudioAt >= MEASURE_MS && rtt !== null) break;
    await sleep(POLL_MS);
  }
  const rtt = rtts.length ? Math.max(...rtts) : null;
  if (firstAudioAt === null || !last) {
    step('media', 'fail', 'Connected, but no audio came back.');
    verdict(
      'no-audio',
      'fail',
      'The media transports connected, but no audio came back through the server.',
      'Run the test again. If it keeps failing, the server\'s operator should look at its log and metrics (mediasoup_server_* in Prometheus).',
      { bytesReceived: last?.bytes ?? 0, bytesSent: sentBytes },
    );
    return;
  }
  // The tone came back when what is heard is loud enough and loudest near its frequency.
  const heard = loudest !== null && loudest.rms > 0.01 && Math.abs(loudest.hz - TONE_HZ) < 30;
  const toneText = heard
    ? `, and the ${TONE_HZ} Hz tone came back`
    : loudest !== null && loudest.rms > 0.01
      ? `; what came back is loudest at ${loudest.hz.toFixed(0)} Hz, not the ${TONE_HZ} Hz tone`
      : '; the tone was not heard in it';
  step(
    'media',
    heard ? 'ok' : 'warn',
    `Audio flows: sent ${formatBytes(sentBytes)}, received ${formatBytes(last.bytes)}; ${last.samples} samples decoded${toneText}.`,
  );

  const protocols = [...new Set(paths.map((p) => p.protocol))];
  const used = paths.map((p) => `${p.protocol.toUpperCase()} ${p.address}:${p.port}`);
  detail('path', 'Media path', list([...new Set(used)]));
  const mediaPorts = [...new Set(paths.map((p) => p.port))].sort((a, b) => a - b);
  const data = {
    protocol: protocols.includes('tcp') ? 'tcp' : protocols[0],
    port: mediaPorts.join(','),
    address: [...new Set(paths.map((p) => p.address))].join(','),
    udpPorts: ports.udp.join(','),
    tcpPorts: ports.tcp.join(','),
    rttMs: rtt === null ? null : rtt.toFixed(1),
    bytesReceived: last.bytes,
    bytesSent: sentBytes,
    samples: last.samples,
    audible: heard,
    toneHz: loudest === null ? null : loudest.hz.toFixed(0),
    wsUrl: shownUrl,
    wsSecure: secure,
    viaProxy: Boolean(seen.viaProxy),
  };
  const rttText = rtt === null ? '' : ` Round-trip time ${rtt.toFixed(1)} ms.`;
  if (protocols.length === 1 && protocols[0] === 'udp') {
    step('path', 'ok', `Media path: ${list([...new Set(used)])}.`);
    verdict(
      'udp',
      'ok',
      `Media works over UDP (server ${plural(mediaPorts.length, 'port', 'ports')} ${list(mediaPorts.map(String))}).${rttText}`,
      'Nothing to do: this is the best path. Players on other networks may still differ: ask one who has trouble to open this page too.',
      data,
    );
  } else if (protocols.includes('tcp')) {
    step('path', 'warn', `Media path: ${list([...new Set(used)])} (TCP: UDP did not get through).`);
    verdict(
      'tcp-only',
      'warn',
      `TCP only: ${udpAdvice(plural(ports.udp.length, ' is blocked', ' are blocked'))} between you and the server; open/forward ${udpAdvice('')}.` +
        ` Media works meanwhile over TCP ${list(mediaPorts.map(String))}, which stutters more when the network loses packets.${rttText}`,
      `On the server's firewall (and the router forwarding to it), allow incoming ${udpAdvice('')}${rangeNote}. ` +
        'If the server\'s side is open, your own network (a company or school firewall, a VPN) blocks outgoing UDP.',
      data,
    );
  } else {
    verdict('unknown-path', 'warn', `Media flows, over ${protocols.join(', ') || 'an unknown path'}.${rttText}`, '', data);
  }
}

function start() {
  const button = $('run');
  button.disabled = false;
  button.addEventListener('click', () => {
    run();
  });
  if (typeof RTCPeerConnection !== 'function') {
    verdict('no-webrtc', 'fail', 'This browser has no WebRTC: players cannot use audio or video in it.');
    button.disabled = true;
  }
}

start();
