/**
 * One step through a cut mixture-of-experts layer, whoever runs the fragments: call the router fragment,
 * route every token (routing.ts), call each needed expert fragment once with only its tokens (in parallel),
 * and combine. The caller supplies how a fragment is run (onnxruntime here for verify; a supplier over the
 * wire in the grid client) and which experts are live, so the same code is checked locally and used remotely.
 */
import ort from 'onnxruntime-node';
import type { ExpertGroup, Manifest } from '../manifest.js';
import { FragmentError } from '../onnx/errors.js';
import { combineExperts, gatherRows, routeTokens, tokensPerExpert, type TokenRoute } from './routing.js';

export type Tensors = Record<string, ort.Tensor>;

/** One call to a fragment of the layer: which fragment, which experts it was asked for, how many tokens. */
export interface ExpertCall { fragment: number; experts: number[]; tokens: number }

export interface LayerRunOptions {
  /** Runs fragment `fragment` of the manifest on `feeds`; returns its outputs. */
  run: (fragment: number, feeds: Tensors, experts?: number[]) => Promise<Tensors>;
  /** Whether an expert can be called now (default: all). */
  isLive?: (expert: number) => boolean;
  /** Experts per token instead of the model's k; the group's expert count calls every expert (a dense baseline: same output). */
  topK?: number;
  /** Sees every token's route before any expert is called (may throw to stop the step, e.g. strict mode). */
  onRouted?: (routes: TokenRoute[]) => void;
}

export interface LayerRun {
  /** The layer output (group.output). */
  output: ort.Tensor;
  routes: TokenRoute[];
  calls: ExpertCall[];
}

/** Runs expert group `group` of `manifest` on the tensors known so far (`known` holds the layer input). */
export async function runExpertGroup(manifest: Manifest, group: ExpertGroup, known: Tensors, options: LayerRunOptions): Promise<LayerRun> {
  const { routerFragment, input, output, gates, scoreKind } = group;
  if (routerFragment === undefined || !input || !output || !gates || !scoreKind) {
    throw new FragmentError('BAD_MANIFEST', `expert group ${group.layer} was not cut for selective activation (no router fragment)`);
  }
  const feedsOf = (fragment: number): Tensors => Object.fromEntries(manifest.fragments[fragment].inputs.map((i) => {
    const t = known[i.name];
    if (!t) throw new FragmentError('BAD_MANIFEST', `fragment ${fragment} needs "${i.name}", which nothing before it produced`);
    return [i.name, t];
  }));
  const routed = await options.run(routerFragment, feedsOf(routerFragment));
  const x = known[input];
  const g = routed[gates];
  const s = routed[group.router];
  if (!g || !s) throw new FragmentError('BAD_MANIFEST', `the router fragment ${routerFragment} did not return "${gates}" and "${group.router}"`);
  const experts = group.experts.length;
  const routes = routeTokens(float32(s, group.router), float32(g, gates), experts, options.topK ?? group.topK, scoreKind, options.isLive);
  options.onRouted?.(routes);

  const width = x.dims.at(-1)!;
  const xData = float32(x, input);
  const byExpert = tokensPerExpert(routes);
  // One call per fragment, for the union of the tokens of the experts it was asked for.
  const byFragment = new Map<number, { experts: number[]; rows: Set<number> }>();
  for (const [e, rows] of byExpert) {
    const fragment = group.experts[e].fragments[0];
    const entry = byFragment.get(fragment) ?? { experts: [], rows: new Set<number>() };
    entry.experts.push(e);
    for (const r of rows) entry.rows.add(r);
    byFragment.set(fragment, entry);
  }
  const outputs = new Map<number, { rows: readonly number[]; data: Float32Array }>();
  let outWidth = 0;
  const calls: ExpertCall[] = [];
  // Settled, not raced: a failed call leaves no other call of this step running behind the caller's back.
  const settled = await Promise.allSettled([...byFragment.entries()].map(async ([fragment, { experts: asked, rows }]) => {
    const sorted = [...rows].sort((a, b) => a - b);
    const dims = [...x.dims.slice(0, -2).map(() => 1), sorted.length, width];
    const feeds = { ...feedsOf(fragment), [input]: new ort.Tensor('float32', gatherRows(xData, width, sorted), dims.length ? dims : [sorted.length, width]) };
    calls.push({ fragment, experts: asked, tokens: sorted.length });
    const result = await options.run(fragment, feeds, asked);
    for (const e of asked) {
      const name = group.experts[e].output!;
      const y = result[name];
      if (!y) throw new FragmentError('BAD_MANIFEST', `expert fragment ${fragment} did not return "${name}"`);
      outWidth = y.dims.at(-1)!;
      outputs.set(e, { rows: sorted, data: float32(y, name) });
    }
  }));
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  calls.sort((a, b) => a.fragment - b.fragment);
  if (outWidth === 0) outWidth = width;
  const combined = combineExperts(routes, outWidth, outputs);
  return { output: new ort.Tensor('float32', combined, [...x.dims.slice(0, -1), outWidth]), routes, calls };
}

function float32(t: ort.Tensor, name: string): Float32Array {
  if (t.type !== 'float32') throw new FragmentError('UNSUPPORTED', `selective activation needs float32 tensors; "${name}" is ${t.type}`);
  return t.data as Float32Array;
}
