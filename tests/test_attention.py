import pytest
import torch
import torch.nn.functional as F

from attention import (
    ATTENTIONS,
    AlphaChannelAttention,
    build_attention,
    select_channels,
)
from utils import UserError


@pytest.fixture(autouse=True)
def seeded():
    # Fixed draws: a ReLU over a handful of random op scores can otherwise zero a gradient by chance.
    torch.manual_seed(0)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_registry_holds_the_att_darts_names_in_order():
    assert list(ATTENTIONS) == ['Identity', 'SE', 'BAM', 'CBAM', 'GE_theta-plus', 'DoubleAttention']


@pytest.mark.parametrize('name', list(ATTENTIONS))
def test_every_attention_keeps_shape_in_train_and_eval_and_passes_gradients(name):
    for C, size in [(16, 8), (32, 7), (48, 4)]:
        module = build_attention(name, C, spatial_size=size)
        for train in (True, False):
            module.train(train)
            x = torch.randn(2, C, size, size, requires_grad=True)
            out = module(x)
            assert out.shape == x.shape, (name, C, size, train)
            out.square().sum().backward()
            assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, (name, C, size, train)


@pytest.mark.parametrize('name, low, high', [('SE', 0, 1), ('CBAM', 0, 1), ('BAM', 1, 2)])
def test_masks_lie_in_their_ranges_and_scale_the_input(name, low, high):
    module = build_attention(name, 32)
    x = torch.randn(2, 32, 8, 8)
    for train in (True, False):
        module.train(train)
        mask = module._mask(x)
        assert (mask > low).all() and (mask < high).all()
        assert torch.allclose(module(x), x * mask)


def test_cbam_matches_its_definition():
    module = build_attention('CBAM', 32).eval()
    with torch.no_grad():  # random BN statistics, so that the spatial BN is not a no-op
        module._mask.SpatialAttention.spatial.bn.running_mean.fill_(0.3)
        module._mask.SpatialAttention.spatial.bn.running_var.fill_(2.0)
    x = torch.randn(2, 32, 6, 6)
    mlp = module._mask.ChannelAttention.mlp
    channel = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[:, :, None, None]
    scaled = x * channel
    pooled = torch.cat([scaled.max(1, keepdim=True).values, scaled.mean(1, keepdim=True)], dim=1)
    spatial = module._mask.SpatialAttention.spatial
    expected = scaled * torch.sigmoid(spatial.bn(spatial.conv(pooled)))
    assert torch.allclose(module(x), expected, atol=1e-6)
    assert spatial.bn.momentum == 0.01


def test_double_attention_matches_gather_distribute():
    module = build_attention('DoubleAttention', 16)
    mask = module._mask
    x = torch.randn(2, 16, 5, 5)
    A = mask.convA(x).flatten(2)
    gather = mask.convB(x).flatten(2).softmax(-1)
    distribute = mask.convV(x).flatten(2).softmax(1)
    Z = torch.einsum('bmp,bnp,bnq->bmq', A, gather, distribute).reshape(2, 4, 5, 5)
    assert torch.allclose(module(x), x + mask.convZ(Z), atol=1e-5)


def test_double_attention_with_zeroed_output_conv_is_the_identity():
    module = build_attention('DoubleAttention', 16)
    with torch.no_grad():
        module._mask.convZ.weight.zero_()
        module._mask.convZ.bias.zero_()
    x = torch.randn(2, 16, 7, 7)
    assert torch.equal(module(x), x)


@pytest.mark.parametrize('C', [16, 32, 64])
def test_parameter_counts_by_hand(C):
    r = C // 16
    bn1 = 2  # affine weight and bias of BatchNorm2d(1)
    assert n_params(build_attention('Identity', C)) == 0
    assert n_params(build_attention('SE', C)) == 2 * C * r
    assert n_params(build_attention('CBAM', C)) == (C * r + r) + (r * C + C) + 7 * 7 * 2 + bn1
    channel_gate = (C * r + r) + 2 * r + (r * C + C)
    spatial_gate = (C * r + r) + 2 * r + 2 * (9 * r * r + r + 2 * r) + (r + 1)
    assert n_params(build_attention('BAM', C)) == channel_gate + spatial_gate
    s = 8
    assert n_params(build_attention('GE_theta-plus', C, spatial_size=s)) == C * s * s + 2 * C + 2 * C * r
    q = C // 4
    assert n_params(build_attention('DoubleAttention', C)) == 3 * (C * q + q) + (q * C + C)


@pytest.mark.parametrize('name, keys', [
    ('SE', ['_mask.excitation.0.weight', '_mask.excitation.2.weight']),
    ('BAM', ['_mask.channel_att.gate_c.gate_c_fc_0.weight', '_mask.channel_att.gate_c.gate_c_bn_1.running_var',
             '_mask.channel_att.gate_c.gate_c_fc_final.bias', '_mask.spatial_att.gate_s.gate_s_conv_reduce0.bias',
             '_mask.spatial_att.gate_s.gate_s_bn_reduce0.weight', '_mask.spatial_att.gate_s.gate_s_conv_di_1.weight',
             '_mask.spatial_att.gate_s.gate_s_bn_di_0.running_mean',
             '_mask.spatial_att.gate_s.gate_s_conv_final.weight']),
    ('CBAM', ['_mask.ChannelAttention.mlp.1.weight', '_mask.ChannelAttention.mlp.3.bias',
              '_mask.SpatialAttention.spatial.conv.weight', '_mask.SpatialAttention.spatial.bn.weight',
              '_mask.SpatialAttention.spatial.bn.num_batches_tracked']),
    ('GE_theta-plus', ['_mask.downop.dwconv.weight', '_mask.downop.bn.running_mean', '_mask.mlp.0.weight',
                       '_mask.mlp.2.weight']),
    ('DoubleAttention', ['_mask.convA.weight', '_mask.convB.bias', '_mask.convV.weight', '_mask.convZ.bias']),
])
def test_state_dict_keys_follow_att_darts(name, keys):
    state = build_attention(name, 32, spatial_size=8).state_dict()
    assert set(keys) <= set(state), sorted(set(keys) - set(state))
    assert all(key.startswith('_mask.') for key in state)


def test_ge_spatial_size():
    assert build_attention('GE_theta-plus', 16, spatial_size=8)._mask.downop.dwconv.weight.shape == (16, 1, 8, 8)
    with pytest.raises(UserError, match="spatial size"):
        build_attention('GE_theta-plus', 16)
    with pytest.raises(UserError, match='built for 8x8 feature maps but got 4x4'):
        build_attention('GE_theta-plus', 16, spatial_size=8)(torch.randn(2, 16, 4, 4))


@pytest.mark.parametrize('name, C, message', [
    ('SEE', 32, "unknown attention 'SEE'; use one of: Identity, SE, BAM, CBAM, GE_theta-plus, DoubleAttention"),
    ('SE', 8, 'SE needs at least 16 channels for its reduction ratio of 16, got 8'),
    ('BAM', 15, 'BAM needs at least 16 channels'),
    ('CBAM', 4, 'CBAM needs at least 16 channels'),
    ('GE_theta-plus', 12, 'GE_theta-plus needs at least 16 channels'),
    ('DoubleAttention', 2, 'DoubleAttention needs at least 4 channels for its reduction ratio of 4, got 2'),
])
def test_build_attention_errors(name, C, message):
    with pytest.raises(UserError) as error:
        build_attention(name, C, spatial_size=8)
    assert str(error.value).startswith(message) and str(error.value).count('. ') == 0


def test_alpha_attention_follows_the_seed_formula_and_trains_the_architecture():
    B, C, n_ops, edges = 3, 16, 8, 14
    attention = AlphaChannelAttention(C, n_ops)
    alphas = torch.randn(edges, n_ops, requires_grad=True)
    weights = alphas.softmax(-1)
    gram = weights.t() @ weights
    x = torch.randn(B, C, 6, 6)
    mask = attention(x, gram)
    assert mask.shape == (B, C) and (mask > 0).all() and (mask < 1).all()

    pooled = torch.cat([F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)], dim=1)
    scores = gram.expand(B, -1, -1) @ attention.fc1(pooled)[:, :, :, 0]
    expected = torch.sigmoid(attention.fc2(F.relu(scores).unsqueeze(-1)))[:, :, 0, 0]
    assert torch.allclose(mask, expected, atol=1e-6)

    (mask * torch.randn(B, C)).sum().backward()
    assert alphas.grad is not None and alphas.grad.abs().sum() > 0
    assert attention.fc1.weight.grad.abs().sum() > 0


def test_alpha_attention_under_autocast_keeps_the_gram_product_in_float32():
    attention = AlphaChannelAttention(16, 8)
    W = torch.rand(14, 8, requires_grad=True)
    x = torch.randn(4, 16, 4, 4)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        mask = attention(x, W.t() @ W)
    assert mask.shape == (4, 16)
    mask.float().sum().backward()
    assert W.grad.dtype == torch.float32 and W.grad.abs().sum() > 0


def test_select_channels_picks_the_highest_batch_summed_scores():
    mask = torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.5, 0.3],
                         [0.1, 0.0, 0.9, 0.7, 0.5, 0.3]])
    # Batch sums: 0.2, 0.9, 1.1, 1.5, 1.0, 0.6; channel 1 wins in sample 0 but not in the sum.
    assert select_channels(mask, 3).tolist() == [2, 3, 4]
    assert select_channels(mask, 1).tolist() == [3]
    assert select_channels(mask, 6).tolist() == list(range(6))
