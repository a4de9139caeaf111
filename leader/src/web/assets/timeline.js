// The timeline: one bar per attempt, coloured by how it ended, drawn from
// /api/timeline once and then grown from the event stream (a started
// attempt adds a bar that lengthens until its end event).

import { api, svg, throttle, duration } from './util.js';

const ROW = 16; const LABEL = 220; const MAX_DRAWN = 3000;
const bars = new Map();
let visible = false;
let skew = 0; // server clock minus this clock, ms
let total = 0;
let ticker = null;

const key = (job, n) => `${job}#${n}`;
const now = () => Date.now() + skew;

// The leader's record of an attempt replaces what events suggested.
function fromLeader(b) {
  bars.set(key(b.job, b.n), b);
}

// An event updates a bar; its start stays where it was first seen (an end
// event for an attempt this page never saw start begins a bar there).
function fromEvent(b) {
  const k = key(b.job, b.n);
  const old = bars.get(k);
  bars.set(k, old ? { ...old, ...b, start_ms: old.start_ms } : b);
}

function draw() {
  const root = document.getElementById('timeline');
  let list = [...bars.values()].sort((a, b) => a.start_ms - b.start_ms || a.n - b.n);
  if (list.length > MAX_DRAWN) list = list.slice(list.length - MAX_DRAWN);
  const t = now();
  const t0 = list.length ? list[0].start_ms : t;
  const t1 = Math.max(t0 + 1000, ...list.map((b) => b.end_ms || t));
  const width = Math.max(600, (root.parentElement.clientWidth || 900) - 20);
  const scale = (width - LABEL - 10) / (t1 - t0);
  root.setAttribute('width', String(width));
  root.setAttribute('height', String(30 + list.length * ROW));
  const parts = [];
  for (let i = 0; i <= 4; i++) {
    const x = LABEL + ((width - LABEL - 10) * i) / 4;
    parts.push(svg('line', { class: 'axis', x1: x, x2: x, y1: 0, y2: 20 + list.length * ROW }));
    const label = svg('text', i < 4 ? { x: x + 2, y: 12 } : { x: x - 2, y: 12, 'text-anchor': 'end' });
    label.textContent = duration(Math.round(((t1 - t0) * i) / 4));
    parts.push(label);
  }
  list.forEach((b, i) => {
    const y = 20 + i * ROW;
    const end = b.end_ms || t;
    const name = svg('text', { x: 0, y: y + 11 });
    name.textContent = `${b.job} #${b.n}`;
    const rect = svg('rect', {
      class: `bar ${b.outcome}`, 'data-job': b.job, 'data-n': String(b.n),
      x: LABEL + (b.start_ms - t0) * scale, y: y + 2,
      width: Math.max(2, (end - b.start_ms) * scale), height: ROW - 4, rx: 2,
    });
    const tip = svg('title');
    tip.textContent = `${b.job} attempt ${b.n}: ${b.cause || b.outcome}, ${duration(end - b.start_ms)}`;
    rect.append(tip);
    parts.push(name, rect);
  });
  root.replaceChildren(...parts);
  const shown = list.length < bars.size ? `the latest ${list.length} of ` : '';
  document.getElementById('tl-note').textContent =
    `${shown}${Math.max(total, bars.size)} attempt${bars.size === 1 ? '' : 's'}`;
  const running = list.some((b) => !b.end_ms);
  if (running && visible && !ticker) {
    // Running bars lengthen with the clock: a local redraw, no request.
    ticker = setInterval(() => redraw(), 1000);
  } else if ((!running || !visible) && ticker) {
    clearInterval(ticker);
    ticker = null;
  }
}

const redraw = throttle(draw, 250);

export async function show() {
  visible = true;
  const tl = await api('/api/timeline');
  skew = tl.now_ms - Date.now();
  total = tl.total;
  for (const b of tl.bars) fromLeader(b);
  draw();
}

export function onEvent(e, isCurrent) {
  visible = isCurrent;
  if (e.kind === 'started') {
    fromEvent({ job: e.job, n: e.attempt, start_ms: e.time_ms, end_ms: 0, outcome: 'running' });
  } else if (e.kind === 'ended') {
    fromEvent({ job: e.job, n: e.attempt, start_ms: e.time_ms, end_ms: e.time_ms, outcome: e.outcome, cause: e.cause });
  } else {
    return;
  }
  if (visible) redraw();
}
