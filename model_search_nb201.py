"""NAS-Bench-201's supernet, as the benchmark's DARTS search builds it (`NB201SearchCell`, `SearchNetworkNB201`),
on the shared base of model_search.py, and the options of DARTS's cell it refuses."""
import torch
import torch.nn as nn

from derivation import best_ops
from genotypes import CellNB201
from mixed_op import MixedOp
from model_search import Supernet, check_partial_channels
from operations import GlobalAvgPool, ResNetBasicBlock, resolve_primitives
from utils import UserError


def check_nb201_options(location, max_skip, given, preset, method):
    """NAS-Bench-201's cell has fixed ops and keeps every edge: options that shape a DARTS cell cannot apply.
    `given`: the flags typed; `preset`: the settings of --method `method`, named when they set such an option."""
    origin = f' (set by --method {method})' if set(preset) & {'location', 'max_skip'} - set(given) else ''
    problems = [(location != 'no_attention', f'--location {location} (Att-DARTS\'s attention search)'),
                (max_skip is not None, '--max_skip'), ('primitives' in given, '--primitives')]
    for applies, flag in problems:
        if applies:
            raise UserError(f'{flag}{origin} shapes the DARTS cell and cannot apply to --search_space nas_bench_201, '
                            f'whose cell has fixed ops and keeps every edge')


class NB201SearchCell(nn.Module):
    """NAS-Bench-201's cell as a supernet: node i (1..steps) sums a mixed edge from every earlier node; the
    edges in the benchmark's order 1<-0, 2<-0, 2<-1, 3<-0, ...; the last node is the output."""

    def __init__(self, C, steps, primitives, spatial_size, partial_channels, alpha_attention):
        super().__init__()
        self.steps = steps
        self._ops = nn.ModuleList(MixedOp(C, 1, primitives, spatial_size, partial_channels, alpha_attention,
                                          pool_bn=False) for node in range(1, steps + 1) for _ in range(node))

    def forward(self, x, weights, gram=None):
        nodes, edge = [x], 0
        for node in range(1, self.steps + 1):
            total = torch.zeros_like(x)
            for source in range(node):
                active = weights.active[edge] if weights.active is not None else None
                if active is None or active:  # a hard zero costs nothing
                    out = self._ops[edge](nodes[source], weights.ops[edge], active, gram, weights.skip_dropout)
                    total = total + (out if weights.edges is None else weights.edges[edge] * out)
                if weights.offsets is not None:
                    total = total + weights.offsets[edge]
                edge += 1
            nodes.append(total)
        return nodes[-1]


class SearchNetworkNB201(Supernet):
    """NAS-Bench-201's supernet (as the benchmark's DARTS search builds it): a 3x3 stem to C channels, three
    stages of N search cells at C, 2C and 4C channels joined by residual blocks of stride 2, BN and ReLU,
    global pooling, a linear classifier. One architecture weight per edge and op, shared by all cells:
    `arch_parameters()[0]` is 6 x 5, edges 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2 and ops none, skip_connect,
    nor_conv_1x1, nor_conv_3x3, avg_pool_3x3. Options: partial_channels, alpha_attention, in_channels,
    image_size."""

    cell_types = ('normal',)
    chooses_edges = False  # every node keeps all its inputs

    def __init__(self, C, N, num_classes, criterion=None, partial_channels=1, alpha_attention=False, in_channels=3,
                 image_size=32, steps=3):
        super().__init__()
        for stage_C in (C, 2 * C, 4 * C):
            check_partial_channels(stage_C, partial_channels)
        self.criterion = criterion or nn.CrossEntropyLoss()
        self.steps, self.num_edges = steps, steps * (steps + 1) // 2
        self.op_names = resolve_primitives('nas_bench_201')
        self.alpha_attention, self.in_channels, self.image_size = alpha_attention, in_channels, image_size
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        for stage in range(3):
            stage_C, spatial_size = C * 2 ** stage, -(-image_size // 2 ** stage)
            if stage:
                self.cells.append(ResNetBasicBlock(stage_C // 2, stage_C))
            self.cells.extend(NB201SearchCell(stage_C, steps, self.op_names, spatial_size, partial_channels,
                                              alpha_attention) for _ in range(N))
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU(inplace=True))
        self.global_pooling = GlobalAvgPool()
        self.classifier = nn.Linear(4 * C, num_classes)
        self._initialize_arch_parameters()

    def node_slices(self):
        """The edges of each node: node i has i inputs."""
        starts = [node * (node - 1) // 2 for node in range(1, self.steps + 2)]
        return [slice(start, stop) for start, stop in zip(starts, starts[1:])]

    def forward(self, x, weights):
        """`weights`: {'normal': CellWeights}, as architecture.Architecture.weights() gives them."""
        gram = self.grams(weights, x.device).get('normal')
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x, weights['normal'], gram) if isinstance(cell, NB201SearchCell) else cell(x)
        return self.classifier(self.global_pooling(self.lastact(x)).flatten(1))

    def derived(self, weights, strength_of=None):
        """{'normal': [((op, input), edge), ...]}: every edge of `weights` with its op of largest weight, `none`
        included, as the benchmark's own search code derives it (ties to the lower index, derivation.py's
        rule). Every edge is kept, so edge strengths play no part."""
        ops = best_ops(weights['normal'].ops).tolist()
        return {'normal': [((self.op_names[ops[edge]], edge - rows.start), edge)
                           for rows in self.node_slices() for edge in range(rows.start, rows.stop)]}

    def genotype(self, cells, weights=None):
        """The CellNB201 of derived `cells`."""
        entries = cells['normal']
        return CellNB201(tuple(tuple(entry for entry, edge in entries if rows.start <= edge < rows.stop)
                               for rows in self.node_slices()))
