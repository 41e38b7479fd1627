"""The locally trained CLIP tokenizer: CLIP's file format, a lossless round trip on the captions, and the same ids
from every way transformers loads it.

Tests: the vocabulary is OpenAI's layout (512 byte tokens, merges, then the two special tokens last) and merges.txt
has its header; every training caption round-trips (lower-cased, whitespace collapsed) with no unknown token, framed
by <|startoftext|> ... <|endoftext|>, padded to max_length with <|endoftext|>; CLIPTokenizer, CLIPTokenizerFast,
AutoTokenizer (use_fast True and False) and an independent re-implementation of OpenAI's simple_tokenizer BPE give the
same ids; the merges do not depend on the captions' order; clip_tokenizer_files reproduces the files; bad inputs are
one-line errors.
"""

from __future__ import annotations

import json
import random

import pytest

from gen_research.errors import GenResearchError
from gen_research.models.clip.tokenizer import (BASE_VOCAB_SIZE, EOS_TOKEN, bytes_to_unicode, clip_tokenizer_files, load_clip_tokenizer,
                                                normalise_caption, train_clip_tokenizer)

COLOURS = "red green blue yellow purple orange white pink".split()
DIGITS = "zero one two three four five six seven eight nine".split()
RNG = random.Random(0)
TEXTS = [f"a {RNG.choice(['small', 'large'])} {RNG.choice(['thin', 'thick'])} {RNG.choice(COLOURS)} {RNG.choice(DIGITS)} at the "
         f"{RNG.choice(['top left', 'centre', 'bottom right'])} on a {RNG.choice(['wooden', 'stone', 'plain'])} background" for _ in range(300)]
TEXTS += ["A  Big\tRED seven,   on grass!", "don't stop: 7 digits", ""]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    train_clip_tokenizer(TEXTS, path, vocab_size=640, max_length=24)
    return path


def openai_bpe_ids(folder, text: str) -> list[int]:
    """OpenAI CLIP simple_tokenizer.py's encode on our files (its bpe(), no ftfy/html: the texts are plain ASCII)."""
    vocab = json.loads((folder / "vocab.json").read_text())
    merges = [tuple(line.split()) for line in (folder / "merges.txt").read_text().splitlines()[1:] if line]
    ranks = {merge: i for i, merge in enumerate(merges)}
    byte_char = bytes_to_unicode()

    def bpe(token: str) -> list[str]:
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(word[i], word[i + 1]) for i in range(len(word) - 1)]
            best = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
            if best not in ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    import re

    pieces = re.findall(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+", " ".join(text.split()).lower())
    ids = [vocab["<|startoftext|>"]]
    for piece in pieces:
        ids += [vocab[token] for token in bpe("".join(byte_char[b] for b in piece.encode("utf-8")))]
    return ids + [vocab[EOS_TOKEN]]


def test_files_are_in_openai_clip_layout(folder):
    vocab = json.loads((folder / "vocab.json").read_text())
    merges = (folder / "merges.txt").read_text().splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) - 1 == len(vocab) - BASE_VOCAB_SIZE > 0
    order = sorted(vocab, key=vocab.get)
    chars = list(bytes_to_unicode().values())
    assert order[:256] == chars and order[256:512] == [c + "</w>" for c in chars]
    assert order[512:-2] == ["".join(line.split()) for line in merges[1:]]
    assert order[-2:] == ["<|startoftext|>", "<|endoftext|>"] and len(vocab) <= 640
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 24 and config["pad_token"] == EOS_TOKEN and config["tokenizer_class"] == "CLIPTokenizer"
    assert json.loads((folder / "special_tokens_map.json").read_text())["bos_token"] == "<|startoftext|>"


def test_every_caption_round_trips_without_unknown_tokens(folder):
    tokenizer = load_clip_tokenizer(folder)
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.unk_token_id not in ids[1:-1]  # unk is <|endoftext|>: it may only end the sequence
        assert tokenizer.decode(ids, skip_special_tokens=True) == normalise_caption(text)
    assert normalise_caption("A  Big\tRED seven,   on grass!") == "a big red seven , on grass !"
    assert tokenizer.decode(tokenizer(TEXTS[0])["input_ids"], skip_special_tokens=True) == TEXTS[0]  # plain captions come back as they are
    padded = tokenizer(TEXTS[:4], padding="max_length", truncation=True, max_length=tokenizer.model_max_length)["input_ids"]
    assert all(len(row) == 24 and row[-1] == tokenizer.pad_token_id == tokenizer.eos_token_id for row in padded)
    # Frequent caption words became single tokens (the merges learned them).
    assert len(tokenizer(TEXTS[0])["input_ids"]) == len(TEXTS[0].split()) + 2


def test_every_loader_and_openais_bpe_give_the_same_ids(folder):
    from transformers import AutoTokenizer, CLIPTokenizer, CLIPTokenizerFast

    # transformers 5 has one tokenizers-backed CLIP class: the "fast" name and use_fast=False give it too.
    loaded = [CLIPTokenizer.from_pretrained(folder), CLIPTokenizerFast.from_pretrained(folder),
              AutoTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(folder, use_fast=False)]
    assert CLIPTokenizerFast is CLIPTokenizer
    expected = [openai_bpe_ids(folder, text) for text in TEXTS]
    for tokenizer in loaded:
        assert type(tokenizer).__name__ == "CLIPTokenizer"
        assert tokenizer(TEXTS)["input_ids"] == expected


def test_merges_do_not_depend_on_caption_order(folder, tmp_path):
    shuffled = TEXTS[:]
    random.Random(3).shuffle(shuffled)
    train_clip_tokenizer(shuffled, tmp_path, vocab_size=640, max_length=24)
    assert (tmp_path / "merges.txt").read_text() == (folder / "merges.txt").read_text()
    assert (tmp_path / "vocab.json").read_text() == (folder / "vocab.json").read_text()


def test_clip_tokenizer_files_reproduce_the_folder(folder, tmp_path):
    files = clip_tokenizer_files(load_clip_tokenizer(folder))
    assert json.loads(files["vocab.json"]) == json.loads((folder / "vocab.json").read_text())
    assert files["merges.txt"] == (folder / "merges.txt").read_text()
    assert json.loads(files["tokenizer_config.json"]) == json.loads((folder / "tokenizer_config.json").read_text())


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(GenResearchError, match="vocab_size=100 must be an integer >= 514"):
        train_clip_tokenizer(TEXTS, tmp_path, vocab_size=100)
    with pytest.raises(GenResearchError, match="no captions"):
        train_clip_tokenizer([], tmp_path)
    with pytest.raises(GenResearchError, match=r"tokens, more than max_length=5; raise model.init_args.max_length to at least"):
        train_clip_tokenizer(["one two three four five six"], tmp_path, vocab_size=600, max_length=5)
    with pytest.raises(GenResearchError, match=r"no CLIP tokenizer at .*nothing \(vocab.json, merges.txt missing\)"):
        load_clip_tokenizer(tmp_path / "nothing")
