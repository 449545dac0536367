"""Evaluation networks built from a genotype: DARTS's `NetworkCIFAR` and `NetworkImageNet`, and `NetworkNB201`.

For genotypes without attention the module tree and parameter names equal the DARTS reference
(`stem.0.weight`, `cells.3._ops.5.op.2.weight`, `auxiliary_head.features.2.weight`, ...), so weights
released by DARTS, PC-DARTS and alpha-DARTS load unchanged. An edge's attention (or its second op,
after Att-DARTS's `double_mixed` search) sits in `_attentions`, which Att-DARTS calls `_second_layers`;
the cell-output attention sits in `_bottleneck`. `checkpoints.load_weights` renames Att-DARTS's checkpoints.
`NetworkNB201` has the module tree of NAS-Bench-201's own networks (`stem`, `cells.K.layers.E`, `lastact`,
`classifier`), so that the weights released with NATS-Bench load unchanged.
"""
import torch
import torch.nn as nn

from attention import build_attention
from genotypes import CellNB201
from operations import (OPS, FactorizedReduce, GlobalAvgPool, Identity, Pooling, ReLUConvBN, ResNetBasicBlock,
                        drop_path)
import utils
from utils import UserError


def build_edge_op(name, C, stride, reduction, spatial_size):
    """The op of one edge of an evaluation cell: an op of operations.py, or an attention."""
    if name in OPS:
        return OPS[name](C, stride, True)
    attention = build_attention(name, C, spatial_size)
    # Att-DARTS's `mixed_with_operation`: in a reduction cell an attention follows a skip_connect.
    return nn.Sequential(OPS['skip_connect'](C, stride, False), attention) if reduction else attention


class Cell(nn.Module):

    def __init__(self, genotype, C_prev_prev, C_prev, C, reduction, reduction_prev, spatial_size=None):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)

        entries = genotype.reduce if reduction else genotype.normal
        concat = genotype.reduce_concat if reduction else genotype.normal_concat
        bottleneck = genotype.reduce_bottleneck if reduction else genotype.normal_bottleneck
        self._steps = len(entries) // 2
        self._concat = list(concat)
        self.multiplier = len(concat)
        self._indices = [entry[1] for entry in entries]

        self._ops = nn.ModuleList()
        for name, index, *_ in entries:
            stride = 2 if reduction and index < 2 else 1
            self._ops.append(build_edge_op(name, C, stride, reduction, spatial_size))

        second_layers = [entry[2] if len(entry) > 2 else '' for entry in entries]
        self._attentions = None
        if any(second_layers):
            self._attentions = nn.ModuleList(build_edge_op(name or 'Identity', C, 1, False, spatial_size)
                                             for name in second_layers)
        self._bottleneck = None
        if bottleneck:
            self._bottleneck = build_attention(bottleneck, C * self.multiplier, spatial_size)
        # Drop path skips identity edges, as in DARTS: dropping a plain skip would only add noise.
        self._drop_path = [not isinstance(op, Identity) for op in self._ops]

    def forward(self, s0, s1, drop_prob=0.0):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(self._steps):
            total = 0
            for edge in (2 * node, 2 * node + 1):
                h = self._ops[edge](states[self._indices[edge]])
                if self._attentions is not None:
                    h = self._attentions[edge](h)
                if self.training and self._drop_path[edge]:
                    h = drop_path(h, drop_prob)
                total = total + h
            states.append(total)
        out = torch.cat([states[i] for i in self._concat], dim=1)
        if self._bottleneck is not None:
            out = self._bottleneck(out)
        return out


class AuxiliaryHead(nn.Module):
    """The auxiliary classifier after the second reduction cell. DARTS pools 8x8 (CIFAR) or 7x7 (ImageNet)
    maps down to 2x2; other map sizes pool adaptively to 2x2 (pooling has no weights, so names match)."""

    def __init__(self, C, num_classes, spatial_size, imagenet=False):
        super().__init__()
        darts_size, stride = (7, 2) if imagenet else (8, 3)
        if spatial_size == darts_size:
            pool = nn.AvgPool2d(5, stride=stride, padding=0, count_include_pad=False)
        else:  # an even map pools to 2x2 as adaptive pooling does, with a backward that is deterministic on CUDA
            pool = nn.AvgPool2d(spatial_size // 2) if spatial_size % 2 == 0 else nn.AdaptiveAvgPool2d(2)
        layers = [nn.ReLU(inplace=True), pool,
                  nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
                  nn.Conv2d(128, 768, 2, bias=False)]
        # DARTS's ImageNet head has no BatchNorm after its last conv (a typo the paper's runs kept).
        layers += [nn.ReLU(inplace=True)] if imagenet else [nn.BatchNorm2d(768), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.flatten(1))


def _halve(size):
    return (size + 1) // 2


class _Network(nn.Module):
    """The cell stack shared by both networks; subclasses build the stem."""

    def __init__(self):
        super().__init__()
        # The drop-path probability lives in a tensor (not saved: DARTS's weights have none) and is applied
        # in every training pass, even at 0, so that a compiled network never compiles again when it changes.
        self.register_buffer('_drop_path_prob', torch.zeros(()), persistent=False)
        self._drop_path_value = 0.0

    @property
    def drop_path_prob(self):
        return self._drop_path_value

    @drop_path_prob.setter
    def drop_path_prob(self, value):
        self._drop_path_prob.fill_(value)
        self._drop_path_value = float(value)

    def _build_cells(self, genotype, C, layers, C_prev_prev, C_prev, reduction_prev, spatial_size):
        self.cells = nn.ModuleList()
        C_curr = C
        self._aux_channels = self._aux_spatial = None
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
                spatial_size = _halve(spatial_size)
            cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev, spatial_size)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == 2 * layers // 3:
                self._aux_channels, self._aux_spatial = C_prev, spatial_size
        return C_prev

    def _forward_cells(self, s0, s1):
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self._drop_path_prob)
            if i == 2 * self._layers // 3 and self._auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)
        out = self.global_pooling(s1)
        return self.classifier(out.flatten(1)), logits_aux


class NetworkCIFAR(_Network):

    def __init__(self, C, num_classes, layers, auxiliary, genotype, in_channels=3, image_size=32):
        super().__init__()
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = 0.0
        stem_multiplier = 3
        C_stem = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_stem),
        )
        C_prev = self._build_cells(genotype, C, layers, C_stem, C_stem, False, image_size)
        if auxiliary:
            self.auxiliary_head = AuxiliaryHead(self._aux_channels, num_classes, self._aux_spatial)
        self.global_pooling = GlobalAvgPool()
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x):
        s = self.stem(x)
        return self._forward_cells(s, s)


class NetworkImageNet(_Network):

    def __init__(self, C, num_classes, layers, auxiliary, genotype, in_channels=3, image_size=224):
        super().__init__()
        if C % 2:  # the first cell's factorized reduction splits C in halves
            raise UserError(f'the ImageNet network (used from --image_size 128 up) needs an even --init_channels, '
                            f'not {C}')
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = 0.0
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, C // 2, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        spatial_size = _halve(_halve(_halve(image_size)))
        C_prev = self._build_cells(genotype, C, layers, C, C, True, spatial_size)
        if auxiliary:
            self.auxiliary_head = AuxiliaryHead(self._aux_channels, num_classes, self._aux_spatial, imagenet=True)
        # DARTS pools 7x7 with AvgPool2d(7); adaptive pooling gives the same there and works at any size.
        self.global_pooling = GlobalAvgPool()
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x):
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        return self._forward_cells(s0, s1)


class NB201Cell(nn.Module):
    """A NAS-Bench-201 cell: `layers` holds its edges in the architecture string's order, as the benchmark's
    cell does; node i sums its edges, and the last node is the output."""

    def __init__(self, genotype, C):
        super().__init__()
        self.layers = nn.ModuleList(Pooling() if op == 'avg_pool_3x3' else OPS[op](C, 1, True)
                                    for op, _ in genotype.edges)
        self.sources = [source for _, source in genotype.edges]
        self.node_sizes = [len(node) for node in genotype.nodes]

    def forward(self, x):
        nodes, edge = [x], 0
        for size in self.node_sizes:
            nodes.append(sum(self.layers[e](nodes[self.sources[e]]) for e in range(edge, edge + size)))
            edge += size
        return nodes[-1]


class NetworkNB201(nn.Module):
    """NAS-Bench-201's network: a 3x3 stem to C channels, three stages of N cells at C, 2C and 4C channels
    joined by residual blocks of stride 2, BN and ReLU, global pooling and a linear classifier. Returns
    (logits, None) as the other networks do (no auxiliary head)."""

    def __init__(self, C, N, genotype, num_classes, in_channels=3):
        super().__init__()
        self.drop_path_prob = 0.0  # the benchmark trains without drop path; train.py may still set it
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        for stage in range(3):
            C_stage = C * 2 ** stage
            if stage:
                self.cells.append(ResNetBasicBlock(C_stage // 2, C_stage))
            self.cells.extend(NB201Cell(genotype, C_stage) for _ in range(N))
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU(inplace=True))
        self.global_pooling = GlobalAvgPool()
        self.classifier = nn.Linear(4 * C, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.classifier(self.global_pooling(self.lastact(x)).flatten(1)), None




def network_kind(dataset, image_size, genotype=None):
    """NAS-Bench-201's network for its cells; for DARTS cells ImageNet's strided stem for ImageNet and for
    large images of a user's own, CIFAR's otherwise."""
    if isinstance(genotype, CellNB201):
        return 'nb201'
    return 'imagenet' if dataset == 'imagenet' or image_size >= 128 else 'cifar'


def sizes_from_weights(state_dict):
    """What a bare state_dict tells of its network by its keys and shapes: kind, C, layers, auxiliary,
    num_classes, in_channels (None for what it does not show)."""
    layers = 1 + max((int(key.split('.')[1]) for key in state_dict if key.startswith('cells.')), default=-1)
    sizes = dict(kind=None, C=None, layers=layers or None, num_classes=None, in_channels=None,
                 auxiliary=any(key.startswith('auxiliary_head.') for key in state_dict))
    if 'lastact.0.weight' in state_dict and 'stem.0.weight' in state_dict:  # NAS-Bench-201: a stem of C, 3N + 2 cells
        stem = state_dict['stem.0.weight'].shape
        sizes.update(kind='nb201', C=stem[0], in_channels=stem[1], layers=(layers - 2) // 3)
    elif 'stem.0.weight' in state_dict:  # CIFAR's stem: 3C channels
        stem = state_dict['stem.0.weight'].shape
        sizes.update(kind='cifar', C=stem[0] // 3, in_channels=stem[1])
    elif 'stem0.3.weight' in state_dict and 'stem0.0.weight' in state_dict:  # ImageNet's: C/2, then C
        sizes.update(kind='imagenet', C=state_dict['stem0.3.weight'].shape[0],
                     in_channels=state_dict['stem0.0.weight'].shape[1])
    if 'classifier.weight' in state_dict:
        sizes['num_classes'] = state_dict['classifier.weight'].shape[0]
    return sizes


def build_network(config, genotype):
    """A network from a config dict (as stored in checkpoints): kind (cifar, imagenet or nb201), C,
    num_classes, layers (N for nb201), auxiliary, in_channels, image_size."""
    if config['kind'] == 'nb201':
        return NetworkNB201(config['C'], config['layers'], genotype, config['num_classes'], config['in_channels'])
    network = {'cifar': NetworkCIFAR, 'imagenet': NetworkImageNet}[config['kind']]
    return network(config['C'], config['num_classes'], config['layers'], config['auxiliary'], genotype,
                   in_channels=config['in_channels'], image_size=config['image_size'])


# The evaluation networks of the papers: (network, C, cells, classes, input size); NAS-Bench-201's at its sizes.
PAPER_SIZES = {
    'cifar10': (NetworkCIFAR, 36, 20, 10, 32),
    'cifar100': (NetworkCIFAR, 36, 20, 100, 32),
    'imagenet': (NetworkImageNet, 48, 14, 1000, 224),
}
NB201_SIZES = {
    'cifar10': (16, 5, 10, 32),
    'cifar100': (16, 5, 100, 32),
    'imagenet16-120': (16, 5, 120, 16),
}


def paper_network_cost(genotype, dataset):
    """Size, parameters in millions (auxiliary head excluded) and FLOPs of the evaluation network of `genotype`
    at the size the papers retrain it on `dataset` (a NAS-Bench-201 cell: the benchmark's)."""
    if isinstance(genotype, CellNB201):
        C, layers, num_classes, size = NB201_SIZES[dataset]
        net = NetworkNB201(C, layers, genotype, num_classes)
    else:
        network, C, layers, num_classes, size = PAPER_SIZES[dataset]
        net = network(C, num_classes, layers, False, genotype)
    flops = utils.count_flops(net, (1, 3, size, size))
    return {'C': C, 'layers': layers, 'num_classes': num_classes, 'image_size': size,
            'params_M': utils.count_parameters_in_millions(net), 'flops': flops, 'multiply_adds': flops // 2}
