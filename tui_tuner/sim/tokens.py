"""Token counting and generated text for the simulated server.

When MODEL is a local directory with a `tokenizer.json` (such as `tui-tuner make-tiny-model`
writes), prompts are tokenized with it, so usage counts agree with what GuideLLM asked for.
Otherwise a deterministic word-piece stand-in is used (about 1.3 tokens per word).
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path
from typing import Any

_FALLBACK_WORDS = (
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "they",
    "you",
    "were",
    "her",
    "she",
    "there",
    "been",
    "one",
    "all",
    "we",
    "their",
    "has",
    "would",
    "when",
    "if",
    "so",
    "no",
    "what",
    "up",
    "out",
    "about",
    "who",
    "into",
    "them",
    "more",
    "can",
    "only",
    "other",
    "new",
    "some",
    "could",
    "time",
    "these",
    "two",
    "may",
    "then",
    "do",
    "first",
    "any",
    "my",
    "now",
    "such",
    "like",
    "our",
    "over",
    "man",
    "me",
    "even",
    "most",
    "made",
    "after",
    "also",
    "did",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
    "because",
    "each",
    "just",
    "those",
    "people",
)


class TokenCodec:
    def __init__(self, model: str, seed: int = 0) -> None:
        self.source = "approximate (no tokenizer.json)"
        self._tok: Any = None
        path = Path(model) / "tokenizer.json"
        if path.is_file():
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(str(path))
            self.source = str(path)
        self._pieces = self._output_pieces()
        self._seed = seed

    def _output_pieces(self) -> list[tuple[int, str]]:
        if self._tok is None:
            return [(1000 + i, " " + w) for i, w in enumerate(_FALLBACK_WORDS)]
        vocab = self._tok.get_vocab()
        pieces = []
        for _, token_id in sorted(vocab.items(), key=lambda kv: kv[1]):
            text = self._tok.decode([token_id])
            if text.strip() and text.isprintable() and "\ufffd" not in text and "<|" not in text:
                pieces.append((token_id, text))
        return pieces[:2048]

    def encode(self, text: str) -> list[int]:
        if self._tok is not None:
            ids: list[int] = self._tok.encode(text, add_special_tokens=True).ids
            return ids
        ids = []
        for word in text.split():
            h = zlib.crc32(word.encode("utf-8", "replace"))
            ids.append(h % 50000)
            if len(word) > 5:
                ids.append((h >> 16) % 50000)
        return ids or [0]

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """Tokens of a chat prompt: each message's content plus a few template tokens."""
        ids: list[int] = []
        for message in messages:
            content = message.get("content", "")
            if isinstance(content, list):
                content = " ".join(
                    str(part.get("text", "")) for part in content if isinstance(part, dict)
                )
            ids += [1, 2, 3, *self.encode(str(content))[1 if self._tok is not None else 0 :]]
        return [*ids, 1, 4]

    def generator(self, request_seed: int) -> random.Random:
        return random.Random(self._seed * 1_000_003 + request_seed)

    def next_piece(self, rng: random.Random) -> str:
        return self._pieces[rng.randrange(len(self._pieces))][1]
