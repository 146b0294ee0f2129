"""The Anonymizing Adapter Module (AAM), f_A: a per-video temporal transformer.

Input: T consecutive clip features of ONE video, (B, T, d), and an optional key-padding mask
(B, T) that is True where a position is padding. Output: the same shape. Attention runs only
inside a sequence (DESIGN.md decision 1): a clip's anonymized feature never depends on which
other videos share its batch, so a deployed anonymizer gives the same answer whatever it is
batched with. A lone clip or a static clip is a sequence of length 1.

Identity at initialisation by construction (decision 2): pre-LN blocks whose two residual
branches end in zero-initialised projections, so f_A(h) == h exactly before training. There is
no positional embedding: it would break exact identity unless zero-initialised, and the
anonymizer should treat every clip of a sequence alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.config import AnonymizerConfig


class SequenceSelfAttention(nn.Module):
    """Multi-head self-attention within each sequence of a (B, T, d) batch."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"feature width {dim} is not divisible by {heads} attention heads")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # Zero output projection: the residual branch adds exactly 0 at initialisation.
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (B, T, d)
        q, k, v = (t.reshape(B, T, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        attn_mask = None
        if key_padding_mask is not None:
            attn_mask = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, T), True = may attend
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        out = out.transpose(1, 2).reshape(B, T, d)  # (B, T, d)
        return self.proj(out)


class AdapterBlock(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, heads: int, ff_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = round(dim * ff_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SequenceSelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), key_padding_mask))
        x = x + self.drop(self.fc2(F.gelu(self.fc1(self.norm2(x)))))
        return x


class AnonymizingAdapter(nn.Module):
    """f_A: L pre-LN transformer blocks over a video's clip features; identity at init."""

    def __init__(
        self,
        dim: int,
        layers: int = 3,
        heads: int = 8,
        ff_ratio: float = 4.0,
        dropout: float = 0.0,
        bottleneck: int = 0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.blocks = nn.ModuleList(
            AdapterBlock(dim, heads, ff_ratio, dropout) for _ in range(layers)
        )
        # A rank-`bottleneck` output (0 = none): d -> r -> d, so that what is released spans at
        # most r directions. It is not the identity at initialisation.
        self.bottleneck = (
            nn.Sequential(nn.Linear(dim, bottleneck, bias=False), nn.Linear(bottleneck, dim))
            if bottleneck
            else None
        )

    def forward(
        self, features: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Anonymize (B, T, d) clip features; `key_padding_mask` (B, T) is True at padding."""
        if features.ndim != 3 or features.shape[-1] != self.dim:
            raise ValueError(
                f"AAM expects features of shape (B, T, {self.dim}), got {tuple(features.shape)}"
            )
        if key_padding_mask is not None and key_padding_mask.shape != features.shape[:2]:
            raise ValueError(
                f"key_padding_mask shape {tuple(key_padding_mask.shape)} does not match "
                f"features (B, T) = {tuple(features.shape[:2])}"
            )
        x = features
        for block in self.blocks:
            x = block(x, key_padding_mask)
        if self.bottleneck is not None:
            x = self.bottleneck[1](self.bottleneck[0](x))  # (B, T, d) -> (B, T, r) -> (B, T, d)
        return x

    def code(
        self, features: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The r coordinates that determine the output when there is a bottleneck, (B, T, r);
        the output itself otherwise. The output is an affine function of the code."""
        x = features
        for block in self.blocks:
            x = block(x, key_padding_mask)
        return x if self.bottleneck is None else self.bottleneck[0](x)


def create_adapter(dim: int, config: AnonymizerConfig) -> AnonymizingAdapter:
    """Build the AAM for feature width `dim` from the config."""
    return AnonymizingAdapter(
        dim, config.layers, config.heads, config.ff_ratio, config.dropout, config.bottleneck
    )


def starts_as_identity(config: AnonymizerConfig) -> bool:
    """Whether a fresh adapter of this config is exactly the identity (no output bottleneck)."""
    return config.bottleneck == 0


def anonymize_in_windows(adapter: nn.Module, clips: torch.Tensor, window: int) -> torch.Tensor:
    """Anonymize (N, C, d) clip sequences as the edge anonymizer does: each video's clips in
    consecutive windows of `window` clips, each window one sequence through the adapter (a last,
    shorter window is a sequence of its own)."""
    if window < 1:
        raise ValueError(f"the anonymizer window must be at least 1 clip, got {window}")
    return torch.cat(
        [adapter(clips[:, s : s + window]) for s in range(0, clips.shape[1], window)], dim=1
    )
