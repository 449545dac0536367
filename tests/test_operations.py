import pytest
import torch

import operations
from operations import OPS, resolve_primitives
from utils import UserError


@pytest.mark.parametrize('name', sorted(OPS))
@pytest.mark.parametrize('size', [8, 7])
def test_every_op_keeps_shape_at_stride_1_and_halves_at_stride_2(name, size):
    x = torch.randn(2, 6, size, size)
    for stride in (1, 2):
        op = OPS[name](6, stride, False)
        out = op(x)
        expected = size if stride == 1 else (size + 1) // 2
        assert out.shape == (2, 6, expected, expected), (name, stride)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_by_hand():
    C = 16
    bn = 2 * C  # affine weight and bias
    assert n_params(OPS['sep_conv_3x3'](C, 1, True)) == 2 * (9 * C + C * C + bn)
    assert n_params(OPS['sep_conv_5x5'](C, 1, True)) == 2 * (25 * C + C * C + bn)
    assert n_params(OPS['dil_conv_3x3'](C, 1, True)) == 9 * C + C * C + bn
    assert n_params(OPS['dil_conv_5x5'](C, 2, True)) == 25 * C + C * C + bn
    assert n_params(OPS['conv_7x1_1x7'](C, 1, True)) == 2 * 7 * C * C + bn
    assert n_params(OPS['skip_connect'](C, 2, True)) == 2 * (C * C // 2) + bn
    assert n_params(OPS['skip_connect'](C, 1, True)) == 0
    assert n_params(OPS['sep_conv_3x3'](C, 1, False)) == 2 * (9 * C + C * C)
    for name in ('max_pool_3x3', 'avg_pool_5x5', 'none'):
        assert n_params(OPS[name](C, 2, True)) == 0


def test_zero_is_zero_with_the_strided_shape():
    out = OPS['none'](4, 2, False)(torch.randn(1, 4, 6, 6))
    assert out.shape == (1, 4, 3, 3) and not out.any()


def test_avg_pool_excludes_padding():
    out = OPS['avg_pool_3x3'](1, 1, False)(torch.ones(1, 1, 4, 4))
    assert torch.allclose(out, torch.ones_like(out))


def test_search_spaces():
    assert resolve_primitives('darts') == operations.DARTS_PRIMITIVES
    assert resolve_primitives('alpha_darts')[-2:] == ['max_pool_5x5', 'avg_pool_5x5']
    assert resolve_primitives('none, skip_connect,sep_conv_3x3') == ['none', 'skip_connect', 'sep_conv_3x3']
    assert operations.DARTS_PRIMITIVES[0] == 'none'


@pytest.mark.parametrize('spec, message', [
    ('none,sep_conv_9x9', "unknown primitive 'sep_conv_9x9'"),
    (',', 'no op besides none'),
    ('none', 'no op besides none'),
    ('skip_connect,skip_connect', 'twice'),
])
def test_bad_primitives(spec, message):
    with pytest.raises(UserError, match=message):
        resolve_primitives(spec)
