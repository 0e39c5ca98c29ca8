// Tool calls in the chat page (/): a reply that runs a tool shows a small line per tool.start and
// tool.result (a summary that opens to the arguments, the result or the error), in order before
// the final answer, live and after a reload. The fake LLM is scripted (tests/fakes/llm/tool_script.py).
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

browserTest('a tool call shows as tool lines before the reply', getBrowser, async (page) => {
  await stack.llm({
    tool_script: [
      { tool_calls: [{ name: 'echo', arguments: { text: 'from the tool' }, id: 'call_b' },
        { name: 'no_such_tool', arguments: {}, id: 'call_c' }] },
      { text: 'The echo said {tool}' }],
  });
  await page.goto(stack.url + '/');
  await page.locator('body[data-ready="1"]').waitFor();
  await page.locator('#composer-input').fill('use echo');
  await page.locator('#composer-input').press('Enter');
  await finals(page).filter({ hasText: 'The echo said' }).waitFor();
  const check = async () => {
    const lines = page.locator('#message-items .notice summary');
    assert.deepEqual(await lines.allTextContents(),
      ['Running echo', 'Result of echo', 'Running no_such_tool', 'Failed: no_such_tool']);
    await lines.nth(1).click();
    assert.match(await page.locator('#message-items .notice pre').nth(1).textContent(), /"text": "from the tool"/);
    await lines.nth(3).click();
    assert.match(await page.locator('#message-items .notice pre').nth(3).textContent(), /no such tool/);
    // in the order they happened: user, the four tool lines, the answer
    const order = await page.locator('#message-items > *').evaluateAll((els) => els.map((e) => e.className));
    assert.ok(order.findIndex((c) => c.includes('notice')) > order.findIndex((c) => c.includes('msg-user')), order);
    assert.ok(order.findLastIndex((c) => c.includes('notice')) < order.findIndex((c) => c.includes('msg-assistant')),
      order);
  };
  await check();
  await page.reload();
  await finals(page).filter({ hasText: 'The echo said' }).waitFor();
  await check();
});
