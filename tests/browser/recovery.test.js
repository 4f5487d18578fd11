// Recovery in web/goim.js (docs/recovery.md), in Node: positions read from packet headers, the
// tracker's de-duplication, the op-18 request and the op-19 reply over WebSocket, and the same
// over long-polling, against a fake comet that keeps a history as the server does.

import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';

import { Op, PositionTracker, decodePackets, encodePackets, positionOf } from '../../web/goim.js';
import { ascii, bytes, closeClients, fakePollServer, fakeWebSocket, recorder, sleep, until } from './fakes.js';

afterEach(closeClients);

const decode = (b) => new TextDecoder().decode(b);

// ---- positions and the tracker ---------------------------------------------------------------

test('a header carries its position as ver = epoch·2 + stream and seq = the offset, read unsigned', () => {
  assert.deepEqual(positionOf({ ver: 10, seq: 7 }), { stream: 'room', epoch: 5, offset: 7 });
  assert.deepEqual(positionOf({ ver: 11, seq: 7 }), { stream: 'user', epoch: 5, offset: 7 });
  assert.deepEqual(positionOf({ ver: 32767, seq: -1 }), { stream: 'user', epoch: 16383, offset: 4294967295 });
  for (const ver of [1, 0, -1, -2]) assert.equal(positionOf({ ver, seq: 3 }), null, `ver ${ver}`);
  // And from the wire: a positioned push inside op 9, as a comet sends it.
  const wire = encodePackets([{ op: Op.RAW, body: encodePackets([{ op: 1000, ver: 2 * 9 + 1, seq: -2, body: 'x' }]) }]);
  assert.deepEqual(positionOf(decodePackets(wire)[0]), { stream: 'user', epoch: 9, offset: 4294967294 });
});

test('a push at or before the position seen in its epoch is a counted duplicate; another epoch starts over', () => {
  const t = new PositionTracker();
  const room = (epoch, offset) => ({ stream: 'room', epoch, offset });
  assert.equal(t.accept(room(5, 10)), true, 'the first push sets the position');
  assert.equal(t.accept(room(5, 10)), false, 'the same offset again');
  assert.equal(t.accept(room(5, 3)), false, 'an older offset');
  assert.equal(t.accept(room(5, 11)), true);
  assert.equal(t.accept(room(5, 14)), true, 'a gap is not a duplicate');
  assert.deepEqual(t.room, { epoch: 5, offset: 14 });
  assert.equal(t.duplicates, 2);
  assert.equal(t.accept(room(6, 1)), true, 'a new epoch is a new history');
  assert.deepEqual(t.room, { epoch: 6, offset: 1 });
  assert.equal(t.accept(room(5, 15)), true, 'and so is going back to the old one');
  assert.deepEqual(t.user, { epoch: 0, offset: 0 }, 'the user stream is apart');
  assert.equal(t.accept({ stream: 'user', epoch: 5, offset: 1 }), true);
  assert.equal(t.accept(null), true, 'goim pushes (no position) always pass');
  assert.equal(t.duplicates, 2);
  t.reset('room');
  assert.deepEqual(t.request(), { room: { epoch: 0, offset: 0 }, user: { epoch: 5, offset: 1 } });
});

test('offsets kept whole from a reply compare with the 32 bits of a push across the 2³² wrap', () => {
  const t = new PositionTracker();
  t.applyReply({ room: { epoch: 3, offset: 2 ** 32 - 2, recovered: 0, complete: true } }, null);
  assert.equal(t.accept({ stream: 'room', epoch: 3, offset: 2 ** 32 - 1 }), true);
  assert.equal(t.accept({ stream: 'room', epoch: 3, offset: 0 }), true, '2³² itself');
  assert.equal(t.accept({ stream: 'room', epoch: 3, offset: 2 ** 32 - 1 }), false, 'from before the wrap');
  assert.equal(t.accept({ stream: 'room', epoch: 3, offset: 1 }), true);
  assert.deepEqual(t.request().room, { epoch: 3, offset: 2 ** 32 + 1 });
});

test('a reply moves each stream to just before its replay; a new epoch replaces the old position', () => {
  const t = new PositionTracker();
  const asked = { room: { epoch: 5, offset: 10 }, user: { epoch: 9, offset: 4 } };
  t.room = { ...asked.room };
  t.user = { ...asked.user };
  const out = t.applyReply({
    room: { epoch: 5, offset: 15, recovered: 3, complete: false },
    user: { epoch: 10, offset: 7, recovered: 0, complete: false },
  }, asked);
  assert.deepEqual(out, {
    positions: true,
    room: { epoch: 5, offset: 15, recovered: 3, complete: false, from: { epoch: 5, offset: 10 } },
    user: { epoch: 10, offset: 7, recovered: 0, complete: false, from: { epoch: 9, offset: 4 } },
  });
  assert.deepEqual(t.request(), { room: { epoch: 5, offset: 12 }, user: { epoch: 10, offset: 7 } });
  // The same epoch, but the server's offset is behind the client's: its history was lost (an
  // epoch drawn again by chance), so its pushes from offset 1 on are new, not duplicates.
  t.applyReply({ room: { epoch: 5, offset: 0, recovered: 0, complete: false } }, { room: t.request().room });
  assert.equal(t.accept({ stream: 'room', epoch: 5, offset: 1 }), true);
  // Logic unreachable: the comet answers incomplete at the client's own position, with `error`.
  const at = t.request();
  const failed = t.applyReply({ room: { ...at.room, recovered: 0, complete: false }, error: 'unavailable' }, at);
  assert.equal(failed.error, 'unavailable');
  assert.deepEqual(t.request(), at, 'the position stays where it was');
  assert.deepEqual(t.applyReply({ positions: false }, asked), { positions: false });
  assert.throws(() => t.applyReply({ room: { epoch: 'x', offset: 1 } }, asked), /bad room position/);
  assert.throws(() => t.applyReply([], asked) && t.applyReply(null, asked), /not a JSON object/);
});

// ---- a comet with positions ------------------------------------------------------------------

// A comet as docs/recovery.md has it, over the fake WebSocket: each stream has an epoch and a
// history of at most `historySize` pushes; op 18 (before op 7) names the client's positions; after
// op 8 come op 19 and the replay (one op-9 message), then live pushes. `down` turns new sockets
// away (refused); `cut()` drops the live connection.
function resumingComet({ epoch = 5, historySize = 100, mid = 5 } = {}) {
  const srv = {
    down: false,
    live: null,
    asked: [],
    replies: [],
    streams: { room: { epoch, pushes: [] }, user: { epoch: epoch + 100, pushes: [] } },
  };
  const packetAt = (name, offset) => {
    const st = srv.streams[name];
    return { op: 1000, ver: st.epoch * 2 + (name === 'user' ? 1 : 0), seq: offset | 0, body: st.pushes[offset - 1] };
  };
  // The reply for one stream and the packets it replays.
  const recover = (name, from) => {
    const st = srv.streams[name];
    const offset = st.pushes.length;
    if (!from || from.epoch === 0) return [{ epoch: st.epoch, offset, recovered: 0, complete: true }, []];
    if (from.epoch !== st.epoch) return [{ epoch: st.epoch, offset, recovered: 0, complete: false }, []];
    const first = Math.max(from.offset + 1, offset - historySize + 1, 1);
    const replay = [];
    for (let o = first; o <= offset; o++) replay.push(packetAt(name, o));
    return [{ epoch: st.epoch, offset, recovered: replay.length, complete: first === from.offset + 1 }, replay];
  };
  srv.WS = fakeWebSocket((s) => {
    s.ops = [];
    let asked = null;
    const send = s.send.bind(s);
    s.send = (b) => {
      send(b);
      const p = s.sent.at(-1);
      s.ops.push(p.op);
      if (p.op === Op.RECOVER) {
        asked = JSON.parse(decode(p.body));
        srv.asked.push(asked);
      }
      setTimeout(() => {
        if (s.closed) return;
        if (p.op === Op.AUTH) {
          s.deliver({ op: Op.AUTH_REPLY, seq: p.seq });
          if (asked) {
            const reply = {};
            const replay = [];
            for (const name of ['room', 'user']) {
              if (!(name in asked) || (name === 'user' && !mid)) continue;
              const [r, packets] = recover(name, asked[name]);
              reply[name] = r;
              replay.push(...packets);
            }
            srv.replies.push(reply);
            s.deliver({ op: Op.RECOVER_REPLY, body: JSON.stringify(reply) });
            if (replay.length) s.deliver({ op: Op.RAW, body: encodePackets(replay) });
          }
          srv.live = s;
        }
        if (p.op === Op.HEARTBEAT) s.deliver({ op: Op.HEARTBEAT_REPLY, seq: p.seq, body: new Uint8Array([0, 0, 0, 1]) });
        if (p.op === Op.CHANGE_ROOM) s.deliver({ op: Op.CHANGE_ROOM_REPLY, seq: p.seq, body: p.body });
      }, 0);
    };
    setTimeout(() => (srv.down ? s.fail() : s.open()), 1);
  });
  // A push to a stream: into its history, and to the live connection if there is one.
  srv.push = (name, textValue) => {
    const st = srv.streams[name];
    st.pushes.push(textValue);
    const packet = packetAt(name, st.pushes.length);
    if (srv.live && !srv.live.closed) srv.live.deliver({ op: Op.RAW, body: encodePackets([packet]) });
    return packet;
  };
  srv.cut = () => {
    const s = srv.live;
    srv.live = null;
    s.serverClose();
  };
  // The history is lost: a new epoch, offsets from 1 again.
  srv.newEpoch = (name) => {
    srv.streams[name] = { epoch: srv.streams[name].epoch + 1, pushes: [] };
  };
  return srv;
}

const texts = (events) => events.messages.map(([, t]) => t);

// ---- over WebSocket --------------------------------------------------------------------------

test('op 18 goes right before op 7: epoch 0 on the first connect, the positions seen on a reconnect', async () => {
  const srv = resumingComet();
  const { client, events } = recorder({ WebSocket: srv.WS });
  await client.connect();
  const first = srv.WS.sockets[0].sent[0];
  const body = '{"room":{"epoch":0,"offset":0},"user":{"epoch":0,"offset":0}}';
  assert.deepEqual(encodePackets([first]), bytes([0, 0, 0, 16 + body.length], [0, 16], [0, 1], [0, 0, 0, 18], [0, 0, 0, 0], ascii(body)));
  assert.deepEqual(srv.WS.sockets[0].ops.slice(0, 2), [Op.RECOVER, Op.AUTH]);
  await until('the recover reply', () => events.recoveries.length === 1);
  srv.push('room', 'r1');
  srv.push('room', 'r2');
  srv.push('user', 'u1');
  srv.cut();
  await until('reconnected', () => srv.WS.sockets.length === 2 && srv.live === srv.WS.sockets[1]);
  assert.deepEqual(srv.WS.sockets[1].ops.slice(0, 2), [Op.RECOVER, Op.AUTH]);
  assert.deepEqual(srv.asked, [
    { room: { epoch: 0, offset: 0 }, user: { epoch: 0, offset: 0 } },
    { room: { epoch: 5, offset: 2 }, user: { epoch: 105, offset: 1 } },
  ]);
  client.close();
});

test('after a reconnect the replay fills the gap, each push once and in order, and onRecover says how many', async () => {
  const srv = resumingComet();
  const { client, events } = recorder({ WebSocket: srv.WS, onMessage: (m) => events.messages.push([m.position, m.text]) });
  await client.connect();
  await until('the first reply', () => events.recoveries.length === 1);
  assert.deepEqual(events.recoveries[0].room, { epoch: 5, offset: 0, recovered: 0, complete: true, from: { epoch: 0, offset: 0 } });
  for (const n of [1, 2, 3]) srv.push('room', `m${n}`);
  srv.down = true;
  srv.cut();
  for (const n of [4, 5, 6]) srv.push('room', `m${n}`);
  srv.push('user', 'u1');
  srv.down = false;
  await until('the replay', () => events.messages.length === 7, 3000);
  assert.deepEqual(texts(events), ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'u1']);
  assert.deepEqual(events.messages[3][0], { stream: 'room', epoch: 5, offset: 4 }, 'onMessage sees the position');
  const r = events.recoveries.at(-1);
  assert.deepEqual([r.room.recovered, r.room.complete, r.room.from], [3, true, { epoch: 5, offset: 3 }]);
  assert.deepEqual([r.user.recovered, r.user.complete], [1, true]);
  assert.equal(r.transport, 'websocket');
  assert.equal(client.recovery, r);
  // The replayed pushes again (a server that sent them live as well): dropped and counted.
  const live = srv.live;
  live.deliver({ op: Op.RAW, body: encodePackets([{ op: 1000, ver: 10, seq: 5, body: 'm5' }, { op: 1000, ver: 10, seq: 6, body: 'm6' }]) });
  live.deliver({ op: 1000, ver: 2 * 105 + 1, seq: 1, body: 'u1' }); // a plain (not op-9) push is checked too
  srv.push('room', 'm7');
  assert.deepEqual(texts(events).slice(7), ['m7']);
  assert.equal(client.duplicates, 3);
  assert.ok(!events.messages.some(([, t]) => t.startsWith('{')), 'op 19 is not a message');
  client.close();
});

test('a gap older than the history, or a new epoch, is reported incomplete; the stream goes on in the new epoch', async () => {
  const srv = resumingComet({ historySize: 2 });
  const { client, events } = recorder({ WebSocket: srv.WS });
  await client.connect();
  srv.push('room', 'a1');
  srv.cut();
  for (const n of [2, 3, 4, 5]) srv.push('room', `a${n}`);
  await until('the partial replay', () => events.recoveries.length === 2);
  await until('two replayed', () => events.messages.length === 3);
  assert.deepEqual(texts(events), ['a1', 'a4', 'a5']);
  assert.deepEqual([events.recoveries[1].room.recovered, events.recoveries[1].room.complete], [2, false]);

  srv.cut();
  srv.newEpoch('room');
  await until('the third reply', () => events.recoveries.length === 3);
  assert.deepEqual(events.recoveries[2].room, { epoch: 6, offset: 0, recovered: 0, complete: false, from: { epoch: 5, offset: 5 } });
  srv.push('room', 'b1'); // offset 1, lower than 5: another history, not a duplicate
  srv.push('room', 'b2');
  assert.deepEqual(texts(events).slice(3), ['b1', 'b2']);
  assert.equal(client.duplicates, 0);
  assert.deepEqual(client.positions.request().room, { epoch: 6, offset: 2 });
  client.close();
});

test('a room change starts the room stream over: pushes of either room pass until the reply, and a reconnect asks afresh', async () => {
  const srv = resumingComet();
  const { client, events } = recorder({ WebSocket: srv.WS });
  await client.connect();
  for (const n of [1, 2, 3]) srv.push('room', `old${n}`);
  assert.deepEqual(client.positions.room, { epoch: 5, offset: 3 });
  const moved = client.changeRoom('live://other');
  // Before the reply: a push of the old room, at an offset already seen, is not judged.
  srv.live.deliver({ op: 1000, ver: 10, seq: 2, body: 'late old2' });
  assert.equal(await moved, 'live://other');
  assert.deepEqual(client.positions.room, { epoch: 0, offset: 0 });
  // The new room's stream: the same epoch number, lower offsets. Its own history.
  srv.live.deliver({ op: 1000, ver: 10, seq: 1, body: 'new1' });
  srv.live.deliver({ op: 1000, ver: 10, seq: 1, body: 'new1 again' });
  assert.deepEqual(texts(events), ['old1', 'old2', 'old3', 'late old2', 'new1']);
  assert.equal(client.duplicates, 1);
  // A reconnect asks for the new room's position, never the old room's.
  srv.cut();
  await until('reconnected', () => srv.asked.length === 2);
  assert.deepEqual(srv.asked[1].room, { epoch: 5, offset: 1 });
  assert.equal(srv.WS.sockets[1].token, undefined); // (the fake does not parse tokens)
  assert.match(decode(srv.WS.sockets[1].sent[1].body), /"room_id":"live:\/\/other"/);
  client.close();
});

test('op 19 never reaches onMessage, and {"positions": false} is passed on as it is', async () => {
  const WS = fakeWebSocket();
  const { client, events } = recorder({ WebSocket: WS });
  client.connect();
  await until('auth', () => WS.sockets[0]?.sent.length === 2);
  const s = WS.sockets[0];
  s.deliver({ op: Op.AUTH_REPLY, seq: 1 }, { op: Op.RECOVER_REPLY, body: '{"positions":false}' }, { op: 1000, body: 'after' });
  assert.deepEqual(events.recoveries, [{ positions: false, transport: 'websocket' }]);
  assert.deepEqual(texts(events), ['after']);
  client.close();
});

test('a recover reply that is not JSON drops the connection as a protocol error, and the client reconnects', async () => {
  const WS = fakeWebSocket();
  const { client, events } = recorder({ WebSocket: WS });
  client.connect();
  await until('auth', () => WS.sockets[0]?.sent.length === 2);
  WS.sockets[0].deliver({ op: Op.AUTH_REPLY, seq: 1 }, { op: Op.RECOVER_REPLY, body: 'not json' }, { op: 1000, body: 'dropped with it' });
  const [status, detail] = events.status.at(-1);
  assert.equal(status, 'reconnecting');
  assert.equal(detail.reason, 'protocol');
  assert.ok(WS.sockets[0].closed);
  assert.deepEqual(events.messages, []);
  await until('a second socket', () => WS.sockets.length === 2, 3000);
  client.close();
});

test('with recover: false no op 18 goes out, op 19 is ignored, and every push is delivered', async () => {
  const srv = resumingComet();
  const { client, events } = recorder({ WebSocket: srv.WS, recover: false });
  await client.connect();
  await sleep(10);
  assert.deepEqual(srv.WS.sockets[0].ops, [Op.AUTH, Op.HEARTBEAT]);
  assert.deepEqual(srv.asked, []);
  srv.live.deliver({ op: Op.RECOVER_REPLY, body: '{"room":{"epoch":5,"offset":9,"recovered":0,"complete":true}}' });
  srv.push('room', 'p1');
  srv.live.deliver({ op: 1000, ver: 10, seq: 1, body: 'p1 again' });
  assert.deepEqual(texts(events), ['p1', 'p1 again']);
  assert.deepEqual(events.recoveries, []);
  assert.equal(client.duplicates, 0);
  client.close();
});

// ---- over long-polling -----------------------------------------------------------------------

test('over long-polling the auth asks with ?recover=, and its recover object is taken in before the first poll', async () => {
  const srv = fakePollServer();
  const asked = [];
  srv.authReply = (u) => {
    asked.push(u.searchParams.get('recover'));
    return { recover: { room: { epoch: 5, offset: 10, recovered: 2, complete: true }, user: { epoch: 7, offset: 0, recovered: 0, complete: true } } };
  };
  // The first poll: the replay (9, 10), with 8 (already seen) in front of it.
  srv.push({ op: 1000, ver: 10, seq: 8, body: 'eight' });
  srv.push({ op: 1000, ver: 10, seq: 9, body: 'nine' });
  srv.push({ op: 1000, ver: 10, seq: 10, body: 'ten' });
  const { client, events } = recorder({ transports: ['longpoll'], fetch: srv.fetch });
  let recoveriesAtFirstPoll = null;
  const fetch = srv.fetch;
  const wrapped = (url, init) => {
    if (recoveriesAtFirstPoll === null && new URL(url).pathname === '/poll') recoveriesAtFirstPoll = events.recoveries.length;
    return fetch(url, init);
  };
  client.options.fetch = wrapped;
  // A client that saw the room up to 8 before it fell back to long-polling.
  client.positions.room = { epoch: 5, offset: 8 };
  await client.connect();
  assert.match(srv.calls[0], /^POST \/poll\/auth\?recover=%7B%22room%22%3A%7B%22epoch%22%3A5%2C%22offset%22%3A8%7D/);
  assert.deepEqual(JSON.parse(asked[0]), { room: { epoch: 5, offset: 8 }, user: { epoch: 0, offset: 0 } });
  await until('the replay', () => events.messages.length === 2);
  assert.deepEqual(texts(events), ['nine', 'ten']);
  assert.equal(recoveriesAtFirstPoll, 1, 'the recover object is taken in before the first poll');
  assert.deepEqual(events.recoveries[0].room, { epoch: 5, offset: 10, recovered: 2, complete: true, from: { epoch: 5, offset: 8 } });
  assert.equal(events.recoveries[0].transport, 'longpoll');
  assert.equal(client.duplicates, 1);
  srv.push({ op: 1000, ver: 10, seq: 11, body: 'eleven' });
  await until('a live push', () => events.messages.length === 3);
  assert.deepEqual(client.positions.request(), { room: { epoch: 5, offset: 11 }, user: { epoch: 7, offset: 0 } });
  client.close();
});

test('over long-polling with recover: false the auth URL is goim\'s and positioned pushes all pass', async () => {
  const srv = fakePollServer();
  srv.authReply = () => ({ recover: { room: { epoch: 5, offset: 10, recovered: 0, complete: true } } });
  const { client, events } = recorder({ transports: ['longpoll'], fetch: srv.fetch, recover: false });
  await client.connect();
  assert.equal(srv.calls[0], 'POST /poll/auth');
  srv.push({ op: 1000, ver: 10, seq: 3, body: 'three' });
  srv.push({ op: 1000, ver: 10, seq: 3, body: 'three again' });
  await until('both', () => events.messages.length === 2);
  assert.deepEqual(events.recoveries, []);
  client.close();
});
