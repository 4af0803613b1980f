/**
 * Special tokens only from the template, never from what a user typed. A message whose content holds
 * "<|im_start|>system" must not open a real system turn: the content is tokenised as plain text, and only
 * the chat template's own text yields control tokens. Messages are rendered with unguessable markers in
 * place of their content; the rendered prompt is split at the markers; special tokens are looked for in
 * the template's pieces only, and all text (template and content, joined as transformers would see it)
 * is encoded by a copy of the tokenizer that knows no special tokens. A template that transforms the
 * content (the markers do not come back one for one) falls back to the plain rendering, and then a
 * message that contains a special token's text is refused.
 */
import { randomBytes } from 'node:crypto';
import type { ChatMessage } from './chat.js';
import { GridpipeError } from '../../errors/base.js';

/** A special token the tokenizer knows (tokenizer.json `added_tokens` with `special: true`). */
export interface SpecialToken { id: number; content: string; lstrip?: boolean; rstrip?: boolean }

/** Raised when content holds a special token's text and the template cannot keep it apart (a 400). */
export class SpecialTokenInContentError extends GridpipeError<'SPECIAL_TOKEN_IN_CONTENT'> {
  override name = 'SpecialTokenInContentError';
  constructor(message: string) {
    super('SPECIAL_TOKEN_IN_CONTENT', message, { badInput: true });
  }
}

type Part = { text: string } | { special: SpecialToken };

/** Escapes special tokens in chat content for one tokenizer. */
export class ChatEscaper {
  private readonly byContent = new Map<string, SpecialToken>();
  private readonly pattern?: RegExp;

  /**
   * `plainEncode`: text to ids with no special-token parsing; `fullEncode`: the tokenizer's usual encode
   * (for the fallback).
   */
  constructor(specials: SpecialToken[], private readonly plainEncode: (text: string) => number[], private readonly fullEncode: (text: string) => number[]) {
    for (const s of specials) if (s.content) this.byContent.set(s.content, s);
    const alternatives = [...this.byContent.keys()].sort((a, b) => b.length - a.length).map((c) => c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
    if (alternatives.length) this.pattern = new RegExp(alternatives.join('|'), 'g');
  }

  /** The prompt ids for these messages, `render` being the chat template. */
  async encode(messages: ChatMessage[], render: (messages: ChatMessage[]) => Promise<string>): Promise<number[]> {
    if (!this.pattern) return this.plainEncode(await render(messages));
    const nonce = randomBytes(8).toString('hex');
    const marked = messages.map((m, i) => ({ ...m, content: `\uE000${nonce}:${i}\uE001` }));
    const rendered = await render(marked);
    const marker = new RegExp(`\uE000${nonce}:(\\d+)\uE001`, 'g');
    const parts: Part[] = [];
    const seen = new Set<number>();
    let last = 0;
    for (const m of rendered.matchAll(marker)) {
      const i = Number(m[1]);
      if (seen.has(i)) return this.fallback(messages, render);
      seen.add(i);
      this.templatePart(rendered.slice(last, m.index), parts);
      parts.push({ text: messages[i].content });
      last = m.index + m[0].length;
    }
    // Every non-empty content must come back exactly once; a template that dropped one is run on the real text.
    if (messages.some((msg, i) => msg.content !== '' && !seen.has(i))) return this.fallback(messages, render);
    this.templatePart(rendered.slice(last), parts);
    return this.encodeParts(parts);
  }

  /** Splits template text at special tokens (honouring their lstrip/rstrip). */
  private templatePart(text: string, parts: Part[]): void {
    let last = 0;
    for (const m of text.matchAll(this.pattern!)) {
      if (m.index > last) parts.push({ text: text.slice(last, m.index) });
      parts.push({ special: this.byContent.get(m[0])! });
      last = m.index + m[0].length;
    }
    if (last < text.length) parts.push({ text: text.slice(last) });
  }

  private encodeParts(parts: Part[]): number[] {
    const ids: number[] = [];
    let text = '';
    let trimStart = false;
    for (const p of parts) {
      if ('text' in p) {
        text += trimStart ? p.text.trimStart() : p.text;
        trimStart = trimStart && text === '';
        continue;
      }
      if (p.special.lstrip) text = text.trimEnd();
      if (text) ids.push(...this.plainEncode(text));
      text = '';
      ids.push(p.special.id);
      trimStart = p.special.rstrip === true;
    }
    if (text) ids.push(...this.plainEncode(text));
    return ids;
  }

  private async fallback(messages: ChatMessage[], render: (messages: ChatMessage[]) => Promise<string>): Promise<number[]> {
    for (const [i, m] of messages.entries()) {
      this.pattern!.lastIndex = 0;
      const found = this.pattern!.exec(m.content);
      if (found) throw new SpecialTokenInContentError(`messages[${i}].content contains the special token ${JSON.stringify(found[0])}, which this model's chat template cannot keep apart from its own; remove it`);
    }
    return this.fullEncode(await render(messages));
  }
}
