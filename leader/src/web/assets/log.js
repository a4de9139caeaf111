// A job's log: read through the leader's FollowLogs (/api/log, server-sent
// events), followed while the attempt runs and complete once it has ended.
// A retry of the job shown switches to the new attempt.

import { api, el } from './util.js';

const MAX_CHARS = 4 << 20; // keep the page responsive on huge logs
let source = null;
let jobId = '';
let attempt = 0; // 0: the latest
let pinned = false;
let shownAttempt = 0;
let chars = 0;
let statusText = '';

function stop() { if (source) { source.close(); source = null; } }

function status(text) {
  statusText = text;
  const s = document.getElementById('log-status');
  if (s) s.textContent = text;
}

function follow() {
  stop();
  const pre = document.getElementById('log');
  pre.replaceChildren();
  chars = 0;
  const params = new URLSearchParams({ job: jobId, attempt: String(attempt) });
  source = new EventSource(`/api/log?${params}`);
  status('following');
  source.onmessage = (m) => {
    const d = JSON.parse(m.data);
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(document.createTextNode(d.text));
    chars += d.text.length;
    while (chars > MAX_CHARS && pre.firstChild) { chars -= pre.firstChild.textContent.length; pre.firstChild.remove(); }
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  };
  source.addEventListener('end', () => { stop(); status('complete'); });
  source.addEventListener('problem', (m) => { stop(); status(JSON.parse(m.data).message); });
}

async function header() {
  const head = document.getElementById('log-head');
  const job = await api(`/api/job?id=${encodeURIComponent(jobId)}`);
  shownAttempt = attempt || job.attempts.length;
  const buttons = job.attempts.map((a) => el('button', {
    type: 'button', class: a.n === shownAttempt ? 'active' : '', text: `attempt ${a.n}`,
    title: a.cause || 'running',
    onclick: () => { attempt = a.n; pinned = true; header().catch(() => {}); follow(); },
  }));
  head.replaceChildren(
    el('h2', { text: job.id }),
    el('p', {}, el('span', { class: `state s-${job.state}`, text: job.state }), ' ',
      ...buttons, ' ', el('span', { id: 'log-status', class: 'muted', text: statusText })),
  );
}

export async function show(arg) {
  if (!arg) return;
  if (arg !== jobId || !source) {
    jobId = arg;
    attempt = 0;
    pinned = false;
    follow();
  }
  await header();
}

export function onEvent(e, isCurrent) {
  if (e.job !== jobId || !jobId) return;
  if (!isCurrent) { if (e.kind === 'started') stop(); return; }
  if (e.kind === 'started' && !pinned && e.attempt !== shownAttempt) {
    follow();
  }
  if (e.kind === 'state' || e.kind === 'started' || e.kind === 'ended') header().catch(() => {});
}
