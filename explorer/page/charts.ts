/**
 * Time-series charts with uPlot (bundled, no CDN): one small wrapper that sizes a chart to its box, keeps it
 * sized on resize, and takes new data without being rebuilt.
 */
import uPlot from 'uplot';
import { el } from './elements.js';

const COLOURS = ['#4fb3ff', '#ffb347', '#3ccf7a', '#ff5c5c', '#a98bff', '#f06fc4', '#7de0d6', '#d8dee6'];

export interface Series { label: string; unit?: string }

export interface TimeChart {
  element: HTMLElement;
  /** Times in ms (x) and one array per series (y; null where there is no value). */
  update(x: number[], ys: (number | null)[][]): void;
  destroy(): void;
}

/** A line chart over time; `stepped` for cumulative amounts. */
export function timeChart(title: string, series: Series[], options: { stepped?: boolean } = {}): TimeChart {
  const element = el('div', { class: 'panel chart' }, el('h3', {}, title));
  const box = el('div');
  element.append(box);
  let plot: uPlot | undefined;
  let data: uPlot.AlignedData = [[], ...series.map(() => [])];
  const width = (): number => Math.max(240, box.clientWidth || element.clientWidth - 24 || 300);
  const make = (): void => {
    plot = new uPlot({
      width: width(), height: 170,
      scales: { x: { time: true } },
      axes: [{ stroke: '#8a96a3', grid: { stroke: '#2a333d' }, ticks: { stroke: '#2a333d' } }, { stroke: '#8a96a3', grid: { stroke: '#2a333d' }, ticks: { stroke: '#2a333d' }, size: 56 }],
      series: [{}, ...series.map((s, i) => ({
        label: s.label, stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps: false, points: { show: true, size: 5 },
        value: (_u: uPlot, v: number | null) => (v === null || v === undefined ? '–' : `${v.toFixed(v < 10 ? 2 : 0)}${s.unit ? ` ${s.unit}` : ''}`),
        ...(options.stepped ? { paths: uPlot.paths.stepped!({ align: 1 }) } : {}),
      }))],
    }, data, box);
  };
  const resize = (): void => { plot?.setSize({ width: width(), height: 170 }); };
  window.addEventListener('resize', resize);
  // Made once the element is in the document, so it knows its width.
  requestAnimationFrame(() => { if (!plot && element.isConnected) make(); });
  return {
    element,
    update(x, ys) {
      data = [x.map((t) => t / 1000), ...ys] as uPlot.AlignedData;
      if (plot) plot.setData(data);
      else if (element.isConnected) make();
    },
    destroy() { window.removeEventListener('resize', resize); plot?.destroy(); },
  };
}
