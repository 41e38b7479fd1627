"""A CLIP BPE tokenizer trained locally on captions, saved as a folder transformers' ``CLIPTokenizer`` loads.

The files follow OpenAI CLIP's ``simple_tokenizer.py`` (and Stable Diffusion's ``tokenizer/`` folder): ``vocab.json``
is the 256 byte-level characters, the same 256 with the word-final ``</w>``, one token per merge in merge order, then
``<|startoftext|>`` and ``<|endoftext|>`` (the last two ids); ``merges.txt`` starts with ``#version: 0.2``. Text is
normalised and split exactly as ``transformers.CLIPTokenizer`` does (NFC, whitespace collapsed, lower-cased, CLIP's
regex, byte-level), because its normaliser and pre-tokenizer are the ones the merges are learned with. Only the
merges come from the ``tokenizers`` BPE trainer; the vocabulary is laid out by hand in OpenAI's order (the trainer
would add only the ``</w>`` characters it saw, so an unseen word-final character would be unknown).

Padding is ``<|endoftext|>`` as in Stable Diffusion 1.x's tokenizer. In transformers 5 ``CLIPTokenizerFast`` is the
same class as ``CLIPTokenizer`` (one tokenizers-backed class), and ``CLIPTokenizer(vocab_file=...)`` ignores its
files: always load with :func:`load_clip_tokenizer` (``from_pretrained`` on the folder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
#: 256 byte characters, the same with ``</w>``, and the two special tokens: the smallest CLIP vocabulary.
BASE_VOCAB_SIZE = 2 * 256 + 2
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI CLIP's (and GPT-2's) byte -> printable character table, in its order (simple_tokenizer.py)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes)}


def normalise_caption(text: str) -> str:
    """What a CLIP tokenizer's decode gives back for ``text``: NFC, lower-cased, whitespace collapsed, and every
    pre-token (a word, a digit, a run of punctuation, a clitic such as ``'s``) separated by one space, since
    decoding turns each word-final ``</w>`` into a space."""
    from transformers import CLIPTokenizer

    backend = CLIPTokenizer().backend_tokenizer
    pieces = backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}  # pre-tokens come out byte-level encoded
    return " ".join(bytes(byte_of[char] for char in piece).decode("utf-8", errors="replace") for piece, _ in pieces)


def learn_merges(texts: Iterable[str], num_merges: int) -> list[tuple[str, str]]:
    """The first ``num_merges`` BPE merges of the captions, learned by the ``tokenizers`` trainer with
    transformers' CLIP normaliser and pre-tokenizer and CLIP's ``</w>`` word ends (fewer when the text runs out)."""
    if num_merges <= 0:
        return []
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    clip_backend = CLIPTokenizer().backend_tokenizer  # the normaliser and splitter every CLIP tokenizer applies
    bpe = Tokenizer(models.BPE(end_of_word_suffix=END_OF_WORD, continuing_subword_prefix="", unk_token=EOS_TOKEN))
    bpe.normalizer = clip_backend.normalizer
    bpe.pre_tokenizer = clip_backend.pre_tokenizer
    # The trainer's vocabulary counts its alphabet (at most the 512 base symbols) too: ask for enough, keep the prefix.
    trainer = trainers.BpeTrainer(vocab_size=num_merges + 2 * 256, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  end_of_word_suffix=END_OF_WORD, show_progress=False, special_tokens=[])
    bpe.train_from_iterator(sorted(texts), trainer)  # sorted: the same merges whatever order the captions came in
    merges = json.loads(bpe.to_str())["model"]["merges"]
    return [tuple(merge.split(" ")) if isinstance(merge, str) else (merge[0], merge[1]) for merge in merges[:num_merges]]


def tokenizer_config(max_length: int, bos: str = BOS_TOKEN, eos: str = EOS_TOKEN, pad: str = EOS_TOKEN, unk: str = EOS_TOKEN) -> dict[str, Any]:
    """tokenizer_config.json as Stable Diffusion 1.x's tokenizer folder has it (model_max_length = max_length)."""
    return {"tokenizer_class": "CLIPTokenizer", "model_max_length": int(max_length), "bos_token": bos, "eos_token": eos,
            "pad_token": pad, "unk_token": unk, "do_lower_case": True, "add_prefix_space": False, "errors": "replace"}


def write_tokenizer_files(files: Mapping[str, str], folder: Path) -> Path:
    """Write ``{file name: text}`` (the four CLIP tokenizer files) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        if name not in TOKENIZER_FILES:
            raise GenResearchError(f"unexpected tokenizer file {name!r}; a CLIP tokenizer has {', '.join(TOKENIZER_FILES)}")
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def load_clip_tokenizer(folder: Path | str, hint: str = "or leave model.init_args.tokenizer null to train one on the captions") -> Any:
    """``transformers.CLIPTokenizer.from_pretrained(folder)`` offline, or a one-line error naming what is missing
    (``hint`` ends it: what else the caller may pass)."""
    folder = Path(folder).expanduser()
    missing = [name for name in ("vocab.json", "merges.txt") if not (folder / name).is_file()]
    if missing and not (folder / "tokenizer.json").is_file():
        raise GenResearchError(f"no CLIP tokenizer at {folder} ({', '.join(missing)} missing); pass a folder with vocab.json and merges.txt "
                               f"(e.g. a Stable Diffusion pipeline's tokenizer/), {hint}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers reaches for the Hub
    from transformers import CLIPTokenizer

    try:
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise GenResearchError(f"cannot load a CLIP tokenizer from {folder} ({first}); pass a folder with vocab.json and merges.txt") from None


def clip_tokenizer_files(tokenizer: Any) -> dict[str, str]:
    """The four files (name -> text) of any transformers CLIP tokenizer: ours, SD's, OpenCLIP's (pad ``!``)."""
    vocab = dict(sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]))
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    lines = [merge if isinstance(merge, str) else " ".join(merge) for merge in merges]
    special = {"bos_token": str(tokenizer.bos_token), "eos_token": str(tokenizer.eos_token), "pad_token": str(tokenizer.pad_token),
               "unk_token": str(tokenizer.unk_token)}
    config = tokenizer_config(tokenizer.model_max_length, special["bos_token"], special["eos_token"], special["pad_token"], special["unk_token"])
    return {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "".join(line + "\n" for line in lines),
        "tokenizer_config.json": json.dumps(config, indent=2),
        "special_tokens_map.json": json.dumps(special, indent=2),
    }


def check_round_trip(tokenizer: Any, texts: Iterable[str]) -> None:
    """Every text encodes without unknown tokens, between ``<|startoftext|>`` and ``<|endoftext|>``, within the
    tokenizer's max length, and decodes to :func:`normalise_caption` of itself; else a one-line error naming it."""
    limit = int(tokenizer.model_max_length)
    for text in dict.fromkeys(texts):  # each distinct caption once
        ids = tokenizer(text)["input_ids"]
        if ids[0] != tokenizer.bos_token_id or ids[-1] != tokenizer.eos_token_id or tokenizer.eos_token_id in ids[1:-1]:
            raise GenResearchError(f"the CLIP tokenizer does not frame {text!r} with {BOS_TOKEN} ... {EOS_TOKEN}")
        if len(ids) > limit:
            raise GenResearchError(f"the caption {text!r} is {len(ids)} tokens, more than max_length={limit}; "
                                   f"raise model.init_args.max_length to at least {len(ids)}")
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        if decoded != normalise_caption(text):
            raise GenResearchError(f"the CLIP tokenizer does not round-trip {text!r} (decodes to {decoded!r})")


def train_clip_tokenizer(texts: Iterable[str], folder: Path, vocab_size: int = 1000, max_length: int = 32) -> Any:
    """Train a CLIP BPE tokenizer on ``texts``, save it in ``folder`` and return it loaded from there.

    ``vocab_size`` is at most the vocabulary (the 514 base tokens + the merges; fewer merges when the captions have
    no more pairs to merge). ``max_length`` becomes ``model_max_length``: begin and end tokens included, as CLIP's 77.
    Every caption must round-trip (:func:`check_round_trip`), so a caption longer than ``max_length`` is an error."""
    texts = [str(text) for text in texts]
    if not texts:
        raise GenResearchError("no captions to train the CLIP tokenizer on: the training split is empty or has no caption field")
    if not (isinstance(vocab_size, int) and vocab_size >= BASE_VOCAB_SIZE):
        raise GenResearchError(f"vocab_size={vocab_size!r} must be an integer >= {BASE_VOCAB_SIZE} (256 bytes, 256 word-final bytes, 2 special tokens)")
    if not (isinstance(max_length, int) and max_length >= 3):
        raise GenResearchError(f"max_length={max_length!r} must be an integer >= 3 (begin, one token, end)")
    merges = learn_merges(texts, vocab_size - BASE_VOCAB_SIZE)
    chars = list(bytes_to_unicode().values())
    tokens = chars + [char + END_OF_WORD for char in chars] + ["".join(merge) for merge in merges] + [BOS_TOKEN, EOS_TOKEN]
    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN, "unk_token": EOS_TOKEN}
    files = {
        "vocab.json": json.dumps({token: index for index, token in enumerate(tokens)}, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "tokenizer_config.json": json.dumps(tokenizer_config(max_length), indent=2),
        "special_tokens_map.json": json.dumps(special, indent=2),
    }
    tokenizer = load_clip_tokenizer(write_tokenizer_files(files, folder))
    check_round_trip(tokenizer, texts)
    return tokenizer


def read_tokenizer_files(folder: Path) -> dict[str, str]:
    """The CLIP tokenizer files of ``folder`` (name -> text), those present."""
    return {name: (Path(folder) / name).read_text(encoding="utf-8") for name in TOKENIZER_FILES if (Path(folder) / name).is_file()}


__all__ = ["BASE_VOCAB_SIZE", "BOS_TOKEN", "EOS_TOKEN", "TOKENIZER_FILES", "bytes_to_unicode", "check_round_trip", "clip_tokenizer_files",
           "learn_merges", "load_clip_tokenizer", "normalise_caption", "read_tokenizer_files", "tokenizer_config", "train_clip_tokenizer",
           "write_tokenizer_files"]
