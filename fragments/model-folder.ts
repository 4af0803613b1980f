/**
 * A model handed over as an export folder (what Hugging Face Optimum writes: model.onnx beside tokenizer.json,
 * tokenizer_config.json, generation_config.json): finds the ONNX file, and reads and checks the files that
 * travel with it, so a broken one is refused at fragment time, naming the file, never at serve time.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { FragmentError } from './onnx/errors.js';
import type { GenerationDefaults } from './manifest.js';

/** ONNX file names an export folder holds its decoder under, in the order they are looked for. */
export const MODEL_FILE_NAMES = ['model.onnx', 'decoder_model_merged.onnx', 'decoder_with_past_model.onnx', 'decoder_model.onnx'];

/** The tokenizer files found beside a model, parsed (files that are absent are undefined). */
export interface ModelFolderFiles {
  tokenizer?: { file: string; json: Record<string, unknown> };
  tokenizerConfig?: { file: string; json: Record<string, unknown> };
  generation?: { file: string; defaults: GenerationDefaults };
}

/**
 * A check of the tokenizer files by the code that will serve them (load the tokenizer, render the chat template);
 * the fragments layer cannot import the gateway, so its caller passes one. Throws an error naming the file.
 */
export type TokenizerCheck = (files: Required<Pick<ModelFolderFiles, 'tokenizer'>> & Pick<ModelFolderFiles, 'tokenizerConfig'>) => Promise<void>;

/** The ONNX file of `input`: the file itself, or the one export file a folder holds (MODEL_FILE_NAMES, else its only .onnx). */
export function modelFileOf(input: string): string {
  if (!existsSync(input)) throw new FragmentError('BAD_ARGUMENT', `${input}: no such file or folder`);
  if (!statSync(input).isDirectory()) return input;
  for (const name of MODEL_FILE_NAMES) if (existsSync(path.join(input, name))) return path.join(input, name);
  const onnx = readdirSync(input).filter((f) => f.endsWith('.onnx'));
  if (onnx.length === 1) return path.join(input, onnx[0]);
  throw new FragmentError('BAD_ARGUMENT', onnx.length
    ? `${input} holds ${onnx.length} .onnx files (${onnx.slice(0, 4).join(', ')}) and none is named ${MODEL_FILE_NAMES.join(' or ')}: name the file to fragment`
    : `${input} holds no .onnx file`);
}

/** Parses a JSON object file, or fails naming the file and what is wrong with it. */
function readJsonObject(file: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new FragmentError('BAD_MODEL_FILE', `${file}: not valid JSON (${(err as Error).message})`, { cause: err });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new FragmentError('BAD_MODEL_FILE', `${file}: not a JSON object`);
  return value as Record<string, unknown>;
}

/**
 * The tokenizer.json of a model: `explicit` (--tokenizer) or the one beside the model file; with the
 * tokenizer_config.json and generation_config.json beside it. All are parsed and checked here.
 */
export function readModelFolderFiles(modelFile: string, explicit?: string): ModelFolderFiles {
  if (explicit !== undefined && !existsSync(explicit)) throw new FragmentError('BAD_ARGUMENT', `--tokenizer ${explicit}: no such file`);
  const tokenizerFile = explicit ?? path.join(path.dirname(modelFile), 'tokenizer.json');
  const dir = path.dirname(tokenizerFile);
  const files: ModelFolderFiles = {};
  if (existsSync(tokenizerFile)) {
    const json = readJsonObject(tokenizerFile);
    const model = json.model as Record<string, unknown> | undefined;
    if (typeof model !== 'object' || model === null || typeof model.type !== 'string') {
      throw new FragmentError('BAD_MODEL_FILE', `${tokenizerFile}: not a Hugging Face tokenizer (no "model" with a "type")`);
    }
    files.tokenizer = { file: tokenizerFile, json };
    const configFile = path.join(dir, 'tokenizer_config.json');
    if (existsSync(configFile)) {
      const config = readJsonObject(configFile);
      const template = config.chat_template;
      if (template !== undefined && template !== null && typeof template !== 'string' && !Array.isArray(template)) {
        throw new FragmentError('BAD_MODEL_FILE', `${configFile}: "chat_template" must be a string (or a list of {name, template})`);
      }
      files.tokenizerConfig = { file: configFile, json: config };
    }
  }
  const generationFile = path.join(path.dirname(modelFile), 'generation_config.json');
  if (existsSync(generationFile)) files.generation = { file: generationFile, defaults: generationDefaults(generationFile, readJsonObject(generationFile)) };
  return files;
}

/** What the gateway uses from a generation_config.json: end-of-sequence ids and sampling defaults, checked. */
export function generationDefaults(file: string, json: Record<string, unknown>): GenerationDefaults {
  const fail = (what: string): never => { throw new FragmentError('BAD_MODEL_FILE', `${file}: ${what}`); };
  const defaults: GenerationDefaults = {};
  const eos = json.eos_token_id;
  if (eos !== undefined && eos !== null) {
    const ids = Array.isArray(eos) ? eos : [eos];
    if (!ids.every((id) => Number.isSafeInteger(id) && (id as number) >= 0)) fail(`"eos_token_id" must be a token id or a list of them, got ${JSON.stringify(eos)}`);
    defaults.eosTokenIds = ids as number[];
  }
  const number = (key: string, ok: (v: number) => boolean, range: string): number | undefined => {
    const v = json[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) return fail(`"${key}" must be ${range}, got ${JSON.stringify(v)}`);
    return v;
  };
  // do_sample false is greedy decoding: temperature 0 for the gateway.
  const temperature = json.do_sample === false ? 0 : number('temperature', (v) => v >= 0 && v <= 2, 'a number from 0 to 2');
  const topP = number('top_p', (v) => v > 0 && v <= 1, 'a number above 0, at most 1');
  const topK = number('top_k', (v) => Number.isSafeInteger(v) && v >= 0, 'a whole number, 0 or more');
  if (temperature !== undefined) defaults.temperature = temperature;
  if (topP !== undefined) defaults.topP = topP;
  if (topK !== undefined) defaults.topK = topK;
  return defaults;
}
