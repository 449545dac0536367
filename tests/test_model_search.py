import pytest
import torch
from conftest import supernet

import methods
import operations
import successors  # noqa: F401  (registers the successors and their presets)
from mixed_op import MixedOp, channel_shuffle
from architecture import Architecture
from model_search import Network
from utils import UserError

OPS = operations.DARTS_PRIMITIVES  # none, max, avg, skip, sep3, sep5, dil3, dil5


def tiny(**options):
    """An architecture.Architecture of a small DARTS supernet (its `.net`)."""
    torch.manual_seed(0)
    return supernet(8, 5, 3, image_size=16, **options)


def set_alphas(arch, cell, rows):
    """Each row: {op name: logit}; unlisted ops get 0, so a larger logit is a larger softmax weight."""
    values = torch.zeros_like(arch.op_parameters(cell))
    for edge, row in enumerate(rows):
        for name, logit in row.items():
            values[edge, OPS.index(name)] = logit
    with torch.no_grad():
        arch.op_parameters(cell).copy_(values)


def test_shapes_and_parameter_groups():
    arch = tiny()
    net = arch.net
    assert net(torch.randn(2, 3, 16, 16), arch.weights()).shape == (2, 5)
    assert net.alphas_normal.shape == (14, 8) and net.alphas_reduce.shape == (14, 8)
    assert not hasattr(net, 'betas_normal')
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.network_weights()}
    assert arch.isdisjoint(weights) and arch | weights == {id(p) for p in net.parameters()}
    assert {'alphas_normal', 'alphas_reduce'} <= set(net.state_dict())
    pc = tiny(partial_channels=4).net
    assert pc.betas_normal.shape == (14,) and len(pc.arch_parameters()) == 4


def test_none_is_never_computed(monkeypatch):
    def refuse(self, x):
        raise AssertionError('none was computed')
    monkeypatch.setattr(operations.Zero, 'forward', refuse)
    arch = tiny()
    arch.net(torch.randn(1, 3, 16, 16), arch.weights()).sum().backward()


def test_derivation_excludes_none_and_keeps_the_two_strongest_inputs():
    arch = tiny()
    # Every edge prefers `none`; after it, edge e's best op and its strength are set by hand.
    rows = [{'none': 9.0} for _ in range(14)]
    best = {0: ('sep_conv_3x3', 2.0), 1: ('max_pool_3x3', 1.0),                       # node 0: inputs 0, 1
            2: ('dil_conv_3x3', 0.5), 3: ('skip_connect', 3.0), 4: ('sep_conv_5x5', 2.5),  # node 1
            5: ('avg_pool_3x3', 4.0), 6: ('sep_conv_3x3', 0.1), 7: ('dil_conv_5x5', 0.2), 8: ('sep_conv_5x5', 3.5),
            9: ('skip_connect', 0.3), 10: ('max_pool_3x3', 0.4), 11: ('sep_conv_3x3', 5.0),
            12: ('dil_conv_3x3', 6.0), 13: ('sep_conv_5x5', 0.6)}
    for edge, (name, logit) in best.items():
        rows[edge][name] = logit
    set_alphas(arch, 'normal', rows)
    genotype = arch.genotype()
    assert genotype.normal == [('sep_conv_3x3', 0), ('max_pool_3x3', 1),
                               ('skip_connect', 1), ('sep_conv_5x5', 2),
                               ('avg_pool_3x3', 0), ('sep_conv_5x5', 3),
                               ('dil_conv_3x3', 3), ('sep_conv_3x3', 2)]
    assert genotype.normal_concat == [2, 3, 4, 5]


def test_edge_weights_multiply_the_strength():
    arch = tiny(partial_channels=2)
    rows = [{} for _ in range(14)]
    rows[2], rows[3], rows[4] = {'sep_conv_3x3': 3.0}, {'sep_conv_5x5': 2.0}, {'dil_conv_3x3': 1.0}
    set_alphas(arch, 'normal', rows)
    assert arch.genotype().normal[2:4] == [('sep_conv_3x3', 0), ('sep_conv_5x5', 1)]
    betas = torch.zeros(14)
    betas[2], betas[4] = -5.0, 5.0  # node 1: input 0 nearly off, input 2 dominant
    with torch.no_grad():
        arch.net.betas_normal.copy_(betas)
    assert arch.genotype().normal[2:4] == [('dil_conv_3x3', 2), ('sep_conv_5x5', 1)]


def test_max_skip_zeroes_the_weakest_skips_and_derives_the_cell_again():
    """chenxin061/pdarts b880e87, train_search.py: while the normal cell has more than max_sk skips,
    delete_min_sk_prob zeroes the weakest derived skip's probability, then keep_1_on and keep_2_branches
    derive the ops and each node's two edges again from the changed probabilities."""
    # skip_connect wins every edge, more weakly on later edges; edge 10's best other op is dil_conv_3x3.
    rows = [{'skip_connect': 14.0 - edge, 'sep_conv_5x5': 1.0} for edge in range(14)]
    rows[10]['dil_conv_3x3'] = 2.0
    for max_skip, expected_skips in ((None, 8), (2, 2), (0, 0)):
        arch = tiny(max_skip=max_skip)
        set_alphas(arch, 'normal', rows)
        normal = arch.genotype().normal
        assert sum(op == 'skip_connect' for op, _ in normal) == expected_skips
    arch = tiny(max_skip=7)
    set_alphas(arch, 'normal', rows)
    # Node 3 (edges 9-13) keeps edges 9 and 10. Edge 10's skip is the weakest kept: zeroed, its strength falls
    # to its dil_conv_3x3's 0.106 and edge 11's skip takes its place; then 11's and 12's skips are zeroed in
    # turn, until edge 13, whose sep_conv_5x5 weighs e / (e + e + 6) = 0.238 once its skip is zeroed, beats
    # the others' best (0.106, 0.094, 0.169): node 3 keeps edge 9's skip and edge 13's sep_conv_5x5.
    assert arch.genotype().normal[6:8] == [('skip_connect', 0), ('sep_conv_5x5', 4)]


def test_max_skip_lets_a_node_take_another_input_once_its_skip_is_zeroed():
    # Node 1 (edges 2-4): edge 2's skip (0.945) and edge 3's sep_conv_3x3 (0.886) win over edge 4's
    # sep_conv_5x5 (0.826). Without skips, edge 2 is left with dil_conv_3x3 at 0.017: P-DARTS's
    # keep_2_branches then keeps edges 3 and 4, where swapping the op on edge 2 would keep a 0.017 op.
    rows = [{'sep_conv_3x3': 3.0} for _ in range(14)]
    rows[2], rows[3], rows[4] = {'skip_connect': 5.0, 'dil_conv_3x3': 1.0}, {'sep_conv_3x3': 4.0}, {'sep_conv_5x5': 3.5}
    arch = tiny(max_skip=0)
    set_alphas(arch, 'normal', rows)
    assert arch.genotype().normal[2:4] == [('sep_conv_3x3', 1), ('sep_conv_5x5', 2)]
    arch = tiny()
    set_alphas(arch, 'normal', rows)
    assert arch.genotype().normal[2:4] == [('skip_connect', 0), ('sep_conv_3x3', 1)]


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(8.).view(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]


@pytest.mark.parametrize('stride', [1, 2])
def test_partial_channels_mix_c_over_k_and_pass_the_rest(stride):
    torch.manual_seed(0)
    C, K = 16, 4
    edge = MixedOp(C, stride, OPS, spatial_size=8, partial_channels=K)
    seen = []
    for op in edge._ops:
        op.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[1]))
    x = torch.randn(2, C, 8, 8)
    weights = torch.softmax(torch.randn(len(OPS)), 0)
    out = edge(x, weights)
    assert out.shape == (2, C, 8 // stride, 8 // stride)
    assert seen and set(seen) == {C // K}
    # With every op weight zero only the untouched channels remain: pass-through, pooled, shuffled.
    out = edge(x, torch.zeros(len(OPS)))
    rest = x[:, C // K:]
    if stride == 2:
        rest = torch.nn.functional.max_pool2d(rest, 2, 2)
    expected = channel_shuffle(torch.cat([torch.zeros_like(rest[:, :C // K]), rest], 1), K)
    assert torch.equal(out, expected)


def test_partial_channel_ops_have_the_parameters_of_c_over_k_channels():
    edge = MixedOp(16, 1, OPS, spatial_size=8, partial_channels=4)
    full = MixedOp(4, 1, OPS, spatial_size=8)
    assert sum(p.numel() for p in edge.parameters()) == sum(p.numel() for p in full.parameters())


def test_edge_norm_weights_are_softmax_per_node():
    arch = tiny(partial_channels=2)
    with torch.no_grad():
        arch.net.betas_normal.copy_(torch.randn(14))
    edges = arch.weights()['normal'].edges
    for start, size in ((0, 2), (2, 3), (5, 4), (9, 5)):
        assert edges[start:start + size].sum().item() == pytest.approx(1.0)


def test_bad_options_give_one_sentence():
    with pytest.raises(UserError, match='--partial_channels 3 must divide --init_channels 8'):
        tiny(partial_channels=3)
    with pytest.raises(UserError, match='unknown --location'):
        tiny(location='everywhere')


ALPHA_OPS = operations.OP_SETS['alpha_darts']


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('K', [4, 1])
def test_alpha_attention_searches_the_top_scored_channels_and_scales_the_rest(stride, K):
    torch.manual_seed(0)
    C = 16
    edge = MixedOp(C, stride, ALPHA_OPS, spatial_size=8, partial_channels=K, alpha_attention=True)
    seen = []
    for op in edge._ops:
        op.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    x = torch.randn(3, C, 8, 8)
    W = torch.softmax(torch.randn(14, len(ALPHA_OPS)), -1)
    gram = W.t() @ W
    mask = edge.channel_attention(x, gram)
    scaled = x * mask[:, :, None, None]
    chosen = mask.sum(0).topk(C // K).indices.sort().values
    out = edge(x, torch.zeros(len(ALPHA_OPS)), gram=gram)
    # Exactly the C/K channels with the highest batch-summed mask enter every op, attention-scaled.
    assert seen and all(torch.allclose(inputs, scaled[:, chosen]) for inputs in seen)
    # With every op weight zero, those channels become zero and the others keep their scaled values.
    rest = scaled if stride == 1 else torch.nn.functional.max_pool2d(scaled, 2, 2)
    expected = rest.clone()
    expected[:, chosen] = 0
    assert torch.allclose(out, expected)


def test_alpha_attention_passes_architecture_gradient_through_both_paths():
    torch.manual_seed(0)
    edge = MixedOp(16, 1, ALPHA_OPS, spatial_size=8, partial_channels=4, alpha_attention=True)
    x = torch.randn(4, 16, 8, 8)
    alphas = torch.randn(14, len(ALPHA_OPS), requires_grad=True)
    # Through the attention only: the mixture weights are constants.
    W = torch.softmax(alphas, -1)
    edge(x, W[0].detach(), gram=W.t() @ W).square().sum().backward()
    assert alphas.grad.abs().sum() > 0
    alphas.grad = None
    # Through the mixture only: the gram matrix is a constant.
    W = torch.softmax(alphas, -1)
    edge(x, W[0], gram=(W.t() @ W).detach()).square().sum().backward()
    assert alphas.grad[0].abs().sum() > 0 and alphas.grad[1:].abs().sum() == 0


@pytest.mark.parametrize('location, names', [
    ('no_attention', []),
    ('after_every', ['attention_alphas_normal', 'attention_alphas_reduce']),
    ('end', ['bottleneck_alphas_normal', 'bottleneck_alphas_reduce']),
    ('after_every_and_end', ['attention_alphas_normal', 'attention_alphas_reduce', 'bottleneck_alphas_normal',
                             'bottleneck_alphas_reduce']),
    ('mixed_with_operation', []),
    ('double_mixed', ['second_alphas_normal', 'second_alphas_reduce']),
])
def test_attention_locations_register_their_weights_and_derive_their_genotype(location, names):
    torch.manual_seed(0)
    net = Network(16, 3, 3, location=location, image_size=8)
    arch = Architecture(net, methods.Methods())
    assert [name for name, _ in net.named_arch_parameters()] == ['alphas_normal', 'alphas_reduce'] + names
    assert set(names) <= set(net.state_dict())
    net(torch.randn(2, 3, 8, 8), arch.weights()).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.arch_parameters())
    genotype = arch.genotype()
    edges = genotype.normal + genotype.reduce
    with_attention = location in ('after_every', 'after_every_and_end', 'double_mixed')
    assert all(len(entry) == (3 if with_attention else 2) for entry in edges)
    if location in ('mixed_with_operation', 'double_mixed'):
        assert net.alphas_normal.shape[1] == len(operations.DARTS_PRIMITIVES) + 5
    if location == 'double_mixed':
        assert all(entry[2] in net.op_names for entry in edges)
    if location in ('end', 'after_every_and_end'):
        with torch.no_grad():
            net.bottleneck_alphas_normal.copy_(torch.tensor([0., 0., 0., 5., 0., 0.]))
            net.bottleneck_alphas_reduce.copy_(torch.tensor([5., 0., 0., 0., 0., 0.]))
        genotype = arch.genotype()
        assert (genotype.normal_bottleneck, genotype.reduce_bottleneck) == ('CBAM', '')


def nb201_supernet(**options):
    from model_search_nb201 import SearchNetworkNB201
    return Architecture(SearchNetworkNB201(16, 1, 5, image_size=16, **options), methods.build(options))


@pytest.mark.parametrize('build', [
    lambda: supernet(16, 5, 3, image_size=16), lambda: supernet(16, 5, 3, image_size=16, partial_channels=2),
    lambda: supernet(16, 5, 3, image_size=16, partial_channels=2, alpha_attention=True),
    *(lambda location=location: supernet(16, 5, 3, image_size=16, location=location)
      for location in ('after_every', 'end', 'mixed_with_operation', 'double_mixed')),
    nb201_supernet, lambda: nb201_supernet(partial_channels=2),
    lambda: nb201_supernet(partial_channels=2, alpha_attention=True)],
    ids=['darts', 'partial', 'alpha_attention', 'after_every', 'end', 'mixed_with_operation', 'double_mixed',
         'nb201', 'nb201_partial', 'nb201_alpha_attention'])
def test_every_convolution_of_a_channels_last_supernet_reads_channels_last(build):
    """cuDNN runs NHWC kernels only on NHWC inputs; a reshape, torch.cat or index_select that returns NCHW
    would make it convert before and after every such convolution."""
    torch.manual_seed(0)
    arch = build()
    x = torch.randn(2, 3, 16, 16)
    expected = arch.net(x, arch.weights())
    net = arch.net.to(memory_format=torch.channels_last)
    nchw = []
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_pre_hook(
                lambda module, inputs, name=name: None if operations.is_channels_last(inputs[0]) else nchw.append(name))
    logits = net(x.contiguous(memory_format=torch.channels_last), arch.weights())
    assert not nchw, nchw
    assert torch.allclose(logits, expected, atol=1e-5)


def test_the_supernet_knows_no_method_and_the_architecture_takes_them_composed():
    import ast
    import os
    from conftest import ROOT
    for module in ('model_search.py', 'model_search_nb201.py'):
        tree = ast.parse(open(os.path.join(ROOT, module), encoding='utf-8').read())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {'methods', 'successors', 'cost', 'architecture'}, module
    assert 'methods' not in vars(Network(16, 3, 3, image_size=8))
    with pytest.raises(TypeError, match=r'methods=methods.build\(flags\), or methods.Methods\(\) for DARTS alone'):
        Architecture(Network(16, 3, 3, image_size=8), methods=[])


def test_a_methods_parameters_come_between_alpha_and_the_supernets_mixtures_as_checkpoints_hold_them():
    """The Adam state in a checkpoint follows arch_parameters()'s order, which must not change when the
    architecture adds a method's parameters after the supernet has registered its own."""
    arch = supernet(16, 3, 3, image_size=8, edge_norm=True, location='after_every')
    assert [name for name, _ in arch.net.named_arch_parameters()] == [
        'alphas_normal', 'alphas_reduce', 'betas_normal', 'betas_reduce', 'attention_alphas_normal',
        'attention_alphas_reduce']
    assert arch.parameters_of(arch.methods[0], 'reduce') == {'betas': arch.net.betas_reduce}
    with pytest.raises(ValueError, match='already has an architecture parameter betas_normal'):
        arch.net.add_arch_parameters('normal', {'betas': torch.zeros(14)})


def test_the_imagenet_supernet_has_pc_darts_stem_layout_and_parameters():
    # yuhuixu1993/PC-DARTS b74702f, model_search_imagenet.Network(16, 1000, 8, criterion):
    # sum(p.numel() for p in model.parameters()) = 956,512 (its alphas and betas are not module parameters),
    # with K = 2 and edge normalisation as its MixedOp and betas have them; 224 pixels reach the cells at 28.
    arch = supernet(16, 1000, 8, partial_channels=2, image_size=224, imagenet_stem=True)
    net = arch.net
    assert sum(p.numel() for p in net.network_weights()) == 956512
    assert [tuple(p.shape) for p in net.arch_parameters()] == [(14, 8), (14, 8), (14,), (14,)]
    x = torch.randn(2, 3, 224, 224)
    s0 = net.stem0(x)
    assert s0.shape == (2, 48, 56, 56) and net.stem1(s0).shape == (2, 48, 28, 28)
    inputs = net.edge_inputs(arch.weights())
    assert inputs[0][4:] == (28, 28) and net(x, arch.weights()).shape == (2, 1000)


@pytest.mark.slow
@pytest.mark.parametrize('method', sorted(methods.presets()))
def test_every_preset_searches_the_imagenet_supernet_or_is_refused_in_one_sentence(method):
    import bench
    sizes = dict(bench.TINY, search_channels=16 if method == 'att_darts' else 8, image_size=128)
    case = bench.search_case(method, [], sizes, True, bench.Speed(None, False, False, torch.device('cpu')))
    assert hasattr(case.arch.net, 'stem0') and torch.isfinite(case.step()[0])
