// The job graph: one node per job template, a scatter of any width drawn
// as one node with a bar of its jobs by state, laid out in layers (a node
// sits one layer right of the deepest job it runs after).

import { api, svg, throttle, STATES } from './util.js';

const W = 190; const H = 54; const GX = 70; const GY = 18;
let visible = false;

function layers(nodes) {
  const byKey = new Map(nodes.map((n) => [n.key, n]));
  const depth = new Map();
  const visit = (n, seen) => {
    if (depth.has(n.key)) return depth.get(n.key);
    if (seen.has(n.key)) return 0;
    seen.add(n.key);
    let d = 0;
    for (const k of n.deps) { const m = byKey.get(k); if (m) d = Math.max(d, visit(m, seen) + 1); }
    depth.set(n.key, d);
    return d;
  };
  for (const n of nodes) visit(n, new Set());
  return depth;
}

async function draw() {
  const g = await api('/api/graph');
  const root = document.getElementById('graph');
  const depth = layers(g.nodes);
  const rowsIn = new Map();
  const pos = new Map();
  for (const n of g.nodes) {
    const d = depth.get(n.key);
    const i = rowsIn.get(d) || 0;
    rowsIn.set(d, i + 1);
    pos.set(n.key, { x: 10 + d * (W + GX), y: 10 + i * (H + GY) });
  }
  const maxRows = Math.max(1, ...rowsIn.values());
  const maxDepth = Math.max(0, ...depth.values());
  root.setAttribute('width', String(20 + (maxDepth + 1) * (W + GX)));
  root.setAttribute('height', String(20 + maxRows * (H + GY)));
  const parts = [];
  for (const n of g.nodes) {
    const to = pos.get(n.key);
    for (const k of n.deps) {
      const from = pos.get(k);
      if (!from) continue;
      const x1 = from.x + W; const y1 = from.y + H / 2; const x2 = to.x; const y2 = to.y + H / 2;
      parts.push(svg('path', { class: 'edge', d: `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}` }));
    }
  }
  for (const n of g.nodes) {
    const p = pos.get(n.key);
    const node = svg('g', { class: 'node', 'data-key': n.key, transform: `translate(${p.x},${p.y})` });
    node.append(svg('rect', { class: 'box', width: W, height: H, rx: 6 }));
    const title = svg('text', { x: 8, y: 18 });
    title.textContent = n.scattered ? `${n.key} ×${n.jobs}` : n.key;
    node.append(title);
    let x = 8;
    const width = W - 16;
    const summary = [];
    for (const s of STATES) {
      const c = n.counts[s] || 0;
      if (!c) continue;
      const w = Math.max(2, (width * c) / Math.max(1, n.jobs));
      node.append(svg('rect', { class: `seg-${s}`, x, y: 26, width: w, height: 8 }));
      x += w;
      summary.push(`${c} ${s}`);
    }
    const sub = svg('text', { x: 8, y: 48, class: 'counts' });
    sub.textContent = summary.join(' · ');
    node.append(sub);
    const tip = svg('title');
    tip.textContent = `${n.key}: ${summary.join(', ')}`;
    node.append(tip);
    parts.push(node);
  }
  root.replaceChildren(...parts);
}

const redraw = throttle(() => { draw().catch(() => {}); }, 1000);

export async function show() { visible = true; await draw(); }

export function onEvent(e, isCurrent) {
  visible = isCurrent;
  if (visible && (e.kind === 'state' || e.kind === 'added')) redraw();
}
