// The official `@a2a-js/sdk` 1.3 client against somaagent's A2A endpoint: by default it reads the
// card's supportedInterfaces and speaks spec 1.0 (SendMessage, SendStreamingMessage, GetTask);
// with legacyCompat and the card's v0.3 fields (the card without supportedInterfaces) it speaks
// spec 0.3 (message/send, message/stream, tasks/get). A refusal by our limits reaches the client as
// a JSON-RPC error with our words, not as a bare HTTP failure.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Role, TaskState } from '@a2a-js/sdk';
import { ClientFactory, DefaultAgentCardResolver, JsonRpcTransportFactory } from '@a2a-js/sdk/client';
import { startStack } from './harness.mjs';

let stack, origin, fetchImpl;
const methods = []; // the JSON-RPC methods the default client sent

before(async () => {
  stack = await startStack();
  origin = stack.baseURL.replace(/\/v1$/, '');
  // the API key as every /v1 route takes it
  fetchImpl = (url, init = {}) => (init.body && methods.push(JSON.parse(init.body).method), fetch(url, { ...init, headers: { ...init.headers, Authorization: `Bearer ${stack.apiKey}` } }));
});

after(async () => { await stack.stop(); });

function factory(legacy) {
  const legacyCompat = legacy ? { enabled: true } : undefined;
  return new ClientFactory({
    transports: [new JsonRpcTransportFactory({ fetchImpl, legacyCompat })],
    cardResolver: new DefaultAgentCardResolver({ fetchImpl, legacyCompat }),
  });
}

const message = (text) => ({
  message: { messageId: `m-${Math.random()}`, role: Role.ROLE_USER, parts: [{ content: { $case: 'text', value: text } }] },
});

const textOf = (msg) => msg.parts.map((p) => p.content.value).join('');

async function sendAndStream(client, tag) {
  const task = await client.sendMessage(message(`ping ${tag}`));
  assert.equal(task.status.state, TaskState.TASK_STATE_COMPLETED);
  assert.match(textOf(task.status.message), new RegExp(`You said: ping ${tag}$`));
  assert.equal(task.status.message.role, Role.ROLE_AGENT);
  const again = await client.getTask({ id: task.id });
  assert.equal(again.id, task.id);
  assert.equal(again.status.state, TaskState.TASK_STATE_COMPLETED);

  const kinds = [];
  let text = '';
  let last;
  for await (const ev of client.sendMessageStream(message(`stream ${tag}`))) {
    kinds.push(ev.payload ? ev.payload.$case : ev.kind ?? Object.keys(ev)[0]);
    last = ev;
    const art = ev.payload?.$case === 'artifactUpdate' ? ev.payload.value : ev.artifact ? ev : null;
    if (art) text += textOf(art.artifact);
  }
  return { kinds, text, last };
}

test('spec 1.0 (the 1.3 client default): send, get and stream get the fake LLM reply', async () => {
  const client = await factory(false).createFromUrl(origin);
  assert.equal(client.transport?.protocolVersion ?? '1.0', '1.0');
  const { kinds, text, last } = await sendAndStream(client, 'v10');
  assert.deepEqual(kinds.slice(0, 2), ['task', 'statusUpdate'], kinds.join());
  assert.ok(kinds.filter((k) => k === 'artifactUpdate').length >= 3, kinds.join());
  assert.equal(kinds.at(-1), 'statusUpdate');
  assert.equal(last.payload.value.status.state, TaskState.TASK_STATE_COMPLETED);
  assert.match(text, /You said: stream v10$/);
  assert.deepEqual([...new Set(methods)], ['SendMessage', 'GetTask', 'SendStreamingMessage']);
});

test('spec 0.3 (legacyCompat, the card without supportedInterfaces): send, get and stream', async () => {
  const card = await (await fetchImpl(`${origin}/.well-known/agent-card.json`)).json();
  delete card.supportedInterfaces; // what a v0.3-only client reads: url, preferredTransport, protocolVersion
  const seen = [];
  const spy = (url, init = {}) => { if (init.body) seen.push(JSON.parse(init.body).method); return fetchImpl(url, init); };
  const legacyCompat = { enabled: true };
  const f = new ClientFactory({
    transports: [new JsonRpcTransportFactory({ fetchImpl: spy, legacyCompat })],
    cardResolver: new DefaultAgentCardResolver({ fetchImpl: spy, legacyCompat }),
  });
  const client = await f.createFromAgentCard(card);
  const { kinds, text } = await sendAndStream(client, 'v03');
  assert.deepEqual([...new Set(seen)], ['message/send', 'tasks/get', 'message/stream']);
  assert.equal(kinds[0], 'task', kinds.join());
  assert.equal(kinds.at(-1), 'statusUpdate', kinds.join());
  assert.match(text, /You said: stream v03$/);
});

test('a refusal by the token budget is a JSON-RPC error the client shows with our words', async () => {
  const limited = await startStack({ sets: ['limits.llm_tokens_per_day=1'] });
  try {
    const origin2 = limited.baseURL.replace(/\/v1$/, '');
    const fetch2 = (url, init = {}) => fetch(url, { ...init, headers: { ...init.headers, Authorization: `Bearer ${limited.apiKey}` } });
    const client = await new ClientFactory({
      transports: [new JsonRpcTransportFactory({ fetchImpl: fetch2 })],
      cardResolver: new DefaultAgentCardResolver({ fetchImpl: fetch2 }),
    }).createFromUrl(origin2);
    await client.sendMessage(message('spend the budget'));
    const refused = (e) => {
      const err = e.cause ?? e; // a stream's error event wraps the JSON-RPC error as its cause
      assert.equal(err.envelopeCode, -32051, String(e));
      assert.match(err.message, /limits\.llm_tokens_per_day/);
      assert.equal(err.data[0].reason, 'LLM_BUDGET_EXCEEDED');
      return true;
    };
    await assert.rejects(client.sendMessage(message('over')), refused);
    await assert.rejects((async () => { for await (const _ of client.sendMessageStream(message('over'))) { /* none */ } })(), refused);
  } finally {
    await limited.stop();
  }
});
