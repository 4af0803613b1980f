"""Why: turns a training checkpoint into a model folder a user could hand to `gridpipe model fragment`:
model.onnx with Hugging Face Optimum "with past" I/O names, the tokenizer files beside it, a config.json,
and reference logits computed by torch that the tests compare onnxruntime's output against.

    /usr/bin/python3 models/demo/export.py target   # (or draft) → models/demo/<name>/
"""
import argparse
import json
import os
import shutil
import sys

import onnx
import torch

from model import GPT, Config

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = 17
# Optimum's name for the cache length plus the new tokens (attention_mask, present.*).
TOTAL = 'past_sequence_length + sequence_length'
# The model's name in manifests and in the gateway's /v1/models.
MODEL_NAMES = {'target': 'kjv-demo', 'draft': 'kjv-demo-draft'}
REFERENCE_PROMPT = 'In the beginning God created the heaven and the earth.\nAnd the earth was'


class WithPast(torch.nn.Module):
    """Flat Optimum-style signature: (input_ids, attention_mask, position_ids, past k/v…) → (logits, present k/v…)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past_flat):
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(len(past_flat) // 2)]
        logits, presents = self.model(input_ids, attention_mask, position_ids, past)
        return (logits, *[t for kv in presents for t in kv])


def load(name):
    state = torch.load(os.path.join(HERE, 'checkpoints', name + '.pt'))
    model = GPT(Config(**state['config']))
    model.load_state_dict(state['model'])
    model.eval()
    return model, state


def export(model, path, name):
    c = model.config
    head_dim = c.d_model // c.n_head
    layers = range(c.n_layer)
    past_names = [f'past_key_values.{i}.{kv}' for i in layers for kv in ('key', 'value')]
    present_names = [f'present.{i}.{kv}' for i in layers for kv in ('key', 'value')]
    past_len, seq = 2, 3
    dummy = (
        torch.tensor([[5, 6, 7]]),
        torch.ones(1, past_len + seq, dtype=torch.long),
        torch.tensor([[past_len, past_len + 1, past_len + 2]]),
        *[torch.zeros(1, c.n_head, past_len, head_dim) for _ in past_names],
    )
    axes = {'input_ids': {0: 'batch_size', 1: 'sequence_length'},
            'attention_mask': {0: 'batch_size', 1: TOTAL},
            'position_ids': {0: 'batch_size', 1: 'sequence_length'},
            'logits': {0: 'batch_size', 1: 'sequence_length'}}
    axes.update({n: {0: 'batch_size', 2: 'past_sequence_length'} for n in past_names})
    axes.update({n: {0: 'batch_size', 2: TOTAL} for n in present_names})
    # No constant folding: it would store a transposed second copy of the tied embedding for the output head.
    torch.onnx.export(WithPast(model), dummy, path, opset_version=OPSET, do_constant_folding=False,
                      input_names=['input_ids', 'attention_mask', 'position_ids', *past_names],
                      output_names=['logits', *present_names], dynamic_axes=axes)
    proto = onnx.load(path)
    proto.graph.name = name
    for key, value in {'max_position_embeddings': str(c.max_positions), 'model_type': 'gpt2'}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    model.eval()  # export restores the wrapper's (training) mode, which would turn dropout on
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


@torch.no_grad()
def reference(model, ids):
    """Greedy continuation and last-row logits of the reference prompt, from torch (the tests compare onnxruntime's)."""
    x = torch.tensor([ids])
    logits, _ = model(x)
    greedy, seq = [], list(ids)
    for _ in range(24):
        out, _ = model(torch.tensor([seq]))
        nxt = int(out[0, -1].argmax())
        greedy.append(nxt)
        seq.append(nxt)
    return {'prompt': REFERENCE_PROMPT, 'input_ids': ids, 'last_logits': [round(float(v), 6) for v in logits[0, -1]], 'greedy_ids': greedy}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('name', choices=['target', 'draft'])
    args = parser.parse_args()
    model, state = load(args.name)
    out = os.path.join(HERE, args.name)
    os.makedirs(out, exist_ok=True)
    export(model, os.path.join(out, 'model.onnx'), MODEL_NAMES[args.name])
    for f in ('tokenizer.json', 'tokenizer_config.json', 'generation_config.json'):
        shutil.copyfile(os.path.join(HERE, 'tokenizer', f), os.path.join(out, f))
    c = model.config
    config = {'model_type': 'gpt2', 'architectures': ['GPT2LMHeadModel'], 'vocab_size': c.vocab_size, 'n_layer': c.n_layer,
              'n_head': c.n_head, 'n_embd': c.d_model, 'n_positions': c.max_positions, 'bos_token_id': 0, 'eos_token_id': 0,
              'use_cache': True, 'gridpipe': {'trained_steps': state['step'], 'seed': state.get('seed')}}
    with open(os.path.join(out, 'config.json'), 'w') as f:
        json.dump(config, f, indent=1)
        f.write('\n')
    import bpe
    vocab, merges = bpe.load(os.path.join(out, 'tokenizer.json'))
    ids = bpe.Encoder(vocab, merges).encode(REFERENCE_PROMPT)
    with open(os.path.join(out, 'reference.json'), 'w') as f:
        json.dump(reference(model, ids), f)
        f.write('\n')
    print(f'{out}: model.onnx {os.path.getsize(os.path.join(out, "model.onnx"))} bytes (step {state["step"]})', file=sys.stderr)


if __name__ == '__main__':
    main()
