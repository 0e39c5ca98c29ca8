// The official `openai` npm client against what OpenAI's own API does: errors in its shape, no
// retries stacked on ours, a spent budget that does not hang the SDK, models.retrieve, an
// assistant turn of tool calls without content, usage for a Groq-style provider, big images.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startStack } from './harness.mjs';

const msgs = [{ role: 'user', content: 'hi' }];

// Runs fn(stack, client) against a stack of its own (sets: its settings), then stops it.
async function withStack(sets, fn, clientOpts = { maxRetries: 0 }) {
  const stack = await startStack({ sets });
  try {
    await fn(stack, new OpenAI({ baseURL: stack.baseURL, apiKey: stack.apiKey, ...clientOpts }));
  } finally {
    await stack.stop();
  }
}

// The rejection of p, or a failure when it settles otherwise or takes over ms.
async function rejection(p, ms = 10000) {
  let timer;
  const late = new Promise((resolve) => { timer = setTimeout(() => resolve('late'), ms); });
  const got = await Promise.race([p.then(() => 'ok', (e) => e), late]);
  clearTimeout(timer);
  assert.ok(got instanceof Error, `expected a rejection within ${ms} ms, got ${got}`);
  return got;
}

test('a spent daily token budget fails at once: x-should-retry false, insufficient_quota', async () => {
  await withStack(['limits.llm_tokens_per_day=5'], async (_s, client) => {
    await client.chat.completions.create({ model: 'fake-model', messages: msgs });
    const t = Date.now();
    // the SDK's defaults (2 retries): it would sleep the Retry-After (to midnight UTC) otherwise
    const e = await rejection(client.chat.completions.create({ model: 'fake-model', messages: msgs }), 5000);
    assert.ok(Date.now() - t < 5000);
    assert.equal(e.status, 429);
    assert.equal(e.headers.get('x-should-retry'), 'false');
    assert.ok(Number(e.headers.get('retry-after')) > 0, 'Retry-After stays, for other clients');
    assert.equal(e.type, 'insufficient_quota');
    assert.equal(e.code, 'llm_budget_exceeded');
  }, { maxRetries: 2 });
});

test('provider failures are not retried by the SDK on top of our llm.max_retries', async () => {
  await withStack(['llm.max_retries=1', 'llm.backoff_ms=50', 'llm.timeout_s=2'], async (s, client) => {
    for (const [mode, status] of [['500', 502], ['hang', 504]]) {
      await s.ctl({ mode, times: -1 });
      const before = (await s.stats()).requests;
      const e = await rejection(client.chat.completions.create({ model: 'fake-model', messages: msgs }), 15000);
      assert.equal(e.status, status, mode);
      assert.equal(e.headers.get('x-should-retry'), 'false', mode);
      const calls = (await s.stats()).requests - before;
      // 500: ours, once and once more; a silent provider is not asked again (it may have billed)
      assert.equal(calls, mode === '500' ? 2 : 1, `${mode}: ${calls} provider calls`);
      await s.ctl({ mode: 'ok', times: -1 });
    }
    await s.ctl({ mode: '500', times: -1 });
    const r = await fetch(`${s.baseURL}/llm/invoke`, { method: 'POST', headers: { authorization: `Bearer ${s.apiKey}`, 'content-type': 'application/json' }, body: JSON.stringify({ messages: msgs }) });
    assert.equal(r.status, 502);
    assert.equal(r.headers.get('x-should-retry'), 'false');
    await s.ctl({ mode: 'ok', times: -1 });
  }, { maxRetries: 2 });
});

test('models.retrieve gives the served model, and OpenAI\'s 404 for another', async () => {
  await withStack([], async (_s, client) => {
    const m = await client.models.retrieve('fake-model');
    assert.deepEqual([m.id, m.object], ['fake-model', 'model']);
    const e = await rejection(client.models.retrieve('gpt-nope'));
    assert.equal(e.status, 404);
    assert.equal(e.code, 'model_not_found');
    assert.equal(e.type, 'invalid_request_error');
    assert.equal(e.param, 'model');
  });
});

test('an assistant turn of tool calls without content is accepted (text and tree paths)', async () => {
  await withStack([], async (s, client) => {
    const turns = [...msgs,
      { role: 'assistant', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '{"t":18}' },
      { role: 'assistant', refusal: 'no' }, { role: 'user', content: 'and now?' }];
    const r = await client.chat.completions.create({ model: 'fake-model', messages: turns });
    assert.equal(r.choices[0].finish_reason, 'stop');
    // an escaped key sends the body the tree way (llm_ask.h)
    const body = JSON.stringify({ model: 'fake-model', messages: turns }).replace('"model"', '"mod\\u0065l"');
    const t = await fetch(`${s.baseURL}/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${s.apiKey}`, 'content-type': 'application/json' }, body });
    assert.equal(t.status, 200, await t.clone().text());
    const e = await rejection(client.chat.completions.create({ model: 'fake-model', messages: [...msgs, { role: 'user' }] }));
    assert.equal(e.status, 400);
    assert.match(e.message, /developer/);
  });
});

test('include_usage gets a usage chunk when the provider reports it Groq-style (x_groq.usage)', async () => {
  await withStack([], async (s, client) => {
    await s.ctl({ groq_usage: true });
    const chunks = [];
    for await (const c of await client.chat.completions.create({ model: 'fake-model', messages: msgs, stream: true, stream_options: { include_usage: true } })) chunks.push(c);
    const last = chunks.at(-1);
    assert.ok(last.usage, `no usage chunk: ${JSON.stringify(last)}`);
    assert.deepEqual(last.choices, []);
    assert.equal(last.object, 'chat.completion.chunk');
    assert.ok(last.usage.completion_tokens > 0 && last.usage.total_tokens === last.usage.prompt_tokens + last.usage.completion_tokens);
    assert.equal(chunks.filter((c) => c.usage).length, 1);
    const plain = [];
    for await (const c of await client.chat.completions.create({ model: 'fake-model', messages: msgs, stream: true })) plain.push(c);
    assert.ok(!plain.some((c) => c.usage), 'no usage chunk unless asked');
  });
});

test('errors on the OpenAI routes have OpenAI\'s shape and statuses', async () => {
  await withStack([], async (s, client) => {
    for (const [params, param, code] of [
      [{ messages: msgs, temperature: 3 }, 'temperature', 'invalid_parameters'],
      [{ messages: [] }, 'messages', 'invalid_messages'],
      [{ messages: [{ role: 'function', content: 'x', name: 'f' }] }, 'messages[0]', 'invalid_messages']]) {
      const e = await rejection(client.chat.completions.create({ model: 'fake-model', ...params }));
      assert.equal(e.status, 400, JSON.stringify(e.error));
      assert.equal(e.constructor.name, 'BadRequestError');
      assert.deepEqual([e.type, e.param, e.code], ['invalid_request_error', param, code]);
      assert.ok(e.error.request_id, 'our envelope stays inside');
    }
    // a provider's refusal of the client's request keeps its status, type, param and code
    await s.ctl({ mode: '404' });
    let e = await rejection(client.chat.completions.create({ model: 'gpt-nope', messages: msgs }));
    assert.deepEqual([e.status, e.type, e.param, e.code], [404, 'invalid_request_error', 'model', 'model_not_found']);
    assert.match(e.message, /The model `gpt-nope` does not exist/);
    assert.doesNotMatch(e.message, /input too long/);
    await s.ctl({ mode: '400' });
    e = await rejection(client.chat.completions.create({ model: 'fake-model', messages: msgs }));
    assert.deepEqual([e.status, e.type, e.param], [400, 'invalid_request_error', 'tools[0]']);
    assert.equal(e.code, 'llm_bad_request', 'our code where the provider gave none');
  });
});

test('a chat completion with a photo over http.max_body passes; beyond llm.max_request_mb a 413 names it', async () => {
  await withStack(['llm.max_request_mb=3'], async (s, client) => {
    const photo = (n) => [{ role: 'user', content: [{ type: 'text', text: 'what is this' }, { type: 'image_url', image_url: { url: 'data:image/jpeg;base64,' + Buffer.alloc(n, 7).toString('base64') } }] }];
    const r = await client.chat.completions.create({ model: 'fake-model', messages: photo(1_500_000) });
    assert.equal(r.choices[0].finish_reason, 'stop');
    const big = JSON.stringify({ model: 'fake-model', messages: photo(3_000_000) });
    const t = await fetch(`${s.baseURL}/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${s.apiKey}`, 'content-type': 'application/json' }, body: big }).catch((err) => err);
    assert.equal(t.status, 413, String(t));
    assert.match((await t.json()).error.message, /llm\.max_request_mb/);
    // other routes keep http.max_body
    const other = await fetch(`${s.baseURL}/llm/invoke`, { method: 'POST', headers: { authorization: `Bearer ${s.apiKey}`, 'content-type': 'application/json' }, body: JSON.stringify({ messages: photo(1_500_000) }) }).catch((err) => err);
    assert.equal(other.status, 413, String(other));
  });
});
