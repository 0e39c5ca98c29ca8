// What a hostile message or upload can make the page do: nothing. An uploaded SVG with a
// <script>, opened at its attachment URL, does not run on the UI's origin; markdown a model
// replies with cannot put attributes of its own on the links the renderer writes, nor freeze the
// tab with a long line of unclosed emphasis.
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

// Every element the renderer may write, and the only attributes it ever gives them.
const ALLOWED = { A: ['href', 'rel', 'target'], OL: ['start'], PRE: ['data-lang'] };

/** Renders each source with the page's own markdown.js; returns per source the elements found. */
function render(page, sources) {
  return page.evaluate(async (srcs) => {
    const { setMarkdown } = await import('/assets/markdown.js');
    return srcs.map((src) => {
      const box = document.createElement('div');
      setMarkdown(box, src);
      return [...box.querySelectorAll('*')].map((e) => ({
        tag: e.tagName, attrs: [...e.attributes].map((a) => [a.name, a.value]), text: e.textContent,
      }));
    });
  }, sources);
}

function checkInert(src, elements) {
  for (const { tag, attrs } of elements) {
    for (const [name, value] of attrs) {
      assert.ok((ALLOWED[tag] || []).includes(name), `${JSON.stringify(src)}: <${tag.toLowerCase()}> got attribute ${name}`);
      assert.ok(!/[<>"]/.test(value), `${JSON.stringify(src)}: ${name}=${JSON.stringify(value)} holds markup`);
    }
  }
}

const hrefs = (elements) => elements.filter((e) => e.tag === 'A').map((e) => Object.fromEntries(e.attrs).href);

const INJECTION = 'See http://a.example[x](http://b.example/hidden/autofocus/onfocus=window.onerror=alert;throw[document.domain]//) now';

browserTest('a bare URL glued to a link does not turn the link into attributes', getBrowser, async (page) => {
  await stack.llmReset(); // the fake model echoes the message: the reply carries the text
  await openChat(page);
  await page.locator('#composer-input').fill(INJECTION);
  await page.locator('#composer-input').press('Enter');
  const reply = page.locator('#message-items .msg-assistant:not(.msg-streaming) .msg-body').filter({ hasText: 'You said:' });
  await reply.waitFor();
  const links = await reply.locator('a').evaluateAll((as) => as.map((a) => [...a.attributes].map((x) => x.name).sort()));
  assert.deepEqual(links, [['href', 'rel', 'target'], ['href', 'rel', 'target']]);
  assert.equal(await page.locator('#message-items [onfocus], #message-items [autofocus], #message-items [hidden]').count(), 0);
  assert.deepEqual(await reply.locator('a').evaluateAll((as) => as.map((a) => a.getAttribute('href'))),
    ['http://a.example', 'http://b.example/hidden/autofocus/onfocus=window.onerror=alert;throw[document.domain]//']);
});

browserTest('no markdown gives an element attributes of its own', getBrowser, async (page) => {
  await openChat(page);
  const sources = [
    INJECTION,
    'http://a.example`code` glued',                                      // a code span glued to a URL
    '[x](http://b.example`y`)',                                           // and inside a link target
    '(http://a.example[b](http://c.example/x"onmouseover=alert(1)//))',
    '[a](http://x.example[b](http://y.example/onclick=alert(1)//))',     // a link in a link target
    'http://a.example**[b](http://c.example/" autofocus onfocus="alert(1))**',
    '_http://a.example_[c](http://d.example/onerror=x)_',
    '~~http://a.example~~[c](http://d.example/style=x)',
    '- item http://a.example[c](http://d.example/onblur=x)\n\n3. http://e.example`f`',
    '> quoted http://a.example[c](http://d.example/onload=x)',
    '# http://a.example[c](http://d.example/ontoggle=x)',
  ];
  const rendered = await render(page, sources);
  sources.forEach((src, i) => checkInert(src, rendered[i]));
  // the code span glued to a URL ends the URL; the span is still code
  assert.deepEqual(hrefs(rendered[1]), ['http://a.example']);
  assert.deepEqual(rendered[1].filter((e) => e.tag === 'CODE').map((e) => e.text), ['code']);
  assert.deepEqual(hrefs(rendered[0]),
    ['http://a.example', 'http://b.example/hidden/autofocus/onfocus=window.onerror=alert;throw[document.domain]//']);
});

browserTest('a line of unclosed emphasis renders about as fast as a normal line of its size', getBrowser, async (page) => {
  await openChat(page);
  // 80 KB each; a ratio measured in this run, not an absolute time (the machine may be slow)
  const times = await page.evaluate(async () => {
    const { markdownToHtml } = await import('/assets/markdown.js');
    const time = (src) => {
      const runs = [];
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        markdownToHtml(src);
        runs.push(performance.now() - t0);
      }
      return runs.sort((a, b) => a - b)[1];
    };
    const normal = 'Some **bold** and _it_ text. '.repeat(2800).slice(0, 80000);
    return {
      normal: Math.max(time(normal), 1),
      '**': time('**a '.repeat(20000)),
      __: time(' __a'.repeat(20000)),
      '~~': time('~~a '.repeat(20000)),
    };
  });
  for (const d of ['**', '__', '~~']) {
    const ratio = times[d] / times.normal;
    assert.ok(ratio < 20, `unclosed ${d}: ${times[d].toFixed(0)} ms, ${ratio.toFixed(1)}x a normal line (${times.normal.toFixed(0)} ms)`);
  }
});
