// messages.js - the conversation as a windowed list, so a session of thousands of events opens
// at once and scrolls smoothly with a bounded DOM.
//
// Design: every loaded item is kept as data (items, ordered by seq; a reply still streaming has
// seq = Infinity and sits at the end); only a contiguous window items[lo, hi) of at most MAX_DOM
// of them is rendered. Scrolling near the top renders the batch above (and asks the owner for
// older events from the server once the first loaded item is reached); scrolling near the bottom
// renders the batch below; whatever leaves the window on the far side is removed. Content added
// or removed above the viewport is compensated in scrollTop (overflow-anchor is off), so the
// text under the reader's eyes does not move. While the reader is at the bottom ("pinned"), new
// items are rendered and followed; otherwise they wait, and a "jump to latest" button says so.

const BATCH = 40;        // items rendered per step
const MAX_DOM = 200;     // items rendered at most
const INITIAL = 60;      // items rendered when a session opens
const MARGIN_PX = 600;   // how close to an edge before the next batch is rendered
const PIN_PX = 48;       // "at the bottom" tolerance

export class MessageList {
  /**
   * scroller: the scrolling element; inner: the element holding rendered items;
   * render(item) -> Element; update(item, element) -> true when it brought the element up to
   * date in place (refresh() otherwise replaces it); onNeedOlder(): load events before the
   * first item (async; the owner calls prependOlder); onJump(visible): show or hide the
   * jump-to-latest button.
   */
  constructor(scroller, inner, { render, update, onNeedOlder, onJump }) {
    this.scroller = scroller;
    this.inner = inner;
    this.render = render;
    this.update = update || (() => false);
    this.onNeedOlder = onNeedOlder || (() => {});
    this.onJump = onJump || (() => {});
    this.items = [];
    this.index = new Map();   // key -> item
    this.nodes = new Map();   // key -> rendered element
    this.lo = 0;
    this.hi = 0;
    this.hasOlder = false;
    this.loadingOlder = false;
    this.pinned = true;
    this.frame = 0;
    scroller.addEventListener('scroll', () => this.schedule(), { passive: true });
  }

  get size() { return this.items.length; }
  get rendered() { return this.hi - this.lo; }
  has(key) { return this.index.has(key); }
  get(key) { return this.index.get(key); }

  /** Replaces everything with items (sorted) and shows the newest. */
  reset(items, hasOlder) {
    this.items = items.slice();
    this.index = new Map(items.map((it) => [it.key, it]));
    this.nodes.clear();
    this.inner.replaceChildren();
    this.hasOlder = hasOlder;
    this.loadingOlder = false;
    this.lo = Math.max(0, this.items.length - INITIAL);
    this.hi = this.lo;
    this.appendRange(this.items.length);
    this.pinned = true;
    this.scrollToBottom();
    this.onJump(false);
  }

  /** Older items (sorted, all before the first one) arrived from the server. */
  prependOlder(items, hasOlder) {
    this.loadingOlder = false;
    this.hasOlder = hasOlder;
    const fresh = items.filter((it) => !this.index.has(it.key));
    for (const it of fresh) this.index.set(it.key, it);
    this.items = fresh.concat(this.items);
    this.lo += fresh.length;
    this.hi += fresh.length;
    this.schedule();
  }

  /** Adds an item, or replaces the item with the same key. */
  upsert(item) {
    const pinned = this.atBottom() && this.hi === this.items.length;
    const old = this.index.get(item.key);
    this.index.set(item.key, item);
    if (old) {
      const i = this.items.indexOf(old);
      this.items[i] = item;
      const node = this.nodes.get(item.key);
      if (node) this.keepPinned(pinned, () => { const n = this.render(item); node.replaceWith(n); this.nodes.set(item.key, n); });
      return;
    }
    let i = this.items.length;
    while (i > 0 && before(item, this.items[i - 1])) i--;
    this.items.splice(i, 0, item);
    if (i < this.lo) { this.lo++; this.hi++; return; }
    if (i > this.hi || (i === this.hi && this.hi < this.items.length - 1)) { this.onJump(true); return; }
    // inside the window, or right after its end while the window reaches the end
    this.keepPinned(pinned, () => {
      const n = this.render(item);
      const next = i < this.hi ? this.nodes.get(this.items[i + 1].key) : null;
      this.inner.insertBefore(n, next || null);
      this.nodes.set(item.key, n);
      this.hi++;
      this.trimTop();
    });
  }

  /** Shows the item with this key again (its data changed): updated in place, or re-rendered. */
  refresh(key) {
    const item = this.index.get(key);
    const node = this.nodes.get(key);
    if (!item || !node) return;
    const pinned = this.atBottom() && this.hi === this.items.length;
    this.keepPinned(pinned, () => {
      if (this.update(item, node)) return;
      const n = this.render(item);
      node.replaceWith(n);
      this.nodes.set(key, n);
    });
  }

  remove(key) {
    const item = this.index.get(key);
    if (!item) return;
    this.index.delete(key);
    const i = this.items.indexOf(item);
    this.items.splice(i, 1);
    const node = this.nodes.get(key);
    if (node) { node.remove(); this.nodes.delete(key); this.hi--; }
    else if (i < this.lo) { this.lo--; this.hi--; }
  }

  /** Shows the newest items (the jump-to-latest button). */
  jumpToLatest() {
    if (this.hi < this.items.length) {
      this.nodes.clear();
      this.inner.replaceChildren();
      this.lo = Math.max(0, this.items.length - INITIAL);
      this.hi = this.lo;
      this.appendRange(this.items.length);
    }
    this.pinned = true;
    this.scrollToBottom();
    this.onJump(false);
  }

  scrollToBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  // ---- internals ------------------------------------------------------------------------

  atBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < PIN_PX;
  }

  /** Runs change; if the reader was at the bottom (pinned, measured before), keeps them there. */
  keepPinned(pinned, change) {
    change();
    if (pinned) this.scrollToBottom();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.fill(); });
  }

  fill() {
    const s = this.scroller;
    const bottomGap = s.scrollHeight - s.scrollTop - s.clientHeight;
    if (s.scrollTop < MARGIN_PX) {
      if (this.lo > 0) this.prependBatch();
      else if (this.hasOlder && !this.loadingOlder) { this.loadingOlder = true; this.onNeedOlder(); }
    } else if (bottomGap < MARGIN_PX && this.hi < this.items.length) {
      this.appendRange(Math.min(this.items.length, this.hi + BATCH));
      this.trimTop();
    }
    this.pinned = this.atBottom() && this.hi === this.items.length;
    if (this.pinned) this.onJump(false);
  }

  appendRange(to) {
    const frag = document.createDocumentFragment();
    for (; this.hi < to; this.hi++) {
      const it = this.items[this.hi];
      const n = this.render(it);
      this.nodes.set(it.key, n);
      frag.append(n);
    }
    this.inner.append(frag);
  }

  prependBatch() {
    const s = this.scroller;
    const from = Math.max(0, this.lo - BATCH);
    const frag = document.createDocumentFragment();
    for (let i = from; i < this.lo; i++) {
      const n = this.render(this.items[i]);
      this.nodes.set(this.items[i].key, n);
      frag.append(n);
    }
    const before = s.scrollHeight;
    this.inner.prepend(frag);
    s.scrollTop += s.scrollHeight - before;
    this.lo = from;
    // drop what fell out of the window at the bottom (below the viewport: no compensation)
    while (this.hi - this.lo > MAX_DOM) {
      const key = this.items[--this.hi].key;
      this.nodes.get(key).remove();
      this.nodes.delete(key);
    }
    if (this.hi < this.items.length) this.onJump(true);
  }

  trimTop() {
    if (this.hi - this.lo <= MAX_DOM) return;
    const s = this.scroller;
    const before = s.scrollHeight;
    while (this.hi - this.lo > MAX_DOM) {
      const key = this.items[this.lo++].key;
      this.nodes.get(key).remove();
      this.nodes.delete(key);
    }
    s.scrollTop -= before - s.scrollHeight;
  }
}

/** Item order: by seq (pending replies have Infinity), then by arrival. */
function before(a, b) {
  return a.seq < b.seq;
}
