/**
 * The Live view: tokens/s and p50/p95 latency over the last minutes (uPlot), and each request's route across
 * suppliers with its per-hop wall, queue, compute and payment times as a timeline; failovers, replaced hops
 * and replayed steps are marked. Loads the recent requests once, then follows the live stream (SSE).
 */
import type { HopView, RequestView, StatsBucket } from '../../types.js';
import { api, followLive } from '../api.js';
import { timeChart } from '../charts.js';
import { el, link } from '../elements.js';
import { clock, ms, shortId, tokens } from '../format.js';
import type { View } from './view.js';

const SHOWN = 40;

function hopBar(h: HopView, scaleMs: number): HTMLElement {
  const other = Math.max(0, h.wallMs - h.queueMs - h.computeMs - h.paymentMs);
  const pct = (v: number): string => `${(100 * v / scaleMs).toFixed(2)}%`;
  const bar = el('div', { class: 'bar', title: `wall ${ms(h.wallMs)} · queue ${ms(h.queueMs)} · compute ${ms(h.computeMs)} · payment ${ms(h.paymentMs)} · network and client ${ms(other)}` });
  for (const [cls, v] of [['seg-queue', h.queueMs], ['seg-compute', h.computeMs], ['seg-payment', h.paymentMs], ['seg-other', other]] as const) {
    if (v > 0) bar.append(el('span', { class: cls, style: `width:${pct(v)}` }));
  }
  return bar;
}

function requestElement(r: RequestView): HTMLElement {
  const badge = r.state === 'failed' ? el('span', { class: 'badge failed' }, `failed ${r.status ?? ''} ${r.error ?? ''}`)
    : r.state === 'running' ? el('span', { class: 'badge running' }, 'running') : el('span', { class: 'badge online' }, 'done');
  const head = el('div', { class: 'head' },
    el('span', { class: 'dim' }, clock(r.at)), el('strong', {}, r.model ?? '?'), el('span', { class: 'dim' }, r.endpoint), badge,
    r.failedOver && el('span', { class: 'badge failover', 'data-failover': String(r.failovers) },
      r.failovers > 0 ? `failover ×${r.failovers}` : `failover: ${r.hops.filter((h) => h.replaced).length} hop replaced`),
    r.tokens !== undefined && el('span', {}, `${r.tokens} tokens`), r.latencyMs !== undefined && el('span', {}, ms(r.latencyMs)),
    r.firstTokenMs !== undefined && el('span', { class: 'dim' }, `first token ${ms(r.firstTokenMs)}`),
    r.cost !== undefined && r.cost !== '0' && el('span', { class: 'dim' }, `cost ${tokens(r.cost)}`),
  );
  const route = el('div', { class: 'route' });
  for (const [i, hop] of r.route.entries()) {
    if (i) route.append(el('span', { class: 'dim' }, '→'));
    route.append(el('span', { class: 'hop-chip', 'data-route-peer': hop.peerId }, link(`peer/${hop.peerId}`, shortId(hop.peerId)), ` ${hop.fragments[0]}–${hop.fragments[1]}`));
  }
  for (const hop of r.hops.filter((h) => h.replaced)) {
    route.append(el('span', { class: 'hop-chip replaced', 'data-replaced-peer': hop.peerId, title: 'failed during the request and was replaced' }, `${shortId(hop.peerId)} ${hop.fragments[0]}–${hop.fragments[1]}`));
  }
  const out = el('div', { class: 'request', 'data-request': r.requestId, 'data-state': r.state, 'data-failed-over': String(r.failedOver) }, head, route);
  if (r.hops.length) {
    const scale = Math.max(...r.hops.map((h) => h.wallMs), 1);
    const timeline = el('div', { class: 'timeline' });
    for (const h of r.hops) {
      timeline.append(
        el('span', { class: h.replaced ? 'weak' : '' }, `${shortId(h.peerId)} [${h.fragments[0]}–${h.fragments[1]}] ${h.steps} steps${h.replayed ? `, ${h.replayed} replayed` : ''}${h.replaced ? ' ✕' : ''}`),
        hopBar(h, scale),
      );
    }
    out.append(timeline);
  }
  return out;
}

export function liveView(root: HTMLElement, setStatus: (text: string) => void): View {
  const requests = new Map<string, RequestView>();
  let stats: StatsBucket[] = [];
  let loaded = false;
  let stop: (() => void) | undefined;
  const tps = timeChart('Tokens per second', [{ label: 'tokens/s' }]);
  const latency = timeChart('Request latency', [{ label: 'p50', unit: 'ms' }, { label: 'p95', unit: 'ms' }]);
  const list = el('div', { class: 'panel', id: 'requests' });
  let pending = false;
  const draw = (): void => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      const shown = [...requests.values()].sort((a, b) => b.at - a.at).slice(0, SHOWN);
      list.replaceChildren(...(shown.length ? shown.map(requestElement) : [el('div', { class: 'empty' }, 'No request yet: call the gateway and it appears here.')]));
      const x = stats.map((s) => s.at);
      tps.update(x, [stats.map((s) => s.tokensPerSecond)]);
      latency.update(x, [stats.map((s) => s.p50Ms ?? null), stats.map((s) => s.p95Ms ?? null)]);
    });
  };
  root.replaceChildren(
    el('h2', {}, 'Live'),
    el('div', { class: 'charts' }, tps.element, latency.element),
    el('div', { class: 'legend' }, ...[['seg-queue', 'queue'], ['seg-compute', 'compute'], ['seg-payment', 'payment'], ['seg-other', 'network and client']].map(([c, t]) => el('span', {}, el('i', { class: c }), t))),
    list,
  );
  return {
    async refresh() {
      if (!loaded) {
        const live = await api.live();
        for (const r of live.requests) requests.set(r.requestId, r);
        stats = live.stats;
        loaded = true;
        stop = followLive({
          request: (r) => { requests.set(r.requestId, r); while (requests.size > 200) requests.delete(requests.keys().next().value!); draw(); },
          stats: (s) => { stats = s; draw(); },
          state: (open) => setStatus(open ? 'live' : 'reconnecting…'),
        });
      }
      draw();
    },
    close() { stop?.(); tps.destroy(); latency.destroy(); },
  };
}
