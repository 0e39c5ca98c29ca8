// The chat page when its session changes elsewhere (the API, another tab): deleted mid-reply,
// reset while open; and small things of the reply and the composer: a reply stopped before any
// text, the message box at 360 px.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { browserTest, launchBrowser, startStack } from './harness.mjs';

let stack, browser;
const getBrowser = () => browser;

before(async () => {
  [stack, browser] = await Promise.all([startStack(), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

const finals = (page) => page.locator('#message-items .msg-assistant:not(.msg-streaming) .msg-body');
const userTexts = (page) => page.locator('#message-items .msg-user .msg-body').allTextContents();
const sessionOf = (page) => /#\/s\/(.+)$/.exec(page.url())[1];

async function openChat(page) {
  await page.goto(stack.url + '/');
  await page.locator('body[data-ready="1"]').waitFor();
}

async function send(page, text) {
  await page.locator('#composer-input').fill(text);
  await page.locator('#composer-input').press('Enter');
}

browserTest('a session deleted elsewhere mid-reply ends the reply and starts a new chat', getBrowser, async (page) => {
  await stack.llm({ text: Array.from({ length: 300 }, (_, i) => `z${i}`).join(' '), chunks: 300, delay_ms: 30 });
  await openChat(page);
  await send(page, 'doomed');
  await page.locator('.msg-streaming .msg-body:not(:has(.thinking))').waitFor();
  const id = sessionOf(page);
  assert.ok(await page.evaluate((id) => JSON.parse(localStorage.getItem('soma.titles') || '{}')[id], id));
  await stack.api(`/v1/sessions/${id}`, { method: 'DELETE' });
  await page.locator('.toast', { hasText: 'was deleted' }).waitFor({ timeout: 5000 });
  await page.locator('.msg-streaming').waitFor({ state: 'detached', timeout: 5000 });
  assert.ok(await page.locator('#stop').isHidden(), 'Stop is gone with the reply');
  assert.equal(await page.locator('#chat-title').textContent(), 'New chat');
  assert.equal(await page.locator(`#session-list button[data-id="${id}"]`).count(), 0);
  assert.equal(await page.evaluate((id) => JSON.parse(localStorage.getItem('soma.titles') || '{}')[id], id), undefined);
  // what is typed next is a new conversation, never mixed with the deleted one
  await stack.llmReset();
  await send(page, 'after the delete');
  await finals(page).filter({ hasText: 'You said: after the delete' }).waitFor();
  assert.notEqual(sessionOf(page), id);
  assert.deepEqual(await userTexts(page), ['after the delete']);
  assert.equal(await page.locator('.msg-assistant', { hasText: 'z1' }).count(), 0);
});

browserTest('a session reset elsewhere is reloaded: its old messages go', getBrowser, async (page) => {
  await stack.llmReset();
  await openChat(page);
  await send(page, 'message one');
  await finals(page).filter({ hasText: 'You said: message one' }).waitFor();
  const id = sessionOf(page);
  await stack.api(`/v1/sessions/${id}/reset`, { method: 'POST' });
  await page.locator('.toast', { hasText: 'reset elsewhere' }).waitFor({ timeout: 5000 });
  await page.locator('.msg-user').first().waitFor({ state: 'detached', timeout: 5000 });
  await send(page, 'message two');
  await finals(page).filter({ hasText: 'You said: message two' }).waitFor();
  assert.equal(sessionOf(page), id);
  assert.deepEqual(await userTexts(page), ['message two']);
  assert.equal(await finals(page).count(), 1);
  // this tab's own Reset is not announced a second time as one made elsewhere
  page.once('dialog', (d) => d.accept());
  await page.locator('#reset-session').click();
  await page.locator('.toast', { hasText: 'Session reset.' }).waitFor();
  await page.locator('.msg-user').first().waitFor({ state: 'detached', timeout: 5000 });
  await page.waitForTimeout(1000);
  assert.equal(await page.locator('.toast', { hasText: 'reset elsewhere' }).count(), 1);
});

browserTest('a reply stopped before any text says so', getBrowser, async (page) => {
  await stack.llm({ text: 'late reply', chunks: 3, delay_ms: 10, first_delay_ms: 4000 });
  await openChat(page);
  await send(page, 'stop early');
  await page.locator('.msg-streaming .thinking').waitFor();
  await page.locator('#stop').click();
  const stopped = page.locator('.msg-assistant:not(.msg-streaming)', { has: page.locator('.tag', { hasText: 'stopped' }) });
  await stopped.waitFor({ timeout: 10000 });
  assert.equal((await stopped.locator('.msg-body').textContent()).trim(), '(stopped before any text)');
  await stack.llmReset();
});

browserTest('at 360 px the message box shows its placeholder on one unclipped row', getBrowser, async (page) => {
  await openChat(page);
  const box = await page.locator('#composer-input').evaluate((t) => ({ value: t.value, scroll: t.scrollHeight, client: t.clientHeight }));
  assert.equal(box.value, '');
  assert.ok(box.scroll <= box.client, `the placeholder needs ${box.scroll}px in a ${box.client}px box`);
}, { viewport: { width: 360, height: 640 } });
