/**
 * Chat prompts: OpenAI messages rendered to one prompt string with the model's Jinja chat template
 * (tokenizer_config.json `chat_template`, run by @huggingface/jinja), or a plain fallback template for
 * models that ship none (the synthetic ones).
 */
import { Template } from '@huggingface/jinja';

export interface ChatMessage { role: string; content: string; name?: string }

/** Used when a model has no chat template: "role: content" lines, then the assistant's turn. */
export const PLAIN_CHAT_TEMPLATE =
  "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

/** A compiled chat template with the special tokens it may reference. */
export class ChatTemplate {
  private readonly template: Template;

  constructor(source: string, private readonly specialTokens: Record<string, string> = {}) {
    this.template = new Template(source);
  }

  /** The prompt for these messages, ending where the assistant's reply starts. */
  render(messages: ChatMessage[]): string {
    return this.template.render({ messages, add_generation_prompt: true, ...this.specialTokens });
  }
}
