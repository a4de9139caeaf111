// The jobs table: one page at a time, filtered and paged by the leader
// (/api/jobs), so 100,000 jobs cost the browser one page of rows. Events
// for jobs on the page update their rows at once; the page is re-read at
// most twice a second while events arrive, and never otherwise.

import { api, el, throttle, duration, bytes } from './util.js';

const PAGE = 100;
let offset = 0;
let total = 0;
let visible = false;
let dirty = true;
let probe = null;
const rows = new Map();

function filters() {
  return {
    state: document.getElementById('f-state').value,
    q: document.getElementById('f-q').value.trim(),
  };
}

function memCell(j) {
  if (j.peak_rss == null) return el('td', { text: j.mem_request ? `– / ${bytes(j.mem_request)}` : '' });
  const frac = j.mem_request ? Math.min(1, j.peak_rss / j.mem_request) : 0;
  const fill = el('div', { class: frac > 0.9 ? 'high' : '' });
  fill.style.width = `${Math.round(frac * 100)}%`;
  return el('td', { title: `${Math.round(frac * 100)}% of the request` },
    el('span', { class: 'mem' }, fill), `${bytes(j.peak_rss)} / ${bytes(j.mem_request)}`);
}

function rowFor(j) {
  const link = el('a', { href: `#log/${encodeURIComponent(j.id)}`, text: j.id });
  return el('tr', { 'data-id': j.id, 'data-state': j.state },
    el('td', {}, link),
    el('td', {}, el('span', { class: `state s-${j.state}`, text: j.state })),
    el('td', { class: 'num', text: String(j.attempts) }),
    el('td', { text: j.placement }),
    el('td', { class: 'cause', text: j.cause || '' }),
    el('td', { class: 'num', text: duration(j.duration_ms) }),
    el('td', { class: 'num', text: j.cpu_ms == null ? '' : duration(j.cpu_ms) }),
    memCell(j));
}

async function load() {
  dirty = false;
  const f = filters();
  const params = new URLSearchParams({ offset: String(offset), limit: String(PAGE) });
  if (f.state) params.set('state', f.state);
  if (f.q) params.set('q', f.q);
  const page = await api(`/api/jobs?${params}`);
  total = page.total;
  if (offset > 0 && offset >= total) { offset = Math.max(0, total - PAGE); return load(); }
  rows.clear();
  const trs = page.jobs.map((j) => { const tr = rowFor(j); rows.set(j.id, tr); return tr; });
  document.querySelector('#jobs tbody').replaceChildren(...trs);
  document.getElementById('jobs-total').textContent = `${total} job${total === 1 ? '' : 's'}`;
  document.getElementById('page').textContent =
    total ? `${offset + 1}–${Math.min(offset + PAGE, total)}` : '';
  document.getElementById('prev').disabled = offset === 0;
  document.getElementById('next').disabled = offset + PAGE >= total;
  if (probe && probe.firstTableMs == null) probe.firstTableMs = performance.now();
}

const reload = throttle(() => { load().catch(() => { dirty = true; }); }, 500);

let wired = false;
function wire() {
  if (wired) return;
  wired = true;
  const again = () => { offset = 0; reload(); };
  document.getElementById('f-state').addEventListener('change', again);
  document.getElementById('f-q').addEventListener('input', again);
  document.getElementById('prev').addEventListener('click', () => { offset = Math.max(0, offset - PAGE); reload(); });
  document.getElementById('next').addEventListener('click', () => { offset += PAGE; reload(); });
}

export async function show(_arg, p) {
  probe = p;
  visible = true;
  wire();
  await load();
}

export function onEvent(e, isCurrent) {
  visible = isCurrent;
  if (!('job' in e) && e.kind !== 'added' && e.kind !== 'workflow_ended') return;
  const tr = e.job && rows.get(e.job);
  if (tr && e.kind === 'state') {
    tr.dataset.state = e.to;
    const badge = tr.children[1].firstChild;
    badge.textContent = e.to;
    badge.className = `state s-${e.to}`;
  }
  if (!visible) { dirty = true; return; }
  // The rest of the row (attempts, cause, usage) and the filter's matches.
  if (tr || filters().state || e.kind === 'added' || total < offset + PAGE) reload();
}

export function isDirty() { return dirty; }
