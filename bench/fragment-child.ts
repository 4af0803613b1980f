/** Child process of the fragment benchmark: fragments one model and prints its time and peak RSS as JSON. */
import { fragmentModel } from '../fragments/fragment.js';

const [modelPath, outDir, parts] = process.argv.slice(2);
const start = performance.now();
await fragmentModel(modelPath, outDir, { parts: Number(parts) });
const seconds = (performance.now() - start) / 1000;
process.stdout.write(`${JSON.stringify({ seconds, maxRssBytes: process.resourceUsage().maxRSS * 1024 })}\n`);
