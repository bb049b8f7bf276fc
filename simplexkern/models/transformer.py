"""A small pre-norm transformer in the style of nanoGPT, for token and signal data.

Attention is written with ``nn.Linear`` and ``F.scaled_dot_product_attention``; positions are
learned and looked up with ``torch.arange`` inside the forward.
"""

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads, self.causal, self.dropout = heads, causal, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in self.qkv(x).split(C, 2))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=self.causal, dropout_p=self.dropout if self.training else 0.0
        )  # (B, heads, T, C / heads)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool, dropout: float, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(dim), SelfAttention(dim, heads, causal, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """Token ids (B, T) with ``vocab_size`` (float tensors holding whole numbers are taken, as
    data sets store inputs as float32), or signals (B, C, L) with ``in_channels``, cut into
    tokens of ``patch`` samples (C x patch features each). ``length``: T (or L).

    ``num_classes``: classification from the mean of the final token states. None (tokens
    only): next-token logits (B, T, vocab_size) from a head tied to the token embedding,
    with causal attention, as nanoGPT.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        length: int,
        vocab_size: int | None = None,
        in_channels: int | None = None,
        patch: int = 1,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if (vocab_size is None) == (in_channels is None):
            raise ValueError("give vocab_size (token ids) or in_channels (signals), not both")
        if in_channels is not None and (num_classes is None or length % patch):
            raise ValueError(f"signals need num_classes and a length ({length}) divisible by patch ({patch})")
        self.vocab_size, self.patch, self.language_model = vocab_size, patch, num_classes is None
        self.tokens = length if vocab_size is not None else length // patch
        self.embed = nn.Embedding(vocab_size, dim) if vocab_size is not None else nn.Linear(in_channels * patch, dim)
        self.pos = nn.Embedding(self.tokens, dim)
        self.blocks = nn.Sequential(*(Block(dim, heads, self.language_model, dropout) for _ in range(depth)))
        self.ln = nn.LayerNorm(dim)
        if self.language_model:
            self.head = nn.Linear(dim, vocab_size, bias=False)
            self.head.weight = self.embed.weight  # tied, as in GPT-2
        else:
            self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.vocab_size is not None:
            h = self.embed(x.long())
        else:  # (B, C, L) -> (B, L / patch, C * patch)
            h = self.embed(x.unfold(2, self.patch, self.patch).permute(0, 2, 1, 3).flatten(2))
        T = h.shape[1]
        if T > self.tokens:
            raise ValueError(f"inputs of {T} tokens exceed the {self.tokens} positions this model was built for")
        h = self.ln(self.blocks(h + self.pos(torch.arange(T, device=h.device))))
        return self.head(h if self.language_model else h.mean(1))
