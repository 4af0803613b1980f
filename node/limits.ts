/**
 * Share limits: what a supplier lends and when. Memory and GPU share, concurrent sessions, the hours
 * it serves (a daily window in local time, possibly across midnight) and a pause switch. The executor
 * asks `admit()` before opening a session; the capacity record advertises the limits.
 */
export interface ShareLimitOptions {
  /** Largest bytes of KV cache and activations the node keeps (default: a quarter of RAM). */
  maxMemoryBytes?: number;
  /** Most sessions open at once (default 16). */
  maxSessions?: number;
  /**
   * Most sessions one remote peer may hold open (default half of maxSessions, at least 1): one peer id cannot
   * take every slot. Peer ids are free, so this slows a flood but does not stop a Sybil one (paid opens do).
   */
  maxSessionsPerPeer?: number;
  /** onnxruntime intra-op threads per session (default: all cores). */
  threads?: number;
  /** Share of the GPU lent, 0..1 (default 1). */
  gpuShare?: number;
  /** Daily window the node serves, "HH:MM-HH:MM" local time (default: always). */
  hours?: string;
  paused?: boolean;
}

export interface HoursWindow { startMinute: number; endMinute: number; text: string }

/** Parses "22:00-08:00" (a window may cross midnight); throws naming what is wrong. */
export function parseHours(text: string): HoursWindow {
  const m = /^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$/.exec(text.trim());
  if (!m) throw new Error(`--hours must look like 22:00-08:00, got "${text}"`);
  const [h1, m1, h2, m2] = m.slice(1).map(Number);
  if (h1 > 23 || h2 > 24 || m1 > 59 || m2 > 59 || (h2 === 24 && m2 !== 0)) throw new Error(`--hours has an invalid time: "${text}"`);
  const startMinute = h1 * 60 + m1;
  const endMinute = h2 * 60 + m2;
  if (startMinute === endMinute) throw new Error(`--hours window "${text}" is empty`);
  return { startMinute, endMinute, text: text.trim() };
}

/** Whether `date` (local time) falls inside the window. */
export function withinHours(window: HoursWindow, date: Date): boolean {
  const minute = date.getHours() * 60 + date.getMinutes();
  return window.startMinute < window.endMinute
    ? minute >= window.startMinute && minute < window.endMinute
    : minute >= window.startMinute || minute < window.endMinute;
}

export type Admission = { ok: true } | { ok: false; reason: string };

/** The limits of one node, with its live pause switch. */
export class ShareLimits {
  readonly maxMemoryBytes: number;
  readonly maxSessions: number;
  readonly maxSessionsPerPeer: number;
  readonly threads: number;
  readonly gpuShare: number;
  readonly hours?: HoursWindow;
  private pausedFlag: boolean;

  constructor(options: ShareLimitOptions, machine: { memoryBytes: number; cores: number }) {
    this.maxMemoryBytes = options.maxMemoryBytes ?? Math.floor(machine.memoryBytes / 4);
    this.maxSessions = options.maxSessions ?? 16;
    this.maxSessionsPerPeer = options.maxSessionsPerPeer ?? Math.max(1, Math.ceil(this.maxSessions / 2));
    this.threads = options.threads ?? machine.cores;
    this.gpuShare = options.gpuShare ?? 1;
    if (!(this.maxMemoryBytes > 0)) throw new Error('--max-memory must be positive');
    if (!Number.isInteger(this.maxSessions) || this.maxSessions < 1) throw new Error('--max-sessions must be a positive integer');
    if (!Number.isInteger(this.maxSessionsPerPeer) || this.maxSessionsPerPeer < 1) throw new Error('--max-sessions-per-peer must be a positive integer');
    if (!Number.isInteger(this.threads) || this.threads < 1) throw new Error('--threads must be a positive integer');
    if (!(this.gpuShare > 0 && this.gpuShare <= 1)) throw new Error('--gpu-share must be in (0, 1]');
    if (options.hours) this.hours = parseHours(options.hours);
    this.pausedFlag = options.paused ?? false;
  }

  get paused(): boolean { return this.pausedFlag; }
  pause(): void { this.pausedFlag = true; }
  resume(): void { this.pausedFlag = false; }

  /** Whether a new session may open now, given how many are open (and, when known, how many the asking peer holds). */
  admit(openSessions: number, now = new Date(), peerSessions = 0): Admission {
    if (this.pausedFlag) return { ok: false, reason: 'the supplier has paused sharing' };
    if (this.hours && !withinHours(this.hours, now)) return { ok: false, reason: `the supplier shares only during ${this.hours.text}` };
    if (openSessions >= this.maxSessions) return { ok: false, reason: `the supplier is at its limit of ${this.maxSessions} sessions` };
    if (peerSessions >= this.maxSessionsPerPeer) return { ok: false, reason: `this peer already holds ${peerSessions} sessions, the most one peer may hold here` };
    return { ok: true };
  }
}
