// The demo page in headless Chromium against the real embedded server: it connects,
// authenticates, shows the room's online count and receives room, mid and broadcast pushes,
// over WebSocket and over the long-polling fallback, returns to WebSocket from the fallback once
// it opens, reconnects after an op-6 shutdown, and reports a resume as incomplete when the
// restarted server's history is gone.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { OUT, WEB, allocatePorts, cometServesPage, launchBrowser, openPage, push, serveWeb, sleep, startServer, tcpProxy } from './harness.js';

let server;
let browser;
let web; // the comet itself, or a static server of web/ when the comet does not serve it yet

before(async () => {
  server = await startServer('demo');
  browser = await launchBrowser();
  if (await cometServesPage(server.comet)) {
    web = { origin: server.comet, close: async () => {} };
  } else {
    web = await serveWeb();
    console.log(`# the comet does not serve the demo page at / yet: using ${web.origin}`);
  }
});

after(async () => {
  await browser?.close();
  await web?.close();
  await server?.stop();
});

function pageUrl(q) {
  const params = new URLSearchParams({ heartbeat: '1', autoconnect: '1', api: server.api, ...q });
  if (web.origin !== server.comet) {
    params.set('ws', params.get('ws') || server.wsUrl);
    params.set('poll', server.pollUrl);
  }
  return `${web.origin}/?${params}`;
}

async function status(page) {
  return page.getByTestId('status').getAttribute('data-status');
}

// Pages that test the return to WebSocket set `upgrade=1`: after a fallback to long-polling the
// client probes WebSocket after 0.5-1 s, then 1-2 s, 2-4 s, 4-8 s. UPGRADE_MS covers three
// probes with time to open each, for a loaded machine.
const UPGRADE_MS = 15000;

// Waits until the page is connected over `transport` (either, when null).
async function connected(page, transport, timeout = 15000) {
  await page.waitForFunction(
    (t) => document.getElementById('status').dataset.status === 'connected' && (!t || document.getElementById('transport-in-use').dataset.transport === t),
    transport,
    { timeout },
  ).catch(async (e) => {
    throw new Error(`not connected over ${transport || 'any transport'}: status ${await status(page)}, detail "${await page.getByTestId('status-detail').textContent()}", problems ${page.problems.slice(0, 3).join(" | ")}; ${e.message}`);
  });
}

async function onlineAtLeast(page, n) {
  await page.waitForFunction((min) => Number(document.getElementById('online').textContent) >= min, n, { timeout: 10000 });
}

async function arrives(page, text) {
  await page.locator('[data-testid=log] .entry.message', { hasText: text }).first().waitFor({ timeout: 10000 }).catch(async (e) => {
    const log = await page.getByTestId('log').innerText();
    throw new Error(`"${text}" did not arrive; log:\n${log}\n${e.message}`);
  });
}

function noPageErrors(page) {
  assert.deepEqual(page.problems.filter((p) => p.startsWith('pageerror')), []);
}

// Room, mid and broadcast pushes sent from Node, and one room push sent by the page's button.
async function receivesEveryKindOfPush(page, mid, roomId, tag) {
  await push(server.api, `/goim/push/room?operation=1000&type=live&room=${roomId}`, `room push ${tag}`);
  await arrives(page, `room push ${tag}`);
  await push(server.api, `/goim/push/mids?operation=1000&mids=${mid}`, `mid push ${tag}`);
  await arrives(page, `mid push ${tag}`);
  await push(server.api, '/goim/push/all?operation=1000', `broadcast ${tag}`);
  await arrives(page, `broadcast ${tag}`);
  await page.getByTestId('message').fill(`button push ${tag}`);
  await page.getByTestId('push-room').click();
  await page.waitForFunction(() => document.getElementById('push-result').dataset.ok === 'true', null, { timeout: 10000 }).catch(async (e) => {
    throw new Error(`the page's push failed: ${await page.getByTestId('push-result').textContent()}; ${e.message}`);
  });
  await arrives(page, `button push ${tag}`);
}

test('the comet serves the demo page and its files at /', async () => {
  const base = server.comet;
  const page = await fetch(`${base}/`);
  assert.equal(page.status, 200, 'GET / on the comet port');
  assert.match(page.headers.get('content-type') || '', /^text\/html/);
  assert.equal(await page.text(), readFileSync(path.join(WEB, 'index.html'), 'utf8'));
  for (const [file, type] of [['goim.js', /javascript/], ['demo.js', /javascript/], ['demo.css', /^text\/css/]]) {
    const res = await fetch(`${base}/${file}`);
    assert.equal(res.status, 200, `GET /${file}`);
    assert.match(res.headers.get('content-type') || '', type, `content type of /${file}`);
    assert.equal(await res.text(), readFileSync(path.join(WEB, file), 'utf8'), `/${file} is web/${file}`);
  }
});

test('over WebSocket the page authenticates, counts the room and receives room, mid and broadcast pushes', async () => {
  const page = await openPage(browser.context, pageUrl({ mid: '7101', room: 'live://7101' }));
  try {
    await connected(page, 'websocket');
    await onlineAtLeast(page, 1);
    await receivesEveryKindOfPush(page, 7101, '7101', 'over websocket');
    await page.getByTestId('log').evaluate((el) => (el.scrollTop = 0));
    await page.screenshot({ path: path.join(OUT, 'websocket.png'), fullPage: true });
    noPageErrors(page);
  } finally {
    await page.close();
  }
});

test('with WebSocket missing, the long-polling fallback carries the same', async () => {
  await browser.context.addInitScript(() => {
    if (new URLSearchParams(location.search).get('nows') === '1') window.WebSocket = undefined;
  });
  const page = await openPage(browser.context, pageUrl({ mid: '7102', room: 'live://7102', nows: '1' }));
  try {
    assert.equal(await page.evaluate(() => typeof window.WebSocket), 'undefined');
    await connected(page, 'longpoll');
    await onlineAtLeast(page, 1);
    await receivesEveryKindOfPush(page, 7102, '7102', 'over long-polling');
    await page.screenshot({ path: path.join(OUT, 'longpoll.png'), fullPage: true });
    noPageErrors(page);
  } finally {
    await page.close();
  }
});

test('when the WebSocket cannot open, the page falls back to long-polling', async () => {
  const closed = (await allocatePorts()).ws; // nothing listens there
  const page = await openPage(browser.context, pageUrl({ mid: '7103', room: 'live://7103', ws: `ws://127.0.0.1:${closed}/sub` }));
  try {
    await connected(page, 'longpoll');
    await push(server.api, '/goim/push/mids?operation=1000&mids=7103', 'after fallback');
    await arrives(page, 'after fallback');
    await page.screenshot({ path: path.join(OUT, 'fallback.png'), fullPage: true });
    noPageErrors(page);
  } finally {
    await page.close();
  }
});

test('a page that fell back to long-polling returns to WebSocket once it opens', async () => {
  const port = (await allocatePorts()).ws; // refused until the proxy to the comet listens there
  const page = await openPage(browser.context, pageUrl({ mid: '7106', room: 'live://7106', ws: `ws://127.0.0.1:${port}/sub`, upgrade: '1' }));
  let proxy = null;
  try {
    await connected(page, 'longpoll');
    await push(server.api, '/goim/push/mids?operation=1000&mids=7106', 'before the upgrade');
    await arrives(page, 'before the upgrade');
    proxy = await tcpProxy(port, server.ports.ws);
    await connected(page, 'websocket', UPGRADE_MS);
    const switched = page.locator('[data-testid=log] .entry.system', { hasText: 'WebSocket works again; switching from long-polling' });
    assert.equal(await switched.count(), 1, 'one switch, through the upgrade probe');
    await push(server.api, '/goim/push/room?operation=1000&type=live&room=7106', 'after the upgrade');
    await arrives(page, 'after the upgrade');
    await onlineAtLeast(page, 1);
    await page.screenshot({ path: path.join(OUT, 'upgraded.png'), fullPage: true });
    noPageErrors(page);
  } finally {
    await page.close();
    await proxy?.close();
  }
});

test('after an op-6 shutdown hint the page reconnects to the restarted server', async () => {
  const page = await openPage(browser.context, pageUrl({ mid: '7104', room: 'live://7104', upgrade: '1' }));
  const ports = server.ports;
  let stopped = false;
  try {
    await connected(page, 'websocket');
    await server.stop();
    stopped = true;
    // The page logs the op-6 body, then the reconnect it schedules from the hint (2-3 s here).
    const told = page.locator('[data-testid=log] .entry.system', { hasText: /^.*shutdown \(reconnect in \d+ ms\)$/ });
    const scheduled = page.locator('[data-testid=log] .entry.system', { hasText: /shutdown; reconnecting in [23]\.\d s$/ });
    for (const [what, entry] of [['the op-6 entry', told], ['a reconnect at the hint', scheduled]]) {
      await entry.first().waitFor({ timeout: 10000 }).catch(async (e) => {
        throw new Error(`no ${what}; log:\n${await page.getByTestId('log').innerText()}\n${e.message}`);
      });
    }
    server = await startServer('demo-restarted', ports);
    stopped = false;
    // The reconnect may land on long-polling: a WebSocket refused while the server was down (or
    // held back by Chromium after such failures) falls back to it at once. The client then
    // probes WebSocket and switches back, so the page must end up on WebSocket either way.
    await connected(page, null);
    await connected(page, 'websocket', UPGRADE_MS);
    await push(server.api, '/goim/push/room?operation=1000&type=live&room=7104', 'after restart');
    await arrives(page, 'after restart');
    await page.screenshot({ path: path.join(OUT, 'reconnected.png'), fullPage: true });
    noPageErrors(page);
  } finally {
    await page.close();
    if (stopped) server = await startServer('demo-restarted', ports); // for the tests after this one
  }
});

// The texts of the page's log entries tagged `tag` ('recover': the Recovery row's text after each
// (re)connect), and of the messages received.
async function entries(page, tag) {
  return page.$$eval('[data-testid=log] .entry', (els, t) => els.filter((e) => e.querySelector('.tag').textContent === t).map((e) => e.querySelector('.text').textContent), tag);
}

async function messages(page) {
  return page.$$eval('[data-testid=log] .entry.message .text', (els) => els.map((e) => e.textContent));
}

test('after a restart of the embedded server (its history gone) the page reports the room incomplete, then carries on', async () => {
  const page = await openPage(browser.context, pageUrl({ mid: '7107', room: 'live://7107', upgrade: '1' }));
  const ports = server.ports;
  let stopped = false;
  try {
    await connected(page, 'websocket');
    await page.waitForFunction(() => document.getElementById('recovery').dataset.count === '1', null, { timeout: 10000 });
    assert.match(await page.getByTestId('recovery').textContent(), /^room: first connect \(position \d+:\d+\) · user: first connect \(position \d+:\d+\)$/);
    for (const n of [1, 2]) await push(server.api, '/goim/push/room?operation=1000&type=live&room=7107', `before restart ${n}`);
    await arrives(page, 'before restart 2');
    await server.stop();
    stopped = true;
    server = await startServer('demo-history-lost', ports);
    stopped = false;
    // A reconnect may still reach the old process while it shuts down (complete, nothing missed);
    // the first one to reach the restarted server must say incomplete.
    await page.waitForFunction(() => document.getElementById('recovery').dataset.roomComplete === 'false', null, { timeout: 20000 }).catch(async (e) => {
      throw new Error(`no incomplete recover reply after the restart; log:\n${await page.getByTestId('log').innerText()}\n${e.message}`);
    });
    const after = (await entries(page, 'recover')).slice(1);
    const first = after.findIndex((t) => !t.startsWith('room: recovered 0 '));
    assert.match(after[first], /^room: incomplete \(recovered 0; refetch\)/, `the resumes after the first connect: ${after.join(' | ')}`);
    // The restarted server's room stream is a new epoch: its offset 1 is not taken for a duplicate.
    await push(server.api, '/goim/push/room?operation=1000&type=live&room=7107', 'after restart 1');
    await arrives(page, 'after restart 1');
    assert.deepEqual(await messages(page), ['before restart 1', 'before restart 2', 'after restart 1']);
    assert.equal(await page.evaluate(() => window.goimClient.duplicates), 0);
    await page.screenshot({ path: path.join(OUT, 'incomplete.png'), fullPage: true });
    noPageErrors(page);
  } finally {
    await page.close();
    if (stopped) server = await startServer('demo-history-lost', ports);
  }
});

test('a closed page client does not reconnect', async () => {
  const page = await openPage(browser.context, pageUrl({ mid: '7105', room: 'live://7105' }));
  try {
    await connected(page, 'websocket');
    await page.getByTestId('disconnect').click();
    assert.equal(await status(page), 'closed');
    await sleep(1500);
    assert.equal(await status(page), 'closed');
    assert.equal(await page.getByTestId('transport').textContent(), '–');
    noPageErrors(page);
  } finally {
    await page.close();
  }
});
