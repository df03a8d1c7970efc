// Browser side of the end-to-end test: one MediaSoupVTT peer.
//
// It speaks the signaling protocol the way the MediaSoupVTT module does (see
// /work/shared/PROTOCOL.md): `{type, requestId: "req_<n>", userId, ...}` requests,
// the same join order, lazy connectTransport, produce with appData {mediaTag, userId},
// consume on newProducer, drop consumers on producerClosed. Unlike module 0.7.20 it
// does not call device.canConsume (mediasoup-client has no such method), so remote
// media really plays. The test runner drives it through the functions on window.e2e.
import { Device } from 'mediasoup-client';

const REQUEST_TIMEOUT_MS = 10_000;
const SOCKET_OPEN_TIMEOUT_MS = 15_000;
const MEDIA_TAG_KIND = { mic: 'audio', webcam: 'video' };
// Small video keeps four peers' encoders affordable on a two-core machine.
const VIDEO_CONSTRAINTS = { width: 320, height: 240, frameRate: 15 };

const state = {
  socket: null,
  userId: null,
  nextRequest: 0,
  pending: new Map(),
  sent: [],
  received: [],
  errors: [],
  device: null,
  sendTransport: null,
  recvTransport: null,
  recvReady: null,
  producers: new Map(),
  consumers: new Map(),
  closedProducerIds: new Set(),
  endedConsumers: [],
  socketClosed: null,
  consumeRaces: [],
  consumeFrom: null,
};

function recordError(context, error) {
  state.errors.push(`${context}: ${error?.message ?? String(error)}`);
}

function send(message) {
  state.sent.push(message);
  state.socket.send(JSON.stringify(message));
}

function request(type, fields = {}) {
  const requestId = `req_${state.nextRequest++}`;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      state.pending.delete(requestId);
      reject(new Error(`${type} (${requestId}) got no answer within ${REQUEST_TIMEOUT_MS} ms`));
    }, REQUEST_TIMEOUT_MS);
    state.pending.set(requestId, { type, resolve, reject, timer });
    send({ type, requestId, userId: state.userId, ...fields });
  });
}

function onMessage(event) {
  let message;
  try {
    message = JSON.parse(event.data);
  } catch (error) {
    recordError(`unparsable frame ${String(event.data).slice(0, 200)}`, error);
    return;
  }
  state.received.push(message);
  if (message.requestId !== undefined) {
    const pending = state.pending.get(message.requestId);
    if (!pending) return;
    state.pending.delete(message.requestId);
    clearTimeout(pending.timer);
    if (message.error !== undefined) {
      pending.reject(new Error(`${pending.type} (${message.requestId}) failed: ${message.error}`));
    } else {
      pending.resolve(message.data ?? message);
    }
    return;
  }
  if (message.type === 'newProducer') {
    onNewProducer(message).catch((error) => {
      // A producer that closed while its consume was on the way is a race the module loses
      // too (its owner left); only other failures count as errors.
      if (state.closedProducerIds.has(message.producerId)) {
        state.consumeRaces.push(`consume ${message.producerId}: ${error?.message ?? String(error)}`);
      } else {
        recordError(`consume ${message.producerId}`, error);
      }
    });
  } else if (message.type === 'producerClosed') {
    onProducerClosed(message);
  }
}

function openSocket(wsUrl) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(wsUrl);
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error(`WebSocket ${wsUrl} not open within ${SOCKET_OPEN_TIMEOUT_MS} ms`));
    }, SOCKET_OPEN_TIMEOUT_MS);
    socket.addEventListener('open', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.addEventListener('error', () => {
      clearTimeout(timer);
      reject(new Error(`WebSocket ${wsUrl} failed to open`));
    });
    socket.addEventListener('message', onMessage);
    socket.addEventListener('close', ({ code, reason, wasClean }) => {
      if (state.socket === socket) state.socketClosed = { code, reason, wasClean };
    });
  });
}

function wireConnect(transport) {
  transport.on('connect', ({ dtlsParameters }, callback, errback) => {
    request('connectTransport', { transportId: transport.id, dtlsParameters }).then(
      () => callback(),
      errback,
    );
  });
}

// `forceTcp` asks the server for TCP-only transports (the module always sends false; the
// protocol lets a client ask, and the real-path test uses it to pin ICE to TCP).
// `consumeFrom` (user ids) consumes only those users' producers; the module consumes everyone,
// the real-path test narrows it to keep many peers affordable on two cores.
async function join(wsUrl, userId, { forceTcp = false, consumeFrom = null } = {}) {
  state.userId = userId;
  state.consumeFrom = consumeFrom;
  state.nextRequest = 0;
  state.socketClosed = null;
  state.socket = await openSocket(wsUrl);
  let recvReady;
  state.recvReady = new Promise((resolve) => {
    recvReady = resolve;
  });

  const routerRtpCapabilities = await request('getRouterRtpCapabilities');
  if (!routerRtpCapabilities || Object.keys(routerRtpCapabilities).length === 0) {
    throw new Error('getRouterRtpCapabilities answered with no capabilities; the module aborts the join here');
  }
  const device = new Device();
  await device.load({ routerRtpCapabilities });
  state.device = device;

  const sendParams = await request('createWebRtcTransport', {
    forceTcp,
    producing: true,
    consuming: false,
    sctpCapabilities: device.sctpCapabilities,
  });
  const sendTransport = device.createSendTransport(sendParams);
  wireConnect(sendTransport);
  sendTransport.on('produce', ({ kind, rtpParameters, appData }, callback, errback) => {
    request('produce', { transportId: sendTransport.id, kind, rtpParameters, appData }).then(
      ({ id }) => callback({ id }),
      errback,
    );
  });
  state.sendTransport = sendTransport;

  const recvParams = await request('createWebRtcTransport', {
    forceTcp,
    producing: false,
    consuming: true,
    sctpCapabilities: device.sctpCapabilities,
  });
  const recvTransport = device.createRecvTransport(recvParams);
  wireConnect(recvTransport);
  state.recvTransport = recvTransport;
  recvReady();

  return {
    sendTransport: sendParams,
    recvTransport: recvParams,
    routerRtpCapabilities,
  };
}

/**
 * Produces the fake microphone or camera. `codec` (a mime type such as 'video/VP9') picks the
 * codec instead of mediasoup-client's default (the router's first one the browser has).
 */
async function produce(mediaTag, { codec: mimeType } = {}) {
  const kind = MEDIA_TAG_KIND[mediaTag];
  if (!kind) throw new Error(`unknown mediaTag ${mediaTag}; use mic or webcam`);
  // Like the module: stopping a device closes the producer locally, the server is not told.
  const previous = state.producers.get(mediaTag);
  if (previous) {
    previous.close();
    state.producers.delete(mediaTag);
  }
  const stream = await navigator.mediaDevices.getUserMedia(
    kind === 'audio' ? { audio: true } : { video: VIDEO_CONSTRAINTS },
  );
  const [track] = stream.getTracks();
  let codec;
  if (mimeType) {
    codec = state.device.rtpCapabilities.codecs.find((c) => c.mimeType.toLowerCase() === mimeType.toLowerCase());
    if (!codec) throw new Error(`the device cannot send ${mimeType} to this router`);
  }
  const producer = await state.sendTransport.produce({
    track,
    codec,
    appData: { mediaTag, userId: state.userId },
  });
  state.producers.set(mediaTag, producer);
  return { id: producer.id, kind: producer.kind, mediaTag, mimeType: producer.rtpParameters.codecs[0]?.mimeType };
}

async function onNewProducer({ producerId, userId, appData }) {
  if (userId === state.userId) return;
  if (state.consumeFrom && !state.consumeFrom.includes(userId)) return;
  await state.recvReady;
  const data = await request('consume', {
    producerId,
    rtpCapabilities: state.device.rtpCapabilities,
  });
  const consumer = await state.recvTransport.consume({
    id: data.id,
    producerId: data.producerId,
    kind: data.kind,
    rtpParameters: data.rtpParameters,
    appData: { userId, mediaTag: appData?.mediaTag },
  });
  const element = document.createElement(consumer.kind === 'video' ? 'video' : 'audio');
  element.autoplay = true;
  element.muted = true;
  element.srcObject = new MediaStream([consumer.track]);
  document.body.append(element);
  const entry = { consumer, element, producerPaused: data.producerPaused };
  state.consumers.set(producerId, entry);
  if (state.closedProducerIds.has(producerId)) dropConsumer(producerId);
}

function dropConsumer(producerId) {
  const entry = state.consumers.get(producerId);
  if (!entry) return;
  entry.consumer.close();
  entry.element.remove();
  state.consumers.delete(producerId);
  state.endedConsumers.push({
    producerId,
    consumerId: entry.consumer.id,
    kind: entry.consumer.kind,
    trackState: entry.consumer.track.readyState,
  });
}

function onProducerClosed({ producerId }) {
  state.closedProducerIds.add(producerId);
  dropConsumer(producerId);
}

function inboundRtp(report) {
  return [...report.values()].filter((s) => s.type === 'inbound-rtp');
}

const sum = (stats, field) => stats.reduce((total, s) => total + (s[field] ?? 0), 0);

/** What the receiving side saw of a set of inbound-rtp entries: bytes, decoded frames, samples. */
function inboundSummary(inbound) {
  return {
    ssrcs: inbound.map((s) => s.ssrc),
    bytesReceived: sum(inbound, 'bytesReceived'),
    packetsReceived: sum(inbound, 'packetsReceived'),
    // video
    framesReceived: sum(inbound, 'framesReceived'),
    framesDecoded: sum(inbound, 'framesDecoded'),
    keyFramesDecoded: sum(inbound, 'keyFramesDecoded'),
    pliCount: sum(inbound, 'pliCount'),
    // audio
    totalSamplesReceived: sum(inbound, 'totalSamplesReceived'),
    concealedSamples: sum(inbound, 'concealedSamples'),
  };
}

async function stats() {
  const consumers = [];
  const inboundBytes = { audio: 0, video: 0 };
  for (const [producerId, { consumer }] of state.consumers) {
    const report = await consumer.getStats();
    const inbound = inboundRtp(report);
    const summary = inboundSummary(inbound);
    // The codec the browser really decoded, from the inbound-rtp's codec entry.
    summary.mimeTypes = inbound.map((s) => report.get(s.codecId)?.mimeType ?? null);
    inboundBytes[consumer.kind] += summary.bytesReceived;
    consumers.push({
      producerId,
      consumerId: consumer.id,
      kind: consumer.kind,
      ownerId: consumer.appData.userId,
      // The SSRC the server announced for this consumer in its `consume` answer.
      ssrc: consumer.rtpParameters.encodings?.[0]?.ssrc ?? null,
      ...summary,
    });
  }
  const producers = [];
  for (const [mediaTag, producer] of state.producers) {
    const outbound = [...(await producer.getStats()).values()].filter((s) => s.type === 'outbound-rtp');
    producers.push({
      producerId: producer.id,
      kind: producer.kind,
      mediaTag,
      bytesSent: outbound.reduce((sum, s) => sum + (s.bytesSent ?? 0), 0),
      packetsSent: outbound.reduce((sum, s) => sum + (s.packetsSent ?? 0), 0),
    });
  }
  // Everything the receiving PeerConnection got, with or without a consumer.
  const recvTransportInbound = state.recvTransport ? inboundRtp(await state.recvTransport.getStats()) : [];
  return {
    consumers,
    producers,
    inboundBytes,
    recvTransportInboundBytes: recvTransportInbound.reduce((sum, s) => sum + (s.bytesReceived ?? 0), 0),
    recvTransportInbound: recvTransportInbound.map((s) => ({
      ssrc: s.ssrc,
      kind: s.kind,
      bytesReceived: s.bytesReceived ?? 0,
    })),
  };
}

/**
 * What the sending PeerConnection believes it may send (its bandwidth estimate, which the
 * server's REMB caps) and the bytes its video and audio senders sent so far.
 */
async function sendRate() {
  const report = await state.sendTransport.getStats();
  const all = [...report.values()];
  const pairId = all.find((s) => s.type === 'transport')?.selectedCandidatePairId;
  const pair = pairId ? report.get(pairId) : all.find((s) => s.type === 'candidate-pair' && s.nominated);
  return {
    timestamp: performance.now(),
    availableOutgoingBitrate: pair?.availableOutgoingBitrate ?? null,
    bytesSent: all.filter((s) => s.type === 'outbound-rtp').reduce((total, s) => total + (s.bytesSent ?? 0), 0),
  };
}

/** The mime types this browser can encode for `kind`, lower-case. */
function sendableCodecs(kind) {
  return (RTCRtpSender.getCapabilities(kind)?.codecs ?? []).map((c) => c.mimeType.toLowerCase());
}

/** The ICE path each transport's PeerConnection selected, as the browser sees it. */
async function iceInfo() {
  const info = {};
  for (const [name, transport] of [['send', state.sendTransport], ['recv', state.recvTransport]]) {
    if (!transport || transport.closed) continue;
    const report = await transport.getStats();
    const all = [...report.values()];
    const pairId = all.find((s) => s.type === 'transport')?.selectedCandidatePairId;
    const pair = pairId ? report.get(pairId) : all.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
    const local = pair && report.get(pair.localCandidateId);
    const remote = pair && report.get(pair.remoteCandidateId);
    info[name] = {
      id: transport.id,
      connectionState: transport.connectionState,
      selected: pair
        ? {
            localProtocol: local?.protocol,
            localAddress: local?.address,
            remoteProtocol: remote?.protocol,
            remoteAddress: remote?.address,
            remotePort: remote?.port,
          }
        : null,
    };
  }
  return info;
}

function consumers() {
  return [...state.consumers].map(([producerId, { consumer, producerPaused }]) => ({
    producerId,
    consumerId: consumer.id,
    kind: consumer.kind,
    ownerId: consumer.appData.userId,
    mediaTag: consumer.appData.mediaTag,
    producerPaused,
    trackState: consumer.track.readyState,
    closed: consumer.closed,
  }));
}

function close() {
  return new Promise((resolve) => {
    const socket = state.socket;
    const finish = () => {
      for (const producer of state.producers.values()) producer.close();
      state.sendTransport?.close();
      state.recvTransport?.close();
      resolve();
    };
    if (!socket || socket.readyState === WebSocket.CLOSED) {
      finish();
      return;
    }
    socket.addEventListener('close', finish);
    socket.close();
  });
}

// The module's own disconnect: close the producers and both transports (their
// PeerConnections, ICE included), then the socket, and wait until it is closed.
function disconnect() {
  for (const producer of state.producers.values()) producer.close();
  state.sendTransport?.close();
  state.recvTransport?.close();
  return new Promise((resolve) => {
    const socket = state.socket;
    if (!socket || socket.readyState === WebSocket.CLOSED) {
      resolve();
      return;
    }
    socket.addEventListener('close', () => resolve());
    socket.close();
  });
}

// Sends `text` verbatim and resolves with the first frame answering `requestId`.
function sendFrame(text, requestId) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      state.socket.removeEventListener('message', onAnswer);
      reject(new Error(`no frame with requestId ${requestId} within ${REQUEST_TIMEOUT_MS} ms`));
    }, REQUEST_TIMEOUT_MS);
    function onAnswer(event) {
      const message = JSON.parse(event.data);
      if (message.requestId !== requestId) return;
      clearTimeout(timer);
      state.socket.removeEventListener('message', onAnswer);
      resolve(message);
    }
    state.socket.addEventListener('message', onAnswer);
    state.socket.send(text);
  });
}

window.e2e = {
  join,
  produce,
  stats,
  consumers,
  close,
  disconnect,
  iceInfo,
  sendRate,
  sendableCodecs,
  socketClosed: () => state.socketClosed,
  sendFrame,
  request: (type, fields) => request(type, fields),
  nextRequestId: () => `req_${state.nextRequest++}`,
  notifications: () => state.received.filter((m) => m.requestId === undefined),
  received: () => state.received,
  sent: () => state.sent,
  endedConsumers: () => state.endedConsumers,
  errors: () => state.errors,
  consumeRaces: () => state.consumeRaces,
};
