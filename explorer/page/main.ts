/**
 * The explorer page's entry: a hash router (#/network, #/live, #/models, #/chain, #/peer/ID, #/model/ID, so
 * every view and every peer and model page is a link), polling the current view every few seconds; the Live
 * view also follows the server's live stream.
 */
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { el } from './elements.js';
import { chainView } from './views/chain.js';
import { liveView } from './views/live.js';
import { modelView, modelsView } from './views/models.js';
import { networkView } from './views/network.js';
import { peerView } from './views/peer.js';
import type { View } from './views/view.js';

const POLL_MS = 3000;
const root = document.getElementById('view')!;
const status = document.getElementById('status')!;
let current: View | undefined;
let timer: ReturnType<typeof setTimeout> | undefined;
let generation = 0;

function setStatus(text: string): void { status.textContent = text; }

function route(): View {
  const [name, ...rest] = window.location.hash.replace(/^#\/?/, '').split('/');
  const arg = decodeURIComponent(rest.join('/'));
  for (const a of document.querySelectorAll<HTMLAnchorElement>('nav a')) {
    a.classList.toggle('active', a.dataset.view === name || (name === 'peer' && a.dataset.view === 'network') || (name === 'model' && a.dataset.view === 'models'));
  }
  switch (name) {
    case 'live': return liveView(root, setStatus);
    case 'models': return modelsView(root);
    case 'model': return modelView(root, arg);
    case 'chain': return chainView(root);
    case 'peer': return peerView(root, arg);
    default: return networkView(root);
  }
}

async function tick(view: View, mine: number): Promise<void> {
  try {
    await view.refresh();
    if (mine === generation) setStatus(`updated ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    if (mine === generation) setStatus(`cannot reach the explorer API (${(err as Error).message}); retrying`);
  }
  if (mine === generation) timer = setTimeout(() => { void tick(view, mine); }, POLL_MS);
}

function show(): void {
  generation++;
  if (timer) clearTimeout(timer);
  current?.close();
  root.replaceChildren(el('div', { class: 'empty' }, 'loading…'));
  current = route();
  void tick(current, generation);
}

window.addEventListener('hashchange', show);
show();
