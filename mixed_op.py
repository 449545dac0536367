"""The parts of a supernet's edge: the mixed operation (partial channels, alpha-attention), the attention
mixture, and `CellWeights`, the architecture weights that drive a cell's edges.

Architecture weights travel as one `CellWeights` per cell type, computed by `architecture.Architecture.weights()`.
The search engine may transform them (hard discretization, top-k masks) before the forward pass, so the
cells never need to know which method is searching.
"""
import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from attention import AlphaChannelAttention, build_attention, select_channels
from genotypes import ATTENTION_PRIMITIVES
from operations import OPS, POOLING_OPS, FactorizedReduce, is_channels_last


@dataclass
class CellWeights:
    """The mixing weights of one cell type for one forward pass."""
    ops: torch.Tensor                          # E x n_ops, the op mixture of every edge
    edges: Optional[torch.Tensor] = None       # E, multiplies each edge (edge normalisation, DA2S, hard mask)
    attention: Optional[torch.Tensor] = None   # E x n_attentions, after every edge
    second: Optional[torch.Tensor] = None      # E x n_ops, the second stacked mixture (`double_mixed`)
    bottleneck: Optional[torch.Tensor] = None  # n_attentions, after the cell's concatenation
    active: Optional[list] = None              # per edge, the op indices worth computing (hard weights)
    offsets: Optional[torch.Tensor] = None     # E, a number added to each edge's output (GDAS on NAS-Bench-201)
    skip_dropout: float = 0.0                  # dropout on stride-1 skip_connect outputs (P-DARTS)
    drop_path: float = 0.0                     # drop path on every edge's output in training (RobustDARTS's DP)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def channel_shuffle(x, groups):
    """Interleave `groups` channel groups so that the next edge searches on another slice (PC-DARTS), in x's
    memory format."""
    batch, channels, height, width = x.shape
    if is_channels_last(x):
        grouped = x.permute(0, 2, 3, 1).reshape(batch, height, width, groups, channels // groups)
        return grouped.transpose(3, 4).reshape(batch, height, width, channels).permute(0, 3, 1, 2)
    grouped = x.view(batch, groups, channels // groups, height, width)
    return grouped.transpose(1, 2).reshape(batch, channels, height, width)


def index_channels(x, indices):
    """x[:, indices] in x's memory format (index_select on the channels of channels_last memory gives NCHW)."""
    if is_channels_last(x):
        return x.permute(0, 2, 3, 1).index_select(3, indices).permute(0, 3, 1, 2)
    return x.index_select(1, indices)


def copy_channels(x, indices, values):
    """x with its channels `indices` replaced by `values`, in x's memory format."""
    if is_channels_last(x):
        return x.permute(0, 2, 3, 1).index_copy(3, indices, values.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return x.index_copy(1, indices, values)


def build_candidate(name, C, stride, spatial_size, pool_bn=True):
    """A candidate of a mixed edge. Pooling gets a BatchNorm (affine=False) as in DARTS (`pool_bn`; the
    NAS-Bench-201 supernet has none); an attention on a stride-2 edge follows a stride-2 skip_connect
    (Att-DARTS)."""
    if name in OPS:
        op = OPS[name](C, stride, False)
        return nn.Sequential(op, nn.BatchNorm2d(C, affine=False)) if name in POOLING_OPS and pool_bn else op
    attention = build_attention(name, C, spatial_size)
    return nn.Sequential(FactorizedReduce(C, C, affine=False), attention) if stride == 2 else attention


class MixedOp(nn.Module):
    """One edge: sum_i w_i * op_i(x). `none` is never computed. With partial channels K only C/K channels
    enter the ops (the first C/K, then shuffled; or, with alpha-attention, those the attention scores
    highest); the other channels pass through, max-pooled on stride-2 edges. `present`: the names of
    `primitives` this edge offers (RobustDARTS's spaces; None: all); the others hold a parameter-free `none`
    in their place and are never computed."""

    def __init__(self, C, stride, primitives, spatial_size, partial_channels=1, alpha_attention=False, pool_bn=True,
                 present=None):
        super().__init__()
        self.partial_channels = partial_channels
        self.stride = stride
        C_mixed = C // partial_channels
        offered = [present is None or name in present for name in primitives]
        self._ops = nn.ModuleList(build_candidate(name if here else 'none', C_mixed, stride, spatial_size, pool_bn)
                                  for name, here in zip(primitives, offered))
        self._computed = [i for i, (name, here) in enumerate(zip(primitives, offered)) if here and name != 'none']
        skip = primitives.index('skip_connect') if 'skip_connect' in primitives else None
        self._identity = skip if skip is not None and offered[skip] and stride == 1 else None
        # Channels the ops skip pass through, pooled on stride-2 edges (with alpha-attention at K=1 there
        # are none, but the pass-through is still the tensor the chosen channels are written into).
        self.pool = nn.MaxPool2d(2, 2) if stride == 2 and (partial_channels > 1 or alpha_attention) else None
        self.channel_attention = AlphaChannelAttention(C, len(primitives)) if alpha_attention else None

    def mix(self, x, weights, active=None, skip_dropout=0.0):
        indices = self._computed if active is None else active
        out = 0
        for i in indices:
            h = self._ops[i](x)
            if i == self._identity and skip_dropout > 0:
                h = F.dropout(h, skip_dropout, self.training)
            out = out + weights[i] * h
        return out

    def _pass_through(self, x):
        return x if self.pool is None else self.pool(x)

    def forward(self, x, weights, active=None, gram=None, skip_dropout=0.0):
        if self.channel_attention is not None:
            mask = self.channel_attention(x, gram)
            x = x * mask[:, :, None, None].to(x.dtype)
            chosen = select_channels(mask, x.size(1) // self.partial_channels)
            mixed = self.mix(index_channels(x, chosen), weights, active, skip_dropout)
            return copy_channels(self._pass_through(x), chosen, mixed.to(x.dtype))
        if self.partial_channels == 1:
            return self.mix(x, weights, active, skip_dropout)
        split = x.size(1) // self.partial_channels
        mixed = self.mix(x[:, :split], weights, active, skip_dropout)
        out = torch.cat([mixed, self._pass_through(x[:, split:]).to(mixed.dtype)], dim=1)
        return channel_shuffle(out, self.partial_channels)


class AttentionMix(nn.Module):
    """sum_k w_k * attention_k(x) over the attention primitives (Identity first)."""

    def __init__(self, C, spatial_size):
        super().__init__()
        self._attentions = nn.ModuleList(build_attention(name, C, spatial_size) for name in ATTENTION_PRIMITIVES)

    def forward(self, x, weights):
        out = 0
        for weight, attention in zip(weights, self._attentions):
            out = out + weight * attention(x)
        return out
