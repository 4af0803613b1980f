/**
 * The Chain view: the contracts, each supplier's stake, each payer's escrow balance, each supplier's redeemed
 * earnings over time (uPlot, stepped), and the events: stakes, unstakes, slashes, deposits, redemptions,
 * withdrawals, disputes.
 */
import type { ChainView } from '../../types.js';
import { api } from '../api.js';
import { timeChart, type TimeChart } from '../charts.js';
import { el, keyValues, table } from '../elements.js';
import { clock, shortId, tokenFloat, tokens } from '../format.js';
import type { View } from './view.js';

/** Each payee's cumulative earnings at every redemption time (from 0 before the first), in GRID or, when small, µGRID. */
function earningsSeries(c: ChainView): { x: number[]; ys: (number | null)[][]; unit: string } {
  const times = [...new Set(c.earnings.flatMap((e) => e.points.map((p) => p.at)))].sort((a, b) => a - b);
  if (times.length) {
    times.unshift(times[0] - 1000);
    times.push(Math.max(Date.now(), times[times.length - 1] + 1000));
  }
  const max = Math.max(0, ...c.earnings.flatMap((e) => e.points.map((p) => tokenFloat(p.total))));
  const [scale, unit] = max > 0 && max < 0.01 ? [1e6, 'µGRID'] : [1, 'GRID'];
  const ys = c.earnings.map((e) => times.map((t) => {
    const last = [...e.points].reverse().find((p) => p.at <= t);
    return last ? tokenFloat(last.total) * scale : 0;
  }));
  return { x: times, ys, unit };
}

export function chainView(root: HTMLElement): View {
  let chart: TimeChart | undefined;
  let payees = '';
  return {
    async refresh() {
      const c = await api.chain();
      if (!c.configured) {
        root.replaceChildren(el('h2', {}, 'Chain'), el('div', { class: 'empty' }, 'This explorer has no chain configured (start it with a chain config).'));
        return;
      }
      const series = earningsSeries(c);
      const key = `${c.earnings.map((e) => e.payee).join(',')} ${series.unit}`;
      if (!chart || key !== payees) {
        chart?.destroy();
        payees = key;
        chart = timeChart(`Earnings redeemed per supplier (${series.unit}, cumulative)`, c.earnings.map((e) => ({ label: shortId(e.payee) })), { stepped: true });
      }
      root.replaceChildren(
        el('h2', {}, `Chain ${c.chainId} — block ${c.block}`),
        el('div', { class: 'panel' }, keyValues(Object.entries(c.contracts ?? {}).map(([k, v]) => [k, el('span', { class: 'mono' }, v)]))),
        el('div', { class: 'charts' },
          el('div', { class: 'panel', id: 'stakes' }, el('h3', {}, 'Stakes'), table(['supplier', 'staked', 'unbonding'], c.stakes.map((s) => ({ attrs: { 'data-stake': s.address }, cells: [el('span', { class: 'mono' }, s.address), tokens(s.staked), tokens(s.unbonding)] })))),
          el('div', { class: 'panel', id: 'escrow' }, el('h3', {}, 'Escrow balance per payer'), table(['payer', 'balance'], c.escrow.map((p) => ({ attrs: { 'data-payer': p.payer }, cells: [el('span', { class: 'mono' }, p.payer), tokens(p.balance)] })))),
        ),
        chart.element,
        el('div', { class: 'panel', id: 'events' }, el('h3', {}, 'Events'), c.events.length ? table(['time', 'block', 'event', 'account', 'amount', 'detail'], c.events.map((e) => ({
          attrs: { 'data-kind': e.kind, 'data-account': e.account },
          cells: [clock(e.at), e.block, e.kind, el('span', { class: 'mono' }, shortId(e.account)), tokens(e.amount), e.payer ? `from ${shortId(e.payer)}` : e.detail ?? ''],
        }))) : el('div', { class: 'empty' }, 'No events yet.')),
      );
      chart.update(series.x, series.ys);
    },
    close() { chart?.destroy(); },
  };
}
