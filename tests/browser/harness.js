// What the browser tests share: the embedded server on free loopback ports, headless Chromium,
// and a small static server for web/ when the comet does not serve the demo page.

import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '../..');
export const WEB = path.join(ROOT, 'web');
export const OUT = path.join(HERE, 'out');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

mkdirSync(OUT, { recursive: true });

let binary = null;

/** The `goim` binary: $GOIM_BIN, or a debug build made once per test process. */
export function goimBinary() {
  if (binary) return binary;
  if (process.env.GOIM_BIN) {
    binary = process.env.GOIM_BIN;
    return binary;
  }
  execFileSync('cargo', ['build', '--quiet', '--bin', 'goim'], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  const meta = JSON.parse(execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], { cwd: ROOT, maxBuffer: 64 << 20 }));
  binary = path.join(meta.target_directory, 'debug', 'goim');
  return binary;
}

/** A port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `check()` is truthy; throws with `what` after `ms`. */
export async function until(what, check, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Free ports for every listener of one embedded server. */
export async function allocatePorts() {
  return { admin: await freePort(), tcp: await freePort(), ws: await freePort(), http: await freePort() };
}

function configToml(ports) {
  return `# written by tests/browser/harness.js
[admin]
addr = "127.0.0.1:${ports.admin}"

[shutdown]
grace = "5s"

[comet.tcp]
bind = ["127.0.0.1:${ports.tcp}"]

[comet.websocket]
bind = ["127.0.0.1:${ports.ws}"]

[comet.online]
renew_interval = "100ms"

[comet.disconnect]
# op 6 on shutdown suggests 2-3 s: long enough for a test to restart the server first.
reconnect_min = "2s"
reconnect_jitter = "1s"

[logic.http]
addr = "127.0.0.1:${ports.http}"
cors_origins = ["*"]

[job.room]
max_delay = "5ms"
`;
}

/**
 * Starts the embedded server (`ports` from allocatePorts, or fresh ones) and waits for its
 * listeners. Its log goes to out/server-NAME.log.
 */
export async function startServer(name, ports) {
  ports = ports || (await allocatePorts());
  const dir = mkdtempSync(path.join(tmpdir(), 'goim-browser-'));
  const config = path.join(dir, 'goim.toml');
  writeFileSync(config, configToml(ports));
  const logPath = path.join(OUT, `server-${name}.log`);
  const logFile = createWriteStream(logPath);
  const child = spawn(goimBinary(), ['--config', config], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  child.stdout.pipe(logFile);
  child.stderr.pipe(logFile);
  let exited = null;
  const exit = new Promise((resolve) => child.once('exit', (code, signal) => resolve((exited = { code, signal }))));
  try {
    await until(`the server's listeners (log: ${logPath})`, async () => {
      if (exited) throw new Error(`server exited early (${JSON.stringify(exited)}); log: ${logPath}`);
      return (await canConnect(ports.http)) && (await canConnect(ports.ws));
    }, 20000);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return {
    ports,
    api: `http://127.0.0.1:${ports.http}`,
    comet: `http://127.0.0.1:${ports.ws}`,
    wsUrl: `ws://127.0.0.1:${ports.ws}/sub`,
    pollUrl: `http://127.0.0.1:${ports.ws}/poll`,
    /** SIGTERM, then waits for the exit (SIGKILL after 10 s). */
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
        await exit;
        clearTimeout(timer);
      }
      logFile.end();
      rmSync(dir, { recursive: true, force: true });
      return exited;
    },
  };
}

/**
 * A TCP proxy from 127.0.0.1:`port` to 127.0.0.1:`target`, listening from now on: until it is
 * started, connections to `port` are refused. close() stops it and cuts its connections.
 */
export async function tcpProxy(port, target) {
  const sockets = new Set();
  const proxy = net.createServer((client) => {
    const upstream = net.connect({ port: target, host: '127.0.0.1' });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', end);
      s.on('close', end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    proxy.once('error', reject);
    proxy.listen(port, '127.0.0.1', resolve);
  });
  return {
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        proxy.close(() => resolve());
      }),
  };
}

/** POSTs `body` to the push API; resolves with goim's envelope or throws. */
export async function push(api, pathAndQuery, body) {
  const res = await fetch(`${api}${pathAndQuery}`, { method: 'POST', body });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // reported below
  }
  if (res.status !== 200 || !json || json.code !== 0) throw new Error(`push ${pathAndQuery}: HTTP ${res.status} ${text}`);
  return json;
}

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

/** Serves web/ on a free loopback port (for when the comet does not serve it). */
export async function serveWeb() {
  const server = createServer((req, res) => {
    const name = new URL(req.url, 'http://x').pathname.replace(/^\/$/, '/index.html');
    const file = path.join(WEB, path.normalize(name).replace(/^([/\\])+/, ''));
    if (!file.startsWith(WEB) || !TYPES[path.extname(file)]) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = readFileSync(file);
      res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { origin: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

/** Whether the comet serves the demo page at `/`. */
export async function cometServesPage(comet) {
  try {
    const res = await fetch(`${comet}/`);
    return res.status === 200 && (await res.text()).includes('goim-rs demo');
  } catch {
    return false;
  }
}

/** Headless Chromium with a fresh profile; close() removes the profile. */
export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  const profile = mkdtempSync(path.join(tmpdir(), 'goim-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1200, height: 900 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Opens a page, recording its console errors and uncaught exceptions in `page.problems`. */
export async function openPage(context, url) {
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') page.problems.push(`console: ${m.text()}`);
  });
  await page.goto(url);
  return page;
}
