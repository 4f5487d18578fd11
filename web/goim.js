// goim.js: a client for goim-rs (and goim v2) comets, for browsers and Node.
//
// An ES module with no dependencies and no build step: `import { GoimClient } from '/goim.js'`.
// It speaks goim's binary protocol over WebSocket and falls back to HTTP long-polling, sends
// heartbeats (whose replies carry the room's online count), reconnects with exponential backoff
// and jitter, follows the server's op-6 disconnect hints, and after a fallback probes WebSocket
// in the background to return to it once it works again, and resumes from the last message
// position it saw after every reconnect (docs/recovery.md), dropping what it already has. See
// docs/web-client.md.
// It is one file on purpose (past the house 800-line mark): users copy or import exactly this.
//
// Wire format: every packet is a 16-byte big-endian header and a body.
//
//   offset  size  field
//   0       4     packLen   (int32, header + body)
//   4       2     headerLen (int16, always 16)
//   6       2     ver       (int16)
//   8       4     op        (int32)
//   12      4     seq       (int32, echoed by replies; 0 on server pushes)
//
// A goim-rs push may carry its position in its stream in the two fields goim leaves unused on
// pushes: ver = epoch·2 + stream (0 the room's, 1 the user's; epoch 0, goim's ver 1, is no
// position) and seq = the offset's low 32 bits.
//
// Over WebSocket each message carries one packet, and server pushes arrive as one op-9 (raw)
// packet wrapping the real packets. Long-poll responses carry packets back to back, exactly as
// a TCP client reads them.

/** goim's operation codes (api/protocol/operation.go), plus op 6 as goim-rs uses it. */
export const Op = Object.freeze({
  HANDSHAKE: 0,
  HANDSHAKE_REPLY: 1,
  HEARTBEAT: 2,
  HEARTBEAT_REPLY: 3,
  SEND_MSG: 4,
  SEND_MSG_REPLY: 5,
  DISCONNECT_REPLY: 6,
  AUTH: 7,
  AUTH_REPLY: 8,
  RAW: 9,
  CHANGE_ROOM: 12,
  CHANGE_ROOM_REPLY: 13,
  SUB: 14,
  SUB_REPLY: 15,
  UNSUB: 16,
  UNSUB_REPLY: 17,
  // goim-rs (docs/recovery.md): the last positions seen, sent right before op 7, and the reply
  // after op 8 that says what is replayed.
  RECOVER: 18,
  RECOVER_REPLY: 19,
});

export const HEADER_LEN = 16;

/** The transports, in the order tried by default. */
export const TRANSPORTS = Object.freeze(['websocket', 'longpoll']);

/** A malformed packet or response: the connection carrying it is dropped. */
export class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
  }
}

const utf8 = new TextEncoder();
const text = new TextDecoder('utf-8');

/** A packet body as bytes: strings are UTF-8, `null`/`undefined` is empty. */
export function toBytes(body) {
  if (body == null) return new Uint8Array(0);
  if (typeof body === 'string') return utf8.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  throw new TypeError('a packet body is a string, Uint8Array or ArrayBuffer');
}

/** Encodes one packet: `{op, seq = 0, ver = 1, body}` → bytes. */
export function encodePacket({ op, seq = 0, ver = 1, body }) {
  const b = toBytes(body);
  const out = new Uint8Array(HEADER_LEN + b.length);
  const v = new DataView(out.buffer);
  v.setInt32(0, out.length);
  v.setInt16(4, HEADER_LEN);
  v.setInt16(6, ver);
  v.setInt32(8, op);
  v.setInt32(12, seq);
  out.set(b, HEADER_LEN);
  return out;
}

/** Encodes packets back to back (the long-poll and TCP form). */
export function encodePackets(packets) {
  const parts = packets.map(encodePacket);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * Decodes packets laid back to back, replacing each op-9 (raw) packet by the packets inside
 * it. Returns `[{ver, op, seq, body}]` with `body` a Uint8Array view. Throws ProtocolError on a
 * bad header or a truncated packet: every caller here holds whole messages or responses.
 */
export function decodePackets(input, { unwrapRaw = true } = {}) {
  const bytes = toBytes(input);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = [];
  let off = 0;
  while (off < bytes.length) {
    const left = bytes.length - off;
    if (left < HEADER_LEN) throw new ProtocolError(`truncated header: ${left} bytes at offset ${off}`);
    const packLen = view.getInt32(off);
    const headerLen = view.getInt16(off + 4);
    if (headerLen < HEADER_LEN || packLen < headerLen) {
      throw new ProtocolError(`bad header at offset ${off}: packLen ${packLen}, headerLen ${headerLen}`);
    }
    if (packLen > left) throw new ProtocolError(`truncated packet at offset ${off}: packLen ${packLen}, ${left} bytes left`);
    const packet = {
      ver: view.getInt16(off + 6),
      op: view.getInt32(off + 8),
      seq: view.getInt32(off + 12),
      body: bytes.subarray(off + headerLen, off + packLen),
    };
    if (unwrapRaw && packet.op === Op.RAW) {
      // One level only: goim never nests raw packets, and recursion would let a peer nest deeply.
      for (const inner of decodePackets(packet.body, { unwrapRaw: false })) out.push(inner);
    } else {
      out.push(packet);
    }
    off += packLen;
  }
  return out;
}

/** goim's JSON token (the op-7 body the embedded server accepts by default). */
export function jsonToken({ mid = 0, key, room = '', platform = 'web', accepts = [] } = {}) {
  const token = { mid: Number(mid) };
  if (key) token.key = String(key);
  token.room_id = room;
  token.platform = platform;
  token.accepts = accepts.map(Number);
  return JSON.stringify(token);
}

/** The two streams a connection has positions in: its room's and its user's. */
export const STREAMS = Object.freeze(['room', 'user']);

const TWO_32 = 2 ** 32;

/**
 * The position a packet header carries, `{stream, epoch, offset}` (`offset` the low 32 bits,
 * unsigned), or `null` for a packet without one (goim's `ver = 1`).
 */
export function positionOf({ ver, seq }) {
  if (!(ver >= 2)) return null;
  return { stream: STREAMS[ver & 1], epoch: ver >> 1, offset: seq >>> 0 };
}

/**
 * The last position seen in each stream, and what a reconnect asks for. A push at or before
 * the position in the same epoch is one the client already has (a duplicate); a push in another
 * epoch starts the stream over. Offsets are kept whole (the recover reply carries them whole);
 * a push carries their low 32 bits, compared modulo 2³² as the server does.
 */
export class PositionTracker {
  constructor() {
    this.room = { epoch: 0, offset: 0 };
    this.user = { epoch: 0, offset: 0 };
    this.duplicates = 0; // pushes dropped as already seen
    this._held = { room: 0, user: 0 }; // streams in transition (a room change in flight)
  }

  /**
   * Takes in a positioned push (`positionOf`'s result): false when it is a duplicate (counted),
   * true when it is new or has no position.
   */
  accept(pos) {
    if (!pos || pos.epoch === 0) return true;
    if (this._held[pos.stream]) return true; // the stream is being replaced: nothing to compare to
    const seen = this[pos.stream];
    if (seen.epoch !== pos.epoch) {
      this[pos.stream] = { epoch: pos.epoch, offset: pos.offset };
      return true;
    }
    const ahead = (pos.offset - (seen.offset % TWO_32) + TWO_32) % TWO_32;
    if (ahead === 0 || ahead > 0x7fffffff) {
      this.duplicates += 1;
      return false;
    }
    seen.offset += ahead;
    return true;
  }

  /** Forgets a stream: the next connect asks for it from nothing. */
  reset(stream) {
    this[stream] = { epoch: 0, offset: 0 };
  }

  /**
   * Stops tracking `stream` until the matching `release` (a room change: pushes of the old and
   * the new room may both arrive until its reply), then starts it over.
   */
  hold(stream) {
    this._held[stream] += 1;
    this.reset(stream);
  }

  release(stream) {
    if (this._held[stream] > 0) this._held[stream] -= 1;
    this.reset(stream);
  }

  /** The op-18 body: the last position of each stream (epoch 0: none yet, only the current). */
  request() {
    const body = {};
    for (const s of STREAMS) body[s] = { epoch: this[s].epoch, offset: this[s].offset };
    return body;
  }

  /**
   * Takes in an op-19 reply (its JSON, parsed) to the `asked` request: each stream continues
   * from just before the first replayed push. Returns what the app is told: `{positions: false}`,
   * or per stream in the reply `{epoch, offset, recovered, complete, from}`.
   */
  applyReply(reply, asked) {
    if (!reply || typeof reply !== 'object') throw new ProtocolError('the recover reply is not a JSON object');
    if (reply.positions === false) return { positions: false };
    const out = { positions: true };
    // goim-rs's comet sets `error` when logic could not answer: each stream is then incomplete
    // at the client's own position.
    if (typeof reply.error === 'string') out.error = reply.error;
    for (const s of STREAMS) {
      const r = reply[s];
      if (!r || typeof r !== 'object') continue;
      const epoch = Number(r.epoch);
      const offset = Number(r.offset);
      const recovered = Number(r.recovered) || 0;
      if (!Number.isInteger(epoch) || epoch < 0 || !Number.isSafeInteger(offset) || offset < 0) {
        throw new ProtocolError(`bad ${s} position in the recover reply: ${JSON.stringify(r)}`);
      }
      out[s] = { epoch, offset, recovered, complete: r.complete === true, from: { ...((asked && asked[s]) || { epoch: 0, offset: 0 }) } };
      if (this._held[s] || epoch === 0) continue;
      // The replay carries offsets start+1 ..= offset; they, then live pushes, move it on. An
      // incomplete reply is taken as it is, even in the same epoch: a server whose offset is
      // behind the client's lost the history the client saw.
      const start = Math.max(0, offset - recovered);
      const seen = this[s];
      if (seen.epoch === epoch && out[s].complete) seen.offset = Math.max(seen.offset, start);
      else this[s] = { epoch, offset: start };
    }
    return out;
  }
}

/** The heartbeat reply's body: the room's online count, a big-endian int32. */
export function onlineCount(body) {
  if (body.length < 4) return null;
  return new DataView(body.buffer, body.byteOffset, 4).getInt32(0);
}

// Ops that are the protocol's own, never handed to onMessage.
const CONTROL_OPS = new Set([
  Op.HEARTBEAT_REPLY, Op.DISCONNECT_REPLY, Op.AUTH_REPLY, Op.RAW,
  Op.CHANGE_ROOM_REPLY, Op.SUB_REPLY, Op.UNSUB_REPLY, Op.RECOVER_REPLY,
]);

const DEFAULTS = {
  transports: TRANSPORTS,
  heartbeatMs: 30000,
  heartbeatTimeoutMs: null,
  openTimeoutMs: 10000,
  authTimeoutMs: 10000,
  requestTimeoutMs: 10000,
  pollTimeoutS: null,
  mid: 0,
  key: '',
  room: '',
  platform: 'web',
  accepts: [1000, 1001, 1002],
  maxQueued: 64,
  maxPending: 256,
  maxBufferedBytes: 1 << 20,
  recover: true,
  reconnect: {},
  upgrade: {},
};

const RECONNECT_DEFAULTS = { initialMs: 1000, maxMs: 30000, factor: 2, jitter: 0.5, maxAttempts: Infinity };

// The WebSocket probe while connected over long-polling with 'websocket' earlier in
// `transports`: probe n (from 0) waits min(maxMs, initialMs·factorⁿ)·(1 − jitter·random) after
// the long-poll auth or the failed probe before it; maxAttempts probes at most until WebSocket
// authenticates again. `upgrade: false` turns probing off.
const UPGRADE_DEFAULTS = { initialMs: 5000, maxMs: 300000, factor: 2, jitter: 0.5, maxAttempts: Infinity };

// How long a switch waits for the replies in flight over the old transport before it goes ahead
// (those still missing then reject, as on any reconnect). Short: the probe's socket is not yet
// authenticated and comet closes it after its handshake timeout (5 s by default).
const SWITCH_WAIT_MS = 2000;

/**
 * A connection to a comet that stays connected: it authenticates, heartbeats, reconnects,
 * falls back to long-polling and returns to WebSocket on its own until `close()`.
 *
 * Status: 'idle' → 'connecting' → 'connected' ⇄ 'reconnecting' → 'closed'.
 */
export class GoimClient {
  constructor(options = {}) {
    this.options = {
      ...DEFAULTS,
      ...options,
      reconnect: { ...RECONNECT_DEFAULTS, ...(options.reconnect || {}) },
      upgrade: options.upgrade === false ? false : { ...UPGRADE_DEFAULTS, ...(options.upgrade || {}) },
    };
    const o = this.options;
    for (const t of o.transports) {
      if (!TRANSPORTS.includes(t)) throw new TypeError(`unknown transport ${t}; use ${TRANSPORTS.join(' or ')}`);
    }
    if (o.transports.length === 0) throw new TypeError('transports is empty');
    this.onStatus = o.onStatus || null;
    this.onMessage = o.onMessage || null;
    this.onOnline = o.onOnline || null;
    this.onDisconnect = o.onDisconnect || null;
    this.onRecover = o.onRecover || null;
    // What the default token carries; changeRoom/sub/unsub keep it current so a reconnect
    // rejoins the room and ops the client was in.
    this.room = o.room;
    this.accepts = [...o.accepts];
    this.status = 'idle';
    this.transport = null;
    this.online = null;
    this._gen = 0; // bumped per attempt and on close(); callbacks of older pipes are ignored
    this._pipe = null;
    this._authed = false;
    this._attempts = 0; // failed attempts since the last successful auth
    this._lastGood = null; // the transport to try first next time (see _authenticated)
    this._fellBack = null; // this attempt's failures before the transport in use: {slow}
    this._probes = 0; // WebSocket probes since WebSocket last authenticated
    this._probe = null; // the probe's socket, opening or open and waiting for the switch
    this._switching = null; // {gen, pipe}: a probe opened; switching once no reply is awaited
    this._seq = 0;
    this._pending = new Map(); // seq → {replyOp, resolve, reject, timer}
    this._queue = []; // packets waiting for a connection, at most maxQueued
    this._timers = idleTimers();
    this._hbSentAt = null; // when the unanswered heartbeat went out
    this._every = this.options.heartbeatMs; // the heartbeat interval in use
    this._waiters = [];
    // Recovery (docs/recovery.md): the positions seen, what this connection asked for (op 18),
    // and the last op-19 result. Kept across reconnects; close() and connect() keep them too, so
    // a client connected again resumes.
    this.positions = new PositionTracker();
    this.recovery = null;
    this._asked = null;
  }

  /** Pushes dropped because they were already delivered (by position). */
  get duplicates() {
    return this.positions.duplicates;
  }

  /** Starts connecting; the promise resolves at the first 'connected', rejects if closed first. */
  connect() {
    const p = new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
    p.catch(() => {}); // callers that ignore the promise must not see an unhandled rejection
    if (this.status === 'connected') {
      this._settle(true);
    } else if (this.status === 'idle' || this.status === 'closed') {
      this._attempts = 0;
      this._probes = 0;
      this._attempt();
    }
    return p;
  }

  /** Closes the connection for good (no reconnect) and fails pending requests. */
  close() {
    if (this.status === 'closed') return;
    this._finish({ reason: 'client' });
  }

  /**
   * Moves to another room (`type://id`); resolves with the echoed room. The room's stream starts
   * over: until the reply, pushes of either room are delivered without a position check, and
   * after it the new room's first push sets the position.
   */
  changeRoom(room) {
    this.room = room;
    this.positions.hold('room');
    const release = () => this.positions.release('room');
    return this._request(Op.CHANGE_ROOM, Op.CHANGE_ROOM_REPLY, room).then(
      (p) => {
        release();
        return text.decode(p.body);
      },
      (e) => {
        release();
        throw e;
      },
    );
  }

  /** Adds ops to those that key and mid pushes may deliver. */
  sub(ops) {
    for (const op of ops.map(Number)) if (!this.accepts.includes(op)) this.accepts.push(op);
    return this._request(Op.SUB, Op.SUB_REPLY, ops.join(',')).then((p) => text.decode(p.body));
  }

  /** Removes ops from those that key and mid pushes may deliver. */
  unsub(ops) {
    const drop = new Set(ops.map(Number));
    this.accepts = this.accepts.filter((op) => !drop.has(op));
    return this._request(Op.UNSUB, Op.UNSUB_REPLY, ops.join(',')).then((p) => text.decode(p.body));
  }

  /** Sends an uplink packet (default op 4); resolves when the server echoes it. */
  send(op = Op.SEND_MSG, body = '') {
    return this._request(op, op, body).then(() => undefined);
  }

  /** Sends a heartbeat now; resolves with the room's online count. */
  heartbeat() {
    if (this._hbSentAt === null) this._hbSentAt = Date.now();
    return this._request(Op.HEARTBEAT, Op.HEARTBEAT_REPLY, null).then((p) => onlineCount(p.body));
  }

  // ---- connecting ------------------------------------------------------------------------

  _order() {
    const list = [...this.options.transports];
    if (this._lastGood && list.includes(this._lastGood)) {
      list.splice(list.indexOf(this._lastGood), 1);
      list.unshift(this._lastGood);
    }
    return list;
  }

  // One attempt: each transport in order until one opens. `via` is set by an upgrade switch:
  // {upgradeFrom, pipe} with the probe's open WebSocket to authenticate over.
  async _attempt(via = null) {
    const gen = ++this._gen;
    this._authed = false;
    this._fellBack = null;
    let failure = null;
    let previous = null;
    let ready = via && via.pipe;
    for (const name of this._order()) {
      if (gen !== this._gen) {
        if (ready) ready.close();
        return;
      }
      this.transport = name;
      const detail = { transport: name, attempt: this._attempts, fallbackFrom: previous, error: failure && failure.message };
      if (via) detail.upgradeFrom = via.upgradeFrom;
      this._setStatus('connecting', detail);
      try {
        if (name === 'websocket') {
          const pipe = ready;
          ready = null;
          await this._openWebSocket(gen, pipe);
        } else {
          await this._openLongPoll(gen);
        }
        return; // the pipe is open; auth and later events take over
      } catch (e) {
        if (gen !== this._gen) return;
        if (e && e.final) {
          this._emitDisconnect(e.info);
          this._finish(e.info);
          return;
        }
        if (e && e.told) {
          this._emitDisconnect(e.info);
          this._retry(e.info, e.afterMs);
          return;
        }
        failure = e instanceof Error ? e : new Error(String(e));
        previous = name;
        this._fellBack = { slow: Boolean((this._fellBack && this._fellBack.slow) || (e && e.slow)) };
      }
    }
    if (ready) ready.close();
    if (gen === this._gen) this._retry({ reason: 'unreachable', message: failure && failure.message });
  }

  async _token() {
    const t = this.options.token;
    const value = typeof t === 'function' ? await t(this) : t;
    if (value != null) return toBytes(value);
    const o = this.options;
    return toBytes(jsonToken({ mid: o.mid, key: o.key, room: this.room, platform: o.platform, accepts: this.accepts }));
  }

  // `ready`: a socket the upgrade probe already opened (used if it is still open).
  async _openWebSocket(gen, ready = null) {
    let token;
    try {
      const Impl = this._webSocketImpl();
      if (!Impl) throw new Error('WebSocket is not available');
      token = await this._token();
    } catch (e) {
      if (ready) ready.close();
      throw e;
    }
    if (gen !== this._gen) {
      if (ready) ready.close();
      return;
    }
    if (ready && !ready.closed) {
      this._attach(ready, gen);
    } else {
      const pipe = new WebSocketPipe(this._url(), this._webSocketImpl(), this.options.maxBufferedBytes);
      this._attach(pipe, gen);
      await pipe.open(this.options.openTimeoutMs);
      if (gen !== this._gen) return;
    }
    const pipe = this._pipe;
    // Recovery: op 18 with the positions seen goes right before auth (seq 0: it has no reply of
    // its own; op 19 follows op 8). `recover: false` sends exactly what goim's clients send.
    const asked = this._ask();
    if (asked) pipe.send(encodePacket({ op: Op.RECOVER, body: JSON.stringify(asked) }));
    pipe.send(encodePacket({ op: Op.AUTH, seq: this._nextSeq(), body: token }));
    this._timers.auth = setTimeout(() => {
      if (gen === this._gen && !this._authed) this._dropped({ reason: 'auth_timeout' });
    }, this.options.authTimeoutMs);
  }

  async _openLongPoll(gen) {
    const fetchImpl = this.options.fetch || globalThis.fetch;
    if (typeof fetchImpl !== 'function') throw new Error('fetch is not available');
    const token = await this._token();
    if (gen !== this._gen) return;
    const pipe = new LongPollPipe(this._pollUrl(), fetchImpl.bind(globalThis), this.options);
    this._attach(pipe, gen);
    const asked = this._ask();
    const { heartbeatMs, recover } = await pipe.open(token, this.options.openTimeoutMs, asked);
    if (gen !== this._gen) return;
    this._authenticated(heartbeatMs);
    // The auth response's `recover` is op 19's object; the first poll brings the replay, so
    // polling starts only once the positions are set from it.
    if (gen === this._gen && asked && recover !== undefined) {
      try {
        this._recovered(recover);
      } catch (e) {
        if (gen === this._gen) this._dropped({ reason: 'protocol', message: e.message });
        return;
      }
    }
    if (gen === this._gen) pipe.start();
  }

  // What this connection asks to resume from (op 18's body), or null with `recover: false`.
  _ask() {
    this._asked = this.options.recover ? this.positions.request() : null;
    return this._asked;
  }

  // An op-19 reply (parsed): the positions move to where the replay starts, and the app hears.
  _recovered(reply) {
    const result = this.positions.applyReply(reply, this._asked);
    result.transport = this.transport;
    this.recovery = result;
    this._call('onRecover', result);
  }

  _webSocketImpl() {
    const Impl = this.options.WebSocket || globalThis.WebSocket;
    return typeof Impl === 'function' ? Impl : null;
  }

  _attach(pipe, gen) {
    if (this._pipe) this._pipe.close();
    this._pipe = pipe;
    pipe.onPackets = (packets) => {
      if (gen === this._gen) this._receive(packets);
    };
    pipe.onClose = (info) => {
      if (gen === this._gen) this._dropped(info);
    };
  }

  _url() {
    if (this.options.url) return this.options.url;
    if (typeof location === 'undefined') throw new Error('no url given');
    return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/sub`;
  }

  _pollUrl() {
    if (this.options.pollUrl) return this.options.pollUrl.replace(/\/+$/, '');
    if (typeof location === 'undefined') throw new Error('no pollUrl given');
    return `${location.origin}/poll`;
  }

  _authenticated(serverHeartbeatMs) {
    clearTimeout(this._timers.auth);
    this._authed = true;
    this._attempts = 0;
    // The transport to try first on the next attempt. One that worked without a fallback stays
    // first. One reached by falling back stays first only if what failed before it failed slowly
    // (timed out: trying it first again would cost openTimeoutMs on every reconnect). After a
    // fast failure (refused, closed before opening: a server restarting, or Chromium holding
    // back sockets to an endpoint that just failed) the configured order stands, so a refusal
    // during a rollout does not make long-polling the client's transport for good.
    if (!this._fellBack) this._lastGood = this.transport;
    else this._lastGood = this._fellBack.slow ? this.transport : null;
    if (this.transport === 'websocket') this._probes = 0;
    let every = this.options.heartbeatMs;
    // A long-poll session expires without traffic: the server's interval caps ours.
    if (serverHeartbeatMs > 0) every = Math.min(every, serverHeartbeatMs);
    this._every = every;
    this._setStatus('connected', { transport: this.transport, heartbeatMs: every });
    this._settle(true);
    this._flushQueue();
    this._hbSentAt = null;
    this._beat();
    clearInterval(this._timers.heartbeat);
    this._timers.heartbeat = setInterval(() => this._beat(), every);
    this._scheduleProbe();
  }

  // ---- returning to WebSocket ------------------------------------------------------------
  // Connected over long-polling while 'websocket' comes earlier in `transports` (a fallback), the
  // client probes WebSocket now and then: it opens a socket to `url` with backoff (`upgrade`).
  // A probe that fails leaves the long-poll session alone and schedules the next one later. One
  // that opens makes the client switch at a safe point: new requests wait in the queue, the
  // replies in flight over long-polling arrive (at most SWITCH_WAIT_MS), then the long-poll pipe
  // closes and the client authenticates over the probe's socket.
  //
  // What a switch costs: it is a reconnect. With `recover` (the default) it resumes from the
  // positions seen over long-polling, so pushes that reached the old session while switching are
  // replayed; the room/mid presence moves to a new connection (the old long-poll session ends at
  // its heartbeat timeout, as after any reconnect). Queued requests go out over WebSocket after auth.

  _wantsUpgrade() {
    const up = this.options.upgrade;
    const list = this.options.transports;
    if (!up || this.transport === 'websocket' || !list.includes('websocket')) return false;
    if (list.indexOf('websocket') > list.indexOf(this.transport)) return false;
    return this._probes < up.maxAttempts && this._webSocketImpl() !== null;
  }

  _scheduleProbe() {
    clearTimeout(this._timers.probe);
    this._timers.probe = null;
    if (!this._authed || !this._wantsUpgrade()) return;
    const up = this.options.upgrade;
    const base = Math.min(up.maxMs, up.initialMs * Math.pow(up.factor, this._probes));
    const delay = Math.round(base * (1 - up.jitter * Math.random()));
    const gen = this._gen;
    this._timers.probe = setTimeout(() => {
      this._timers.probe = null;
      if (gen === this._gen) this._runProbe(gen);
    }, delay);
  }

  async _runProbe(gen) {
    this._probes += 1;
    let pipe;
    try {
      pipe = new WebSocketPipe(this._url(), this._webSocketImpl(), this.options.maxBufferedBytes);
    } catch {
      return; // no url or no WebSocket: nothing to probe
    }
    this._probe = pipe;
    try {
      await pipe.open(this.options.openTimeoutMs);
    } catch (e) {
      if (this._probe === pipe) this._probe = null;
      if (gen !== this._gen) return;
      // A socket that hangs until the timeout: keep long-polling first on reconnects as well.
      if (e && e.slow) this._lastGood = this.transport;
      this._scheduleProbe();
      return;
    }
    if (gen !== this._gen || this._probe !== pipe) {
      pipe.close();
      return;
    }
    // WebSocket works: it is the transport to try first from now on.
    this._lastGood = null;
    this._switching = { gen, pipe };
    this._timers.switch = setTimeout(() => this._switch(gen), SWITCH_WAIT_MS);
    this._maybeSwitch();
  }

  _maybeSwitch() {
    if (this._switching && this._pending.size === 0) this._switch(this._switching.gen);
  }

  _switch(gen) {
    const s = this._switching;
    if (!s || s.gen !== gen || gen !== this._gen) return;
    this._switching = null;
    this._probe = null; // handed to the new attempt: _teardown must not close it
    const from = this.transport;
    this._teardown(new Error('disconnected: switching to websocket'));
    this._setStatus('reconnecting', { reason: 'upgrade', from, to: 'websocket', delayMs: 0, attempt: 0 });
    this._attempt({ upgradeFrom: from, pipe: s.pipe });
  }

  _beat() {
    // An earlier heartbeat still unanswered after heartbeatTimeoutMs (by default a full
    // interval, 10 s at least) means the connection is dead even if the socket has not noticed.
    const limit = this.options.heartbeatTimeoutMs || Math.max(this._every, 10000);
    if (this._hbSentAt !== null && Date.now() - this._hbSentAt > limit) {
      this._dropped({ reason: 'heartbeat_timeout' });
      return;
    }
    this.heartbeat().catch(() => {});
  }

  // ---- receiving -------------------------------------------------------------------------

  _receive(packets) {
    const gen = this._gen;
    for (const p of packets) {
      if (this.status === 'closed') return;
      switch (p.op) {
        case Op.AUTH_REPLY:
          if (!this._authed) this._authenticated(0);
          break;
        case Op.HEARTBEAT_REPLY: {
          this._hbSentAt = null;
          const n = onlineCount(p.body);
          if (n !== null) {
            this.online = n;
            this._call('onOnline', n);
          }
          break;
        }
        case Op.DISCONNECT_REPLY:
          this._told(p.body);
          return; // nothing after op 6 counts
        case Op.RECOVER_REPLY:
          if (this._asked) {
            try {
              this._recovered(JSON.parse(text.decode(p.body)));
            } catch (e) {
              this._dropped({ reason: 'protocol', message: `recover reply: ${e.message}` });
              return;
            }
            if (gen !== this._gen) return; // onRecover closed or reconnected the client
          }
          break;
        default:
          break;
      }
      const waiting = p.seq !== 0 && this._pending.get(p.seq);
      if (waiting && waiting.replyOp === p.op) {
        this._pending.delete(p.seq);
        clearTimeout(waiting.timer);
        waiting.resolve(p);
        if (this._switching) {
          this._maybeSwitch();
          if (gen !== this._gen) return; // switched: what is left belongs to the old session
        }
      } else if (!CONTROL_OPS.has(p.op)) {
        const position = positionOf(p);
        // With recovery on, a push already delivered (replayed after a reconnect, or sent twice)
        // is dropped here; it is counted in `duplicates`.
        if (this.options.recover && !this.positions.accept(position)) continue;
        this._call('onMessage', {
          op: p.op,
          ver: p.ver,
          seq: p.seq,
          position,
          body: p.body,
          get text() {
            return text.decode(this.body);
          },
        });
      }
    }
  }

  // The server said why it is closing (op 6). Reconnect after its hint, or not at all when it
  // gave none (auth_failed, kicked, protocol: the same token would fail again).
  _told(body) {
    let info;
    try {
      info = JSON.parse(text.decode(body));
      if (!info || typeof info !== 'object') throw new Error('not an object');
    } catch {
      info = { reason: 'unknown' };
    }
    this._emitDisconnect(info);
    const after = info.reconnect_after_ms;
    if (typeof after === 'number' && Number.isFinite(after) && after >= 0) {
      this._retry({ reason: info.reason, message: info.message }, after);
    } else {
      this._finish(info);
    }
  }

  // The connection ended without op 6: reconnect with backoff.
  _dropped(info) {
    if (this.status === 'closed') return;
    this._retry(info);
  }

  _retry(info, delayMs) {
    this._teardown(new Error(`disconnected: ${info.reason}`));
    const r = this.options.reconnect;
    if (this._attempts >= r.maxAttempts) {
      this._finish({ ...info, reason: info.reason, gaveUp: true });
      return;
    }
    let delay = delayMs;
    if (delay === undefined) {
      const base = Math.min(r.maxMs, r.initialMs * Math.pow(r.factor, this._attempts));
      delay = Math.round(base * (1 - r.jitter * Math.random()));
    }
    this._attempts += 1;
    this._setStatus('reconnecting', { ...info, delayMs: delay, attempt: this._attempts });
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null;
      this._attempt();
    }, delay);
  }

  _finish(info) {
    this._gen += 1;
    this._teardown(new Error(`closed: ${info.reason}`));
    this._failQueue(new Error(`closed: ${info.reason}`));
    this.transport = null;
    this._setStatus('closed', info);
    this._settle(false, info);
  }

  _teardown(why) {
    this._gen += 1;
    clearTimeout(this._timers.reconnect);
    clearTimeout(this._timers.auth);
    clearInterval(this._timers.heartbeat);
    clearTimeout(this._timers.probe);
    clearTimeout(this._timers.switch);
    this._timers = idleTimers();
    this._authed = false;
    this._hbSentAt = null;
    this._switching = null;
    if (this._probe) {
      this._probe.close();
      this._probe = null;
    }
    if (this._pipe) {
      this._pipe.close();
      this._pipe = null;
    }
    for (const w of this._pending.values()) {
      clearTimeout(w.timer);
      w.reject(why);
    }
    this._pending.clear();
  }

  // ---- requests --------------------------------------------------------------------------

  _nextSeq() {
    this._seq = this._seq >= 0x7fffffff ? 1 : this._seq + 1;
    return this._seq;
  }

  _request(op, replyOp, body) {
    return new Promise((resolve, reject) => {
      if (this.status === 'closed' || this.status === 'idle') {
        reject(new Error(`not connected (${this.status})`));
        return;
      }
      if (this._pending.size >= this.options.maxPending) {
        reject(new Error('too many requests awaiting a reply'));
        return;
      }
      const seq = this._nextSeq();
      const packet = encodePacket({ op, seq, body });
      const waiting = { replyOp, resolve, reject, timer: null, packet, sent: false };
      waiting.timer = setTimeout(() => {
        this._pending.delete(seq);
        const i = this._queue.indexOf(waiting);
        if (i >= 0) this._queue.splice(i, 1);
        reject(new Error(`no reply to op ${op} within ${this.options.requestTimeoutMs} ms`));
      }, this.options.requestTimeoutMs);
      // While switching transports new requests wait in the queue, like while connecting.
      if (this._authed && this._pipe && !this._switching) {
        try {
          this._pipe.send(packet);
        } catch (e) {
          clearTimeout(waiting.timer);
          reject(e);
          return;
        }
        this._pending.set(seq, waiting);
      } else if (this._queue.length >= this.options.maxQueued) {
        clearTimeout(waiting.timer);
        reject(new Error('send queue is full'));
      } else {
        waiting.seq = seq;
        this._queue.push(waiting);
      }
    });
  }

  _flushQueue() {
    const queued = this._queue;
    this._queue = [];
    for (const w of queued) {
      try {
        this._pipe.send(w.packet);
        this._pending.set(w.seq, w);
      } catch (e) {
        clearTimeout(w.timer);
        w.reject(e);
      }
    }
  }

  _failQueue(why) {
    for (const w of this._queue) {
      clearTimeout(w.timer);
      w.reject(why);
    }
    this._queue = [];
  }

  // ---- events ----------------------------------------------------------------------------

  _setStatus(status, detail) {
    this.status = status;
    this._call('onStatus', status, detail);
  }

  _emitDisconnect(info) {
    this._call('onDisconnect', info);
  }

  _settle(ok, info) {
    const waiters = this._waiters;
    this._waiters = [];
    for (const w of waiters) {
      if (ok) w.resolve(this);
      else w.reject(Object.assign(new Error(`closed: ${info.reason}`), { info }));
    }
  }

  _call(name, ...args) {
    const fn = this[name];
    if (typeof fn !== 'function') return;
    try {
      fn.apply(this, args);
    } catch (e) {
      // A throwing callback must not break the connection.
      console.error(`goim: ${name} threw`, e);
    }
  }
}

// ---- transports -------------------------------------------------------------------------
// A pipe carries packets for one connection attempt and reports its end once, via onClose.

class WebSocketPipe {
  constructor(url, Impl, maxBufferedBytes) {
    this.url = url;
    this.Impl = Impl;
    this.maxBufferedBytes = maxBufferedBytes;
    this.ws = null;
    this.closed = false;
    this.onPackets = () => {};
    this.onClose = () => {};
  }

  // Resolves when the socket opens; rejects when it fails first (the caller falls back).
  open(timeoutMs) {
    return new Promise((resolve, reject) => {
      let opened = false;
      let ws;
      try {
        ws = new this.Impl(this.url);
      } catch (e) {
        reject(e);
        return;
      }
      this.ws = ws;
      ws.binaryType = 'arraybuffer';
      const timer = setTimeout(() => {
        this.close();
        // slow: a socket that hangs rather than fails (see GoimClient._authenticated)
        reject(Object.assign(new Error(`websocket did not open within ${timeoutMs} ms`), { slow: true }));
      }, timeoutMs);
      ws.onopen = () => {
        opened = true;
        clearTimeout(timer);
        resolve();
      };
      ws.onerror = () => {
        if (!opened) {
          clearTimeout(timer);
          this.close();
          reject(new Error('websocket failed to open'));
        }
      };
      ws.onclose = (ev) => {
        clearTimeout(timer);
        if (!opened) {
          reject(new Error(`websocket closed before opening (code ${ev && ev.code})`));
        } else if (!this.closed) {
          this.closed = true;
          this.onClose({ reason: 'closed', code: ev && ev.code });
        }
      };
      ws.onmessage = (ev) => this._message(ev.data);
    });
  }

  _message(data) {
    if (this.closed) return;
    if (typeof data === 'string') data = utf8.encode(data);
    let packets;
    try {
      packets = decodePackets(data);
    } catch (e) {
      this._fail({ reason: 'protocol', message: e.message });
      return;
    }
    this.onPackets(packets);
  }

  _fail(info) {
    if (this.closed) return;
    this.close();
    this.onClose(info);
  }

  send(bytes) {
    if (this.closed || !this.ws) throw new Error('websocket is closed');
    if (this.ws.bufferedAmount > this.maxBufferedBytes) throw new Error('websocket send buffer is full');
    this.ws.send(bytes); // one packet per message: comet reads exactly one per message
  }

  close() {
    this.closed = true;
    const ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    try {
      ws.close(1000);
    } catch {
      // already closed
    }
  }
}

class LongPollPipe {
  constructor(base, fetchImpl, options) {
    this.base = base;
    this.fetch = fetchImpl;
    this.pollTimeoutS = options.pollTimeoutS;
    this.maxQueued = options.maxQueued;
    this.sid = null;
    this.closed = false;
    this.abort = new AbortController();
    this.outbox = []; // packets waiting for the POST /poll/send in flight, at most maxQueued
    this.sending = false;
    this.polling = false;
    this.onPackets = () => {};
    this.onClose = () => {};
  }

  // POST /poll/auth (with `?recover=<JSON>` when `asked` is set). Resolves with the server's
  // heartbeat interval and its `recover` object; polling begins with start(). A 401 rejects as
  // final (the token is refused: no reconnect), a 429 or 503 with `reconnect_after_ms` as "told"
  // (reconnect after the hint), anything else as a failure to open.
  async open(token, timeoutMs, asked = null) {
    const timer = setTimeout(() => this.abort.abort(), timeoutMs);
    const query = asked ? `?recover=${encodeURIComponent(JSON.stringify(asked))}` : '';
    let res;
    let reply;
    try {
      res = await this.fetch(`${this.base}/auth${query}`, { method: 'POST', body: token, cache: 'no-store', signal: this.abort.signal });
      reply = await res.text();
    } catch (e) {
      throw new Error(`long-poll auth failed: ${e && e.message}`);
    } finally {
      clearTimeout(timer);
    }
    let json = null;
    try {
      json = JSON.parse(reply);
    } catch {
      // not JSON: reported below by status
    }
    if (res.status === 401 || res.status === 403) {
      const message = json && (json.message || json.error || json.reason);
      throw Object.assign(new Error('token rejected'), { final: true, info: { reason: 'auth_failed', message: message || `HTTP ${res.status}` } });
    }
    const after = json && json.reconnect_after_ms;
    if ((res.status === 429 || res.status === 503) && typeof after === 'number' && Number.isFinite(after) && after >= 0) {
      // Refused for now (too many clients connecting, or too many from this address): come
      // back when the server says, as after op 6.
      const info = { reason: json.error || `HTTP ${res.status}`, message: json.message };
      throw Object.assign(new Error(`long-poll auth: HTTP ${res.status}`), { told: true, info, afterMs: after });
    }
    if (!res.ok || !json || typeof json.sid !== 'string') {
      throw new Error(`long-poll auth: HTTP ${res.status}`);
    }
    this.sid = json.sid;
    return { heartbeatMs: Number(json.heartbeat_ms) || 0, recover: json.recover };
  }

  // Starts polling (once): after open() and what its reply said has been taken in.
  start() {
    if (this.polling || this.closed) return;
    this.polling = true;
    this._loop();
  }

  _query() {
    return `sid=${encodeURIComponent(this.sid)}`;
  }

  async _loop() {
    const timeout = this.pollTimeoutS ? `&timeout=${this.pollTimeoutS}` : '';
    // The poll cursor: the X-Goim-Poll-Seq of the last response read in full. Sent as `ack`, it
    // tells the server which response arrived; one that did not (a poll that failed on the
    // way) is sent again by the next poll.
    let ack = null;
    let failures = 0;
    while (!this.closed) {
      let res;
      let body;
      try {
        const cursor = ack === null ? '' : `&ack=${ack}`;
        res = await this.fetch(`${this.base}?${this._query()}${timeout}${cursor}`, { cache: 'no-store', signal: this.abort.signal });
        body = res.status === 200 ? await res.arrayBuffer() : null;
      } catch (e) {
        if (this.closed) return;
        // The session outlives a failed poll for its heartbeat timeout: retry a few times.
        if (++failures > 3) return this._fail({ reason: 'network', message: e && e.message });
        await sleep(500 * 2 ** failures);
        continue;
      }
      if (this.closed) return;
      if (res.status === 204) {
        failures = 0;
        continue;
      }
      if (res.status === 404) return this._fail({ reason: 'session_expired' });
      if (res.status !== 200) {
        if (res.status >= 500 && ++failures <= 3) {
          await sleep(500 * 2 ** failures);
          continue;
        }
        return this._fail({ reason: 'http', message: `HTTP ${res.status}` });
      }
      failures = 0;
      const seq = res.headers && res.headers.get('X-Goim-Poll-Seq');
      if (seq && /^\d+$/.test(seq)) ack = seq;
      if (!this._deliver(body)) return;
    }
  }

  _deliver(bytes) {
    let packets;
    try {
      packets = decodePackets(bytes);
    } catch (e) {
      this._fail({ reason: 'protocol', message: e.message });
      return false;
    }
    if (packets.length) this.onPackets(packets);
    return !this.closed;
  }

  send(bytes) {
    if (this.closed) throw new Error('long-poll session is closed');
    if (this.outbox.length >= this.maxQueued) throw new Error('long-poll send queue is full');
    this.outbox.push(bytes);
    if (!this.sending) this._drain();
  }

  // One POST at a time, carrying everything queued, so replies come back in order.
  async _drain() {
    this.sending = true;
    while (this.outbox.length && !this.closed) {
      const batch = this.outbox;
      this.outbox = [];
      const body = new Uint8Array(batch.reduce((n, b) => n + b.length, 0));
      let off = 0;
      for (const b of batch) {
        body.set(b, off);
        off += b.length;
      }
      let res;
      let reply;
      try {
        res = await this.fetch(`${this.base}/send?${this._query()}`, { method: 'POST', body, cache: 'no-store', signal: this.abort.signal });
        reply = await res.arrayBuffer();
      } catch (e) {
        if (!this.closed) this._fail({ reason: 'network', message: e && e.message });
        break;
      }
      if (this.closed) break;
      if (res.status === 404) {
        this._fail({ reason: 'session_expired' });
        break;
      }
      if (res.status !== 200) {
        this._fail({ reason: 'http', message: `HTTP ${res.status}` });
        break;
      }
      if (!this._deliver(reply)) break;
    }
    this.sending = false;
  }

  _fail(info) {
    if (this.closed) return;
    this.close();
    this.onClose(info);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
  }
}

function idleTimers() {
  return { reconnect: null, heartbeat: null, auth: null, probe: null, switch: null };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
