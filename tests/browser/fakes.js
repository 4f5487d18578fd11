// The doubles the Node tests of web/goim.js share: a WebSocket whose server side the test plays,
// a comet answering auth and heartbeats over it, and a long-poll server.

import { GoimClient, Op, decodePackets, encodePackets } from '../../web/goim.js';

export const bytes = (...xs) => Uint8Array.from(xs.flat());
export const ascii = (s) => [...s].map((c) => c.charCodeAt(0));
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function until(what, check, ms = 2000) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

// A WebSocket double: `behave(socket)` runs on construction and decides how it opens.
export function fakeWebSocket(behave = (s) => setTimeout(() => s.open(), 1)) {
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.closed = false;
      this.bufferedAmount = 0;
      FakeSocket.sockets.push(this);
      behave(this);
    }
    open() {
      this.onopen?.({});
    }
    fail() {
      this.onerror?.({});
      this.onclose?.({ code: 1006 });
    }
    send(b) {
      this.sent.push(decodePackets(b)[0]);
    }
    close() {
      this.closed = true;
    }
    // The server side: a reply or a push.
    deliver(...packets) {
      this.onmessage?.({ data: encodePackets(packets).buffer });
    }
    serverClose() {
      this.onclose?.({ code: 1006 });
    }
  }
  FakeSocket.sockets = [];
  return FakeSocket;
}

// Answers auth (op 7 → 8) and heartbeats (op 2 → 3 with `online`) like a comet.
export function comet(socket, online = 1) {
  const reply = () => {
    for (const p of socket.sent.splice(0)) {
      if (p.op === Op.AUTH) {
        socket.token = JSON.parse(new TextDecoder().decode(p.body));
        socket.deliver({ op: Op.AUTH_REPLY, seq: p.seq });
      }
      if (p.op === Op.HEARTBEAT) socket.deliver({ op: Op.HEARTBEAT_REPLY, seq: p.seq, body: new Uint8Array([0, 0, 0, online]) });
      if (p.op === Op.CHANGE_ROOM) socket.deliver({ op: Op.CHANGE_ROOM_REPLY, seq: p.seq, body: p.body });
    }
  };
  const send = socket.send.bind(socket);
  socket.send = (b) => {
    send(b);
    setTimeout(reply, 0);
  };
}

// Every client recorder() makes; a test file closes them after each test (`afterEach(closeClients)`),
// so a failed assertion cannot leave timers that keep the test process alive.
const clients = [];
export function closeClients() {
  for (const c of clients.splice(0)) c.close();
}

export function recorder(extra = {}) {
  const events = { status: [], messages: [], online: [], disconnects: [], recoveries: [] };
  const client = new GoimClient({
    url: 'ws://comet.test/sub',
    pollUrl: 'http://comet.test/poll',
    mid: 5,
    room: 'live://9',
    accepts: [1000],
    reconnect: { initialMs: 20, maxMs: 200 },
    onStatus: (s, d) => events.status.push([s, d]),
    onMessage: (m) => events.messages.push([m.op, m.text]),
    onOnline: (n) => events.online.push(n),
    onDisconnect: (d) => events.disconnects.push(d),
    onRecover: (r) => events.recoveries.push(r),
    ...extra,
  });
  clients.push(client);
  return { client, events, statuses: () => events.status.map(([s]) => s) };
}

// A long-poll server double: /poll/auth gives a session, /poll hands out queued packets,
// /poll/send answers heartbeats.
// `sendDelayMs` holds each /poll/send reply that long; `sent` lists the ops it carried;
// `authReply(url)`, when set, returns more fields for the auth response's JSON.
export function fakePollServer({ authStatus = 200, online = 2, sendDelayMs = 0 } = {}) {
  const srv = { calls: [], pending: [], waiters: [], tokens: [], sent: [], sendDelayMs, authReply: null };
  srv.push = (packet) => {
    srv.pending.push(packet);
    srv.waiters.splice(0).forEach((w) => w());
  };
  srv.fetch = async (url, init = {}) => {
    const u = new URL(url);
    srv.calls.push(`${init.method || 'GET'} ${u.pathname}${u.search}`);
    if (u.pathname === '/poll/auth') {
      srv.tokens.push(new TextDecoder().decode(init.body));
      if (authStatus !== 200) return new Response('{"error":"token rejected"}', { status: authStatus });
      const extra = srv.authReply ? srv.authReply(u) : {};
      return new Response(JSON.stringify({ sid: 's1', heartbeat_ms: 25000, ...extra }), { status: 200 });
    }
    if (u.pathname === '/poll/send') {
      const packets = decodePackets(init.body);
      srv.sent.push(...packets.map((p) => p.op));
      if (srv.sendDelayMs) await sleep(srv.sendDelayMs);
      const replies = packets.map((p) =>
        p.op === Op.HEARTBEAT ? { op: 3, seq: p.seq, body: new Uint8Array([0, 0, 0, online]) } : { op: p.op + 1, seq: p.seq, body: p.body },
      );
      return new Response(encodePackets(replies), { status: 200 });
    }
    if (u.pathname === '/poll') {
      if (!srv.pending.length) {
        await new Promise((resolve) => {
          srv.waiters.push(resolve);
          init.signal?.addEventListener('abort', resolve);
        });
      }
      if (init.signal?.aborted) throw new DOMException('aborted', 'AbortError');
      if (!srv.pending.length) return new Response(null, { status: 204 });
      return new Response(encodePackets(srv.pending.splice(0)), { status: 200 });
    }
    return new Response('', { status: 404 });
  };
  return srv;
}
