// The web view's entry point: the header, the tabs, and the one event
// stream (server-sent events from the leader's event hub) that every view
// is updated from. Nothing here polls the server.

import { api, el, STATES, throttle } from './util.js';
import * as jobs from './jobs.js';
import * as graph from './graph.js';
import * as timeline from './timeline.js';
import * as log from './log.js';

const views = { jobs, graph, timeline, log };
// For tests and benchmarks: what the page has done so far.
const probe = { events: 0, lastSeq: 0, firstTableMs: null, connected: false };
window.toilView = probe;

let counts = {};
let current = null;
let ended = false;

function renderHeader(wf) {
  document.getElementById('wf-name').textContent = wf.name;
  document.title = `${wf.name} · toil`;
  const st = document.getElementById('wf-state');
  st.textContent = wf.state;
  st.className = `badge s-${wf.state}`;
}

function renderCounts() {
  const box = document.getElementById('wf-counts');
  box.replaceChildren(...STATES.filter((s) => counts[s]).map((s) =>
    el('span', {}, el('span', { class: `state s-${s}`, text: s }), ` ${counts[s]}`)));
}

function show() {
  const [name, ...rest] = (location.hash.slice(1) || 'jobs').split('/');
  const view = views[name] ? name : 'jobs';
  for (const v of Object.keys(views)) {
    document.getElementById(`view-${v}`).hidden = v !== view;
  }
  for (const a of document.querySelectorAll('nav a')) {
    a.classList.toggle('active', a.dataset.view === view);
  }
  current = view;
  views[view].show(decodeURIComponent(rest.join('/')), probe).catch(report);
}

function report(err) {
  // Shown on the page; a failed request is not a script error.
  const conn = document.getElementById('conn');
  conn.textContent = `error: ${err.message}`;
  conn.classList.remove('live');
}

const refreshWorkflow = throttle(() => {
  api('/api/workflow').then((wf) => { renderHeader(wf); counts = wf.counts; renderCounts(); }).catch(report);
}, 1000);

function onEvent(e) {
  probe.events++;
  probe.lastSeq = e.seq;
  if (e.kind === 'state') {
    counts[e.from] = Math.max(0, (counts[e.from] || 0) - 1);
    counts[e.to] = (counts[e.to] || 0) + 1;
    renderCounts();
  } else if (e.kind === 'added' || e.kind === 'workflow_ended') {
    ended = ended || e.kind === 'workflow_ended';
    refreshWorkflow();
  }
  for (const [name, v] of Object.entries(views)) v.onEvent(e, name === current);
}

function connect(after) {
  const conn = document.getElementById('conn');
  // After the snapshot the header was drawn from; a reconnection resumes
  // from the last event seen (Last-Event-ID).
  const es = new EventSource(`/api/events?after=${after}`);
  es.onopen = () => { conn.textContent = 'live'; conn.classList.add('live'); probe.connected = true; };
  es.onerror = () => {
    conn.classList.remove('live');
    probe.connected = false;
    if (ended) {
      // The leader stops once the workflow has ended: nothing to wait for.
      es.close();
      conn.textContent = 'the workflow has ended and its leader has stopped; this page shows its last state';
    } else {
      conn.textContent = 'reconnecting';
    }
  };
  es.onmessage = (m) => onEvent(JSON.parse(m.data));
  // Fell behind the leader's window of events: reload what is shown.
  es.addEventListener('reset', () => { refreshWorkflow(); show(); });
}

async function start() {
  const wf = await api('/api/workflow');
  renderHeader(wf);
  counts = wf.counts;
  renderCounts();
  window.addEventListener('hashchange', show);
  show();
  connect(wf.seq);
}

start().catch(report);
