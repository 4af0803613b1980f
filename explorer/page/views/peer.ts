/** A page per supplier (#/peer/ID): everything its record says, its online state and stake, the edges it is on. */
import { api } from '../api.js';
import { el, keyValues, link, table } from '../elements.js';
import { ago, bytes, ms, shortId, tokens } from '../format.js';
import { fragmentsText, hardwareText, limitsText, stateBadge } from './network.js';
import type { View } from './view.js';

export function peerView(root: HTMLElement, peerId: string): View {
  return {
    async refresh() {
      const data = await api.peer(peerId);
      if (!data) {
        root.replaceChildren(el('h2', {}, `Supplier ${shortId(peerId)}`), el('div', { class: 'empty' }, 'Not in the latest sweep of capacity records.'));
        return;
      }
      const p = data.peer;
      root.replaceChildren(
        el('h2', {}, 'Supplier ', el('span', { class: 'mono' }, p.peerId), ' ', stateBadge(p)),
        el('div', { class: 'panel', 'data-peer': p.peerId, 'data-online': String(p.online) }, keyValues([
          ['online', p.online ? `yes (ping ${ms(p.pingMs)})` : `no (last seen ${ago(p.lastSeenMs)})`],
          ['hardware', hardwareText(p)], ['platform', p.hardware?.platform ?? '–'],
          ['providers', p.hardware?.executionProviders.join(', ') ?? '–'],
          ['memory', p.hardware ? `${bytes(p.hardware.memoryFreeBytes)} free of ${bytes(p.hardware.memoryTotalBytes)}` : '–'],
          ['benchmark', p.benchmark ? `${p.benchmark.matmulGflops.toFixed(1)} GFLOP/s on ${p.benchmark.executionProvider}` : '–'],
          ['price', `${tokens(p.pricePerGflop)} per GFLOP`], ['staking address', el('span', { class: 'mono' }, p.stakingAddress || 'none (unstaked)')],
          ['stake', p.stake !== undefined ? tokens(p.stake) : '–'], ['share limits', limitsText(p)], ['fragments', fragmentsText(p)],
          ['addresses', el('span', { class: 'mono' }, p.addrs.join(' '))], ['software', p.softwareVersion], ['record issued', ago(p.recordIssuedMs)],
        ])),
        el('h3', {}, 'Hosted fragments'),
        el('div', { class: 'panel' }, table(['model', 'fragment', 'steps/s', 'load', 'sessions'], p.fragments.map((f) => ({
          cells: [link(`model/${f.manifestCid}`, shortId(f.manifestCid), 'mono'), f.index, f.stepsPerSecond.toFixed(1), f.load.toFixed(2), f.activeSessions],
        })))),
        el('h3', {}, 'Traffic'),
        el('div', { class: 'panel' }, data.edges.length
          ? table(['from', 'to', 'requests', 'steps'], data.edges.map((e) => ({ cells: [e.from === 'gateway' ? 'gateway' : link(`peer/${e.from}`, shortId(e.from)), e.to === 'gateway' ? 'gateway' : link(`peer/${e.to}`, shortId(e.to)), e.requests, e.steps] })))
          : el('div', { class: 'empty' }, 'No request through it seen yet.')),
      );
    },
    close() { /* nothing held */ },
  };
}
