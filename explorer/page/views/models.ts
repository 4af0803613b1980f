/**
 * The Models view and a page per model (#/model/CID or name): each fragment's online replicas and throughput
 * coverage (the summed steps/s its online hosts advertise) as a bar chart, weak fragments in red; the
 * tokenizer, whether the model is synthetic (seeded weights, not a language model), expert groups.
 */
import type { ModelView } from '../../types.js';
import { api } from '../api.js';
import { el, keyValues, link, svg, table } from '../elements.js';
import { bytes, shortId } from '../format.js';
import type { View } from './view.js';

function coverageChart(m: ModelView): HTMLElement {
  const W = 600;
  const H = 150;
  const n = Math.max(1, m.fragments.length);
  const max = Math.max(1e-9, ...m.fragments.map((f) => f.stepsPerSecond));
  const bw = (W - 40) / n;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H + 24}`, role: 'img', 'aria-label': `throughput coverage of ${m.name ?? m.manifestCid}` });
  root.append(svg('line', { x1: 30, y1: H, x2: W, y2: H, stroke: '#2a333d' }));
  for (const f of m.fragments) {
    const h = (H - 16) * (f.stepsPerSecond / max);
    const x = 34 + f.index * bw;
    const bar = svg('rect', { x, y: H - h, width: Math.max(2, bw - 6), height: Math.max(1, h), fill: f.weak ? '#ff5c5c' : '#4fb3ff', 'data-fragment': f.index, 'data-weak': String(f.weak) });
    bar.append(svg('title', {}, `fragment ${f.index}: ${f.replicas} online replicas, ${f.stepsPerSecond.toFixed(1)} steps/s${f.weak ? ' (weak)' : ''}`));
    root.append(bar, svg('text', { x: x + (bw - 6) / 2, y: H + 14, 'text-anchor': 'middle', fill: '#8a96a3', 'font-size': 11 }, `${f.index} ×${f.replicas}`));
  }
  root.append(svg('text', { x: 0, y: 12, fill: '#8a96a3', 'font-size': 11 }, `${max.toFixed(0)} steps/s`));
  return el('div', { class: 'graph' }, root);
}

function modelCard(m: ModelView, detailed: boolean): HTMLElement {
  const weak = m.fragments.filter((f) => f.weak).length;
  const card = el('div', { class: 'panel', 'data-model': m.manifestCid },
    el('h3', {}, link(`model/${m.manifestCid}`, m.name ?? shortId(m.manifestCid)), ' ',
      el('span', { class: `badge ${m.servable ? 'online' : 'offline'}` }, m.servable ? 'servable' : 'missing hosts')),
    keyValues([
      ['manifest', el('span', { class: 'mono' }, detailed ? m.manifestCid : shortId(m.manifestCid))],
      ['tokenizer', m.tokenizer ?? 'unknown'],
      ['synthetic', m.synthetic === undefined ? 'unknown' : m.synthetic ? 'yes: seeded weights, not a language model' : 'no'],
      ['parameters', m.parameters !== undefined ? m.parameters.toLocaleString() : '–'],
      ['fragments', `${m.fragments.length}${weak ? `, ${weak} weak` : ''}`],
      ['expert groups', String(m.expertGroups)],
    ]),
    el('h3', {}, 'Throughput coverage per fragment (steps/s of online hosts; ×replicas)'),
    coverageChart(m),
  );
  if (detailed && m.experts.length) {
    card.append(el('h3', {}, 'Experts (online replicas: the fewest of their fragments\')'), table(['layer', 'top-k', 'expert', 'fragments', 'replicas'], m.experts.flatMap((g) => g.experts.map((e) => ({
      attrs: { class: e.replicas < 2 ? 'weak' : undefined, 'data-expert': `${g.layer}/${e.index}` },
      cells: [g.layer, g.topK, e.index, e.fragments.join(', '), e.replicas],
    })))));
  }
  if (detailed) {
    card.append(el('h3', {}, 'Fragments'), table(['fragment', 'replicas', 'steps/s', 'GFLOPs', 'weights', 'hosts'], m.fragments.map((f) => ({
      attrs: { class: f.weak ? 'weak' : undefined },
      cells: [f.index, f.replicas, f.stepsPerSecond.toFixed(1), f.flops !== undefined ? (f.flops / 1e9).toFixed(3) : '–', bytes(f.weightBytes),
        el('span', {}, ...f.hosts.flatMap((h) => [link(`peer/${h}`, shortId(h), 'mono'), ' ']))],
    }))));
  }
  return card;
}

export function modelsView(root: HTMLElement): View {
  return {
    async refresh() {
      const { models } = await api.models();
      root.replaceChildren(el('h2', {}, `Models — ${models.length}`),
        models.length ? el('div', { class: 'cards' }, ...models.map((m) => modelCard(m, false))) : el('div', { class: 'empty' }, 'No model hosted yet.'));
    },
    close() { /* nothing held */ },
  };
}

export function modelView(root: HTMLElement, id: string): View {
  return {
    async refresh() {
      const m = await api.model(id);
      if (m) root.replaceChildren(el('h2', {}, `Model ${m.name ?? shortId(m.manifestCid)}`), modelCard(m, true));
      else root.replaceChildren(el('h2', {}, 'Model'), el('div', { class: 'empty' }, `No model ${id} is known.`));
    },
    close() { /* nothing held */ },
  };
}
