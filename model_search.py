"""The supernets of differentiable search and the derivation of their genotypes: DARTS's (`Cell`, `Network`)
and what every supernet shares (`Supernet`; NAS-Bench-201's is in model_search_nb201.py).

Their edges are `mixed_op.MixedOp`s. A supernet holds the architecture parameters and computes
`forward(x, weights)` with the weights it is given; it knows no search method: architecture.py pairs it with
the methods, which decide the weights and how strongly each edge competes for the derived cell.
"""
import torch
import torch.nn as nn

import spaces
from derivation import best_attention, derive_cell, limit_skips, node_slices
from genotypes import ATTENTION_PRIMITIVES, make_genotype
from mixed_op import AttentionMix, MixedOp
from operations import FactorizedReduce, GlobalAvgPool, ReLUConvBN, drop_path, resolve_primitives
from utils import UserError

LOCATIONS = ('no_attention', 'after_every', 'end', 'after_every_and_end', 'mixed_with_operation', 'double_mixed')
EDGE_ATTENTION_OPS = ATTENTION_PRIMITIVES[1:]  # attentions that join the ops (`mixed_with_operation`)


class Cell(nn.Module):

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev, primitives,
                 spatial_size, partial_channels, alpha_attention, location, pool_bn=True, edge_candidates=None):
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
        present = edge_candidates or [None] * len(strides)
        self._ops = nn.ModuleList(
            MixedOp(C, stride, primitives, spatial_size, partial_channels, alpha_attention, pool_bn, ops)
            for stride, ops in zip(strides, present))
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
        out = self._ops[edge](h, weights.ops[edge], active, gram, weights.skip_dropout)
        if self._second_ops is not None:
            out = self._second_ops[edge](out, weights.second[edge])
        if self._attentions is not None:
            out = self._attentions[edge](out, weights.attention[edge])
        if weights.edges is not None:
            out = weights.edges[edge] * out
        if weights.drop_path > 0 and self.training:
            out = drop_path(out, weights.drop_path)
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


class Supernet(nn.Module):
    """What both supernets share: the architecture parameters (the op parameters of every edge per cell type,
    those a search method adds, and the supernet's own mixtures), the masks of the candidates that remain,
    and the network's weights apart from them. A supernet sets `cell_types`, `steps`, `num_edges` and
    `op_names`."""

    skip_dropout = 0.0  # P-DARTS's dropout on the skip connections of stride-1 edges, set by the search
    edge_candidates = None  # {cell type: the ops of each edge} where edges differ (spaces.py), else None

    def _initialize_arch_parameters(self, mixtures=()):
        """`mixtures`: (name, shape) of the supernet's own further mixtures per cell type, registered last."""
        self._op_names_by_cell, self._added_names, self._mixture_names = [], [], []

        def register(names, name, value):
            setattr(self, name, nn.Parameter(value))
            names.append(name)

        for cell in self.cell_types:
            register(self._op_names_by_cell, f'alphas_{cell}', 1e-3 * torch.randn(self.num_edges, len(self.op_names)))
        for name, shape in mixtures:
            for cell in self.cell_types:
                register(self._mixture_names, f'{name}_{cell}', 1e-3 * torch.randn(*shape))
        for cell in self.cell_types:
            self.register_buffer(f'op_mask_{cell}', torch.ones(self.num_edges, len(self.op_names), dtype=torch.bool))
        self._remaining = None
        self.register_load_state_dict_post_hook(lambda module, keys: module.forget_mask_cache())

    def add_arch_parameters(self, cell, values):
        """Registers further architecture parameters of a cell type, {name: initial value} (a search method's,
        see architecture.py), as NAME_cell on the supernet's device; returns {name: NAME_cell}. They come
        after the op parameters and before the supernet's own mixtures in arch_parameters()."""
        device = self.op_parameters(cell).device
        added = {}
        for name, value in values.items():
            full_name = f'{name}_{cell}'
            if hasattr(self, full_name):
                raise ValueError(f'the supernet already has an architecture parameter {full_name}')
            setattr(self, full_name, nn.Parameter(value.to(device)))
            self._added_names.append(full_name)
            added[name] = full_name
        return added

    # ----------------------------------------------------------------------------------------------
    # Op masks: the candidates that remain on each edge (P-DARTS's pruning, DARTS-PT's decisions).

    def op_mask(self, cell):
        """E x ops, True where the candidate remains."""
        return getattr(self, f'op_mask_{cell}')

    def set_op_masks(self, masks):
        """{cell type: E x ops bool}. An edge with no candidate left contributes nothing."""
        with torch.no_grad():
            for cell, mask in masks.items():
                self.op_mask(cell).copy_(mask)
        self.forget_mask_cache()

    def forget_mask_cache(self):
        self._remaining = None

    def remaining_ops(self):
        """{cell type: per edge the indices of the remaining ops, or None where nothing is masked}, kept on
        the host until the masks change, so that a step never waits for the device to read them."""
        if self._remaining is None:
            masks = {cell: self.op_mask(cell).cpu() for cell in self.cell_types}
            self._remaining = {cell: None if mask.all() else [row.nonzero().flatten().tolist() for row in mask]
                               for cell, mask in masks.items()}
            self._active = {cell: None if rows is None else [[i for i in row if i != self.none_index] for row in rows]
                            for cell, rows in self._remaining.items()}
        return self._remaining

    def masked_active(self):
        """{cell type: per edge the remaining op indices worth computing (`none` never is), or None where
        nothing is masked}."""
        self.remaining_ops()
        return self._active

    def mask_ops(self, cell, ops, sums_to_one=True):
        """`ops` with the removed candidates at 0; mixtures that sum to one are renormalised over what
        remains (a softmax over the remaining op parameters)."""
        if self.masked_active()[cell] is None:
            return ops
        ops = ops * self.op_mask(cell)
        return ops / ops.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(ops.dtype).tiny) if sums_to_one else ops

    def candidate_values(self, cell, values):
        """`values` (E x ops, by alpha's columns) at the ops each edge offers: as they are, but in RobustDARTS's
        spaces, where each edge offers n of the columns and this gives E x n in the edge's own order, so that
        a regulariser over an edge's ops sees only those (a gather: no host read)."""
        columns = getattr(self, f'candidate_columns_{cell}', None)
        return values if columns is None else values.gather(1, columns)

    def offers_everywhere(self, op):
        """Whether every edge of every cell type offers `op`."""
        return op in self.op_names and all(op in ops for edges in (self.edge_candidates or {}).values()
                                           for ops in edges)

    @property
    def none_index(self):
        return self.op_names.index('none') if 'none' in self.op_names else None

    @property
    def _arch_names(self):
        return self._op_names_by_cell + self._added_names + self._mixture_names

    def arch_parameters(self):
        return [getattr(self, name) for name in self._arch_names]

    def named_arch_parameters(self):
        return [(name, getattr(self, name)) for name in self._arch_names]

    def named_network_weights(self):
        """The network's weights w, by name: every parameter but the architecture's."""
        arch = {id(p) for p in self.arch_parameters()}
        return [(name, p) for name, p in self.named_parameters() if id(p) not in arch]

    def network_weights(self):
        """The network's weights w (not the architecture parameters, nor the weights the cells mix with)."""
        return [p for _, p in self.named_network_weights()]

    def edge_inputs(self, weights):
        """[(cell type, edge, channels, stride, height, width)] of every mixed edge of every cell, recorded
        during one forward pass, with `weights`, of an image of the supernet's size (the cost model's tables
        read them)."""
        records, handles = [], []
        for cell in self.cells:
            if not hasattr(cell, '_ops'):
                continue  # NAS-Bench-201's residual blocks
            cell_type = 'reduce' if getattr(cell, 'reduction', False) else 'normal'
            for edge, mixed in enumerate(cell._ops):
                handles.append(mixed.register_forward_pre_hook(
                    lambda module, inputs, t=cell_type, e=edge: records.append(
                        (t, e, inputs[0].shape[1], module.stride, *inputs[0].shape[2:]))))
        parameter = next(self.parameters())
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                self(torch.zeros(1, self.in_channels, self.image_size, self.image_size, device=parameter.device),
                     weights)
        finally:
            self.train(was_training)
            for handle in handles:
                handle.remove()
        return records

    def op_parameters(self, cell):
        """The op parameters alpha of a cell type: E x ops."""
        return getattr(self, f'alphas_{cell}')

    def mixture_parameters(self, cell):
        """The parameters of a cell type's own further mixtures (Att-DARTS's), by the CellWeights field each
        one fills: NAME_alphas_CELL fills NAME."""
        suffix = f'_alphas_{cell}'
        return {name[:-len(suffix)]: getattr(self, name) for name in self._mixture_names if name.endswith(suffix)}

    def grams(self, weights, device):
        """alpha-DARTS: the attention sees W^T W of each cell type's op weights, so that the architecture
        itself steers which channels are searched; architecture weights stay float32."""
        if not self.alpha_attention:
            return {}
        with torch.autocast(device_type=device.type, enabled=False):
            return {cell: w.ops.t() @ w.ops for cell, w in weights.items()}


def _check_edge_candidates(edge_candidates, num_edges, location):
    if location in ('mixed_with_operation', 'double_mixed'):
        raise UserError(f'--location {location} adds attentions to the candidate ops of every edge, which a space '
                        f'with its own ops on each edge (--search_space s1..s4) fixes; use another --location')
    if any(len(edges) != num_edges for edges in edge_candidates.values()):
        raise UserError(f'the reduced spaces S1-S4 define {spaces.EDGES} edges per cell, the DARTS cell of 4 nodes')


def check_partial_channels(C, partial_channels):
    if partial_channels < 1 or C % partial_channels:
        raise UserError(f'--partial_channels {partial_channels} must divide --init_channels {C}')


class Network(Supernet):
    """The DARTS supernet. Options, named like the command-line flags: primitives ('darts', 'alpha_darts' or
    a comma list), partial_channels (K, 1 = off), alpha_attention, location (Att-DARTS), max_skip,
    in_channels, image_size, pool_bn (a BatchNorm after each pooling candidate, as DARTS), imagenet_stem
    (PC-DARTS's ImageNet search network: its strided stem and first cell). `edge_candidates`
    ({cell type: the ops of each edge}, spaces.edge_candidates) gives each edge its own ops instead of
    `primitives` (RobustDARTS's S1-S4): alpha's columns are their union, and the supernet's op masks start
    at each edge's own."""

    cell_types = ('normal', 'reduce')
    chooses_edges = True  # each node keeps two of its inputs

    def __init__(self, C, num_classes, layers, criterion=None, steps=4, multiplier=4, stem_multiplier=3,
                 primitives='darts', partial_channels=1, alpha_attention=False, location='no_attention',
                 max_skip=None, in_channels=3, image_size=32, pool_bn=True, edge_candidates=None,
                 imagenet_stem=False):
        super().__init__()
        if location not in LOCATIONS:
            raise UserError(f'unknown --location {location!r}; use one of {", ".join(LOCATIONS)}')
        check_partial_channels(C, partial_channels)
        self.criterion = criterion or nn.CrossEntropyLoss()
        self.steps, self._multiplier = steps, multiplier
        self.num_edges = sum(i + 2 for i in range(steps))
        self.op_names = resolve_primitives(primitives) if edge_candidates is None else spaces.union(edge_candidates)
        if edge_candidates is not None:
            _check_edge_candidates(edge_candidates, self.num_edges, location)
        if location in ('mixed_with_operation', 'double_mixed'):
            self.op_names = self.op_names + list(EDGE_ATTENTION_OPS)
        self.alpha_attention, self.max_skip, self.in_channels, self.image_size = (alpha_attention, max_skip,
                                                                                 in_channels, image_size)

        C_stem = stem_multiplier * C
        if imagenet_stem:  # PC-DARTS's ImageNet search: three stride-2 convs bring 224 pixels to 28 before the cells
            self.stem0 = nn.Sequential(
                nn.Conv2d(in_channels, C_stem // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C_stem // 2),
                nn.ReLU(inplace=True), nn.Conv2d(C_stem // 2, C_stem, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(C_stem))
            self.stem1 = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(C_stem, C_stem, 3, stride=2, padding=1,
                                                                        bias=False), nn.BatchNorm2d(C_stem))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(C_stem))
        C_prev_prev, C_prev, C_curr = C_stem, C_stem, C
        # With the ImageNet stem the first cell's s0 has twice s1's resolution: it is reduced as after a reduction.
        spatial_size, reduction_prev = (-(-image_size // 8), True) if imagenet_stem else (image_size, False)
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
                spatial_size = (spatial_size + 1) // 2
            own = edge_candidates and edge_candidates['reduce' if reduction else 'normal']
            self.cells.append(Cell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev,
                                   self.op_names, spatial_size, partial_channels, alpha_attention, location, pool_bn,
                                   own))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = GlobalAvgPool()
        self.classifier = nn.Linear(C_prev, num_classes)
        self._initialize_arch_parameters(self._mixtures(location))
        if edge_candidates is not None:
            self.edge_candidates = edge_candidates
            self.set_op_masks({cell: torch.tensor([[op in ops for op in self.op_names] for ops in edges])
                               for cell, edges in edge_candidates.items()})
            for cell, edges in edge_candidates.items():  # not saved: the flags rebuild them
                columns = torch.tensor([[self.op_names.index(op) for op in ops] for ops in edges])
                self.register_buffer(f'candidate_columns_{cell}', columns, persistent=False)

    def _mixtures(self, location):
        """The architecture parameters of Att-DARTS's mixtures at `location`, per cell type."""
        attentions = len(ATTENTION_PRIMITIVES)
        return [(name, shape) for name, shape, searched in (
            ('second_alphas', (self.num_edges, len(self.op_names)), location == 'double_mixed'),
            ('attention_alphas', (self.num_edges, attentions), location in ('after_every', 'after_every_and_end')),
            ('bottleneck_alphas', (attentions,), location in ('end', 'after_every_and_end'))) if searched]

    def node_slices(self):
        """The edges of each node: node i has i + 2 inputs."""
        return node_slices(self.steps)

    # ----------------------------------------------------------------------------------------------
    # Forward pass.

    def forward(self, x, weights):
        """`weights`: {cell type: CellWeights}, as architecture.Architecture.weights() gives them."""
        grams = self.grams(weights, x.device)
        if hasattr(self, 'stem0'):
            s0 = self.stem0(x)
            s1 = self.stem1(s0)
        else:
            s0 = s1 = self.stem(x)
        for cell in self.cells:
            cell_type = 'reduce' if cell.reduction else 'normal'
            s0, s1 = s1, cell(s0, s1, weights[cell_type], grams.get(cell_type))
        out = self.global_pooling(s1)
        return self.classifier(out.flatten(1))

    # ----------------------------------------------------------------------------------------------
    # Genotype.

    def derived(self, weights, strength_of):
        """{cell type: [((op, input[, attention]), edge), ...]}: the cell derived from `weights` (detached, on
        the CPU) by derivation.py's rule: per node the two strongest inputs and on each its best non-`none`
        op, with the skip cap. strength_of(cell weights, cell type) gives each edge's strength."""
        cells = {cell: derive_cell(weights[cell], self.op_names, self.steps, strength_of(weights[cell], cell))
                 for cell in self.cell_types}
        if self.max_skip is not None:
            cells['normal'] = limit_skips(weights['normal'], self.op_names, self.steps, self.max_skip,
                                          lambda w: strength_of(w, 'normal'))
        return cells

    def genotype(self, cells, weights):
        """The Genotype of derived `cells` (as derived() gives them), with the bottleneck attention that
        `weights` choose."""
        concat = list(range(2 + self.steps - self._multiplier, self.steps + 2))
        bottlenecks = {cell: best_attention(weights[cell].bottleneck) for cell in self.cell_types}
        return make_genotype(normal=[entry for entry, _ in cells['normal']], normal_concat=concat,
                             reduce=[entry for entry, _ in cells['reduce']], reduce_concat=concat,
                             normal_bottleneck=bottlenecks['normal'], reduce_bottleneck=bottlenecks['reduce'])
