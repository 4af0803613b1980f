/** Checks of request bodies, each failing with a 400 in OpenAI's shape naming the parameter. */
import { badRequest } from './errors.js';
import type { ChatMessage } from './tokenizers/index.js';

export type Body = Record<string, unknown>;

/** The parsed JSON body as an object, or 400. */
export function objectBody(body: unknown): Body {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the request body must be a JSON object', null, 'invalid_body');
  return body as Body;
}

const present = (b: Body, name: string): boolean => b[name] !== undefined && b[name] !== null;

export function requiredString(b: Body, name: string): string {
  const v = b[name];
  if (typeof v !== 'string' || v === '') throw badRequest(`"${name}" is required and must be a non-empty string`, name, 'invalid_type');
  return v;
}

export function optionalBoolean(b: Body, name: string, fallback: boolean): boolean {
  if (!present(b, name)) return fallback;
  if (typeof b[name] !== 'boolean') throw badRequest(`"${name}" must be a boolean, got ${JSON.stringify(b[name])}`, name, 'invalid_type');
  return b[name] as boolean;
}

export function optionalNumber(b: Body, name: string, range: { min?: number; max?: number; integer?: boolean; exclusiveMin?: boolean } = {}): number | undefined {
  if (!present(b, name)) return undefined;
  const v = b[name];
  const kind = range.integer ? 'an integer' : 'a number';
  if (typeof v !== 'number' || !Number.isFinite(v) || (range.integer && !Number.isSafeInteger(v))) throw badRequest(`"${name}" must be ${kind}, got ${JSON.stringify(v)}`, name, 'invalid_type');
  if (range.min !== undefined && (range.exclusiveMin ? v <= range.min : v < range.min)) throw badRequest(`"${name}" must be ${range.exclusiveMin ? 'more than' : 'at least'} ${range.min}, got ${v}`, name, 'invalid_value');
  if (range.max !== undefined && v > range.max) throw badRequest(`"${name}" must be at most ${range.max}, got ${v}`, name, 'invalid_value');
  return v;
}

/** `stop`: a string or up to 4 strings (null/absent = none). */
export function stopStrings(b: Body): string[] {
  if (!present(b, 'stop')) return [];
  const v = b.stop;
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.some((s) => typeof s !== 'string')) throw badRequest('"stop" must be a string or an array of strings', 'stop', 'invalid_type');
  if (list.length > 4) throw badRequest(`"stop" takes at most 4 sequences, got ${list.length}`, 'stop', 'invalid_value');
  return (list as string[]).filter((s) => s.length > 0);
}

/** `n`: only 1 is served (one pipeline per request). */
export function singleChoice(b: Body): void {
  const n = optionalNumber(b, 'n', { integer: true, min: 1 });
  if (n !== undefined && n !== 1) throw badRequest(`"n" must be 1: this gateway returns one choice per request (got ${n}); send several requests instead`, 'n', 'unsupported_value');
}

/** Completion prompt: a string, or token ids; arrays of several prompts are refused (one choice per request). */
export function completionPrompt(b: Body): { text: string } | { ids: number[] } {
  let v = b.prompt;
  if (v === undefined || v === null) throw badRequest('"prompt" is required', 'prompt', 'invalid_type');
  // A one-element batch is the same as its element.
  if (Array.isArray(v) && v.length === 1 && (typeof v[0] === 'string' || Array.isArray(v[0]))) v = v[0];
  if (typeof v === 'string') {
    if (v === '') throw badRequest('"prompt" is empty', 'prompt', 'invalid_value');
    return { text: v };
  }
  if (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) return { ids: v as number[] };
  if (Array.isArray(v) && v.length > 1 && v.every((x) => typeof x === 'string' || Array.isArray(x))) {
    throw badRequest('"prompt" holds several prompts: this gateway serves one prompt per request', 'prompt', 'unsupported_value');
  }
  throw badRequest('"prompt" must be a string or an array of token ids', 'prompt', 'invalid_type');
}

const ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool', 'function']);

/** Chat `messages`: roles and text content (a string or text parts). */
export function chatMessages(b: Body): ChatMessage[] {
  const v = b.messages;
  if (!Array.isArray(v) || v.length === 0) throw badRequest('"messages" is required and must be a non-empty array', 'messages', 'invalid_type');
  return v.map((m, i) => {
    const where = `messages[${i}]`;
    if (typeof m !== 'object' || m === null) throw badRequest(`${where} must be an object`, where, 'invalid_type');
    const { role, content, name } = m as Record<string, unknown>;
    if (typeof role !== 'string' || !ROLES.has(role)) throw badRequest(`${where}.role must be one of ${[...ROLES].join(', ')}`, `${where}.role`, 'invalid_value');
    let text: string;
    if (typeof content === 'string') text = content;
    else if (content === null || content === undefined) text = '';
    else if (Array.isArray(content)) {
      text = content.map((part, j) => {
        const p = part as { type?: unknown; text?: unknown };
        if (typeof p !== 'object' || p === null || p.type !== 'text' || typeof p.text !== 'string') {
          throw badRequest(`${where}.content[${j}] must be a text part ({"type":"text","text":...}); this model takes text only`, `${where}.content`, 'invalid_type');
        }
        return p.text;
      }).join('');
    } else throw badRequest(`${where}.content must be a string or an array of text parts`, `${where}.content`, 'invalid_type');
    // OpenAI's rule for names; it also keeps control-token text out of the template through this field.
    if (name !== undefined && name !== null && (typeof name !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(name))) {
      throw badRequest(`${where}.name must be 1 to 64 letters, digits, "_" or "-"`, `${where}.name`, 'invalid_value');
    }
    return { role, content: text, ...(typeof name === 'string' ? { name } : {}) };
  });
}
