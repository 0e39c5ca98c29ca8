// What a hostile message or upload can make the page do: nothing. An uploaded SVG with a
// <script>, opened at its attachment URL, does not run on the UI's origin.
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

async function openChat(page) {
  await page.goto(stack.url + '/');
  await page.locator('body[data-ready="1"]').waitFor();
}

const SVG = '<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
  + '<script>fetch("/pwned-by-svg")</script><rect width="10" height="10"/></svg>\n';

browserTest('an uploaded SVG opened at its attachment URL runs no script', getBrowser, async (page, context) => {
  const form = new FormData();
  form.append('files', new Blob([SVG], { type: 'image/svg+xml' }), 'evil.svg');
  const r = await fetch(`${stack.direct}/v1/uploads`, { method: 'POST', body: form });
  const body = await r.text();
  assert.equal(r.status, 200, body);
  const [item] = JSON.parse(body);
  assert.equal(item.mime, 'image/svg+xml');
  const pwned = [];
  context.on('request', (req) => { if (req.url().includes('pwned')) pwned.push(req.url()); });
  // a download (the fix) makes goto fail; a rendered SVG (the bug) loads and runs its script
  await page.goto(stack.url + item.path).catch(() => {});
  await page.waitForTimeout(1000);
  assert.deepEqual(pwned, [], 'the SVG\'s script ran with the UI\'s origin');
});
