"""The supernet of differentiable search (`MixedOp`, `Cell`, `Network`) and the derivation of its genotype.

Mixed edges, partial channels, attention mixtures and alpha-attention live here; the search methods
(methods.py) decide the architecture weights and how edges are chosen.

Architecture weights travel as `CellWeights` (one per cell type), computed by `Network.arch_weights()`
from the architecture parameters. The architect may transform them (hard discretization, top-k masks)
before the forward pass, so the cells never need to know which method is searching.
"""
import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

import methods as methods_lib
from attention import AlphaChannelAttention, build_attention, select_channels
from genotypes import ATTENTION_PRIMITIVES, make_genotype
from operations import OPS, POOLING_OPS, FactorizedReduce, ReLUConvBN, resolve_primitives
from utils import UserError

LOCATIONS = ('no_attention', 'after_every', 'end', 'after_every_and_end', 'mixed_with_operation', 'double_mixed')
EDGE_ATTENTION_OPS = ATTENTION_PRIMITIVES[1:]  # attentions that join the ops (`mixed_with_operation`)
CELL_TYPES = ('normal', 'reduce')


@dataclass
class CellWeights:
    """The mixing weights of one cell type for one forward pass."""
    ops: torch.Tensor                          # E x n_ops, the op mixture of every edge
    edges: Optional[torch.Tensor] = None       # E, multiplies each edge (edge normalisation, DA2S, hard mask)
    attention: Optional[torch.Tensor] = None   # E x n_attentions, after every edge
    second: Optional[torch.Tensor] = None      # E x n_ops, the second stacked mixture (`double_mixed`)
    bottleneck: Optional[torch.Tensor] = None  # n_attentions, after the cell's concatenation
    active: Optional[list] = None              # per edge, the op indices worth computing (hard weights)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def channel_shuffle(x, groups):
    """Interleave `groups` channel groups so that the next edge searches on another slice (PC-DARTS)."""
    batch, channels, height, width = x.shape
    grouped = x.view(batch, groups, channels // groups, height, width)
    return grouped.transpose(1, 2).reshape(batch, channels, height, width)


def build_candidate(name, C, stride, spatial_size):
    """A candidate of a mixed edge. Pooling gets a BatchNorm (affine=False) as in DARTS; an attention on a
    stride-2 edge follows a stride-2 skip_connect (Att-DARTS)."""
    if name in OPS:
        op = OPS[name](C, stride, False)
        return nn.Sequential(op, nn.BatchNorm2d(C, affine=False)) if name in POOLING_OPS else op
    attention = build_attention(name, C, spatial_size)
    return nn.Sequential(FactorizedReduce(C, C, affine=False), attention) if stride == 2 else attention


class MixedOp(nn.Module):
    """One edge: sum_i w_i * op_i(x). `none` is never computed. With partial channels K only C/K channels
    enter the ops (the first C/K, then shuffled; or, with alpha-attention, those the attention scores
    highest); the other channels pass through, max-pooled on stride-2 edges."""

    def __init__(self, C, stride, primitives, spatial_size, partial_channels=1, alpha_attention=False):
        super().__init__()
        self.partial_channels = partial_channels
        self.stride = stride
        C_mixed = C // partial_channels
        self._ops = nn.ModuleList(build_candidate(name, C_mixed, stride, spatial_size) for name in primitives)
        self._computed = [i for i, name in enumerate(primitives) if name != 'none']
        # Channels the ops skip pass through, pooled on stride-2 edges (with alpha-attention at K=1 there
        # are none, but the pass-through is still the tensor the chosen channels are written into).
        self.pool = nn.MaxPool2d(2, 2) if stride == 2 and (partial_channels > 1 or alpha_attention) else None
        self.channel_attention = AlphaChannelAttention(C, len(primitives)) if alpha_attention else None

    def mix(self, x, weights, active=None):
        indices = self._computed if active is None else active
        out = 0
        for i in indices:
            out = out + weights[i] * self._ops[i](x)
        return out

    def _pass_through(self, x):
        return x if self.pool is None else self.pool(x)

    def forward(self, x, weights, active=None, gram=None):
        if self.channel_attention is not None:
            mask = self.channel_attention(x, gram)
            x = x * mask[:, :, None, None].to(x.dtype)
            chosen = select_channels(mask, x.size(1) // self.partial_channels)
            mixed = self.mix(x.index_select(1, chosen), weights, active)
            return self._pass_through(x).index_copy(1, chosen, mixed.to(x.dtype))
        if self.partial_channels == 1:
            return self.mix(x, weights, active)
        split = x.size(1) // self.partial_channels
        mixed = self.mix(x[:, :split], weights, active)
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


class Cell(nn.Module):

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev, primitives,
                 spatial_size, partial_channels, alpha_attention, location):
        super().__init__()
        self.reduction = reduction
        self._steps = steps
        self._multiplier = multiplier
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        strides = [2 if reduction and j < 2 else 1 for i in range(steps) for j in range(i + 2)]
        self._ops = nn.ModuleList(
            MixedOp(C, stride, primitives, spatial_size, partial_channels, alpha_attention) for stride in strides)
        self._second_ops = None
        if location == 'double_mixed':
            self._second_ops = nn.ModuleList(MixedOp(C, 1, primitives, spatial_size) for _ in strides)
        self._attentions = None
        if location in ('after_every', 'after_every_and_end'):
            self._attentions = nn.ModuleList(AttentionMix(C, spatial_size) for _ in strides)
        self._bottleneck = None
        if location in ('end', 'after_every_and_end'):
            self._bottleneck = AttentionMix(C * multiplier, spatial_size)

    def _edge(self, edge, h, weights, gram):
        active = weights.active[edge] if weights.active is not None else None
        out = self._ops[edge](h, weights.ops[edge], active, gram)
        if self._second_ops is not None:
            out = self._second_ops[edge](out, weights.second[edge])
        if self._attentions is not None:
            out = self._attentions[edge](out, weights.attention[edge])
        if weights.edges is not None:
            out = weights.edges[edge] * out
        return out

    def forward(self, s0, s1, weights, gram=None):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self._steps):
            total = 0
            for j, h in enumerate(states):
                edge = offset + j
                if weights.active is not None and not weights.active[edge]:
                    continue  # a hard zero: the edge contributes nothing and costs nothing
                total = total + self._edge(edge, h, weights, gram)
            offset += len(states)
            states.append(total)
        out = torch.cat(states[-self._multiplier:], dim=1)
        if self._bottleneck is not None:
            out = self._bottleneck(out, weights.bottleneck)
        return out


class Network(nn.Module):
    """The DARTS supernet. Options, named like the command-line flags: primitives ('darts', 'alpha_darts' or
    a comma list), partial_channels (K, 1 = off), alpha_attention, location (Att-DARTS), max_skip,
    in_channels, image_size. `methods` (methods.Method) decide the architecture weights and how the cell is
    derived; without any, DARTS's softmax and top-2 rule."""

    def __init__(self, C, num_classes, layers, criterion=None, steps=4, multiplier=4, stem_multiplier=3,
                 primitives='darts', partial_channels=1, alpha_attention=False, location='no_attention',
                 max_skip=None, in_channels=3, image_size=32, methods=()):
        super().__init__()
        if location not in LOCATIONS:
            raise UserError(f'unknown --location {location!r}; use one of {", ".join(LOCATIONS)}')
        if partial_channels < 1 or C % partial_channels:
            raise UserError(f'--partial_channels {partial_channels} must divide --init_channels {C}')
        methods_lib.check_compatible(methods)
        self.methods = list(methods)
        self._layers = layers
        self._criterion = criterion or nn.CrossEntropyLoss()
        self._steps, self._multiplier = steps, multiplier
        self.op_names = resolve_primitives(primitives)
        if location in ('mixed_with_operation', 'double_mixed'):
            self.op_names = self.op_names + list(EDGE_ATTENTION_OPS)
        self.options = dict(primitives=primitives, partial_channels=partial_channels, alpha_attention=alpha_attention,
                            location=location, max_skip=max_skip, in_channels=in_channels, image_size=image_size,
                            steps=steps, multiplier=multiplier, stem_multiplier=stem_multiplier)

        C_stem = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))
        C_prev_prev, C_prev, C_curr = C_stem, C_stem, C
        spatial_size, reduction_prev = image_size, False
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
                spatial_size = (spatial_size + 1) // 2
            self.cells.append(Cell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev,
                                   self.op_names, spatial_size, partial_channels, alpha_attention, location))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self._initialize_arch_parameters()

    @property
    def steps(self):
        return self._steps

    @property
    def num_edges(self):
        return sum(i + 2 for i in range(self._steps))

    @property
    def none_index(self):
        return self.op_names.index('none') if 'none' in self.op_names else None

    # ----------------------------------------------------------------------------------------------
    # Architecture parameters.

    def _initialize_arch_parameters(self):
        edges = self.num_edges
        location = self.options['location']
        self._arch_names = []

        def register(name, value):
            setattr(self, name, nn.Parameter(value))
            self._arch_names.append(name)

        for cell in CELL_TYPES:
            register(f'alphas_{cell}', 1e-3 * torch.randn(edges, len(self.op_names)))
        for cell in CELL_TYPES:
            for method in self.methods:
                for name, value in method.arch_parameters(self).items():
                    register(f'{name}_{cell}', value)
        mixtures = [('second_alphas', len(self.op_names), location == 'double_mixed'),
                    ('attention_alphas', len(ATTENTION_PRIMITIVES), location in ('after_every', 'after_every_and_end')),
                    ('bottleneck_alphas', None, location in ('end', 'after_every_and_end'))]
        for name, width, searched in mixtures:
            for cell in CELL_TYPES:
                if searched:
                    shape = (len(ATTENTION_PRIMITIVES),) if width is None else (edges, width)
                    register(f'{name}_{cell}', 1e-3 * torch.randn(*shape))

    def arch_parameters(self):
        return [getattr(self, name) for name in self._arch_names]

    def named_arch_parameters(self):
        return [(name, getattr(self, name)) for name in self._arch_names]

    def weights(self):
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def cell_arch_parameters(self, cell):
        """One cell type's architecture parameters, by name without the cell suffix (`alphas`, `betas`, ...)."""
        suffix = f'_{cell}'
        return {name[:-len(suffix)]: getattr(self, name) for name in self._arch_names if name.endswith(suffix)}

    def _owner(self, hook):
        return next((method for method in self.methods if methods_lib.overrides(method, hook)), methods_lib.Method())

    def arch_weights(self):
        """Soft weights of both cell types: the op mixture (DARTS: softmax of the op parameters; a method may
        define its own), the edge weights of a method that has them, and the attention mixtures. Always
        float32."""
        result = {}
        op_method, edge_method = self._owner('op_weights'), self._owner('edge_weights')
        for cell in CELL_TYPES:
            parameters = {name: value.float() for name, value in self.cell_arch_parameters(cell).items()}
            optional = {field: F.softmax(parameters[name], dim=-1) for field, name in (
                ('attention', 'attention_alphas'), ('second', 'second_alphas'), ('bottleneck', 'bottleneck_alphas'))
                if name in parameters}
            result[cell] = CellWeights(ops=op_method.op_weights(parameters['alphas']),
                                       edges=edge_method.edge_weights(parameters, self), **optional)
        return result

    # ----------------------------------------------------------------------------------------------
    # Forward pass.

    def forward(self, x, weights=None):
        if weights is None:
            weights = self.arch_weights()
        grams = {}
        if self.options['alpha_attention']:
            # alpha-DARTS: the attention sees W^T W of this cell type's op weights, so the architecture
            # itself steers which channels are searched. Architecture weights stay float32.
            with torch.autocast(device_type=x.device.type, enabled=False):
                grams = {cell: w.ops.t() @ w.ops for cell, w in weights.items()}
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            cell_type = 'reduce' if cell.reduction else 'normal'
            s0, s1 = s1, cell(s0, s1, weights[cell_type], grams.get(cell_type))
        out = self.global_pooling(s1)
        return self.classifier(out.flatten(1))

    # ----------------------------------------------------------------------------------------------
    # Genotype.

    def genotype(self):
        """The discrete cell: per node the two strongest inputs and on each its best non-`none` op."""
        with torch.no_grad():
            weights = {cell: CellWeights(**{k: (v.detach().float().cpu() if torch.is_tensor(v) else v)
                                            for k, v in vars(w).items()})
                       for cell, w in self.arch_weights().items()}
        strength_method = self._owner('edge_strength')
        cells = {}
        for cell in CELL_TYPES:
            strength = strength_method.edge_strength(edge_strength(weights[cell], self.op_names), cell, self)
            cells[cell] = derive_cell(weights[cell], self.op_names, self._steps, strength)
        if self.options['max_skip'] is not None:
            cells['normal'] = limit_skips(cells['normal'], weights['normal'], self.op_names, self.options['max_skip'])
        concat = list(range(2 + self._steps - self._multiplier, self._steps + 2))
        bottlenecks = {cell: best_attention(weights[cell].bottleneck) for cell in CELL_TYPES}
        return make_genotype(normal=[entry for entry, _ in cells['normal']], normal_concat=concat,
                             reduce=[entry for entry, _ in cells['reduce']], reduce_concat=concat,
                             normal_bottleneck=bottlenecks['normal'], reduce_bottleneck=bottlenecks['reduce'])


def _best_op(row, op_names, exclude=('none',)):
    candidates = [i for i, name in enumerate(op_names) if name not in exclude]
    return max(candidates, key=lambda i: (row[i].item(), -i))


def best_attention(weights):
    """The strongest attention of a bottleneck mixture; Identity means no bottleneck."""
    if weights is None:
        return ''
    name = ATTENTION_PRIMITIVES[int(weights.argmax())]
    return '' if name == 'Identity' else name


def edge_strength(weights, op_names):
    """DARTS's strength of every edge: its best non-`none` op weight, times its edge weight if it has one."""
    best = torch.stack([row[_best_op(row, op_names)] for row in weights.ops]).double()
    return best if weights.edges is None else best * weights.edges.double()


def derive_cell(weights, op_names, steps, strength):
    """[((op, input[, attention]), edge), ...] two per node: the node's two strongest edges, and on each its
    best non-`none` op (and its attention, or second op, when searched)."""
    entries, offset = [], 0
    for node in range(steps):
        rows = range(offset, offset + node + 2)
        for e in sorted(rows, key=lambda e: -strength[e].item())[:2]:
            op = op_names[_best_op(weights.ops[e], op_names)]
            if weights.second is not None:
                attention = op_names[_best_op(weights.second[e], op_names)]
            elif weights.attention is not None:
                attention = ATTENTION_PRIMITIVES[int(weights.attention[e].argmax())]
            else:
                attention = ''
            entries.append(((op, e - offset, attention) if attention else (op, e - offset), e))
        offset += node + 2
    return entries


def limit_skips(entries, weights, op_names, max_skip):
    """P-DARTS's remedy for skip collapse: keep at most `max_skip` skip_connect in the cell; the weakest
    surplus ones become their edge's best op other than skip_connect and `none`."""
    skips = [i for i, (entry, _) in enumerate(entries) if entry[0] == 'skip_connect']
    if len(skips) <= max_skip:
        return entries
    skip_index = op_names.index('skip_connect')
    weakest = sorted(skips, key=lambda i: weights.ops[entries[i][1]][skip_index].item())[:len(skips) - max_skip]
    entries = list(entries)
    for i in weakest:
        entry, edge = entries[i]
        replacement = op_names[_best_op(weights.ops[edge], op_names, exclude=('none', 'skip_connect'))]
        entries[i] = ((replacement, *entry[1:]), edge)
    return entries
