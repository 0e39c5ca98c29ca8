// Browser-test harness: starts the fake LLM and a real somaagent on free loopback ports in a temp
// dir (as tests/interop/harness.mjs does), puts a small TCP proxy in front of it, and drives
// Debian's Chromium with playwright-core (never a downloaded browser).
//
// The proxy is how tests drop a live connection the way a server or load balancer would: it
// forwards bytes both ways and remembers the last request line seen on each connection, so
// dropStreams() can cut exactly the event-stream connections mid-reply. The browser sees its
// stream end in the middle of a chunked response (a network error) and must reconnect and
// resume on its own; the real server then serves the resume.
//
// Every browserTest() saves a screenshot under BROWSER_ARTIFACTS (default
// build-san/browser-artifacts): <test>.png when it passes, <test>-FAILED.png when it fails.
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { freePort, waitFor } from '../node/net.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = process.env.SOMA_BIN || join(repo, 'build-san', 'somaagent');
export const artifacts = process.env.BROWSER_ARTIFACTS || join(repo, 'build-san', 'browser-artifacts');
const childEnv = { PATH: process.env.PATH, ASAN_OPTIONS: 'detect_leaks=1' };

/** A TCP proxy to 127.0.0.1:target that can cut the event-stream connections it carries. */
async function startProxy(target) {
  const port = await freePort();
  const conns = new Set();
  const proxy = { port, streamConnections: 0 };
  const server = createServer((client) => {
    const upstream = connect(target, '127.0.0.1');
    const c = { client, upstream, lastRequest: '' };
    conns.add(c);
    client.on('data', (d) => {
      const m = /^(?:GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS) (\S+) HTTP\/1\.[01]\r?$/m.exec(d.toString('latin1'));
      if (m) {
        c.lastRequest = m[1];
        if (m[1].includes('stream=true')) proxy.streamConnections++;
      }
    });
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => { conns.delete(c); client.destroy(); upstream.destroy(); };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  /** Cuts every connection whose last request was an event stream; returns how many. */
  proxy.dropStreams = () => {
    let n = 0;
    for (const c of conns) {
      if (!c.lastRequest.includes('stream=true')) continue;
      c.client.destroy();
      c.upstream.destroy();
      n++;
    }
    return n;
  };
  proxy.close = () => new Promise((resolve) => {
    for (const c of conns) { c.client.destroy(); c.upstream.destroy(); }
    server.close(() => resolve());
  });
  return proxy;
}

/**
 * Starts a stack. llm: run the fake LLM and configure it (false: no provider, so the llm
 * service is `unconfigured` and health is degraded); keys: {name: scope|null} API keys to
 * create first (any key turns auth on); sets: extra --set key=value.
 */
export async function startStack({ llm = true, keys = {}, sets = [], chunks = 8, delayMs = 0, somabrain = false } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'soma-browser-'));
  // a real API key, as a deployment would have (any key turns auth on)
  const tokens = {};
  for (const [name, scope] of Object.entries(keys)) {
    const kargs = ['keys', 'create', '--tenant', 'browser', '--set', `data.dir=${dir}/data`];
    if (scope) kargs.push('--scope', scope);
    tokens[name] = execFileSync(bin, kargs, { env: childEnv, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  }
  let fake = null;
  let llmURL = '';
  const llmSets = [];
  if (llm) { // started (and its port taken) before the server's port is picked
    const llmPort = await freePort();
    fake = spawn('/usr/bin/python3', [join(repo, 'tests/fakes/llm/server.py'), '--port', String(llmPort),
      '--chunks', String(chunks), '--delay-ms', String(delayMs)], { stdio: ['ignore', 'ignore', 'inherit'] });
    llmURL = `http://127.0.0.1:${llmPort}`;
    await waitFor(`${llmURL}/v1/models`, (s) => s === 200, 10000).catch((e) => { fake.kill('SIGTERM'); throw e; });
    llmSets.push('--set', 'llm.provider=custom', '--set', `llm.base_url=${llmURL}/v1`,
      '--set', 'llm.api_key=test-key', '--set', 'llm.model=fake-model');
  }
  let brain = null;
  let brainURL = '';
  if (somabrain) { // the fake memory service; memory.driver=somabrain, health probed every 300 ms
    const brainPort = await freePort();
    brain = spawn('/usr/bin/python3', [join(repo, 'tests/fakes/somabrain/server.py'), '--port', String(brainPort)],
      { stdio: ['ignore', 'ignore', 'inherit'] });
    brainURL = `http://127.0.0.1:${brainPort}`;
    await waitFor(`${brainURL}/health`, (s) => s === 200, 10000).catch((e) => { brain.kill('SIGTERM'); throw e; });
    llmSets.push('--set', 'memory.driver=somabrain', '--set', `memory.somabrain_url=${brainURL}`,
      '--set', 'memory.health_interval_ms=300');
  }
  const port = await freePort();
  const args = ['run', '--set', `http.listen=127.0.0.1:${port}`, '--set', `data.dir=${dir}/data`, ...llmSets];
  for (const s of sets) args.push('--set', s);
  let log = '';
  const soma = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'], env: childEnv });
  soma.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => soma.on('exit', (code) => resolve(code)));
  try {
    await Promise.race([waitFor(`http://127.0.0.1:${port}/v1/health`, (s) => s === 200, 15000),
      exited.then((code) => { throw new Error(`somaagent exited ${code} at start-up`); })]);
  } catch (e) {
    soma.kill('SIGKILL');
    if (fake) fake.kill('SIGTERM');
    if (brain) brain.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`${e.message}\n${log}`);
  }
  const proxy = await startProxy(port);
  const direct = `http://127.0.0.1:${port}`;
  return {
    url: `http://127.0.0.1:${proxy.port}`,   // what the browser uses
    direct,                                   // what the test itself calls
    proxy,
    keys: tokens,
    log: () => log,
    /** The API, called by the test (JSON in and out); throws on a non-2xx unless allowStatus. */
    async api(path, { method = 'GET', body, key, allowStatus = [] } = {}) {
      const headers = {};
      if (key) headers.Authorization = `Bearer ${key}`;
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      const r = await fetch(direct + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await r.text();
      if (!r.ok && !allowStatus.includes(r.status)) throw new Error(`${method} ${path}: ${r.status} ${text}`);
      return { status: r.status, body: text ? JSON.parse(text) : null };
    },
    /** Changes the fake LLM's replies (chunks, delay_ms, text, mode): see tests/fakes/llm/server.py. */
    async llm(control) {
      const r = await fetch(`${llmURL}/_control`, { method: 'POST', body: JSON.stringify(control) });
      if (!r.ok) throw new Error(`fake llm control: ${r.status}`);
    },
    /** Makes the fake SomaBrain misbehave ({mode: ok|down|not_ready|...}): tests/fakes/somabrain/server.py. */
    async brain(control) {
      const r = await fetch(`${brainURL}/_control`, { method: 'POST', body: JSON.stringify(control) });
      if (!r.ok) throw new Error(`fake somabrain control: ${r.status}`);
    },
    /** The fake LLM back to its defaults (echoes "You said: <message>"). */
    async llmReset() {
      const r = await fetch(`${llmURL}/_reset`, { method: 'POST', body: '{}' });
      if (!r.ok) throw new Error(`fake llm reset: ${r.status}`);
    },
    async stop() {
      await proxy.close();
      soma.kill('SIGTERM');
      const code = await exited;
      if (fake) fake.kill('SIGTERM');
      if (brain) brain.kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
      if (code !== 0 || /Sanitizer/.test(log)) throw new Error(`somaagent exited ${code}\n${log}`);
    },
  };
}

/** Debian's Chromium, headless, no sandbox (containers), no background traffic. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

function fileName(name) {
  return name.replace(/[^A-Za-z0-9_-]+/g, '-').replace(/^-|-$/g, '').slice(0, 80);
}

/**
 * A node:test test with a fresh browser context and page: fn(page, context, t). Uncaught page
 * errors fail the test. A screenshot is saved either way (see the top of this file).
 */
export function browserTest(name, getBrowser, fn, { viewport = { width: 1280, height: 800 }, timeout = 30000 } = {}) {
  test(name, { timeout }, async (t) => {
    mkdirSync(artifacts, { recursive: true });
    const context = await getBrowser().newContext({ viewport });
    const page = await context.newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e));
    let failed = true;
    try {
      await fn(page, context, t);
      if (pageErrors.length) throw new Error(`errors in the page: ${pageErrors.map((e) => e.stack || e.message).join('\n')}`);
      failed = false;
    } finally {
      const path = join(artifacts, `${fileName(name)}${failed ? '-FAILED' : ''}.png`);
      rmSync(join(artifacts, `${fileName(name)}${failed ? '' : '-FAILED'}.png`), { force: true });
      await page.screenshot({ path, fullPage: false }).catch(() => {});
      if (failed) console.error(`screenshot: ${path}`);
      await context.close();
    }
  });
}
