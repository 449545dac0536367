"""Attention modules: the Att-DARTS primitives in a registry, and the alpha-DARTS channel attention.

`ATTENTIONS` maps a genotype's attention name to a constructor `(C, spatial_size) -> nn.Module`;
every module maps x to a tensor of x's shape. Each keeps its mask computation in a submodule named
`_mask`, with Att-DARTS's layer names below it, so that their released checkpoints load after
renaming only the cell-level prefixes.
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from operations import GlobalAvgPool, Identity, global_average, global_max, in_memory_format_of, is_channels_last
from utils import UserError

REDUCTION = 16  # Att-DARTS's channel reduction ratio for every attention
DOUBLE_ATTENTION_REDUCTION = 4  # A^2-Nets: C/4 features and C/4 descriptors


def _reduced(name, C, ratio):
    if C < ratio:
        raise UserError(f'{name} needs at least {ratio} channels for its reduction ratio of {ratio}, got {C}')
    return C // ratio


class MaskedAttention(nn.Module):
    """Scales the input by the mask its `_mask` submodule computes (broadcast over x's shape)."""

    def __init__(self, mask):
        super().__init__()
        self._mask = mask

    def forward(self, x):
        return x * self._mask(x)


class SqueezeExcitationMask(nn.Module):
    def __init__(self, C):
        super().__init__()
        hidden = _reduced('SE', C, REDUCTION)
        self.squeeze = GlobalAvgPool()
        self.excitation = nn.Sequential(
            nn.Linear(C, hidden, bias=False), nn.ReLU(inplace=True),
            nn.Linear(hidden, C, bias=False), nn.Sigmoid())

    def forward(self, x):
        return self.excitation(self.squeeze(x).flatten(1))[:, :, None, None]


class SqueezeExcitation(MaskedAttention):
    """SE (Hu et al.): a per-channel scale from the globally pooled input."""

    def __init__(self, C):
        super().__init__(SqueezeExcitationMask(C))


class BAMChannelGate(nn.Module):
    def __init__(self, C, hidden):
        super().__init__()
        self.gate_c = nn.Sequential(OrderedDict([
            ('flatten', nn.Flatten()),
            ('gate_c_fc_0', nn.Linear(C, hidden)),
            ('gate_c_bn_1', nn.BatchNorm1d(hidden)),
            ('gate_c_relu_1', nn.ReLU(inplace=True)),
            ('gate_c_fc_final', nn.Linear(hidden, C)),
        ]))

    def forward(self, x):
        return self.gate_c(global_average(x))[:, :, None, None]


class BAMSpatialGate(nn.Module):
    def __init__(self, C, hidden, dilated_convs=2, dilation=4):
        super().__init__()
        layers = [('gate_s_conv_reduce0', nn.Conv2d(C, hidden, 1)),
                  ('gate_s_bn_reduce0', nn.BatchNorm2d(hidden)),
                  ('gate_s_relu_reduce0', nn.ReLU(inplace=True))]
        for i in range(dilated_convs):
            layers += [(f'gate_s_conv_di_{i}', nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation)),
                       (f'gate_s_bn_di_{i}', nn.BatchNorm2d(hidden)),
                       (f'gate_s_relu_di_{i}', nn.ReLU(inplace=True))]
        layers.append(('gate_s_conv_final', nn.Conv2d(hidden, 1, 1)))
        self.gate_s = nn.Sequential(OrderedDict(layers))

    def forward(self, x):
        return self.gate_s(x)


class BAMMask(nn.Module):
    def __init__(self, C):
        super().__init__()
        hidden = _reduced('BAM', C, REDUCTION)
        self.channel_att = BAMChannelGate(C, hidden)
        self.spatial_att = BAMSpatialGate(C, hidden)

    def forward(self, x):
        # B x C x 1 x 1 times B x 1 x H x W broadcasts to the full map; the 1 + keeps the identity path.
        return 1 + torch.sigmoid(self.channel_att(x) * self.spatial_att(x))


class BAM(MaskedAttention):
    """BAM (Park et al.): x * (1 + sigmoid(channel gate * spatial gate)), a mask in (1, 2)."""

    def __init__(self, C):
        super().__init__(BAMMask(C))


class CBAMChannelGate(nn.Module):
    def __init__(self, C, hidden):
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(C, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, C))

    def forward(self, x):
        # One pass of the shared MLP over the average- and max-pooled vectors stacked along the batch.
        pooled = torch.cat([global_average(x), global_max(x)])
        from_avg, from_max = self.mlp(pooled).unflatten(0, (2, -1))  # not chunk(2): it fixes an exported batch
        return torch.sigmoid(from_avg + from_max)[:, :, None, None]


class CBAMSpatialGate(nn.Module):
    def __init__(self, kernel_size=7):
        super().__init__()
        self.spatial = nn.Sequential(OrderedDict([
            ('conv', nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)),
            ('bn', nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)),
        ]))

    def forward(self, x):
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial(in_memory_format_of(pooled, x)))


class CBAMMask(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.ChannelAttention = CBAMChannelGate(C, _reduced('CBAM', C, REDUCTION))
        self.SpatialAttention = CBAMSpatialGate()

    def forward(self, x):
        channel_scale = self.ChannelAttention(x)
        # The spatial gate looks at the channel-scaled map, as in CBAM's sequential arrangement.
        return channel_scale * self.SpatialAttention(x * channel_scale)


class CBAM(MaskedAttention):
    """CBAM (Woo et al.): a channel gate, then a spatial gate on the channel-scaled map."""

    def __init__(self, C):
        super().__init__(CBAMMask(C))


class GatherExciteMask(nn.Module):
    def __init__(self, C, spatial_size):
        super().__init__()
        hidden = _reduced('GE_theta-plus', C, REDUCTION)
        if spatial_size is None:
            raise UserError("GE_theta-plus needs the cell's spatial size, because its gather kernel covers "
                            'the whole feature map')
        self.spatial_size = spatial_size
        self.downop = nn.Sequential(OrderedDict([
            ('dwconv', nn.Conv2d(C, C, spatial_size, groups=C, bias=False)),
            ('bn', nn.BatchNorm2d(C)),
        ]))
        self.mlp = nn.Sequential(nn.Conv2d(C, hidden, 1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, C, 1, bias=False))

    def forward(self, x):
        if x.shape[-2:] != (self.spatial_size, self.spatial_size):
            raise UserError(f'GE_theta-plus was built for {self.spatial_size}x{self.spatial_size} feature maps '
                            f'but got {x.shape[-2]}x{x.shape[-1]}')
        # The gathered map is 1 x 1, so broadcasting it over H x W is the resize to the input's size.
        return torch.sigmoid(self.mlp(self.downop(x)))


class GatherExcite(MaskedAttention):
    """Gather-Excite theta-plus (Hu et al.): a learned whole-map depthwise gather, an MLP, a channel scale."""

    def __init__(self, C, spatial_size):
        super().__init__(GatherExciteMask(C, spatial_size))


class DoubleAttentionMask(nn.Module):
    def __init__(self, C):
        super().__init__()
        reduced = _reduced('DoubleAttention', C, DOUBLE_ATTENTION_REDUCTION)
        self.convA = nn.Conv2d(C, reduced, 1)
        self.convB = nn.Conv2d(C, reduced, 1)
        self.convV = nn.Conv2d(C, reduced, 1)
        self.convZ = nn.Conv2d(reduced, C, 1)

    def forward(self, x):
        features = self.convA(x).flatten(2)                            # B x m x N
        gather_weights = self.convB(x).flatten(2).softmax(dim=-1)      # B x n x N, over positions
        distribute_weights = self.convV(x).flatten(2).softmax(dim=1)   # B x n x N, over descriptors
        descriptors = features @ gather_weights.transpose(1, 2)        # B x m x n
        if is_channels_last(x):  # B x N x m in memory: the map is channels_last
            distributed = (distribute_weights.transpose(1, 2) @ descriptors.transpose(1, 2)).transpose(1, 2)
        else:
            distributed = descriptors @ distribute_weights             # B x m x N
        return self.convZ(distributed.unflatten(2, x.shape[-2:]))


class DoubleAttention(nn.Module):
    """A^2-Nets (Chen et al.): gather global descriptors, distribute them back, add as a residual."""

    def __init__(self, C):
        super().__init__()
        self._mask = DoubleAttentionMask(C)

    def forward(self, x):
        return x + self._mask(x)


ATTENTIONS = {
    'Identity': lambda C, spatial_size: Identity(),
    'SE': lambda C, spatial_size: SqueezeExcitation(C),
    'BAM': lambda C, spatial_size: BAM(C),
    'CBAM': lambda C, spatial_size: CBAM(C),
    'GE_theta-plus': lambda C, spatial_size: GatherExcite(C, spatial_size),
    'DoubleAttention': lambda C, spatial_size: DoubleAttention(C),
}


def build_attention(name, C, spatial_size=None):
    """The attention `name` for C channels; spatial_size (side of the square map) is needed by GE only."""
    if name not in ATTENTIONS:
        raise UserError(f'unknown attention {name!r}; use one of: {", ".join(ATTENTIONS)}')
    return ATTENTIONS[name](C, spatial_size)


class AlphaChannelAttention(nn.Module):
    """alpha-DARTS's channel attention: pooled input -> op scores -> mixed by the Gram matrix W^T W of the
    cell type's softmaxed op weights (so the architecture steers it) -> a channel mask in (0, 1), B x C."""

    def __init__(self, C, n_ops):
        super().__init__()
        self.fc1 = nn.Conv2d(2 * C, n_ops, 1, bias=False)
        self.fc2 = nn.Conv2d(n_ops, C, 1, bias=False)

    def forward(self, x, gram):
        # The mask decides which channels are searched, so it is computed in float32 even under autocast:
        # bf16 would tie near-equal scores and flip the choice. It costs little: all of it acts on pooled
        # vectors.
        dtype = torch.promote_types(gram.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x, gram = x.to(dtype), gram.to(dtype)
            pooled = torch.cat([global_average(x), global_max(x)], dim=1)
            op_scores = gram @ self.fc1(pooled)[:, :, :, 0]  # (n_ops x n_ops) @ (B x n_ops x 1)
            return torch.sigmoid(self.fc2(F.relu(op_scores).unsqueeze(-1))).flatten(1)


def select_channels(mask, k):
    """Indices of the k channels with the highest mask summed over the batch, in ascending channel order."""
    return mask.sum(0).topk(k).indices.sort().values
