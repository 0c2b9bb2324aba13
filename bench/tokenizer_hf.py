#!/usr/bin/env python3
"""HuggingFace tokenizers on the corpus of bench_tokenizer, one thread, for bench/RESULTS.md.

    build/tests/text_corpus_dump /tmp/corpus.bin 10000000 20
    RAYON_NUM_THREADS=1 python3 bench/tokenizer_hf.py /tmp/corpus.bin

Each repetition loads the tokenizer afresh (a cold cache, as bench_tokenizer's fresh Encoder) and
times encode_batch(documents, add_special_tokens=False) with one rayon thread. Prints MB/s of the
corpus's bytes (as given to the C++ side) for the best of two repetitions, by CPU time (what
Google Benchmark's bytes_per_second uses; on a machine shared with other work the wall time is
longer) and by wall time.
"""
import os
import struct
import sys
import time

from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    raw = open(sys.argv[1], "rb").read()
    docs, i, nbytes = [], 0, 0
    while i < len(raw):
        (n,) = struct.unpack_from("<I", raw, i)
        docs.append(raw[i + 4:i + 4 + n].decode("utf-8", "replace"))
        nbytes += n
        i += 4 + n
    for name in ("deepseek", "gpt2"):
        path = os.path.join(HERE, "..", "tests", "tokenizer", name, "tokenizer.json")
        cpu, wall = float("inf"), float("inf")
        for _ in range(2):
            tok = Tokenizer.from_file(path)
            c0, t0 = time.process_time(), time.perf_counter()
            tok.encode_batch(docs, add_special_tokens=False)
            cpu, wall = min(cpu, time.process_time() - c0), min(wall, time.perf_counter() - t0)
        print(f"{name}: {nbytes} bytes: CPU {cpu:.2f} s = {nbytes / cpu / 1e6:.2f} MB/s, "
              f"wall {wall:.2f} s = {nbytes / wall / 1e6:.2f} MB/s (tokenizers, one thread)")


if __name__ == "__main__":
    main()
