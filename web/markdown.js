// markdown.js - a small markdown renderer that is safe by construction.
//
// Design: every character of the source is HTML-escaped first (code spans and fenced blocks are
// escaped on their own, before anything else touches them); only then is a limited subset
// turned into tags this file writes itself: paragraphs, line breaks, headings, bold, italic,
// strikethrough, inline code, fenced code blocks, lists, block quotes, rules, and links whose
// target is http(s) (rel="noopener noreferrer", new tab). No attribute ever holds unescaped
// text, so `<script>` or `<img onerror=...>` in a message renders as the text it is.
// The only way the UI writes HTML is setMarkdown(), through the Trusted Types policy
// "soma-markdown" whose createHTML *is* this renderer (the page's CSP allows no other policy),
// so even a bug elsewhere cannot hand raw server text to innerHTML.

const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ESC[c]);
}

// Placeholders for finished HTML (code spans, links) inside a line being formatted: NUL never
// survives into the text (it is stripped from the source), so they cannot be forged.
const SLOT = /\u0000(\d+)\u0000/g;

const NON_SPACE = /\S/;
const WORD = /\w/;

/**
 * Wraps in <tag> each run between a two-character delimiter d and the first closing d after it,
 * as the lazy /d(?=\S)([\s\S]*?\S)d/g would, in linear time: that pattern rescanned to the end
 * of the text for every opener left unclosed (an 80 KB line of "**a " took seconds, on every
 * frame of a streaming reply). A closer is d after a non-space; the closers are listed first
 * (indexOf from one d to the next), then the openers, in order, take the first closer past them
 * with a cursor that only moves forward. words: the __ rule, where d must not touch a word
 * character on its outer side.
 */
function pairs(s, d, tag, words) {
  if (!s.includes(d)) return s;
  const n = s.length;
  const closers = [];
  for (let p = s.indexOf(d, 1); p >= 0; p = s.indexOf(d, p + 1)) {
    if (NON_SPACE.test(s[p - 1]) && !(words && p + 2 < n && WORD.test(s[p + 2]))) closers.push(p);
  }
  let out = '';
  let last = 0;
  let c = 0;
  for (let i = s.indexOf(d); i >= 0 && i + 2 < n; i = s.indexOf(d, i + 1)) {
    if (!NON_SPACE.test(s[i + 2]) || (words && i > 0 && WORD.test(s[i - 1]))) continue;
    while (c < closers.length && closers[c] < i + 3) c++;
    if (c === closers.length) break; // no closer past this opener, nor past any later one
    const p = closers[c];
    out += `${s.slice(last, i)}<${tag}>${s.slice(i + 2, p)}</${tag}>`;
    last = p + 2;
    i = p + 1;
  }
  return out + s.slice(last);
}

// The single-character forms cannot hold their delimiter, so each opener looks only as far as
// the next * or _: linear as they are.
function emphasis(s) {
  s = pairs(pairs(s, '**', 'strong', false), '__', 'strong', true);
  s = s
    .replace(/(^|[^*\w])\*(?=[^\s*])([^*]*?[^\s*])\*(?!\*)/g, '$1<em>$2</em>')
    .replace(/(^|[^\w])_(?=[^\s_])([^_]*?[^\s_])_(?!\w)/g, '$1<em>$2</em>');
  return pairs(s, '~~', 'del', false);
}

// A URL in already-escaped text ends before whitespace, an escaped <, >, " or ', or a placeholder
// (NUL): a URL that ran into a held piece would carry that piece's HTML into its href, where the
// quotes of a held <a href="..."> would end the attribute and the rest become attributes.
const URL_BODY = '(?:(?!&(?:lt|gt|quot|#39);)[^\\s\\u0000])+';
const LINK = new RegExp(`\\[([^\\]\\n]+)\\]\\((https?:\\/\\/${URL_BODY}?)\\)`, 'gi');
const BARE_URL = new RegExp(`(^|[\\s(])(https?:\\/\\/${URL_BODY})`, 'gi');

function anchor(href, label) {
  return `<a href="${href}" rel="noopener noreferrer" target="_blank">${label}</a>`;
}

/** One line (or paragraph) of inline markdown to HTML. */
export function inline(text) {
  const slots = [];
  const hold = (html) => `\u0000${slots.push(html) - 1}\u0000`;
  // 1. code spans, from the raw text: their content is escaped and never formatted
  let s = String(text).replace(/\u0000/g, '').replace(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g,
    (_, ticks, code) => hold(`<code>${escapeHtml(code)}</code>`));
  // 2. everything else is escaped; from here on s has no raw <, >, ", ' or unescaped &
  s = escapeHtml(s);
  // 3. links: [label](http...) and bare http(s) URLs
  s = s.replace(LINK, (_, label, href) => hold(anchor(href, emphasis(label))));
  s = s.replace(BARE_URL, (_, lead, url) => {
    const trail = /[.,;:!?)\]]+$/.exec(url);
    const href = trail ? url.slice(0, -trail[0].length) : url;
    return lead + hold(anchor(href, href)) + (trail ? trail[0] : '');
  });
  // 4. emphasis, then the held pieces back in
  s = emphasis(s);
  // a link's label may hold a code span: resolve nested slots (each only refers to earlier ones)
  for (let depth = 0; depth < 4 && s.includes('\u0000'); depth++) s = s.replace(SLOT, (_, i) => slots[Number(i)]);
  return s;
}

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(?:\s*\1){2,}\s*$/;
const ITEM = /^\s{0,3}(?:([-*+])|(\d{1,9})[.)])\s+(.*)$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;

/** Markdown source to an HTML string (every piece of source text escaped). */
export function markdownToHtml(source) {
  const lines = String(source ?? '').replace(/\u0000/g, '').replace(/\r\n?/g, '\n').split('\n');
  const out = [];
  let para = [];
  let list = null;   // {ordered, start, items: [text]}
  let quote = [];
  const flushPara = () => {
    if (para.length) out.push(`<p>${para.map(inline).join('<br>')}</p>`);
    para = [];
  };
  const flushList = () => {
    if (!list) return;
    const tag = list.ordered ? 'ol' : 'ul';
    const start = list.ordered && list.start !== 1 ? ` start="${list.start}"` : '';
    out.push(`<${tag}${start}>${list.items.map((i) => `<li>${inline(i)}</li>`).join('')}</${tag}>`);
    list = null;
  };
  const flushQuote = () => {
    if (quote.length) out.push(`<blockquote>${markdownToHtml(quote.join('\n'))}</blockquote>`);
    quote = [];
  };
  const flushAll = () => { flushPara(); flushList(); flushQuote(); };

  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = FENCE.exec(line);
    if (fence) {
      flushAll();
      const code = [];
      for (i++; i < lines.length && !lines[i].trimStart().startsWith(fence[1]); i++) code.push(lines[i]);
      const lang = fence[2] ? ` data-lang="${escapeHtml(fence[2])}"` : '';
      out.push(`<pre${lang}><code>${escapeHtml(code.join('\n'))}</code></pre>`);
      continue;
    }
    const q = QUOTE.exec(line);
    if (q) { flushPara(); flushList(); quote.push(q[1]); continue; }
    flushQuote();
    if (!line.trim()) { flushPara(); flushList(); continue; }
    const h = HEADING.exec(line);
    if (h) {
      flushAll();
      out.push(`<h${h[1].length}>${inline(h[2])}</h${h[1].length}>`);
      continue;
    }
    if (RULE.test(line)) { flushAll(); out.push('<hr>'); continue; }
    const item = ITEM.exec(line);
    if (item) {
      flushPara();
      const ordered = !item[1];
      if (list && list.ordered !== ordered) flushList();
      if (!list) list = { ordered, start: ordered ? Number(item[2]) : 1, items: [] };
      list.items.push(item[3]);
      continue;
    }
    if (list && /^\s+\S/.test(line)) { // an indented line continues the last item
      list.items[list.items.length - 1] += ` ${line.trim()}`;
      continue;
    }
    flushList();
    para.push(line.trim());
  }
  flushAll();
  return out.join('');
}

// The policy's createHTML is the renderer itself: TrustedHTML can only come from escaped markdown.
const policy = globalThis.trustedTypes && globalThis.trustedTypes.createPolicy
  ? globalThis.trustedTypes.createPolicy('soma-markdown', { createHTML: (src) => markdownToHtml(src) })
  : { createHTML: (src) => markdownToHtml(src) };

/** Replaces node's content with source rendered as markdown. */
export function setMarkdown(node, source) {
  node.innerHTML = policy.createHTML(source);
}
