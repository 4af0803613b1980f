"""Why: trains the demo target or draft decoder here, offline, on CPU, seeded and resumable, with a
checkpoint every few minutes so a run cut short still leaves usable weights.

    /usr/bin/python3 models/demo/train.py target   # (or draft) → models/demo/checkpoints/<name>.pt
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

import bpe
from model import CONFIGS, GPT

HERE = os.path.dirname(os.path.abspath(__file__))
PLAN = {
    # batch × block tokens per step; steps; peak learning rate
    'target': {'batch': 8, 'block': 256, 'steps': 2400, 'lr': 2e-3},
    'draft': {'batch': 8, 'block': 256, 'steps': 1500, 'lr': 3e-3},
}
SEED = 20
WARMUP = 100
CHECKPOINT_EVERY_S = 180


def tokens(name):
    """Token ids of the training text (data/train.txt) or the held-out text (heldout.txt), cached under data/."""
    text_file = os.path.join(HERE, 'data', 'train.txt') if name == 'train' else os.path.join(HERE, 'heldout.txt')
    cache = os.path.join(HERE, 'data', name + '.ids.npy')
    tok = os.path.join(HERE, 'tokenizer', 'tokenizer.json')
    if os.path.exists(cache) and os.path.getmtime(cache) > os.path.getmtime(tok):
        return np.load(cache)
    vocab, merges = bpe.load(tok)
    with open(text_file, encoding='utf-8') as f:
        ids = np.array(bpe.Encoder(vocab, merges).encode(f.read()), dtype=np.int64)
    np.save(cache, ids)
    return ids


def learning_rate(step, plan):
    if step < WARMUP:
        return plan['lr'] * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, plan['steps'] - WARMUP)
    return plan['lr'] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model, ids, block=256, limit=None):
    """Mean next-token loss over consecutive windows of held-out ids."""
    model.eval()
    total, count = 0.0, 0
    windows = range(0, len(ids) - block - 1, block)
    for n, start in enumerate(windows):
        if limit is not None and n >= limit:
            break
        x = torch.from_numpy(ids[start:start + block]).unsqueeze(0)
        y = torch.from_numpy(ids[start + 1:start + block + 1]).unsqueeze(0)
        total += model.loss(x, y).item() * block
        count += block
    model.train()
    return total / count


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('name', choices=sorted(PLAN))
    parser.add_argument('--steps', type=int, help='override the planned step count')
    parser.add_argument('--out', default=os.path.join(HERE, 'checkpoints'), help='checkpoint folder (default: checkpoints/)')
    args = parser.parse_args()
    plan = dict(PLAN[args.name])
    if args.steps:
        plan['steps'] = args.steps
    torch.manual_seed(SEED)
    train_ids, held_ids = tokens('train'), tokens('heldout')
    model = GPT(CONFIGS[args.name])
    params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1}, {'params': no_decay, 'weight_decay': 0.0}], lr=plan['lr'], betas=(0.9, 0.95))
    out_dir = args.out
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, args.name + '.pt')
    step, elapsed = 0, 0.0
    if os.path.exists(path):
        state = torch.load(path)
        model.load_state_dict(state['model'])
        opt.load_state_dict(state['optimizer'])
        step, elapsed = state['step'], state['elapsed_s']
        torch.set_rng_state(state['torch_rng'])
        print(f'resumed at step {step}', file=sys.stderr)
    print(f'{args.name}: {params} parameters, {len(train_ids)} train tokens, {len(held_ids)} held-out tokens, plan {plan}', file=sys.stderr)

    def save(final=False):
        torch.save({'model': model.state_dict(), 'optimizer': opt.state_dict(), 'step': step, 'elapsed_s': elapsed, 'torch_rng': torch.get_rng_state(),
                    'config': CONFIGS[args.name].to_dict(), 'plan': plan, 'seed': SEED}, path + '.tmp')
        os.replace(path + '.tmp', path)
        if final:
            held = evaluate(model, held_ids)
            summary = {'name': args.name, 'parameters': params, 'steps': step, 'tokens': step * plan['batch'] * plan['block'],
                       'train_seconds': round(elapsed), 'final_train_loss': round(last_loss, 4),
                       'heldout_loss': round(held, 4), 'heldout_perplexity': round(math.exp(held), 2), 'plan': plan, 'seed': SEED}
            with open(os.path.join(out_dir, args.name + '.json'), 'w') as f:
                json.dump(summary, f, indent=1)
            print(json.dumps(summary), file=sys.stderr)

    last_save = time.time()
    last_loss = float('nan')
    smooth = None
    t0 = time.time()
    while step < plan['steps']:
        # Batches depend only on (seed, step), so a resumed run draws what an uninterrupted one would.
        starts = np.random.default_rng([SEED, step]).integers(0, len(train_ids) - plan['block'] - 1, size=plan['batch'])
        x = torch.from_numpy(np.stack([train_ids[s:s + plan['block']] for s in starts]))
        y = torch.from_numpy(np.stack([train_ids[s + 1:s + plan['block'] + 1] for s in starts]))
        for group in opt.param_groups:
            group['lr'] = learning_rate(step, plan)
        loss = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        now = time.time()
        elapsed += now - t0
        t0 = now
        last_loss = loss.item()
        smooth = last_loss if smooth is None else 0.98 * smooth + 0.02 * last_loss
        if step % 25 == 0:
            tps = step * plan['batch'] * plan['block'] / max(elapsed, 1e-9)
            print(f'step {step}/{plan["steps"]} loss {smooth:.3f} {tps:.0f} tok/s {elapsed:.0f}s', file=sys.stderr, flush=True)
        if now - last_save > CHECKPOINT_EVERY_S:
            save()
            last_save = time.time()
            t0 = last_save
            print(f'checkpoint at step {step}, held-out loss {evaluate(model, held_ids, limit=20):.3f}', file=sys.stderr, flush=True)
            t0 = time.time()
    save(final=True)


if __name__ == '__main__':
    main()
