/**
 * Chat prompts: OpenAI messages rendered to one prompt string with the model's Jinja chat template
 * (tokenizer_config.json `chat_template`, run by @huggingface/jinja), or a plain fallback template for
 * models that ship none (the synthetic ones). A model's own template is untrusted code: it runs in the
 * TemplateSandbox (a worker thread with a time and memory budget); the plain template is ours and runs here.
 */
import { Template } from '@huggingface/jinja';
import type { TemplateSandbox } from './sandbox.js';

export interface ChatMessage { role: string; content: string; name?: string }

/** Used when a model has no chat template: "role: content" lines, then the assistant's turn. */
export const PLAIN_CHAT_TEMPLATE =
  "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

/** A chat template with the special tokens it may reference: rendered in-process (ours) or in a sandbox (a model's). */
export class ChatTemplate {
  private readonly local?: Template;

  constructor(private readonly source: string, private readonly specialTokens: Record<string, string> = {}, private readonly sandbox?: TemplateSandbox) {
    if (!sandbox) this.local = new Template(source);
  }

  /** The prompt for these messages, ending where the assistant's reply starts. */
  async render(messages: ChatMessage[]): Promise<string> {
    const context = { messages, add_generation_prompt: true, ...this.specialTokens };
    if (this.local) return this.local.render(context);
    return this.sandbox!.render(this.source, context);
  }
}
