"""The cross-encoder network: the e5 BERT split into a frozen lower part and a trained top.

Imported only inside functions (it imports torch at module level). The encoder is the
plain BERT of the rebuilt e5 folder (`pipeline.models.e5`: Hugging Face `BertModel` names,
absolute positions from 0, exact GELU, post-LayerNorm), written out here so that training
can run the lower layers once and cache their output, and so that the runtime does not
depend on how a `transformers` release lays out attention masks.

    ids ──embeddings──► layers[:frozen] ──► layers[frozen:] ──► head(CLS ⊕ mean) ──► logit
         (frozen: the base model's weights)   (shipped artifact)   (shipped artifact)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class Shape:
    """The base model's dimensions, from its config.json."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float = 1e-12


class Layer(nn.Module):
    """One post-LN BERT layer under Hugging Face parameter names (attention.self.query, …)."""

    def __init__(self, s: Shape):
        super().__init__()
        self.heads = s.heads
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        self.attention.self.query = nn.Linear(s.hidden, s.hidden)
        self.attention.self.key = nn.Linear(s.hidden, s.hidden)
        self.attention.self.value = nn.Linear(s.hidden, s.hidden)
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(s.hidden, s.hidden)
        self.attention.output.LayerNorm = nn.LayerNorm(s.hidden, eps=s.eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(s.hidden, s.intermediate)
        self.output = nn.Module()
        self.output.dense = nn.Linear(s.intermediate, s.hidden)
        self.output.LayerNorm = nn.LayerNorm(s.hidden, eps=s.eps)
        self.dropout = nn.Dropout(0.1)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """`h`: (B, L, H); `bias`: (B, 1, 1, L) additive attention mask (0 or -inf-ish)."""
        b, n, d = h.shape
        a = self.attention.self

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        ctx = F.scaled_dot_product_attention(
            split(a.query(h)), split(a.key(h)), split(a.value(h)), attn_mask=bias,
            dropout_p=0.1 if self.training else 0.0,
        )
        ctx = ctx.transpose(1, 2).reshape(b, n, d)
        o = self.attention.output
        h = o.LayerNorm(h + self.dropout(o.dense(ctx)))
        ff = self.output.dense(F.gelu(self.intermediate.dense(h)))
        return self.output.LayerNorm(h + self.dropout(ff))


class Embeddings(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.word_embeddings = nn.Embedding(s.vocab, s.hidden)
        self.position_embeddings = nn.Embedding(s.max_positions, s.hidden)
        self.token_type_embeddings = nn.Embedding(s.type_vocab, s.hidden)
        self.LayerNorm = nn.LayerNorm(s.hidden, eps=s.eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        e = self.word_embeddings(ids) + self.position_embeddings(pos)[None] + self.token_type_embeddings.weight[0]
        return self.LayerNorm(e)


class Head(nn.Module):
    """[CLS] ⊕ masked mean of the top layer → a small MLP → one logit per pair."""

    def __init__(self, hidden: int, outputs: int = 1):
        super().__init__()
        self.dense = nn.Linear(2 * hidden, hidden)
        self.out = nn.Linear(hidden, outputs)
        self.dropout = nn.Dropout(0.1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(h.dtype).unsqueeze(-1)
        mean = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        x = torch.cat([h[:, 0], mean], dim=-1)
        return self.out(self.dropout(torch.tanh(self.dense(self.dropout(x))))).squeeze(-1)


class CrossEncoder(nn.Module):
    """The e5 encoder with its top `len(layers) - frozen` layers and a head as the trained part."""

    def __init__(self, s: Shape, frozen: int):
        super().__init__()
        if not 0 <= frozen < s.layers:
            raise ValueError(f"frozen layers must be in [0, {s.layers}), got {frozen}")
        self.shape = s
        self.frozen = frozen
        self.embeddings = Embeddings(s)
        self.layers = nn.ModuleList(Layer(s) for _ in range(s.layers))
        self.head = Head(s.hidden)

    @staticmethod
    def bias(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(B, L) 0/1 mask → (B, 1, 1, L) additive attention bias."""
        return ((1.0 - mask.to(dtype)) * torch.finfo(dtype).min)[:, None, None, :]

    def lower(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The frozen part: embeddings and layers[:frozen]; what training caches once."""
        h = self.embeddings(ids)
        bias = self.bias(mask, h.dtype)
        for layer in self.layers[: self.frozen]:
            h = layer(h, bias)
        return h

    def upper(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The trained part: layers[frozen:] and the head; one logit per row."""
        bias = self.bias(mask, h.dtype)
        for layer in self.layers[self.frozen:]:
            h = layer(h, bias)
        return self.head(h, mask)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.upper(self.lower(ids, mask), mask)

    def trained_state(self) -> dict[str, torch.Tensor]:
        """Exactly what the artifact ships: the top layers and the head."""
        return {
            k: v for k, v in self.state_dict().items()
            if k.startswith("head.") or (k.startswith("layers.") and int(k.split(".")[1]) >= self.frozen)
        }

    def freeze_lower(self) -> None:
        for p in self.embeddings.parameters():
            p.requires_grad_(False)
        for layer in self.layers[: self.frozen]:
            for p in layer.parameters():
                p.requires_grad_(False)


def base_name(key: str) -> str:
    """Our parameter name → the e5 folder's (`layers.3.x` → `encoder.layer.3.x`)."""
    if key.startswith("layers."):
        return "encoder.layer." + key[len("layers."):]
    return key


def build(base_tensors: dict[str, torch.Tensor], s: Shape, frozen: int) -> CrossEncoder:
    """A `CrossEncoder` holding the base weights (head randomly initialised, seeded by the caller)."""
    model = CrossEncoder(s, frozen)
    state = model.state_dict()
    for key in state:
        if key.startswith("head."):
            continue
        src = base_tensors[base_name(key)]
        if tuple(src.shape) != tuple(state[key].shape):
            raise ValueError(f"{base_name(key)}: shape {tuple(src.shape)}, expected {tuple(state[key].shape)}")
        state[key] = src
    model.load_state_dict(state, assign=True)  # the base tensors become the parameters: no second copy
    return model


def init_head(model: CrossEncoder) -> None:
    """Small, seeded initialisation of the head (the caller seeds torch)."""
    for lin in (model.head.dense, model.head.out):
        nn.init.normal_(lin.weight, std=0.02)
        nn.init.zeros_(lin.bias)


def head_bytes(model: CrossEncoder) -> int:
    return sum(v.numel() * 2 for v in model.trained_state().values())

