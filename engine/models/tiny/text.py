"""The tiny model's tokenizer and text encoder, built in code: no vocabulary file, no hub.

Words of a fixed vocabulary (colours, shapes, a few function words) get their own id; any other
word is hashed into a bucket, so every prompt encodes. The encoder is a table of random
embeddings that pre-training never updates: distinct words keep distinct, well separated
vectors, which is what lets GRPO teach the DiT to follow a colour word later.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass

import torch

#: How a tiny model directory's ``model_index.json`` names its text encoder. The name is stored in
#: the shipped weights (covered by their SHA256SUMS) and in every tiny model a run exported, so it
#: stays what it was when the package was ``engine.tiny``: it names the component, it is not an
#: import path.
TEXT_ENCODER_ENTRY = ("engine.tiny.text", "TinyTextEncoder")

#: Words with an id of their own; ids 0 and 1 are padding and the start token.
VOCABULARY: tuple[str, ...] = (
    "<pad>",
    "<start>",
    *("red", "green", "blue", "yellow", "cyan", "magenta", "white", "black", "gray", "grey"),
    *("orange", "purple", "pink", "brown", "dark", "light", "bright", "pale"),
    *("image", "picture", "photo", "painting", "square", "circle", "disk", "ring", "stripe"),
    *("triangle", "shape", "background", "big", "small", "of", "on", "in", "with", "and"),
    *("a", "an", "the", "is", "at", "to"),
)
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class TinyTextConfig:
    """The encoder's sizes; saved beside its weights as config.json."""

    #: Ids after the fixed vocabulary that unknown words are hashed into.
    hash_buckets: int = 64
    #: Tokens per prompt: the start token, then words, padded or cut to this length.
    max_length: int = 12
    #: Width of the token embeddings (the DiT's joint_attention_dim and pooled_projection_dim).
    dim: int = 32

    @property
    def vocab_size(self) -> int:
        """Fixed words plus hash buckets."""
        return len(VOCABULARY) + self.hash_buckets

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class TinyTokenizer:
    """Lower-cases, keeps runs of letters as words and maps them to ids of a fixed length."""

    def __init__(self, config: TinyTextConfig) -> None:
        self.config = config
        self._ids = {word: index for index, word in enumerate(VOCABULARY)}

    def word_id(self, word: str) -> int:
        """The word's vocabulary id, or its bucket: crc32 is stable across runs and machines."""
        known = self._ids.get(word)
        if known is not None:
            return known
        return len(VOCABULARY) + zlib.crc32(word.encode()) % self.config.hash_buckets

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids and mask, int64 [B, max_length]: mask 1 on the start token and the words."""
        length = self.config.max_length
        ids = torch.zeros(len(texts), length, dtype=torch.long)
        mask = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = [1] + [self.word_id(w) for w in _WORD.findall(text.lower())]
            tokens = tokens[:length]
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        return ids, mask


class TinyTextEncoder(torch.nn.Module):
    """Token plus position embeddings; the pooled vector is the mean over the prompt's words.

    Outputs ``prompt_embeds`` [B, max_length, dim] and ``pooled`` [B, dim], the two inputs of an
    SD3 DiT. The pooled vector feeds the DiT's adaptive norms, so a colour word shifts every
    block of every token: the shortest path from a prompt to an image's colour.
    """

    def __init__(self, config: TinyTextConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = torch.nn.Embedding(config.vocab_size, config.dim)
        self.position_embedding = torch.nn.Embedding(config.max_length, config.dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.token_embedding(ids)
        positions = self.position_embedding(torch.arange(ids.shape[1], device=ids.device))
        weights = mask.to(tokens.dtype).unsqueeze(-1)
        # The start token is in the mask, so no prompt divides by zero.
        pooled = (tokens * weights).sum(dim=1) / weights.sum(dim=1)
        return tokens + positions, pooled
