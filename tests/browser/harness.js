// What the browser tests share: the embedded server on free loopback ports, the distributed
// tiers (goim-logic, goim-job, goim-comet) on Redis and Kafka, headless Chromium, and a small
// static server for web/ when the comet does not serve the demo page.

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

/**
 * A distributed tier's binary (`goim-logic`, `goim-comet`, `goim-job`): from $GOIM_BIN_DIR, or
 * next to $GOIM_BIN, or a debug build made here.
 */
export function tierBinary(name) {
  const dir = process.env.GOIM_BIN_DIR || (process.env.GOIM_BIN && path.dirname(process.env.GOIM_BIN));
  if (dir) return path.join(dir, name);
  execFileSync('cargo', ['build', '--quiet', '--bin', name], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  const meta = JSON.parse(execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], { cwd: ROOT, maxBuffer: 64 << 20 }));
  return path.join(meta.target_directory, 'debug', name);
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

// ---- the distributed mode ----------------------------------------------------------------

/**
 * Redis and Kafka for the distributed tests: those of $GOIM_TEST_REDIS_URL and
 * $GOIM_TEST_KAFKA_BROKERS when both are set, else started here by scripts/services.sh (in
 * $GOIM_SERVICES_DIR, by default a directory of the tests' own) and stopped by stop(). A service
 * that cannot be started fails the test: it is never skipped.
 */
export function services() {
  if (process.env.GOIM_TEST_REDIS_URL && process.env.GOIM_TEST_KAFKA_BROKERS) {
    return { redisUrl: process.env.GOIM_TEST_REDIS_URL, kafkaBrokers: process.env.GOIM_TEST_KAFKA_BROKERS, stop() {} };
  }
  const env = { ...process.env, GOIM_SERVICES_DIR: process.env.GOIM_SERVICES_DIR || path.join(tmpdir(), 'goim-browser-services') };
  const script = path.join(ROOT, 'scripts', 'services.sh');
  const out = execFileSync('bash', [script, 'start'], { cwd: ROOT, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 600000 });
  const vars = {};
  for (const m of out.matchAll(/^export (\w+)=(.*)$/gm)) vars[m[1]] = m[2].replace(/^["']|["']$/g, '');
  if (!vars.GOIM_TEST_REDIS_URL || !vars.GOIM_TEST_KAFKA_BROKERS) throw new Error(`scripts/services.sh start printed no service addresses:\n${out}`);
  return {
    redisUrl: vars.GOIM_TEST_REDIS_URL,
    kafkaBrokers: vars.GOIM_TEST_KAFKA_BROKERS,
    stop() {
      execFileSync('bash', [script, 'stop'], { cwd: ROOT, env, stdio: ['ignore', 'inherit', 'inherit'] });
    },
  };
}

// One process with its config in a scratch directory and its log in out/NAME.log; ready once
// its admin /readyz answers 200.
async function startTier(bin, name, toml, adminPort) {
  const dir = mkdtempSync(path.join(tmpdir(), `goim-${name}-`));
  const config = path.join(dir, `${name}.toml`);
  writeFileSync(config, toml);
  const logPath = path.join(OUT, `${name}.log`);
  const logFile = createWriteStream(logPath, { flags: 'a' });
  const child = spawn(tierBinary(bin), ['--config', config], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  child.stdout.pipe(logFile);
  child.stderr.pipe(logFile);
  let exited = null;
  const exit = new Promise((resolve) => child.once('exit', (code, signal) => resolve((exited = { code, signal }))));
  try {
    await until(`${name} to be ready (log: ${logPath})`, async () => {
      if (exited) throw new Error(`${name} exited early (${JSON.stringify(exited)}); log: ${logPath}`);
      try {
        return (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 200;
      } catch {
        return false;
      }
    }, 60000);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return {
    /** SIGTERM, then waits for the exit (SIGKILL after 25 s). */
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 25000);
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
 * goim-logic (sessions and positions in Redis, pushes to Kafka), goim-job and one goim-comet on
 * free loopback ports, with a topic and consumer group of their own. `comet.stop()` and
 * `comet.start()` restart the comet on the same ports while logic, job and Redis keep running.
 */
export async function startDistributed(name, svc) {
  const p = {
    http: await freePort(), logicGrpc: await freePort(), logicAdmin: await freePort(),
    jobAdmin: await freePort(),
    tcp: await freePort(), ws: await freePort(), cometGrpc: await freePort(), cometAdmin: await freePort(),
  };
  const unique = `${name}-${process.pid}-${Date.now()}`;
  const discovery = `[discovery]
kind = "static"
comets = [{ server_id = "comet-browser", addr = "127.0.0.1:${p.cometGrpc}" }]
`;
  const kafka = `[queue]
kind = "kafka"

[kafka]
brokers = ["${svc.kafkaBrokers}"]
topic = "goim-browser-${unique}"
`;
  const logicToml = `# written by tests/browser/harness.js
[logic.http]
addr = "127.0.0.1:${p.http}"
cors_origins = ["*"]

[logic.auth]
mode = "json"

[grpc]
addr = "127.0.0.1:${p.logicGrpc}"

[admin]
addr = "127.0.0.1:${p.logicAdmin}"

[store]
kind = "redis"

[store.redis]
url = "${svc.redisUrl}"

${kafka}partitions = 1

${discovery}`;
  const jobToml = `# written by tests/browser/harness.js
${discovery}
${kafka}group = "goim-browser-${unique}"

[job.room]
max_delay = "5ms"

[admin]
addr = "127.0.0.1:${p.jobAdmin}"

[shutdown]
grace = "5s"
`;
  const cometToml = `# written by tests/browser/harness.js
[comet]
server_id = "comet-browser"

[comet.tcp]
bind = ["127.0.0.1:${p.tcp}"]

[comet.websocket]
bind = ["127.0.0.1:${p.ws}"]

[comet.online]
renew_interval = "200ms"

[comet.disconnect]
# op 6 on shutdown suggests 2-3 s: the comet is back by then, or soon after.
reconnect_min = "2s"
reconnect_jitter = "1s"

[grpc]
addr = "127.0.0.1:${p.cometGrpc}"

[logic_client]
addrs = ["127.0.0.1:${p.logicGrpc}"]

[admin]
addr = "127.0.0.1:${p.cometAdmin}"

[shutdown]
grace = "5s"
`;
  const tiers = [];
  const stopAll = async () => {
    for (const t of tiers.splice(0).reverse()) await t.stop();
  };
  try {
    tiers.push(await startTier('goim-logic', `${name}-logic`, logicToml, p.logicAdmin));
    tiers.push(await startTier('goim-job', `${name}-job`, jobToml, p.jobAdmin));
  } catch (e) {
    await stopAll();
    throw e;
  }
  let comet = null;
  const cometHandle = {
    async start() {
      comet = await startTier('goim-comet', `${name}-comet`, cometToml, p.cometAdmin);
    },
    async stop() {
      const c = comet;
      comet = null;
      return c ? c.stop() : null;
    },
    get running() {
      return comet !== null;
    },
  };
  try {
    await cometHandle.start();
  } catch (e) {
    await stopAll();
    throw e;
  }
  return {
    ports: p,
    api: `http://127.0.0.1:${p.http}`,
    comet: cometHandle,
    wsUrl: `ws://127.0.0.1:${p.ws}/sub`,
    pollUrl: `http://127.0.0.1:${p.ws}/poll`,
    origin: `http://127.0.0.1:${p.ws}`,
    async stop() {
      await cometHandle.stop();
      await stopAll();
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
