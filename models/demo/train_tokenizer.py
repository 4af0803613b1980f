"""Why: writes the demo models' tokenizer files once, from the training text, so the target and the
draft share one vocabulary and the grid serves them like a real Hugging Face export.

    /usr/bin/python3 models/demo/train_tokenizer.py   # models/demo/tokenizer/{tokenizer,tokenizer_config,generation_config}.json
"""
import json
import os
import sys
import time

import bpe

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, 'tokenizer')
VOCAB_SIZE = 4096
# A plain role-prefixed template: the model is no assistant, it continues scripture-like text.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def main():
    start = time.time()
    with open(os.path.join(HERE, 'data', 'train.txt'), encoding='utf-8') as f:
        texts = f.read().split(bpe.EOT)
    merges = bpe.train(texts, VOCAB_SIZE)
    vocab = bpe.vocab_of(merges)
    os.makedirs(OUT, exist_ok=True)
    files = {
        'tokenizer.json': bpe.tokenizer_json(vocab, merges),
        'tokenizer_config.json': {
            'tokenizer_class': 'GPT2Tokenizer',
            'bos_token': bpe.EOT, 'eos_token': bpe.EOT, 'unk_token': bpe.EOT,
            'add_bos_token': False, 'add_prefix_space': False,
            'model_max_length': 256,
            'chat_template': CHAT_TEMPLATE,
        },
        'generation_config.json': {'bos_token_id': 0, 'eos_token_id': [0], 'do_sample': True, 'temperature': 0.8, 'top_p': 0.95, 'max_length': 256},
    }
    for name, content in files.items():
        with open(os.path.join(OUT, name), 'w', encoding='utf-8') as f:
            json.dump(content, f, indent=1 if name != 'tokenizer.json' else None, ensure_ascii=False)
            f.write('\n')
    print(f'{len(vocab)} tokens, {len(merges)} merges in {time.time() - start:.1f} s', file=sys.stderr)


if __name__ == '__main__':
    main()
