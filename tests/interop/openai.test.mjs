// The official `openai` npm client against somaagent's OpenAI-compatible API, unchanged.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startStack } from './harness.mjs';

let stack, client;

before(async () => {
  stack = await startStack();
  client = new OpenAI({ baseURL: stack.baseURL, apiKey: stack.apiKey, maxRetries: 0 });
});

after(async () => { await stack.stop(); });

test('chat.completions.create (not streamed) returns a chat.completion', async () => {
  const r = await client.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'ping' }] });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.match(r.choices[0].message.content, /You said: ping/);
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.ok(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test('chat.completions.create streamed yields chunks whose deltas make the reply', async () => {
  const stream = await client.chat.completions.create({
    model: 'fake-model', stream: true, messages: [{ role: 'user', content: 'stream me' }],
  });
  let text = '';
  let chunks = 0;
  let finish = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    assert.ok(!chunk.usage, 'no usage chunk unless include_usage was asked');
    chunks += 1;
    const c = chunk.choices[0];
    text += c.delta?.content ?? '';
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.ok(chunks >= 3, `got ${chunks} chunks`);
  assert.match(text, /héllo wörld ✓ 🚀/);
  assert.match(text, /You said: stream me$/);
  assert.equal(finish, 'stop');
});

test('stream_options.include_usage adds a final usage chunk', async () => {
  const stream = await client.chat.completions.create({
    model: 'fake-model', stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'count' }],
  });
  let usage = null;
  for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
  assert.ok(usage, 'usage chunk present');
  assert.ok(usage.completion_tokens > 0);
});

test('models.list returns the configured model', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, ['fake-model']);
});

test('a provider error surfaces as an APIError with the status', async () => {
  await fetch(`${stack.llmURL}/_control`, { method: 'POST', body: JSON.stringify({ mode: '401', times: 1 }) });
  await assert.rejects(
    client.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'x' }] }),
    (err) => err instanceof OpenAI.APIError && err.status === 502 && /API key/.test(err.message),
  );
});

test('invalid messages are rejected with OpenAI\'s 400 invalid_request_error', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'fake-model', messages: [] }),
    (err) => err instanceof OpenAI.BadRequestError && err.status === 400 && err.type === 'invalid_request_error' &&
      err.param === 'messages',
  );
});

const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather', description: 'Weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

test('tools: a tool call comes back as the SDK expects it, then the tool result is answered', async () => {
  const messages = [{ role: 'user', content: 'weather in Paris' }];
  const r = await client.chat.completions.create({ model: 'fake-model', messages, tools: [weatherTool] });
  const msg = r.choices[0].message;
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  assert.equal(msg.tool_calls.length, 1);
  const call = msg.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { echo: 'weather in Paris' });
  // the usual second turn: the assistant's call and the tool's result, no tools offered again
  const follow = await client.chat.completions.create({
    model: 'fake-model',
    messages: [...messages, msg, { role: 'tool', tool_call_id: call.id, content: '{"temp_c": 18}' }],
  });
  assert.equal(follow.choices[0].finish_reason, 'stop');
  assert.match(follow.choices[0].message.content, /You said: weather in Paris/);
});

test('tools streamed: the SDK assembles the call from its deltas', async () => {
  const runner = client.beta?.chat?.completions?.stream
    ? client.beta.chat.completions.stream({ model: 'fake-model', messages: [{ role: 'user', content: 'Oslo?' }], tools: [weatherTool] })
    : null;
  if (runner) {
    const final = await runner.finalChatCompletion();
    const call = final.choices[0].message.tool_calls[0];
    assert.equal(call.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.function.arguments), { echo: 'Oslo?' });
    assert.equal(final.choices[0].finish_reason, 'tool_calls');
    return;
  }
  const stream = await client.chat.completions.create({
    model: 'fake-model', stream: true, tools: [weatherTool], messages: [{ role: 'user', content: 'Oslo?' }],
  });
  let name = '', args = '', finish = null;
  for await (const chunk of stream) {
    for (const tc of chunk.choices[0]?.delta?.tool_calls ?? []) {
      name += tc.function?.name ?? '';
      args += tc.function?.arguments ?? '';
    }
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(name, 'get_weather');
  assert.deepEqual(JSON.parse(args), { echo: 'Oslo?' });
  assert.equal(finish, 'tool_calls');
});
