"""Why: the demo model needs its own byte-level BPE tokenizer (nothing may be downloaded), written in
the standard Hugging Face `tokenizer.json` format so the grid loads it like any real export's.

GPT-2 style: bytes mapped to printable characters, text split by the GPT-2 pre-tokenizer regex
(its ASCII form; the corpus is ASCII), merges learned greedily on word counts. `encode` applies the
merges by rank exactly as the Hugging Face BPE model does, so training data and serving agree.
"""
import json
import re
from collections import Counter, defaultdict

EOT = '<|endoftext|>'
# GPT-2's split pattern with \p{L} / \p{N} narrowed to ASCII: identical on ASCII text.
PRETOKENIZE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    """GPT-2's reversible byte → printable character table."""
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_CHARS = bytes_to_unicode()


def words_of(text):
    """Pre-tokenized words, each as its byte-level character string."""
    return [''.join(BYTE_CHARS[b] for b in w.encode('utf-8')) for w in PRETOKENIZE.findall(text)]


def train(texts, vocab_size):
    """Learns merges until the vocabulary (special + 256 bytes + merges) reaches vocab_size."""
    counts = Counter()
    for text in texts:
        counts.update(words_of(text))
    words = [list(w) for w in counts]
    freqs = [counts[w] for w in counts]
    pair_counts = Counter()
    where = defaultdict(set)
    for i, symbols in enumerate(words):
        for a, b in zip(symbols, symbols[1:]):
            pair_counts[(a, b)] += freqs[i]
            where[(a, b)].add(i)
    merges = []
    target = vocab_size - 1 - 256
    while len(merges) < target and pair_counts:
        best = max(pair_counts, key=lambda p: (pair_counts[p], p))
        if pair_counts[best] < 2:
            break
        merges.append(best)
        joined = best[0] + best[1]
        for i in list(where[best]):
            symbols = words[i]
            for a, b in zip(symbols, symbols[1:]):
                pair_counts[(a, b)] -= freqs[i]
                if pair_counts[(a, b)] <= 0:
                    del pair_counts[(a, b)]
                where[(a, b)].discard(i)
            merged = []
            k = 0
            while k < len(symbols):
                if k + 1 < len(symbols) and symbols[k] == best[0] and symbols[k + 1] == best[1]:
                    merged.append(joined)
                    k += 2
                else:
                    merged.append(symbols[k])
                    k += 1
            words[i] = merged
            for a, b in zip(merged, merged[1:]):
                pair_counts[(a, b)] += freqs[i]
                where[(a, b)].add(i)
        where.pop(best, None)
    return merges


def vocab_of(merges):
    """id 0 = <|endoftext|>, ids 1..256 = the bytes in order, then one id per merge."""
    vocab = {EOT: 0}
    for b in range(256):
        vocab[BYTE_CHARS[b]] = len(vocab)
    for a, b in merges:
        vocab[a + b] = len(vocab)
    return vocab


class Encoder:
    """Rank-ordered BPE over pre-tokenized words (the Hugging Face BPE model's algorithm)."""

    def __init__(self, vocab, merges):
        self.vocab = vocab
        self.ranks = {tuple(m): r for r, m in enumerate(merges)}
        self.cache = {}

    def word(self, w):
        if w in self.cache:
            return self.cache[w]
        symbols = list(w)
        while len(symbols) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), k) for k, (a, b) in enumerate(zip(symbols, symbols[1:]))]
            rank, k = min(pairs)
            if rank == 1 << 30:
                break
            symbols[k:k + 2] = [symbols[k] + symbols[k + 1]]
        ids = [self.vocab[s] for s in symbols]
        self.cache[w] = ids
        return ids

    def encode(self, text):
        """Token ids of text; the literal <|endoftext|> becomes id 0."""
        ids = []
        for n, part in enumerate(text.split(EOT)):
            if n:
                ids.append(self.vocab[EOT])
            for w in words_of(part):
                ids.extend(self.word(w))
        return ids


def tokenizer_json(vocab, merges):
    """The Hugging Face tokenizer.json of a GPT-2 style byte-level BPE."""
    byte_level = {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True, 'use_regex': True}
    return {
        'version': '1.0',
        'truncation': None,
        'padding': None,
        'added_tokens': [{'id': 0, 'content': EOT, 'single_word': False, 'lstrip': False, 'rstrip': False, 'normalized': False, 'special': True}],
        'normalizer': None,
        'pre_tokenizer': byte_level,
        'post_processor': byte_level,
        'decoder': byte_level,
        'model': {
            'type': 'BPE', 'dropout': None, 'unk_token': None, 'continuing_subword_prefix': '', 'end_of_word_suffix': '',
            'fuse_unk': False, 'byte_fallback': False, 'ignore_merges': False,
            'vocab': vocab, 'merges': [f'{a} {b}' for a, b in merges],
        },
    }


def load(path):
    """(vocab, merges) from a tokenizer.json written by tokenizer_json."""
    with open(path, encoding='utf-8') as f:
        model = json.load(f)['model']
    return model['vocab'], [tuple(m.split(' ')) for m in model['merges']]
