/** The Network view: the pipeline graph and every supplier with hardware, benchmark, price, stake, online state, limits, fragments. */
import type { PeerView } from '../../types.js';
import { api } from '../api.js';
import { el, link, table, type Child } from '../elements.js';
import { bytes, shortId, tokens } from '../format.js';
import { pipelineGraph } from '../graph.js';
import type { View } from './view.js';

/** The online/offline/banned badge of a supplier. */
export function stateBadge(p: PeerView): HTMLElement {
  if (!p.online) return el('span', { class: 'badge offline' }, 'offline');
  if (p.banned) return el('span', { class: 'badge banned' }, 'banned');
  return el('span', { class: 'badge online' }, 'online');
}

export function hardwareText(p: PeerView): string {
  const hw = p.hardware;
  if (!hw) return '–';
  const gpus = hw.gpus.length ? hw.gpus.map((g) => `${g.name} ${bytes(g.memoryTotalBytes)}`).join(', ') : 'no GPU';
  return `${hw.cpuCores}× ${hw.cpuModel.slice(0, 32)} · ${gpus}`;
}

export function limitsText(p: PeerView): string {
  const l = p.limits;
  if (!l) return '–';
  return [`${l.maxSessions} sessions`, l.maxMemoryBytes ? `${bytes(l.maxMemoryBytes)} mem` : '', l.gpuShare ? `GPU ${Math.round(l.gpuShare * 100)}%` : '', l.hours ? `hours ${l.hours}` : '', l.paused ? 'PAUSED' : ''].filter(Boolean).join(' · ');
}

export function fragmentsText(p: PeerView): Child {
  if (!p.fragments.length) return '–';
  const byModel = new Map<string, number[]>();
  for (const f of p.fragments) byModel.set(f.manifestCid, [...(byModel.get(f.manifestCid) ?? []), f.index]);
  const out = el('span');
  for (const [cid, idx] of byModel) out.append(link(`model/${cid}`, `${shortId(cid)}`), ` [${idx.sort((a, b) => a - b).join(',')}] `);
  return out;
}

export function networkView(root: HTMLElement): View {
  return {
    async refresh() {
      const net = await api.network();
      const online = net.peers.filter((p) => p.online).length;
      const rows = net.peers.map((p) => ({
        attrs: { 'data-peer': p.peerId, 'data-online': String(p.online) },
        cells: [
          stateBadge(p), link(`peer/${p.peerId}`, shortId(p.peerId), 'mono'), hardwareText(p),
          p.benchmark?.executionProvider ?? p.hardware?.executionProviders[0] ?? '–',
          p.hardware ? `${bytes(p.hardware.memoryFreeBytes)} free / ${bytes(p.hardware.memoryTotalBytes)}` : '–',
          p.benchmark ? `${p.benchmark.matmulGflops.toFixed(1)} GFLOP/s` : '–',
          `${tokens(p.pricePerGflop)} /GFLOP`, p.stake !== undefined ? tokens(p.stake) : p.stakingAddress ? 'bound' : 'unstaked',
          limitsText(p), fragmentsText(p),
        ] as Child[],
      }));
      root.replaceChildren(
        el('h2', {}, `Network — ${net.peers.length} suppliers, ${online} online`),
        pipelineGraph(net.peers, net.edges),
        el('div', { class: 'panel' }, net.peers.length
          ? table(['state', 'peer', 'hardware', 'provider', 'memory', 'benchmark', 'price', 'stake', 'share limits', 'fragments'], rows)
          : el('div', { class: 'empty' }, 'No supplier records found yet.')),
      );
    },
    close() { /* nothing held */ },
  };
}
