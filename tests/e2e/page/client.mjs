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
    onNewProducer(message).catch((error) => recordError(`consume ${message.producerId}`, error));
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

async function join(wsUrl, userId) {
  state.userId = userId;
  state.nextRequest = 0;
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
    forceTcp: false,
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
    forceTcp: false,
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

async function produce(mediaTag) {
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
  const producer = await state.sendTransport.produce({
    track,
    appData: { mediaTag, userId: state.userId },
  });
  state.producers.set(mediaTag, producer);
  return { id: producer.id, kind: producer.kind, mediaTag };
}

async function onNewProducer({ producerId, userId, appData }) {
  if (userId === state.userId) return;
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

async function stats() {
  const consumers = [];
  const inboundBytes = { audio: 0, video: 0 };
  for (const [producerId, { consumer }] of state.consumers) {
    const inbound = inboundRtp(await consumer.getStats());
    const bytesReceived = inbound.reduce((sum, s) => sum + (s.bytesReceived ?? 0), 0);
    inboundBytes[consumer.kind] += bytesReceived;
    consumers.push({
      producerId,
      consumerId: consumer.id,
      kind: consumer.kind,
      ownerId: consumer.appData.userId,
      bytesReceived,
      packetsReceived: inbound.reduce((sum, s) => sum + (s.packetsReceived ?? 0), 0),
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
    });
  }
  // Everything the receiving PeerConnection got, with or without a consumer.
  const recvTransportInbound = state.recvTransport ? inboundRtp(await state.recvTransport.getStats()) : [];
  return {
    consumers,
    producers,
    inboundBytes,
    recvTransportInboundBytes: recvTransportInbound.reduce((sum, s) => sum + (s.bytesReceived ?? 0), 0),
  };
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
  sendFrame,
  request: (type, fields) => request(type, fields),
  nextRequestId: () => `req_${state.nextRequest++}`,
  notifications: () => state.received.filter((m) => m.requestId === undefined),
  received: () => state.received,
  sent: () => state.sent,
  endedConsumers: () => state.endedConsumers,
  errors: () => state.errors,
};
