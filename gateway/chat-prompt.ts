/**
 * A chat request's prompt ids, with the failures of the model's chat template turned into answers a client
 * can read: over its budget (time, memory, output) is a 422 naming the budget (not a 5xx: clients must not
 * retry a template bomb), the renderer busy a 503; a template error (raise_exception on these messages...)
 * a 422; content holding a special token the template cannot keep apart a 400. The gateway keeps serving.
 */
import { ApiError, badRequest } from './errors.js';
import { SpecialTokenInContentError, TemplateBudgetError, TemplateRenderError, type ChatMessage, type TextTokenizer } from './tokenizers/index.js';

export async function chatPromptIds(modelId: string, tokenizer: TextTokenizer, messages: ChatMessage[]): Promise<number[]> {
  try {
    return await tokenizer.encodeChat(messages);
  } catch (err) {
    if (err instanceof TemplateBudgetError) {
      if (err.limit === 'busy') throw new ApiError(503, `model "${modelId}": ${err.message}`, 'service_unavailable', 'chat_template_busy');
      throw new ApiError(422, `model "${modelId}": ${err.message}`, 'invalid_request_error', 'chat_template_over_budget', 'messages');
    }
    if (err instanceof TemplateRenderError) throw new ApiError(422, `model "${modelId}": ${err.message}`, 'invalid_request_error', 'chat_template_error', 'messages');
    if (err instanceof SpecialTokenInContentError) throw badRequest(err.message, 'messages', 'special_token_in_content');
    throw err;
  }
}
