"""Tokenizers for PLACE's text tower: train a WordPiece vocabulary offline, or load an existing BERT one.

Both functions return standard transformers tokenizers (tokenizers-backed, so offsets and `word_ids()`
work), which `PlaceProcessor` needs to map tokens to sentences.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, BertTokenizer, PreTrainedTokenizerBase

__all__ = ["BERT_SPECIAL_TOKENS", "load_tokenizer", "train_wordpiece_tokenizer"]

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
    """Train a BERT-style WordPiece tokenizer on `corpus`, offline, and return it as a `BertTokenizer`.

    The normaliser and pre-tokeniser are BERT's (`BertNormalizer`, `BertPreTokenizer`), so the trained
    vocabulary behaves exactly like the returned `BertTokenizer`. Special tokens get ids 0-4:
    [PAD], [UNK], [CLS], [SEP], [MASK].

    Args:
        corpus: Texts (reports or sentences); iterated once.
        vocab_size: Upper bound on the vocabulary size (a small corpus yields fewer entries).
        model_max_length: Stored on the tokenizer as its maximum sequence length.
        lowercase: Lower-case (and strip accents) before tokenising, as uncased BERT models do.
        min_frequency: Minimum count for a merged sub-word to enter the vocabulary.

    Returns:
        A tokenizers-backed `BertTokenizer`; save it with `save_pretrained`.

    Raises:
        ValueError: If `vocab_size` cannot hold the special tokens or the corpus yields no tokens.
        TypeError: If an item of `corpus` is not a `str` (the message gives its position).
    """
    if vocab_size <= len(BERT_SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(BERT_SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(BERT_SPECIAL_TOKENS),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    backend.train_from_iterator(_checked_texts(corpus), trainer=trainer)
    learned = sorted(set(backend.get_vocab()) - set(BERT_SPECIAL_TOKENS))
    if not learned:
        raise ValueError("The corpus produced no tokens: pass a non-empty iterable of non-empty texts")
    # The trainer numbers tokens in hash-map order, which changes from call to call: sort them. It also breaks
    # count ties at the vocab_size cut arbitrarily, so a run saves its tokenizer (modeling_place.training.data.run_processor).
    vocab = {token: index for index, token in enumerate([*BERT_SPECIAL_TOKENS, *learned])}
    return BertTokenizer(vocab=vocab, do_lower_case=lowercase, model_max_length=model_max_length)


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
