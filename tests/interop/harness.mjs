// Starts the fake LLM and a somaagent on free loopback ports in a temp dir, for interop tests.
// The binary comes from SOMA_BIN (default build-san/somaagent); Python is Debian's /usr/bin/python3.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, waitFor } from '../node/net.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = process.env.SOMA_BIN || join(repo, 'build-san', 'somaagent');

// sets: extra `--set key=value` of the server (e.g. a limit).
export async function startStack({ sets = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'soma-interop-'));
  const llmPort = await freePort();
  const port = await freePort();
  const llm = spawn('/usr/bin/python3', [join(repo, 'tests/fakes/llm/server.py'), '--port', String(llmPort), '--chunks', '8'],
    { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitFor(`http://127.0.0.1:${llmPort}/v1/models`, (s) => s === 200, 10000);
  // a real API key, as a deployment would have: the client sends it as its bearer token
  const token = execFileSync(bin, ['keys', 'create', '--tenant', 'interop', '--set', `data.dir=${dir}/data`],
    { env: { PATH: process.env.PATH, ASAN_OPTIONS: 'detect_leaks=1' }, stdio: ['ignore', 'pipe', 'ignore'] })
    .toString().trim();
  let log = '';
  const soma = spawn(bin, ['run', '--set', `http.listen=127.0.0.1:${port}`, '--set', `data.dir=${dir}/data`,
    '--set', 'llm.provider=custom', '--set', `llm.base_url=http://127.0.0.1:${llmPort}/v1`,
    '--set', 'llm.api_key=test-key', '--set', 'llm.model=fake-model', ...sets.flatMap((x) => ['--set', x])],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: process.env.PATH, ASAN_OPTIONS: 'detect_leaks=1' } });
  soma.stderr.on('data', (d) => { log += d; });
  await waitFor(`http://127.0.0.1:${port}/v1/health`, (s) => s === 200, 15000);
  const exited = new Promise((resolve) => soma.on('exit', (code) => resolve(code)));
  return {
    baseURL: `http://127.0.0.1:${port}/v1`,
    llmURL: `http://127.0.0.1:${llmPort}`,
    apiKey: token,
    log: () => log,
    // the fake LLM's controls (tests/fakes/llm/server.py): modes, stats, reset
    ctl: (o) => fetch(`http://127.0.0.1:${llmPort}/_control`, { method: 'POST', body: JSON.stringify(o) }).then((r) => r.json()),
    stats: () => fetch(`http://127.0.0.1:${llmPort}/_stats`).then((r) => r.json()),
    async stop() {
      soma.kill('SIGTERM');
      const code = await exited;
      llm.kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
      if (code !== 0 || /Sanitizer/.test(log)) throw new Error(`somaagent exited ${code}\n${log}`);
    },
  };
}
