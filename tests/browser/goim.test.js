// web/goim.js in Node: packet encoding against hand-written bytes, and the client's connect,
// fallback and reconnect behaviour against fake WebSocket and fetch implementations.

import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';

import { Op, ProtocolError, decodePackets, encodePacket, encodePackets, jsonToken, onlineCount } from '../../web/goim.js';
import { ascii, bytes, closeClients, comet, fakePollServer, fakeWebSocket, recorder, sleep, until } from './fakes.js';

afterEach(closeClients);

// ---- packets -------------------------------------------------------------------------------

test('an auth packet encodes to the goim header followed by the token', () => {
  const got = encodePacket({ op: Op.AUTH, seq: 1, ver: 1, body: '{"mid":1}' });
  const want = bytes([0, 0, 0, 25], [0, 16], [0, 1], [0, 0, 0, 7], [0, 0, 0, 1], ascii('{"mid":1}'));
  assert.deepEqual(got, want);
});

test('a heartbeat is a bare 16-byte header and negative fields stay big-endian two\'s complement', () => {
  assert.deepEqual(encodePacket({ op: Op.HEARTBEAT, seq: 2 }), bytes([0, 0, 0, 16], [0, 16], [0, 1], [0, 0, 0, 2], [0, 0, 0, 2]));
  assert.deepEqual(encodePacket({ op: 1000, seq: -1, ver: -2 }).subarray(6), bytes([0xff, 0xfe], [0, 0, 0x03, 0xe8], [0xff, 0xff, 0xff, 0xff]));
});

test('a WebSocket push (op 9) unwraps into its inner packets', () => {
  const inner1 = bytes([0, 0, 0, 18], [0, 16], [0, 1], [0, 0, 0x03, 0xe8], [0, 0, 0, 0], ascii('hi'));
  const inner2 = bytes([0, 0, 0, 19], [0, 16], [0, 1], [0, 0, 0x03, 0xe9], [0, 0, 0, 0], ascii('yo!'));
  const outer = bytes([0, 0, 0, 16 + 37], [0, 16], [0, 1], [0, 0, 0, 9], [0, 0, 0, 0], [...inner1], [...inner2]);
  const got = decodePackets(outer).map((p) => [p.op, p.ver, p.seq, new TextDecoder().decode(p.body)]);
  assert.deepEqual(got, [[1000, 1, 0, 'hi'], [1001, 1, 0, 'yo!']]);
});

test('a long-poll response decodes packets laid back to back, as TCP carries them', () => {
  const wire = bytes(
    [0, 0, 0, 20], [0, 16], [0, 1], [0, 0, 0, 3], [0, 0, 0, 5], [0, 0, 0, 42],
    [0, 0, 0, 19], [0, 16], [0, 1], [0, 0, 0x03, 0xe8], [0, 0, 0, 0], ascii('abc'),
  );
  const [hb, push] = decodePackets(wire);
  assert.deepEqual([hb.op, hb.seq, onlineCount(hb.body)], [3, 5, 42]);
  assert.deepEqual([push.op, new TextDecoder().decode(push.body)], [1000, 'abc']);
  assert.deepEqual(decodePackets(encodePackets([{ op: 4, seq: 9, body: 'x' }, { op: 2, seq: 10 }])).map((p) => [p.op, p.seq]), [[4, 9], [2, 10]]);
});

test('a body may follow a header longer than 16 bytes, as goim\'s client allows', () => {
  const wire = bytes([0, 0, 0, 22], [0, 20], [0, 1], [0, 0, 0x03, 0xe8], [0, 0, 0, 0], [9, 9, 9, 9], ascii('ok'));
  assert.equal(new TextDecoder().decode(decodePackets(wire)[0].body), 'ok');
});

test('malformed input is a ProtocolError, never a partial result', () => {
  const cases = {
    'short header': bytes([0, 0, 0, 16], [0, 16], [0, 1]),
    'truncated body': bytes([0, 0, 0, 20], [0, 16], [0, 1], [0, 0, 0, 3], [0, 0, 0, 0], [0, 0]),
    'header length 12': bytes([0, 0, 0, 16], [0, 12], [0, 1], [0, 0, 0, 3], [0, 0, 0, 0]),
    'pack length below the header': bytes([0, 0, 0, 8], [0, 16], [0, 1], [0, 0, 0, 3], [0, 0, 0, 0]),
    'negative pack length': bytes([0xff, 0xff, 0xff, 0xf0], [0, 16], [0, 1], [0, 0, 0, 3], [0, 0, 0, 0]),
    'trailing bytes': bytes([0, 0, 0, 16], [0, 16], [0, 1], [0, 0, 0, 3], [0, 0, 0, 0], [1]),
    'truncated inner packet of op 9': bytes([0, 0, 0, 20], [0, 16], [0, 1], [0, 0, 0, 9], [0, 0, 0, 0], [0, 0, 0, 16]),
  };
  for (const [name, wire] of Object.entries(cases)) {
    assert.throws(() => decodePackets(wire), ProtocolError, name);
  }
  assert.deepEqual(decodePackets(new Uint8Array(0)), []);
});

test('the default token is goim\'s JSON token', () => {
  assert.equal(jsonToken({ mid: 123, room: 'live://1000', accepts: [1000, 1001] }), '{"mid":123,"room_id":"live://1000","platform":"web","accepts":[1000,1001]}');
  assert.equal(jsonToken({ mid: 1, key: 'k1', room: '', accepts: [] }), '{"mid":1,"key":"k1","room_id":"","platform":"web","accepts":[]}');
  assert.equal(onlineCount(new Uint8Array(2)), null);
});

// ---- fakes ---------------------------------------------------------------------------------

// ---- the client over WebSocket -------------------------------------------------------------

test('the client authenticates first, then heartbeats, reports the online count and delivers pushes', async () => {
  const WS = fakeWebSocket((s) => {
    comet(s, 3);
    setTimeout(() => s.open(), 1);
  });
  const { client, events, statuses } = recorder({ WebSocket: WS });
  const sent = [];
  const ready = client.connect();
  await until('a socket', () => WS.sockets.length === 1);
  const s = WS.sockets[0];
  const send = s.send;
  s.send = (b) => {
    sent.push(decodePackets(b)[0]);
    send(b);
  };
  await ready;
  assert.equal(s.url, 'ws://comet.test/sub');
  await until('the online count', () => events.online.length > 0);
  assert.deepEqual(events.online, [3]);
  assert.equal(client.online, 3);
  assert.deepEqual(statuses(), ['connecting', 'connected']);
  assert.equal(events.status[1][1].transport, 'websocket');

  s.deliver({ op: Op.RAW, body: encodePackets([{ op: 1000, body: 'one' }, { op: 1000, body: 'two' }]) });
  s.deliver({ op: 1001, body: 'three' });
  assert.deepEqual(events.messages, [[1000, 'one'], [1000, 'two'], [1001, 'three']]);

  assert.equal(await client.changeRoom('live://10'), 'live://10');
  assert.equal(client.room, 'live://10');
  client.close();
  assert.equal(client.status, 'closed');
  assert.ok(s.closed);
});

test('the auth packet is op 7 with seq 1 and the JSON token of the current room, right after op 18', async () => {
  const WS = fakeWebSocket();
  const { client } = recorder({ WebSocket: WS });
  client.connect();
  await until('auth', () => WS.sockets[0]?.sent.length === 2);
  const [recover, auth] = WS.sockets[0].sent;
  assert.deepEqual([recover.op, recover.seq, recover.ver], [18, 0, 1]);
  assert.deepEqual([auth.op, auth.seq, auth.ver], [7, 1, 1]);
  assert.equal(new TextDecoder().decode(auth.body), '{"mid":5,"room_id":"live://9","platform":"web","accepts":[1000]}');
  client.close();
});

test('with recover: false the first message is byte for byte goim\'s auth packet, and nothing precedes it', async () => {
  const raw = [];
  const WS = fakeWebSocket((s) => {
    const send = s.send.bind(s);
    s.send = (b) => {
      raw.push(Uint8Array.from(b));
      send(b);
    };
    setTimeout(() => s.open(), 1);
  });
  const { client } = recorder({ WebSocket: WS, recover: false });
  client.connect();
  await until('auth', () => raw.length === 1);
  await sleep(20);
  const token = '{"mid":5,"room_id":"live://9","platform":"web","accepts":[1000]}';
  assert.deepEqual(raw, [bytes([0, 0, 0, 16 + token.length], [0, 16], [0, 1], [0, 0, 0, 7], [0, 0, 0, 1], ascii(token))]);
  client.close();
});

test('an op-6 hint sets the reconnect delay, and the new connection joins the room the client moved to', async () => {
  const WS = fakeWebSocket((s) => {
    comet(s);
    setTimeout(() => s.open(), 1);
  });
  const { client, events } = recorder({ WebSocket: WS });
  await client.connect();
  await client.changeRoom('live://moved');
  const t0 = Date.now();
  WS.sockets[0].deliver({ op: Op.DISCONNECT_REPLY, body: '{"reason":"drain","reconnect_after_ms":120}' });
  assert.deepEqual(events.disconnects, [{ reason: 'drain', reconnect_after_ms: 120 }]);
  const [status, detail] = events.status.at(-1);
  assert.equal(status, 'reconnecting');
  assert.deepEqual([detail.reason, detail.delayMs], ['drain', 120]);
  assert.ok(WS.sockets[0].closed);
  await until('a second socket', () => WS.sockets.length === 2, 3000);
  assert.ok(Date.now() - t0 >= 110, `reconnected after ${Date.now() - t0} ms`);
  await until('connected again', () => client.status === 'connected');
  assert.equal(WS.sockets[0].token.room_id, 'live://9');
  assert.equal(WS.sockets[1].token.room_id, 'live://moved');
  client.close();
});

test('op 6 without a hint (auth_failed, kicked) ends the client without reconnecting', async () => {
  for (const body of ['{"reason":"auth_failed","message":"bad token"}', '{"reason":"kicked"}']) {
    const WS = fakeWebSocket();
    const { client, events, statuses } = recorder({ WebSocket: WS });
    const ready = client.connect();
    await until('auth', () => WS.sockets[0]?.sent.length === 2);
    WS.sockets[0].deliver({ op: Op.DISCONNECT_REPLY, body });
    await assert.rejects(ready, /closed/);
    assert.deepEqual(statuses(), ['connecting', 'closed']);
    assert.equal(events.status.at(-1)[1].reason, JSON.parse(body).reason);
    await sleep(100);
    assert.equal(WS.sockets.length, 1, body);
  }
});

test('a dropped connection reconnects with growing, jittered backoff, reset by a successful auth', async () => {
  let accept = false;
  const WS = fakeWebSocket((s) => setTimeout(() => (accept ? (comet(s), s.open()) : s.serverClose()), 1));
  // serverClose before open = the socket never opened; with no other transport that is a retry.
  const { client, events } = recorder({ WebSocket: WS, transports: ['websocket'], reconnect: { initialMs: 20, maxMs: 1000, factor: 2, jitter: 0.5 } });
  client.connect();
  await until('three retries', () => events.status.filter(([s]) => s === 'reconnecting').length >= 3, 3000);
  const delays = events.status.filter(([s]) => s === 'reconnecting').map(([, d]) => d.delayMs);
  assert.ok(delays[0] >= 10 && delays[0] <= 20, `first delay ${delays[0]}`);
  assert.ok(delays[1] >= 20 && delays[1] <= 40, `second delay ${delays[1]}`);
  assert.ok(delays[2] >= 40 && delays[2] <= 80, `third delay ${delays[2]}`);
  accept = true;
  await until('connected', () => client.status === 'connected', 3000);
  const before = events.status.length;
  WS.sockets.at(-1).serverClose();
  const [status, detail] = events.status[before];
  assert.equal(status, 'reconnecting');
  assert.ok(detail.delayMs <= 20, `after a good connection the backoff starts again: ${detail.delayMs}`);
  client.close();
});

test('a heartbeat that goes unanswered for an interval drops the connection', async () => {
  const WS = fakeWebSocket();
  const { client, events } = recorder({ WebSocket: WS, heartbeatMs: 20, heartbeatTimeoutMs: 50 });
  client.connect();
  await until('auth', () => WS.sockets[0]?.sent.length === 2);
  WS.sockets[0].deliver({ op: Op.AUTH_REPLY, seq: 1 });
  const t0 = Date.now();
  // Heartbeats go out every 20 ms but nothing answers them.
  await until('reconnecting', () => events.status.some(([s, d]) => s === 'reconnecting' && d.reason === 'heartbeat_timeout'), 2000);
  assert.ok(Date.now() - t0 >= 45, `dropped after ${Date.now() - t0} ms`);
  assert.ok(WS.sockets[0].sent.some((p) => p.op === Op.HEARTBEAT));
  client.close();
});

test('requests made while connecting wait in a bounded queue and go out after auth', async () => {
  const WS = fakeWebSocket((s) => comet(s));
  const { client } = recorder({ WebSocket: WS, maxQueued: 2 });
  client.connect();
  const a = client.changeRoom('live://a');
  const b = client.changeRoom('live://b');
  await assert.rejects(client.changeRoom('live://c'), /queue is full/);
  await until('a socket', () => WS.sockets.length === 1);
  WS.sockets[0].open();
  assert.deepEqual(await Promise.all([a, b]), ['live://a', 'live://b']);
  client.close();
  await assert.rejects(client.heartbeat(), /not connected/);
});

// ---- fallback to long-polling ---------------------------------------------------------------

test('without WebSocket the client long-polls: auth, heartbeat, pushes in order', async () => {
  const srv = fakePollServer();
  const { client, events } = recorder({ WebSocket: null, fetch: srv.fetch });
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = undefined;
  try {
    await client.connect();
  } finally {
    globalThis.WebSocket = saved;
  }
  assert.equal(client.transport, 'longpoll');
  assert.deepEqual(JSON.parse(srv.tokens[0]), { mid: 5, room_id: 'live://9', platform: 'web', accepts: [1000] });
  const connecting = events.status.filter(([s]) => s === 'connecting').map(([, d]) => [d.transport, d.fallbackFrom]);
  assert.deepEqual(connecting, [['websocket', null], ['longpoll', 'websocket']]);
  await until('the online count', () => events.online.length === 1);
  assert.deepEqual(events.online, [2]);
  assert.equal(events.status.find(([s]) => s === 'connected')[1].heartbeatMs, 25000, 'the server\'s heartbeat_ms caps the interval');
  srv.push({ op: 1000, body: 'first' });
  srv.push({ op: 1000, body: 'second' });
  srv.push({ op: Op.RAW, body: encodePackets([{ op: 1000, body: 'third' }]) });
  await until('three messages', () => events.messages.length === 3);
  assert.deepEqual(events.messages.map(([, t]) => t), ['first', 'second', 'third']);
  assert.equal(await client.changeRoom('live://x'), 'live://x');
  assert.ok(srv.calls.includes('GET /poll?sid=s1'), srv.calls.join('\n'));
  client.close();
});

test('a WebSocket that errors before opening falls back to long-polling', async () => {
  const WS = fakeWebSocket((s) => setTimeout(() => s.fail(), 1));
  const srv = fakePollServer();
  const { client } = recorder({ WebSocket: WS, fetch: srv.fetch });
  await client.connect();
  assert.equal(client.transport, 'longpoll');
  assert.equal(WS.sockets.length, 1);
  client.close();
});

test('a long-poll token rejected with 401 closes the client without retrying', async () => {
  const srv = fakePollServer({ authStatus: 401 });
  const { client, events } = recorder({ transports: ['longpoll'], fetch: srv.fetch });
  await assert.rejects(client.connect(), /closed/);
  assert.deepEqual(events.disconnects, [{ reason: 'auth_failed', message: 'token rejected' }]);
  await sleep(100);
  assert.equal(srv.calls.length, 1);
});

test('an op-6 packet in a long-poll response is followed like one over WebSocket', async () => {
  const srv = fakePollServer();
  const { client, events } = recorder({ transports: ['longpoll'], fetch: srv.fetch });
  await client.connect();
  srv.push({ op: Op.DISCONNECT_REPLY, body: '{"reason":"shutdown","reconnect_after_ms":30}' });
  await until('reconnecting', () => client.status === 'reconnecting');
  assert.equal(events.status.at(-1)[1].delayMs, 30);
  await until('connected again', () => srv.tokens.length === 2 && client.status === 'connected');
  client.close();
});

// A long-poll server double with the poll cursor: each 200 carries X-Goim-Poll-Seq and is held
// until a poll acks its seq; `breakNext` makes that many responses fail while their body is read.
function cursorPollServer() {
  const srv = fakePollServer();
  const inner = srv.fetch;
  Object.assign(srv, { acks: [], seq: 0, held: null, breakNext: 0 });
  srv.fetch = async (url, init = {}) => {
    const u = new URL(url);
    if (u.pathname !== '/poll') return inner(url, init);
    srv.calls.push(`GET ${u.pathname}${u.search}`);
    const ack = u.searchParams.get('ack');
    srv.acks.push(ack);
    if (srv.held && ack === String(srv.held.seq)) srv.held = null;
    if (!srv.held) {
      if (!srv.pending.length) {
        await new Promise((resolve) => {
          srv.waiters.push(resolve);
          init.signal?.addEventListener('abort', resolve);
        });
      }
      if (init.signal?.aborted) throw new DOMException('aborted', 'AbortError');
      if (!srv.pending.length) return new Response(null, { status: 204 });
      srv.held = { seq: ++srv.seq, body: encodePackets(srv.pending.splice(0)) };
    }
    const res = new Response(srv.held.body, { status: 200, headers: { 'X-Goim-Poll-Seq': String(srv.held.seq) } });
    if (srv.breakNext > 0) {
      srv.breakNext--;
      res.arrayBuffer = async () => {
        throw new TypeError('network error');
      };
    }
    return res;
  };
  return srv;
}

test('a long-poll response lost on the way is asked for again with ack and delivered once', async () => {
  const srv = cursorPollServer();
  const { client, events } = recorder({ transports: ['longpoll'], fetch: srv.fetch });
  await client.connect();
  srv.push({ op: 1000, body: 'a' });
  await until('the first message', () => events.messages.length === 1);
  srv.breakNext = 1;
  srv.push({ op: 1000, body: 'b' });
  await until('the resent message', () => events.messages.length === 2, 5000);
  await until('the poll after it', () => srv.acks.length >= 4);
  assert.deepEqual(events.messages.map(([, t]) => t), ['a', 'b']);
  assert.deepEqual(srv.acks.slice(0, 4), [null, '1', '1', '2'], 'the broken response is not acked');
  client.close();
});

// ---- returning to WebSocket after a fallback ----------------------------------------------

// A comet whose WebSocket endpoint can be turned away (`ws.refuse`: the socket errors before
// opening, as a connection refused does; `ws.hang`: it never opens; `ws.manual`: it answers but
// the test opens it) while long-polling answers.
function flakyComet({ refuse = true, hang = false } = {}) {
  const ws = { refuse, hang, manual: false };
  const WS = fakeWebSocket((s) => {
    s.at = Date.now();
    s.ops = [];
    const send = s.send.bind(s);
    s.send = (b) => {
      s.ops.push(decodePackets(b)[0].op);
      send(b);
    };
    if (ws.hang) return;
    if (ws.manual) {
      comet(s);
      return;
    }
    if (ws.refuse) {
      setTimeout(() => s.fail(), 1);
      return;
    }
    comet(s);
    setTimeout(() => s.open(), 1);
  });
  return { ws, WS, srv: fakePollServer() };
}

test('a client that fell back to long-polling returns to WebSocket once it works again', async () => {
  const { ws, WS, srv } = flakyComet();
  const { client, events } = recorder({ WebSocket: WS, fetch: srv.fetch, upgrade: { initialMs: 40, maxMs: 80, jitter: 0 } });
  await client.connect();
  assert.equal(client.transport, 'longpoll');
  // While WebSocket is refused the probes fail and the long-poll session carries on.
  await until('two failed probes', () => WS.sockets.length >= 3, 3000);
  assert.equal(client.transport, 'longpoll');
  assert.equal(client.status, 'connected');
  assert.equal(srv.tokens.length, 1, 'a failed probe leaves the long-poll session alone');
  srv.push({ op: 1000, body: 'over long-polling' });
  await until('the long-poll push', () => events.messages.length === 1);

  ws.refuse = false;
  const probes = WS.sockets.length;
  const t0 = Date.now();
  await until('connected over websocket', () => client.status === 'connected' && client.transport === 'websocket', 3000);
  assert.ok(Date.now() - t0 < 1000, `switched ${Date.now() - t0} ms after WebSocket worked again`);
  assert.equal(WS.sockets.length, probes + 1, 'the probe\'s socket is the one that authenticates');
  const s = WS.sockets.at(-1);
  assert.equal(s.token.room_id, 'live://9');
  const upgrade = events.status.findIndex(([st, d]) => st === 'reconnecting' && d.reason === 'upgrade');
  assert.ok(upgrade > 0, events.status.map(([st, d]) => `${st} ${JSON.stringify(d)}`).join('\n'));
  assert.deepEqual(events.status[upgrade][1], { reason: 'upgrade', from: 'longpoll', to: 'websocket', delayMs: 0, attempt: 0 });
  const [st, d] = events.status[upgrade + 1];
  assert.deepEqual([st, d.transport, d.upgradeFrom, d.fallbackFrom], ['connecting', 'websocket', 'longpoll', null]);

  // The long-poll session is left: no poll after the switch, and pushes arrive over WebSocket.
  await sleep(50);
  const polls = srv.calls.filter((c) => c.startsWith('GET /poll')).length;
  s.deliver({ op: 1000, body: 'over websocket' });
  assert.deepEqual(events.messages.map(([, t]) => t), ['over long-polling', 'over websocket']);
  assert.equal(await client.changeRoom('live://10'), 'live://10');
  await sleep(100);
  assert.equal(srv.calls.filter((c) => c.startsWith('GET /poll')).length, polls);
  assert.equal(srv.tokens.length, 1);

  // WebSocket is the preferred transport again: a dropped socket reconnects over WebSocket.
  s.serverClose();
  await until('reconnected', () => WS.sockets.length === probes + 2 && client.status === 'connected', 3000);
  assert.equal(client.transport, 'websocket');
  assert.equal(srv.tokens.length, 1);
  client.close();
});

test('a switch to WebSocket waits for the replies in flight; requests made meanwhile go out over it', async () => {
  const { ws, WS, srv } = flakyComet();
  const { client } = recorder({ WebSocket: WS, fetch: srv.fetch, upgrade: { initialMs: 30, jitter: 0 } });
  await client.connect();
  ws.refuse = false;
  ws.manual = true;
  await until('the probe', () => WS.sockets.length === 2, 3000);
  const probe = WS.sockets[1];
  srv.sendDelayMs = 100;
  const first = client.changeRoom('live://a'); // over long-polling, its reply 100 ms away
  await until('the long-poll send', () => srv.sent.includes(Op.CHANGE_ROOM));
  probe.open();
  await sleep(0); // the client sees the socket open (a promise continuation)
  const second = client.changeRoom('live://b'); // while switching: waits for WebSocket
  assert.equal(client.transport, 'longpoll', 'the switch waits for the reply in flight');
  assert.deepEqual(await Promise.all([first, second]), ['live://a', 'live://b']);
  await until('connected over websocket', () => client.transport === 'websocket' && client.status === 'connected');
  assert.deepEqual(srv.sent.filter((op) => op === Op.CHANGE_ROOM), [Op.CHANGE_ROOM], 'only the first went over long-polling');
  assert.deepEqual(probe.ops.slice(0, 3), [Op.RECOVER, Op.AUTH, Op.CHANGE_ROOM], 'the second went over the probe\'s socket, after auth');
  assert.equal(probe.token.room_id, 'live://b');
  assert.equal(WS.sockets.length, 2);
  client.close();
});

test('a WebSocket refused while the server restarts does not make long-polling the first choice', async () => {
  const { ws, WS, srv } = flakyComet();
  // No probes: only the reconnect order decides.
  const { client, events } = recorder({ WebSocket: WS, fetch: srv.fetch, upgrade: false });
  await client.connect();
  assert.equal(client.transport, 'longpoll');
  await sleep(100);
  assert.equal(WS.sockets.length, 1, 'upgrade: false does not probe');
  ws.refuse = false;
  srv.push({ op: Op.DISCONNECT_REPLY, body: '{"reason":"shutdown","reconnect_after_ms":20}' });
  await until('connected again', () => events.status.filter(([s]) => s === 'connected').length === 2, 3000);
  assert.equal(client.transport, 'websocket');
  assert.equal(srv.tokens.length, 1);
  client.close();
});

test('a blocked WebSocket keeps the client on long-polling, with probes backing off', async () => {
  const { WS, srv } = flakyComet();
  const { client, statuses } = recorder({ WebSocket: WS, fetch: srv.fetch, upgrade: { initialMs: 20, maxMs: 160, factor: 2, jitter: 0 } });
  await client.connect();
  const t0 = WS.sockets[0].at;
  await sleep(900);
  client.close();
  // Probe delays 20, 40, 80, 160, 160, …: six probes by about 620 ms (timers only run late).
  const probes = WS.sockets.slice(1).map((s) => s.at);
  assert.ok(probes.length >= 3 && probes.length <= 7, `${probes.length} probes in 900 ms`);
  const gaps = probes.map((at, i) => at - (i ? probes[i - 1] : t0));
  const want = [20, 40, 80, 160, 160, 160, 160];
  gaps.forEach((g, i) => assert.ok(g >= want[i] - 2, `probe ${i} after ${g} ms, wanted ${want[i]}: gaps ${gaps}`));
  assert.deepEqual(statuses(), ['connecting', 'connecting', 'connected', 'closed'], 'failed probes are not reconnects');
  assert.equal(srv.tokens.length, 1);
  assert.ok(WS.sockets.every((s) => !s.onopen || s.closed || s === WS.sockets[0]), 'no probe socket is left behind');
});

test('a WebSocket that hangs keeps long-polling first on reconnects, and probes stop at maxAttempts', async () => {
  const { WS, srv } = flakyComet({ hang: true });
  const { client, events } = recorder({ WebSocket: WS, fetch: srv.fetch, openTimeoutMs: 30, upgrade: { initialMs: 10, maxMs: 10, jitter: 0, maxAttempts: 2 } });
  await client.connect();
  assert.equal(client.transport, 'longpoll');
  await sleep(300);
  assert.equal(WS.sockets.length, 3, 'the first socket and two probes, each timed out');
  assert.ok(WS.sockets.every((s) => s.closed), 'timed-out sockets are closed');
  srv.push({ op: Op.DISCONNECT_REPLY, body: '{"reason":"shutdown","reconnect_after_ms":10}' });
  await until('connected again', () => events.status.filter(([s]) => s === 'connected').length === 2, 3000);
  const last = events.status.map(([s, d]) => [s, d.transport]).slice(-2);
  assert.deepEqual(last, [['connecting', 'longpoll'], ['connected', 'longpoll']], 'no 30 ms wait for a socket known to hang');
  await sleep(100);
  assert.equal(WS.sockets.length, 3, 'no probe beyond maxAttempts');
  client.close();
});
