#!/usr/bin/env python3
"""Regenerates the tokenizer fixtures in tests/tokenizer/ (run by hand; CI needs no Python).

    pip install tokenizers            # the reference: HuggingFace tokenizers
    cmake --build build --target text_corpus_dump
    python3 tests/tokenizer/make_fixtures.py build/tests/text_corpus_dump

Writes, for two byte-level BPE tokenizers trained here with `tokenizers` on the English text of
Debian's fortunes (/usr/share/games/fortunes):
  deepseek/tokenizer.json, tokenizer_config.json   DeepSeek-V3's pipeline: its three Split regexes
      (digit groups, Han/kana runs, words and punctuation), ByteLevel without its regex, no
      normalizer, DeepSeek-V3's special tokens; merges in the [left, right] pair form.
  gpt2/tokenizer.json, tokenizer_config.json       GPT-2's ByteLevel regex, plus an NFC normalizer,
      add_prefix_space and ignore_merges (to cover them); merges in the "left right" string form.
  expected.json   per tokenizer: the ids of each document of a small corpus (20 kB, seed 7) and,
      for the 10 MB corpus (seed 20), the token count and the FNV-1a hash of all ids.
The corpora come from the C++ generator (tests/text_corpus.cpp) through text_corpus_dump; a
document's bytes are given to tokenizers as bytes.decode("utf-8", "replace") (the C++ tokenizer
replaces invalid UTF-8 the same way).
"""
import glob
import json
import os
import struct
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers, Regex

HERE = os.path.dirname(os.path.abspath(__file__))
SMALL = (20_000, 7)
LARGE = (10_000_000, 20)

DEEPSEEK_SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<｜User｜>", "<｜Assistant｜>"]
# DeepSeek-V3's chat template, as its tokenizer_config.json gives it (tool calls left out).
DEEPSEEK_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}"
    "{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}"
    "{%- else %}{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content'] %}{%- endif %}"
    "{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}{%- if message['role'] == 'user' %}{{'<｜User｜>' + message['content']}}"
    "{%- endif %}{%- if message['role'] == 'assistant' %}{{'<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}"
    "{%- endif %}{%- endfor %}{% if add_generation_prompt %}{{'<｜Assistant｜>'}}{% endif %}"
)


def fortunes():
    files = sorted(f for f in glob.glob("/usr/share/games/fortunes/*") if os.path.isfile(f) and not f.endswith(".dat"))
    if not files:
        sys.exit("no fortunes: apt-get install fortunes fortunes-min")
    for f in files:
        with open(f, "rb") as fh:
            for text in fh.read().decode("utf-8", "replace").split("\n%\n"):
                yield text


def deepseek_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{N}{1,3}"), behavior="isolated", invert=False),
        pre_tokenizers.Split(Regex("[一-龥\u3040-ゟ゠-ヿ]+"), behavior="isolated", invert=False),
        pre_tokenizers.Split(Regex(
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
            " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=6000, special_tokens=DEEPSEEK_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(fortunes(), trainer)
    config = {"bos_token": {"content": DEEPSEEK_SPECIALS[0], "__type": "AddedToken"},
              "eos_token": {"content": DEEPSEEK_SPECIALS[1], "__type": "AddedToken"},
              "pad_token": {"content": DEEPSEEK_SPECIALS[1], "__type": "AddedToken"},
              "add_bos_token": True, "add_eos_token": False, "chat_template": DEEPSEEK_TEMPLATE,
              "tokenizer_class": "LlamaTokenizerFast"}
    return tok, config


def gpt2_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFC()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4000, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(fortunes(), trainer)
    return tok, {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "tokenizer_class": "GPT2Tokenizer"}


def save(tok, config, name, string_merges=False, ignore_merges=False):
    out = os.path.join(HERE, name)
    os.makedirs(out, exist_ok=True)
    data = json.loads(tok.to_str())
    if string_merges:
        data["model"]["merges"] = [f"{a} {b}" for a, b in data["model"]["merges"]]
    data["model"]["ignore_merges"] = ignore_merges
    text = json.dumps(data, ensure_ascii=False, indent=None, separators=(",", ":"))
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
        f.write("\n")
    return Tokenizer.from_str(text)  # what the C++ side reads, re-read: the reference


def corpus(dump, size, seed):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "corpus.bin")
        subprocess.run([dump, path, str(size), str(seed)], check=True)
        raw = open(path, "rb").read()
    docs, i = [], 0
    while i < len(raw):
        (n,) = struct.unpack_from("<I", raw, i)
        docs.append(raw[i + 4:i + 4 + n].decode("utf-8", "replace"))
        i += 4 + n
    return docs


def fnv1a(ids, h=0xcbf29ce484222325):
    for v in ids:
        for b in struct.pack("<I", v):
            h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    dump = sys.argv[1]
    small, large = corpus(dump, *SMALL), corpus(dump, *LARGE)
    expected = {"small": {"bytes": SMALL[0], "seed": SMALL[1]}, "large": {"bytes": LARGE[0], "seed": LARGE[1]}}
    for name, (tok, config), kwargs in [("deepseek", deepseek_tokenizer(), {}),
                                        ("gpt2", gpt2_tokenizer(), {"string_merges": True, "ignore_merges": True})]:
        ref = save(tok, config, name, **kwargs)
        ids_small = [e.ids for e in ref.encode_batch(small, add_special_tokens=False)]
        ids_large = [e.ids for e in ref.encode_batch(large, add_special_tokens=False)]
        h, count = 0xcbf29ce484222325, 0
        for ids in ids_large:
            h = fnv1a(ids, h)
            count += len(ids)
        expected[name] = {"small_ids": ids_small, "large_tokens": count, "large_fnv1a": f"{h:016x}",
                          "vocab_size": ref.get_vocab_size(with_added_tokens=True)}
        print(f"{name}: vocab {expected[name]['vocab_size']}, large corpus {sum(len(d.encode()) for d in large)} "
              f"bytes in {len(large)} documents -> {count} tokens, fnv1a {h:016x}")
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
