// The demo page: one GoimClient driven by the form, and push buttons that call logic's HTTP API.
//
// Query parameters fill the form and are handy for links and tests:
//   mid, room, transport (auto | websocket | longpoll), api (push API base URL),
//   heartbeat (seconds), autoconnect (1), ws (WebSocket URL), poll (long-poll URL),
//   upgrade (seconds before the first WebSocket probe after a fallback to long-polling, the
//   client's upgrade.initialMs; `off` turns probing off), recover (`off`: the client's
//   recover: false, goim's own behaviour: no resuming after a reconnect).

import { GoimClient } from './goim.js';

const OPERATION = 1000;
const MAX_LOG = 200;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const form = {
  mid: $('mid'),
  room: $('room'),
  transport: $('transport'),
  api: $('api'),
};

let client = null;

function defaults() {
  form.mid.value = params.get('mid') || String(1 + Math.floor(Math.random() * 9999));
  form.room.value = params.get('room') || 'live://1000';
  const t = params.get('transport');
  if (t && [...form.transport.options].some((o) => o.value === t)) form.transport.value = t;
  form.api.value = params.get('api') || `${location.protocol === 'https:' ? 'https' : 'http'}://${location.hostname || 'localhost'}:3111`;
}

function transports() {
  switch (form.transport.value) {
    case 'websocket':
      return ['websocket'];
    case 'longpoll':
      return ['longpoll'];
    default:
      return ['websocket', 'longpoll'];
  }
}

// ---- connection --------------------------------------------------------------------------

function connect() {
  if (client) client.close();
  const heartbeatS = Number(params.get('heartbeat')) || 10;
  const options = {
    mid: Number(form.mid.value),
    room: form.room.value.trim(),
    accepts: [OPERATION],
    transports: transports(),
    heartbeatMs: heartbeatS * 1000,
    onStatus: showStatus,
    onOnline: (n) => {
      $('online').textContent = String(n);
    },
    onMessage: (m) => log('message', `op ${m.op}`, m.text),
    onRecover: showRecovery,
    onDisconnect: (d) => {
      const hint = d.reconnect_after_ms === undefined ? 'no reconnect' : `reconnect in ${d.reconnect_after_ms} ms`;
      log('system', 'op 6', `${d.reason}${d.message ? `: ${d.message}` : ''} (${hint})`);
    },
  };
  const upgrade = params.get('upgrade');
  if (upgrade === 'off') options.upgrade = false;
  else if (Number(upgrade) > 0) options.upgrade = { initialMs: Number(upgrade) * 1000 };
  if (params.get('recover') === 'off') options.recover = false;
  if (params.get('ws')) options.url = params.get('ws');
  if (params.get('poll')) options.pollUrl = params.get('poll');
  try {
    client = new GoimClient(options);
  } catch (e) {
    log('error', 'client', e.message);
    return;
  }
  window.goimClient = client; // for the console (and the browser tests)
  client.connect().catch(() => {}); // failures arrive through onStatus
}

function disconnect() {
  if (client) client.close();
}

async function changeRoom() {
  if (!client) return;
  const room = form.room.value.trim();
  try {
    await client.changeRoom(room);
    log('system', 'room', `moved to ${room}`);
    refreshOnline();
  } catch (e) {
    log('error', 'room', e.message);
  }
}

async function refreshOnline() {
  if (!client) return;
  try {
    await client.heartbeat();
  } catch (e) {
    log('error', 'heartbeat', e.message);
  }
}

function showStatus(status, detail = {}) {
  const pill = $('status');
  pill.textContent = status;
  pill.dataset.status = status;
  const connected = status === 'connected';
  const live = status !== 'closed' && status !== 'idle';
  const transport = live ? detail.transport || (client && client.transport) : null;
  $('transport-in-use').textContent = transport ? label(transport) : '–';
  $('transport-in-use').dataset.transport = transport || '';
  $('disconnect').disabled = !live;
  $('change-room').disabled = !connected;
  $('refresh-online').disabled = !connected;
  if (!live) $('online').textContent = '–';
  $('status-detail').textContent = describe(status, detail);
  log('system', status, describe(status, detail));
}

// After each (re)connect: what the server replayed of the room's and the user's streams.
// "recovered N": nothing was missed; "incomplete": the history no longer reached back (or the
// server restarted empty), so an app would refetch its state here.
let recoveries = 0;

function showRecovery(r) {
  const el = $('recovery');
  el.dataset.count = String(++recoveries);
  for (const s of ['room', 'user']) {
    delete el.dataset[`${s}Recovered`];
    delete el.dataset[`${s}Complete`];
  }
  const parts = [];
  if (!r.positions) {
    parts.push('positions are off on this server');
  } else {
    for (const s of ['room', 'user']) {
      const st = r[s];
      if (!st) continue;
      el.dataset[`${s}Recovered`] = String(st.recovered);
      el.dataset[`${s}Complete`] = String(st.complete);
      if (st.from.epoch === 0) parts.push(`${s}: first connect (position ${st.epoch}:${st.offset})`);
      else if (st.complete) parts.push(`${s}: recovered ${st.recovered}`);
      else parts.push(`${s}: incomplete (recovered ${st.recovered}; refetch)`);
    }
    if (!parts.length) parts.push('no stream to resume');
  }
  el.textContent = parts.join(' · ');
  el.dataset.complete = String(Boolean(r.positions) && ['room', 'user'].every((s) => !r[s] || r[s].complete));
  log('system', 'recover', el.textContent);
}

function label(transport) {
  return transport === 'longpoll' ? 'long-polling' : transport === 'websocket' ? 'WebSocket' : '–';
}

function describe(status, d) {
  switch (status) {
    case 'connecting':
      if (d.upgradeFrom) return `opening ${label(d.transport)} to replace ${label(d.upgradeFrom)}`;
      return d.fallbackFrom
        ? `${label(d.fallbackFrom)} failed (${d.error || 'error'}); trying ${label(d.transport)}`
        : `opening ${label(d.transport)}${d.attempt ? ` (attempt ${d.attempt + 1})` : ''}`;
    case 'connected':
      return `authenticated over ${label(d.transport)}; heartbeat every ${Math.round(d.heartbeatMs / 1000)} s`;
    case 'reconnecting':
      if (d.reason === 'upgrade') return `${label(d.to)} works again; switching from ${label(d.from)}`;
      return `${d.reason}${d.message ? `: ${d.message}` : ''}; reconnecting in ${(d.delayMs / 1000).toFixed(1)} s`;
    case 'closed':
      return d.reason === 'client' ? 'closed' : `closed: ${d.reason}${d.message ? ` (${d.message})` : ''}`;
    default:
      return status;
  }
}

// ---- pushes through the HTTP API ---------------------------------------------------------

function pushUrl(kind) {
  const api = form.api.value.trim().replace(/\/+$/, '');
  if (kind === 'room') {
    const m = /^([^:/]+):\/\/(.+)$/.exec(form.room.value.trim());
    if (!m) throw new Error('the room must look like type://id, e.g. live://1000');
    return `${api}/goim/push/room?operation=${OPERATION}&type=${encodeURIComponent(m[1])}&room=${encodeURIComponent(m[2])}`;
  }
  if (kind === 'mid') return `${api}/goim/push/mids?operation=${OPERATION}&mids=${encodeURIComponent(form.mid.value)}`;
  return `${api}/goim/push/all?operation=${OPERATION}`;
}

async function push(kind) {
  const result = $('push-result');
  const message = $('message').value;
  let url;
  try {
    url = pushUrl(kind);
  } catch (e) {
    result.textContent = e.message;
    result.dataset.ok = 'false';
    return;
  }
  const curl = $('push-curl');
  curl.textContent = `curl -d '${message.replace(/'/g, "'\\''")}' '${url}'`;
  curl.hidden = false;
  try {
    // A text/plain body keeps this a simple CORS request (no preflight).
    const res = await fetch(url, { method: 'POST', body: message, headers: { 'Content-Type': 'text/plain' } });
    const body = await res.json().catch(() => null);
    const ok = res.ok && body && body.code === 0;
    result.textContent = ok ? `${kind} push accepted` : `${kind} push failed: HTTP ${res.status} ${body ? JSON.stringify(body) : ''}`;
    result.dataset.ok = String(ok);
  } catch (e) {
    result.textContent = `${kind} push failed: ${e.message} (is the API at ${form.api.value} up, and does it allow this origin?)`;
    result.dataset.ok = 'false';
  }
}

// ---- the log -----------------------------------------------------------------------------

let logged = 0;

function log(kind, tag, textValue) {
  const list = $('log');
  const item = document.createElement('li');
  item.className = `entry ${kind}`;
  item.dataset.kind = kind;
  const time = document.createElement('time');
  time.textContent = new Date().toLocaleTimeString();
  const badge = document.createElement('span');
  badge.className = 'tag';
  badge.textContent = tag;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = textValue;
  item.append(time, badge, body);
  list.append(item);
  while (list.children.length > MAX_LOG) list.firstElementChild.remove();
  if (kind === 'message') $('log-count').textContent = String(++logged);
  list.scrollTop = list.scrollHeight;
}

// ---- wiring ------------------------------------------------------------------------------

defaults();
$('connect-form').addEventListener('submit', (e) => {
  e.preventDefault();
  connect();
});
$('disconnect').addEventListener('click', disconnect);
$('change-room').addEventListener('click', changeRoom);
$('refresh-online').addEventListener('click', refreshOnline);
$('push-room').addEventListener('click', () => push('room'));
$('push-mid').addEventListener('click', () => push('mid'));
$('push-all').addEventListener('click', () => push('all'));
$('clear-log').addEventListener('click', () => {
  $('log').replaceChildren();
  logged = 0;
  $('log-count').textContent = '0';
});
if (params.get('autoconnect') === '1') connect();
