// The demo page resuming across a comet restart in the distributed mode: goim-logic (positions
// and history in Redis), goim-job (pushes through Kafka) and goim-comet, with Redis and Kafka
// started by scripts/services.sh unless $GOIM_TEST_REDIS_URL and $GOIM_TEST_KAFKA_BROKERS name
// running ones. The comet is stopped for about 2 s while numbered pushes go to the page's room
// and user; after the comet is back, the page must show each number once, in order, and the
// Recovery row must count exactly the pushes it missed. Over WebSocket and over long-polling.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';

import { OUT, launchBrowser, openPage, push, services, sleep, startDistributed } from './harness.js';

let svc;
let cluster;
let browser;

before(async () => {
  svc = services();
  cluster = await startDistributed('resume', svc);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await cluster?.stop();
  svc?.stop();
});

function pageUrl(q) {
  const params = new URLSearchParams({ heartbeat: '1', autoconnect: '1', api: cluster.api, ...q });
  return `${cluster.origin}/?${params}`;
}

async function connected(page, transport, timeout = 20000) {
  await page.waitForFunction(
    (t) => document.getElementById('status').dataset.status === 'connected' && (!t || document.getElementById('transport-in-use').dataset.transport === t),
    transport,
    { timeout },
  ).catch(async (e) => {
    throw new Error(`not connected over ${transport || 'any transport'}; log:\n${await page.getByTestId('log').innerText()}\n${e.message}`);
  });
}

async function messages(page) {
  return page.$$eval('[data-testid=log] .entry.message .text', (els) => els.map((e) => e.textContent));
}

async function recoverEntries(page) {
  return page.$$eval('[data-testid=log] .entry', (els) => els.filter((e) => e.querySelector('.tag').textContent === 'recover').map((e) => e.querySelector('.text').textContent));
}

async function waitForMessage(page, textValue, timeout = 15000) {
  const end = Date.now() + timeout;
  while (!(await messages(page)).includes(textValue)) {
    if (Date.now() > end) throw new Error(`"${textValue}" did not arrive; log:\n${await page.getByTestId('log').innerText()}`);
    await sleep(100);
  }
}

// The numbered pushes of one stream the page received, in arrival order: `prefix` 3 → 3.
function numbers(list, prefix) {
  return list.filter((t) => t.startsWith(`${prefix} `)).map((t) => Number(t.slice(prefix.length + 1)));
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function resumesAcrossCometRestart(transport) {
  const id = 7200 + Math.floor(Math.random() * 700) + (transport === 'longpoll' ? 1000 : 0);
  const room = `/goim/push/room?operation=1000&type=live&room=${id}`;
  const mid = `/goim/push/mids?operation=1000&mids=${id}`;
  const q = { mid: String(id), room: `live://${id}`, transport: transport === 'longpoll' ? 'longpoll' : 'auto', upgrade: '1' };
  const page = await openPage(browser.context, pageUrl(q));
  try {
    await connected(page, transport);
    // The consumer group may take a while to settle on a fresh topic: warm pushes until one is
    // delivered (they are in the room's stream too, and not counted below).
    const warmEnd = Date.now() + 60000;
    for (let i = 0; !(await messages(page)).some((t) => t.startsWith('warm')); i++) {
      if (Date.now() > warmEnd) throw new Error('no warm-up push arrived within 60 s');
      await push(cluster.api, room, `warm ${i}`);
      await sleep(1000);
    }
    await page.waitForFunction(() => Number(document.getElementById('recovery').dataset.count) >= 1, null, { timeout: 10000 }).catch(async (e) => {
      throw new Error(`no recover reply on the first connect; log:\n${await page.getByTestId('log').innerText()}\n${e.message}`);
    });

    for (const n of range(1, 5)) await push(cluster.api, room, `room ${n}`);
    for (const n of range(1, 2)) await push(cluster.api, mid, `user ${n}`);
    await waitForMessage(page, 'room 5');
    await waitForMessage(page, 'user 2');
    const before = (await recoverEntries(page)).length;

    // The comet goes away (op 6 shutdown: come back in 2-3 s); pushes go on for about 2 s.
    await cluster.comet.stop();
    for (const n of range(6, 15)) {
      await push(cluster.api, room, `room ${n}`);
      if (n % 3 === 0) await push(cluster.api, mid, `user ${1 + n / 3}`); // user 3, 4, 5, 6
      await sleep(200);
    }
    await cluster.comet.start();

    await page.waitForFunction((n) => [...document.querySelectorAll('[data-testid=log] .entry .tag')].filter((t) => t.textContent === 'recover').length > n, before, { timeout: 30000 })
      .catch(async (e) => {
        throw new Error(`no recover reply after the comet restart; log:\n${await page.getByTestId('log').innerText()}\n${e.message}`);
      });
    const resumed = (await recoverEntries(page))[before];
    assert.equal(resumed, 'room: recovered 10 · user: recovered 4', 'the first resume after the restart counts what was pushed while the comet was down');
    await waitForMessage(page, 'room 15');
    await waitForMessage(page, 'user 6');
    for (const n of range(16, 20)) await push(cluster.api, room, `room ${n}`);
    await waitForMessage(page, 'room 20');
    await sleep(500); // time for a duplicate to show up, if one were coming

    const got = await messages(page);
    assert.deepEqual(numbers(got, 'room'), range(1, 20), 'every room push once, in order');
    assert.deepEqual(numbers(got, 'user'), range(1, 6), 'every user push once, in order');
    if (transport === 'websocket') await connected(page, 'websocket', 15000);
    await page.screenshot({ path: path.join(OUT, `resumed-${transport}.png`), fullPage: true });
    assert.deepEqual(page.problems.filter((p) => p.startsWith('pageerror')), []);
  } finally {
    await page.close();
    if (!cluster.comet.running) await cluster.comet.start();
  }
}

test('over WebSocket the page resumes after its comet restarts: every push once and in order, the recovered counts exact', async () => {
  await resumesAcrossCometRestart('websocket');
});

test('over long-polling the page resumes after its comet restarts the same way', async () => {
  await resumesAcrossCometRestart('longpoll');
});
