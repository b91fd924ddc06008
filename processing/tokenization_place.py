"""Tokenizers for PLACE's text tower: build a WordPiece vocabulary offline (deterministically), or load a BERT one.

Both functions return standard transformers tokenizers (tokenizers-backed, so offsets and `word_ids()`
work), which `PlaceProcessor` needs to map tokens to sentences.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import normalizers, pre_tokenizers
from transformers import AutoTokenizer, BertTokenizer, PreTrainedTokenizerBase

__all__ = ["BERT_SPECIAL_TOKENS", "load_tokenizer", "train_wordpiece_tokenizer", "wordpiece_vocabulary"]

#: In id order: [PAD] = 0 as BERT models expect.
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# transformers stores "no limit" as a huge number; anything above this is treated as missing.
_UNBOUNDED_LENGTH = 1_000_000
_DEFAULT_MAX_LENGTH = 512
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json")


def train_wordpiece_tokenizer(
    corpus: Iterable[str],
    vocab_size: int = 8000,
    model_max_length: int = 256,
    lowercase: bool = True,
    min_frequency: int = 2,
) -> BertTokenizer:
    """Build a BERT-style WordPiece vocabulary from `corpus`, offline and deterministically, as a `BertTokenizer`.

    The same texts and settings give the same vocabulary in every process and run (the `tokenizers`
    WordPiece trainer does not: it breaks count ties and numbers tokens in hash-map order, so two trainings
    differ from step 0). The vocabulary, in id order (`wordpiece_vocabulary`):

    1. the special tokens [PAD], [UNK], [CLS], [SEP], [MASK] (ids 0-4);
    2. every character of the corpus and its `##` continuation, most frequent first (ties by character), so
       WordPiece's greedy longest match can spell any word of the corpus; characters that do not fit
       `vocab_size` are the rarest;
    3. whole words seen at least `min_frequency` times, by (-count, word), until `vocab_size` entries.

    A word outside the vocabulary is split into its longest known prefix (often a whole word: "effusions" →
    "effusion", "##s") and then characters. The normaliser and pre-tokeniser are BERT's (`BertNormalizer`,
    `BertPreTokenizer`), as in the returned tokenizer.

    Args:
        corpus: Texts (reports or sentences); iterated once.
        vocab_size: Upper bound on the vocabulary size (a small corpus yields fewer entries).
        model_max_length: Stored on the tokenizer as its maximum sequence length.
        lowercase: Lower-case (and strip accents) before tokenising, as uncased BERT models do.
        min_frequency: Minimum count for a whole word to enter the vocabulary.

    Returns:
        A tokenizers-backed `BertTokenizer`; save it with `save_pretrained`.

    Raises:
        ValueError: If `vocab_size` cannot hold the special tokens or the corpus yields no tokens.
        TypeError: If an item of `corpus` is not a `str` (the message gives its position).
    """
    if vocab_size <= len(BERT_SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(BERT_SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in _checked_texts(corpus):
        words.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    if not words:
        raise ValueError("The corpus produced no tokens: pass a non-empty iterable of non-empty texts")
    vocab = wordpiece_vocabulary(words, vocab_size, min_frequency)
    return BertTokenizer(vocab=vocab, do_lower_case=lowercase, model_max_length=model_max_length)


def wordpiece_vocabulary(words: Counter[str], vocab_size: int, min_frequency: int) -> dict[str, int]:
    """Token → id for word counts, by the deterministic scheme of `train_wordpiece_tokenizer`."""
    characters: Counter[str] = Counter()
    for word, count in words.items():
        for character in word:
            characters[character] += count
    tokens = list(BERT_SPECIAL_TOKENS)
    for character in sorted(characters, key=lambda c: (-characters[c], c)):
        if len(tokens) + 2 > vocab_size:
            break
        tokens += [character, f"##{character}"]
    known = set(tokens)
    frequent = sorted((w for w, n in words.items() if n >= min_frequency and w not in known), key=lambda w: (-words[w], w))
    tokens += frequent[: max(0, vocab_size - len(tokens))]
    return {token: index for index, token in enumerate(tokens)}


def _checked_texts(corpus: Iterable[str]) -> Iterator[str]:
    for position, text in enumerate(corpus):
        if not isinstance(text, str):
            raise TypeError(f"corpus item {position} must be a str, got {type(text).__name__}")
        yield text


def load_tokenizer(path_or_dir: str | os.PathLike, model_max_length: int | None = None) -> PreTrainedTokenizerBase:
    """Load a local BERT-family tokenizer, never touching the network.

    Accepts a folder saved by `save_pretrained` (or any local model folder `AutoTokenizer` understands), a
    folder that only holds a `vocab.txt` (as many clinical BERT releases do), or a `vocab.txt` file itself.
    A bare vocabulary is read into a `BertTokenizer` with `vocab=` (not `vocab_file=`, which v5 maps to
    [UNK]); it is lower-cased when the vocabulary has no upper-case entries.

    Args:
        path_or_dir: Folder or `vocab.txt` path.
        model_max_length: Maximum sequence length to set. When `None`, the tokenizer's own value is kept if it
            is a real limit; a missing / "unbounded" one becomes `max_position_embeddings` from the folder's
            `config.json`, else 512.

    Raises:
        FileNotFoundError: If the path does not exist.
        ValueError: If the folder holds no loadable tokenizer.
    """
    path = Path(path_or_dir)
    if not path.exists():
        raise FileNotFoundError(f"Tokenizer path not found: {path}")
    if path.is_file():
        tokenizer = _tokenizer_from_vocab_file(path)
    elif any((path / name).is_file() for name in _TOKENIZER_FILES):
        tokenizer = _auto_tokenizer_or_vocab(path)
    elif (path / "vocab.txt").is_file():
        tokenizer = _tokenizer_from_vocab_file(path / "vocab.txt")
    else:
        raise ValueError(f"No tokenizer files (tokenizer.json, tokenizer_config.json, vocab.txt) in {path}")
    tokenizer.model_max_length = model_max_length or _resolve_max_length(tokenizer, path)
    return tokenizer


def _auto_tokenizer_or_vocab(folder: Path) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        if (folder / "vocab.txt").is_file():
            return _tokenizer_from_vocab_file(folder / "vocab.txt")
        raise ValueError(f"Cannot load a tokenizer from {folder}: {error}") from error


def _tokenizer_from_vocab_file(vocab_file: Path) -> BertTokenizer:
    tokens = vocab_file.read_text(encoding="utf-8").splitlines()
    vocab = {token: index for index, token in enumerate(tokens) if token}
    if "[UNK]" not in vocab:
        raise ValueError(f"{vocab_file} is not a BERT WordPiece vocabulary: it has no [UNK] token")
    lowercase = not any(token.lower() != token for token in vocab if not token.startswith("["))
    return BertTokenizer(vocab=vocab, do_lower_case=lowercase)


def _resolve_max_length(tokenizer: PreTrainedTokenizerBase, folder: Path) -> int:
    current = getattr(tokenizer, "model_max_length", None)
    if current is not None and current < _UNBOUNDED_LENGTH:
        return int(current)
    config_file = (folder if folder.is_dir() else folder.parent) / "config.json"
    if config_file.is_file():
        positions = json.loads(config_file.read_text(encoding="utf-8")).get("max_position_embeddings")
        if isinstance(positions, int) and positions > 0:
            return positions
    return _DEFAULT_MAX_LENGTH
