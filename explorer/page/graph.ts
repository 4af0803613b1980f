/**
 * The pipeline graph (SVG): the gateway and every supplier, placed in columns by the first fragment they host;
 * an edge where one passed activations to the next in some request's route, its width growing with the
 * requests that took it. Offline suppliers are drawn grey; each node links to its peer page.
 */
import type { PeerView, TrafficEdge } from '../types.js';
import { el, svg } from './elements.js';
import { shortId } from './format.js';

const W = 960;

export function pipelineGraph(peers: PeerView[], edges: TrafficEdge[]): HTMLElement {
  const columns = new Map<number, PeerView[]>();
  for (const p of peers) {
    const first = p.fragments.length ? Math.min(...p.fragments.map((f) => f.index)) : 0;
    columns.set(first, [...(columns.get(first) ?? []), p]);
  }
  const order = [...columns.keys()].sort((a, b) => a - b);
  const rows = Math.max(1, ...[...columns.values()].map((c) => c.length));
  const height = Math.max(130, rows * 78 + 20);
  const colWidth = W / (order.length + 2);
  const pos = new Map<string, { x: number; y: number }>();
  pos.set('gateway', { x: colWidth * 0.6, y: height / 2 });
  order.forEach((index, ci) => {
    const col = columns.get(index)!;
    col.forEach((p, ri) => pos.set(p.peerId, { x: colWidth * (ci + 1.5), y: (height / (col.length + 1)) * (ri + 1) }));
  });
  const root = svg('svg', { viewBox: `0 0 ${W} ${height}`, role: 'img', 'aria-label': 'pipeline graph' });
  const max = Math.max(1, ...edges.map((e) => e.requests));
  for (const e of edges) {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    if (!a || !b) continue;
    const back = e.to === 'gateway';
    const bend = back ? height * 0.42 : 0;
    const d = back ? `M${a.x},${a.y} C${a.x + 60},${a.y + bend} ${b.x - 60},${b.y + bend} ${b.x},${b.y}` : `M${a.x},${a.y} L${b.x},${b.y}`;
    const path = svg('path', { d, fill: 'none', stroke: back ? '#3a4b5c' : '#4fb3ff', 'stroke-opacity': 0.75, 'stroke-width': 1.5 + 10 * (e.requests / max) });
    path.append(svg('title', {}, `${shortId(e.from)} → ${shortId(e.to)}: ${e.requests} requests, ${e.steps} steps`));
    root.append(path);
  }
  const nodes: { id: string; label: string; sub: string; colour: string; href?: string }[] = [{ id: 'gateway', label: 'gateway', sub: 'client', colour: '#d8dee6' }];
  for (const p of peers) {
    const frags = p.fragments.map((f) => f.index);
    const [lo, hi] = [Math.min(...frags), Math.max(...frags)];
    nodes.push({
      id: p.peerId, label: shortId(p.peerId), sub: !frags.length ? 'no fragment' : lo === hi ? `fragment ${lo}` : `fragments ${lo}–${hi}`,
      colour: !p.online ? '#56606b' : p.banned ? '#ffb347' : '#3ccf7a', href: `#/peer/${p.peerId}`,
    });
  }
  for (const n of nodes) {
    const at = pos.get(n.id);
    if (!at) continue;
    const g = svg('g', { 'data-node': n.id });
    g.append(svg('circle', { cx: at.x, cy: at.y - 8, r: 10, fill: n.colour }), svg('text', { x: at.x, y: at.y + 16, 'text-anchor': 'middle' }, n.label), svg('text', { x: at.x, y: at.y + 29, 'text-anchor': 'middle', fill: '#8a96a3', 'font-size': 10 }, n.sub));
    if (n.href) {
      const a = svg('a', { href: n.href });
      a.append(g);
      root.append(a);
    } else root.append(g);
  }
  return el('div', { class: 'panel graph' }, el('h3', {}, 'Pipelines: who passes activations to whom (edge width: requests)'), root);
}
