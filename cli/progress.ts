/** Progress for long work: a bar on a terminal, a line every 10% otherwise (logs, CI). */
import cliProgress from 'cli-progress';

export interface Progress { update(done: number, total: number): void; stop(): void }

/** A progress display on stderr labelled `label`; silent when `quiet`. */
export function createProgress(label: string, quiet = false): Progress {
  if (quiet) return { update: () => undefined, stop: () => undefined };
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar({
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {doneText} / {totalText}`,
      hideCursor: true,
    }, cliProgress.Presets.shades_classic);
    let started = false;
    let shown = 0;
    return {
      update(reported, total) {
        const done = Math.max(shown, reported); // only forward, as below
        shown = done;
        const payload = { doneText: formatBytes(done), totalText: formatBytes(total) };
        if (!started) { bar.start(Math.max(1, total), done, payload); started = true; }
        bar.setTotal(Math.max(1, total));
        bar.update(done, payload);
      },
      stop() { if (started) bar.stop(); },
    };
  }
  let lastDecile = -1;
  return {
    update(done, total) {
      const decile = total > 0 ? Math.floor((done / total) * 10) : 10;
      // Only forward: work done in parallel can report a smaller total after a larger one.
      if (decile > lastDecile) {
        lastDecile = decile;
        process.stderr.write(`${label}: ${Math.min(100, decile * 10)}% (${formatBytes(done)} of ${formatBytes(total)})\n`);
      }
    },
    stop() { /* nothing to tidy */ },
  };
}

/** Human-readable byte count (binary units). */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}
