"""Candidate operations of the DARTS and NAS-Bench-201 cell search spaces, and the named search spaces.

`OPS` maps an op name to a constructor `(C, stride, affine) -> nn.Module`. Layer layouts and
attribute names follow the DARTS reference (layers inside an `nn.Sequential` named `op`;
`FactorizedReduce` with `conv_1`, `conv_2`, `bn`) so that released weights load unchanged; NAS-Bench-201's
`Pooling` and `ResNetBasicBlock` have the attribute names of the benchmark's code, for the same reason.
"""
import torch
import torch.nn as nn

from utils import UserError


def is_channels_last(x):
    """Whether x's memory runs N, H, W, C (channels_last), a strided view of such memory included; a dimension
    of size 1 says nothing either way (a one-channel map is the same memory in both formats)."""
    if x.dim() != 4:
        return False
    strides = [x.stride(d) for d in (0, 2, 3, 1) if x.size(d) > 1]
    return strides == sorted(strides, reverse=True)


def in_memory_format_of(x, reference):
    """`x`, copied to channels_last if `reference` is so and `x` is not (tensors that torch.cat, reshape or
    index_select made in NCHW)."""
    if is_channels_last(reference) and not is_channels_last(x):
        return x.contiguous(memory_format=torch.channels_last)
    return x


class ReLUConvBN(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    """ReLU, dilated depthwise conv, pointwise conv, BN."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    """Two stacked ReLU-depthwise-pointwise-BN blocks; only the first one strides."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class Conv7x1_1x7(nn.Module):
    """The factorised 7x7 convolution of NASNet and AmoebaNet."""

    def __init__(self, C, stride, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
            nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


def global_average(x):
    """Each channel's mean, N x C x 1 x 1. Unlike adaptive pooling, its backward has a deterministic CUDA kernel
    (--deterministic)."""
    return x.mean((2, 3), keepdim=True)


def global_max(x):
    """Each channel's maximum, N x C x 1 x 1, deterministic on CUDA where adaptive max pooling is not; a tie
    shares the gradient where max pooling gives it to one of the tied values."""
    return x.amax((2, 3), keepdim=True)


class GlobalAvgPool(nn.Module):
    """global_average as a module (no weights, so state_dict keys do not change)."""

    def forward(self, x):
        return global_average(x)


def drop_path(x, drop_prob):
    """Zero whole samples with probability drop_prob (a number or a 0-dim tensor) and rescale the rest
    (DARTS's drop path)."""
    keep_prob = 1.0 - drop_prob
    mask = (torch.rand(x.size(0), 1, 1, 1, device=x.device) < keep_prob).to(x.dtype)
    return x * mask / keep_prob


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    """The `none` op. Mixed edges never call it (its contribution is exactly zero); evaluation cells may."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, ::self.stride, ::self.stride].mul(0.)


class Noise(nn.Module):
    """RobustDARTS's `noise` op (space S4): standard Gaussian noise of the input's shape (subsampled on stride-2
    edges), independent of the input, drawn in training and evaluation alike, as the authors' NoiseOp does."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return torch.randn_like(x[:, :, ::self.stride, ::self.stride])


class FactorizedReduce(nn.Module):
    """Halves the resolution with two 1x1 stride-2 convs offset by one pixel, concatenated."""

    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f'FactorizedReduce needs an even number of output channels, got {C_out}')
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        # Odd sizes: the shifted branch is one pixel smaller, so pad it back before concatenating.
        shifted = x[:, :, 1:, 1:]
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            shifted = nn.functional.pad(shifted, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class Pooling(nn.Module):
    """NAS-Bench-201's 3x3 average pooling, kept in `op` as the benchmark's networks keep it."""

    def __init__(self, stride=1):
        super().__init__()
        self.op = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)

    def forward(self, x):
        return self.op(x)


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's reduction between stages: two ReLU-conv-BN 3x3 (the first of stride 2) plus a residual
    of 2x2 average pooling and a 1x1 convolution."""

    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1, affine)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine)
        self.downsample = nn.Sequential(nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
                                        nn.Conv2d(C_in, C_out, kernel_size=1, stride=1, padding=0, bias=False))

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def _pool(kind, size):
    def build(C, stride, affine):
        if kind == 'max':
            return nn.MaxPool2d(size, stride=stride, padding=size // 2)
        return nn.AvgPool2d(size, stride=stride, padding=size // 2, count_include_pad=False)
    return build


OPS = {
    'none': lambda C, stride, affine: Zero(stride),
    'noise': lambda C, stride, affine: Noise(stride),
    'avg_pool_3x3': _pool('avg', 3),
    'max_pool_3x3': _pool('max', 3),
    'avg_pool_5x5': _pool('avg', 5),
    'max_pool_5x5': _pool('max', 5),
    'skip_connect': lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine),
    'sep_conv_3x3': lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine),
    'sep_conv_5x5': lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine),
    'sep_conv_7x7': lambda C, stride, affine: SepConv(C, C, 7, stride, 3, affine),
    'dil_conv_3x3': lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine),
    'dil_conv_5x5': lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine),
    'conv_7x1_1x7': lambda C, stride, affine: Conv7x1_1x7(C, stride, affine),
    'nor_conv_1x1': lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine),
    'nor_conv_3x3': lambda C, stride, affine: ReLUConvBN(C, C, 3, stride, 1, affine),
}

POOLING_OPS = frozenset(name for name in OPS if 'pool' in name)

# Named search spaces (`--primitives`). The order fixes the columns of the architecture weights.
DARTS_PRIMITIVES = ['none', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect',
                    'sep_conv_3x3', 'sep_conv_5x5', 'dil_conv_3x3', 'dil_conv_5x5']
NB201_PRIMITIVES = ['none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3']  # the benchmark's order
OP_SETS = {
    'darts': DARTS_PRIMITIVES,
    'darts_without_none': DARTS_PRIMITIVES[1:],  # FairDARTS's, DrNAS's and DARTS-PT's space
    'alpha_darts': DARTS_PRIMITIVES + ['max_pool_5x5', 'avg_pool_5x5'],
    'nas_bench_201': NB201_PRIMITIVES,
}


def resolve_primitives(spec):
    """A search-space name or a comma-separated list of op names -> list of op names."""
    if isinstance(spec, (list, tuple)):
        names = list(spec)
    elif spec in OP_SETS:
        names = list(OP_SETS[spec])
    else:
        names = [name.strip() for name in spec.split(',') if name.strip()]
    unknown = [name for name in names if name not in OPS]
    if unknown:
        raise UserError(f'unknown primitive {unknown[0]!r} in --primitives {spec!r}; use a search space '
                        f'({", ".join(OP_SETS)}) or op names from: {", ".join(OPS)}')
    if not [name for name in names if name != 'none']:
        raise UserError(f'--primitives {spec!r} has no op besides none; an edge needs at least one op to compute')
    if len(set(names)) != len(names):
        raise UserError(f'--primitives {spec!r} names an op twice')
    return names
