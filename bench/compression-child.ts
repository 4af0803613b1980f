/** Child process of the compression benchmark: quantizes one model into fragments and prints its time and peak RSS as JSON. */
import { fragmentModel } from '../fragments/fragment.js';
import { resolveScheme } from '../fragments/quantize/scheme.js';

const [modelPath, outDir, parts, scheme] = process.argv.slice(2);
const start = performance.now();
const { manifest } = await fragmentModel(modelPath, outDir, { parts: Number(parts), quantize: { ...resolveScheme(scheme), measure: false } });
const seconds = (performance.now() - start) / 1000;
const q = manifest.quantization!;
process.stdout.write(`${JSON.stringify({ seconds, maxRssBytes: process.resourceUsage().maxRSS * 1024, weightBytes: q.weightBytes, sourceWeightBytes: q.sourceWeightBytes })}\n`);
