"""Why: the demo model needs a public-domain English corpus that ships with Debian, split into
training and held-out text the same way on every machine, so perplexities are comparable.

Reads the King James Bible from Debian's `bible` program (packages bible-kjv + bible-kjv-text),
drops chapter headings and verse numbers, writes one verse per line, one chapter per document
(documents are separated by a line holding only <|endoftext|>). Every 20th chapter is held out.

    /usr/bin/python3 models/demo/prepare_corpus.py   # writes models/demo/data/train.txt and models/demo/heldout.txt

The held-out text is committed (public domain, 200 kB): the benchmark scores perplexity on it without Python.
"""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, 'data')
EOT = '<|endoftext|>'
HELD_OUT_EVERY = 20
HEADING = re.compile(r'^[1-3]?\s?[A-Za-z][A-Za-z ]* \d+$')
VERSE_START = re.compile(r'^\s+\d+ (.*)$')


def read_bible():
    """The whole KJV as printed by `bible gen1:1-rev22:21`."""
    return subprocess.run(['bible', 'gen1:1-rev22:21'], check=True, capture_output=True, text=True).stdout


def chapters(text):
    """Yields each chapter as a list of verse strings (headings and verse numbers removed)."""
    verses = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if HEADING.match(line):
            if verses:
                yield verses
            verses = []
            continue
        m = VERSE_START.match(line)
        if m:
            verses.append(m.group(1).strip())
        elif verses:
            verses[-1] += ' ' + line.strip()
        else:
            raise ValueError(f'text before the first verse: {line!r}')
    if verses:
        yield verses


def main():
    os.makedirs(DATA, exist_ok=True)
    train, held = [], []
    count = 0
    for i, verses in enumerate(chapters(read_bible())):
        doc = '\n'.join(' '.join(v.split()) for v in verses) + '\n'
        (held if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else train).append(doc)
        count += 1
    for file, docs in ((os.path.join(DATA, 'train.txt'), train), (os.path.join(HERE, 'heldout.txt'), held)):
        with open(file, 'w', encoding='utf-8') as f:
            f.write((EOT + '\n').join(docs))
    print(f'{count} chapters: {len(train)} train, {len(held)} held out', file=sys.stderr)


if __name__ == '__main__':
    main()
