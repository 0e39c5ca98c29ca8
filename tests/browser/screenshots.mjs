// Writes the screenshots of docs/ui.md and the README (docs/img/chat.png, docs/img/ops.png) from
// a real server and the fake LLM. Not a test: run it by hand after changing the UI.
//   node tests/browser/screenshots.mjs        (SOMA_BIN defaults to build-san/somaagent)
import { mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchBrowser, startStack } from './harness.mjs';

const out = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'img');
mkdirSync(out, { recursive: true });

const reply = [
  'Here is a plan for the **release notes**:',
  '',
  '1. Collect the merged changes with `git log --oneline v0.1.0..`',
  '2. Group them by subsystem',
  '3. Write one sentence per user-visible change',
  '',
  '```sh',
  'git log --oneline v0.1.0.. | wc -l',
  '```',
  '',
  'See https://keepachangelog.com for a format.',
].join('\n');

const stack = await startStack();
const browser = await launchBrowser();
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 760 } });
  await page.goto(stack.url + '/');
  await page.locator('body[data-ready="1"]').waitFor();
  await stack.llm({ text: 'Hello! How can I help?' });
  await page.locator('#composer-input').fill('Hi there');
  await page.locator('#composer-input').press('Enter');
  await page.locator('.msg-assistant:not(.msg-streaming)', { hasText: 'How can I help' }).waitFor();
  await stack.llm({ text: reply });
  await page.locator('#composer-input').fill('How should I write the release notes?');
  await page.locator('#composer-input').press('Enter');
  await page.locator('.msg-assistant:not(.msg-streaming)', { hasText: 'keepachangelog' }).waitFor();
  await page.screenshot({ path: join(out, 'chat.png') });
  await page.goto(stack.url + '/ops');
  await page.locator('body[data-ready="1"]').waitFor();
  await page.screenshot({ path: join(out, 'ops.png') });
  console.log(`wrote ${out}/chat.png and ${out}/ops.png`);
} finally {
  await browser.close();
  await stack.stop();
}
