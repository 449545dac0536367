"""RobustDARTS's reduced spaces S1-S4 (`--search_space s1..s4`): the per-edge candidates, the noise op, the
derived cells, and how every method preset composes with them."""
import json
import math

import pytest
import torch
from conftest import load_script, metrics, supernet

import bench
import genotypes
import methods
import operations
import spaces
import successors
import utils

train_search = load_script('train_search')
train = load_script('train')

# Parameters of automl/RobustDARTS 3dec3fe's src/search/model_search.Network(16, 10, 8, criterion, spaces_dict[s]),
# counted with sum(p.numel() for p in model.parameters()) (its alphas are not module parameters).
THEIR_PARAMETERS = {'s1': 405146, 's2': 665466, 's3': 665466, 's4': 624506}


def test_the_spaces_offer_the_authors_candidates():
    s1 = spaces.edge_candidates('s1')
    assert [len(edges) for edges in s1.values()] == [14, 14] and all(len(ops) == 2 for ops in s1['normal'])
    assert s1['normal'][5] == ['max_pool_3x3', 'skip_connect'] and s1['normal'][13] == ['dil_conv_3x3', 'dil_conv_5x5']
    assert s1['reduce'][1] == ['max_pool_3x3', 'dil_conv_3x3'] and s1['reduce'][6] == ['max_pool_3x3', 'sep_conv_3x3']
    assert sum(ops == ['skip_connect', 'dil_conv_5x5'] for ops in s1['reduce']) == 5
    for space, ops in (('s2', ['skip_connect', 'sep_conv_3x3']), ('s3', ['none', 'skip_connect', 'sep_conv_3x3']),
                       ('s4', ['noise', 'sep_conv_3x3'])):
        assert spaces.edge_candidates(space) == {'normal': [ops] * 14, 'reduce': [ops] * 14}
        assert spaces.union(spaces.edge_candidates(space)) == ops  # alpha's columns in the authors' order
    assert spaces.edge_candidates('darts') is None


@pytest.mark.parametrize('space', spaces.SPACES)
def test_the_supernet_has_the_authors_parameters_and_mixes_each_edges_own_ops(space):
    arch = supernet(16, 10, 8, edge_candidates=spaces.edge_candidates(space))
    net = arch.net
    assert sum(p.numel() for p in net.network_weights()) == THEIR_PARAMETERS[space]
    candidates = spaces.edge_candidates(space)
    with torch.no_grad():
        for cell in net.cell_types:
            net.op_parameters(cell).copy_(torch.randn(14, len(net.op_names)))
            for edge, ops in enumerate(candidates[cell]):  # an op the edge lacks would win every softmax
                for column, op in enumerate(net.op_names):
                    if op not in ops:
                        net.op_parameters(cell)[edge, column] = 20.0
    for cell, weights in arch.weights().items():
        alphas = net.op_parameters(cell).detach()
        for edge, ops in enumerate(candidates[cell]):
            columns = [net.op_names.index(op) for op in ops]
            expected = torch.zeros(len(net.op_names))
            expected[columns] = torch.softmax(alphas[edge, columns], dim=0)
            torch.testing.assert_close(weights.ops[edge].detach(), expected)
    logits = net(torch.randn(2, 3, 32, 32), arch.weights())
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def known_alphas(n, function):
    return function(torch.arange(14 * n, dtype=torch.float32).reshape(14, n) * 0.37)


# automl/RobustDARTS 3dec3fe's Network.genotype() with alphas_normal = known_alphas(n, sin) and alphas_reduce =
# known_alphas(n, cos), n the candidates per edge (run outside this repository).
THEIR_GENOTYPES = {
    's1': genotypes.darts_style(
        normal=[('dil_conv_3x3', 0), ('dil_conv_5x5', 1), ('skip_connect', 2), ('skip_connect', 1),
                ('dil_conv_3x3', 3), ('max_pool_3x3', 0), ('dil_conv_3x3', 3), ('dil_conv_3x3', 4)],
        reduce=[('max_pool_3x3', 1), ('max_pool_3x3', 0), ('max_pool_3x3', 0), ('max_pool_3x3', 1),
                ('sep_conv_3x3', 1), ('dil_conv_3x3', 2), ('max_pool_3x3', 1), ('skip_connect', 2)]),
    's3': genotypes.darts_style(
        normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('sep_conv_3x3', 2), ('skip_connect', 0),
                ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2), ('sep_conv_3x3', 1)],
        reduce=[('skip_connect', 0), ('skip_connect', 1), ('sep_conv_3x3', 2), ('sep_conv_3x3', 1),
                ('sep_conv_3x3', 0), ('skip_connect', 1), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0)]),
}


@pytest.mark.parametrize('space', sorted(THEIR_GENOTYPES))
def test_the_derived_cell_is_the_authors(space):
    arch = supernet(4, 10, 3, edge_candidates=spaces.edge_candidates(space))
    net, candidates = arch.net, spaces.edge_candidates(space)
    n = spaces.ops_per_edge(space, None)
    with torch.no_grad():
        for cell, theirs in (('normal', known_alphas(n, torch.sin)), ('reduce', known_alphas(n, torch.cos))):
            net.op_parameters(cell).fill_(30.0)  # ops an edge lacks: never derived however large
            for edge, ops in enumerate(candidates[cell]):
                for j, op in enumerate(ops):
                    net.op_parameters(cell)[edge, net.op_names.index(op)] = theirs[edge, j]
    assert arch.genotype() == THEIR_GENOTYPES[space]


def test_the_noise_op_is_standard_gaussian_noise_of_the_inputs_shape_in_training_and_evaluation():
    torch.manual_seed(0)
    x = torch.full((64, 8, 16, 16), 5.0)
    for stride in (1, 2):
        op = operations.OPS['noise'](8, stride, True)
        for training in (True, False):
            op.train(training)
            out = op(x)
            assert out.shape == (64, 8, 16 // stride, 16 // stride)
            assert abs(out.mean().item()) < 0.02 and abs(out.std().item() - 1) < 0.02
        assert not torch.equal(op(x), op(x)), 'drawn anew in every pass'
        assert not list(op.parameters())


def test_regularisers_sum_over_each_edges_own_ops():
    """beta-DARTS's logsumexp, FairDARTS's zero-one loss and DrNAS's KL see only the ops an edge offers."""
    candidates = spaces.edge_candidates('s1')
    arch = supernet(4, 10, 3, edge_candidates=candidates, beta_decay_weight=1.0, sigmoid_weights=True,
                    dirichlet=True, dirichlet_kl=1.0)
    beta, = [m for m in arch.methods if isinstance(m, successors.BetaDecay)]
    beta.set_epoch(100, 100)
    own = {cell: arch.net.candidate_values(cell, arch.op_parameters(cell).detach()) for cell in arch.net.cell_types}
    assert all(values.shape == (14, 2) for values in own.values())
    for cell, edges in candidates.items():
        assert own[cell][5].tolist() == [arch.op_parameters(cell)[5, arch.net.op_names.index(op)].item()
                                         for op in edges[5]]
    terms = {name: value.item() for method in arch.methods
             for name, value in method.regularisers('alpha', arch).items()}
    assert terms['beta_decay'] == pytest.approx(sum(torch.logsumexp(v, -1).mean().item() for v in own.values()))
    sigmoids = torch.cat([torch.sigmoid(v).flatten() for v in own.values()])
    assert terms['zero_one'] == pytest.approx(-10 * (sigmoids - 0.5).pow(2).mean().item())
    concentration = {cell: torch.nn.functional.elu(v) + 1 for cell, v in own.items()}
    kl = sum(torch.distributions.kl_divergence(torch.distributions.Dirichlet(c),
                                               torch.distributions.Dirichlet(torch.ones_like(c))).sum().item()
             for c in concentration.values())
    assert terms['dirichlet_kl'] == pytest.approx(kl, rel=1e-5)


SPEED = bench.Speed(None, False, False, torch.device('cpu'))
# What is refused, and why; every other preset searches every space.
REFUSED = {
    ('darts_minus', 's1'): 'adds to the skip_connect candidate of every edge',
    ('darts_minus', 's4'): 'adds to the skip_connect candidate of every edge',
    ('drnas', None): r'--stage_keep 4 must fall from stage to stage, stay below the \d candidates of an edge',
    ('pdarts', None): r'--stage_keep 5,3 must fall from stage to stage, stay below the \d candidates of an edge',
}


@pytest.mark.parametrize('space', spaces.SPACES)
@pytest.mark.parametrize('method', sorted(methods.presets()))
def test_every_preset_searches_every_space_or_is_refused_in_one_sentence(method, space):
    sizes = dict(bench.TINY, search_channels=16 if method == 'att_darts' else 8)
    refusal = REFUSED.get((method, space), REFUSED.get((method, None)))
    if refusal:
        with pytest.raises(utils.UserError, match=refusal):
            bench.search_case(method, ['--search_space', space], sizes, True, SPEED).step()
        return
    torch.manual_seed(0)
    case = bench.search_case(method, ['--search_space', space], sizes, True, SPEED)
    before = {cell: case.arch.op_parameters(cell).detach().clone() for cell in case.arch.net.cell_types}
    loss, _, _ = case.step()
    assert math.isfinite(loss.item())
    candidates = spaces.edge_candidates(space)
    for cell, weights in case.arch.weights().items():
        absent = torch.tensor([[op not in ops for op in case.arch.net.op_names] for ops in candidates[cell]])
        assert (weights.ops.detach()[absent] == 0).all(), 'an op the edge lacks never gets weight'
    assert any(not torch.equal(before[cell], case.arch.op_parameters(cell).detach()) for cell in before) \
        or method == 'da2s', 'the architecture learns'  # DA2S holds alpha still at first
    for cell, entries in case.arch.derived().items():
        assert all(entry[0] in candidates[cell][edge] for entry, edge in entries)


@pytest.mark.parametrize('space', ['s1', 's4'])
@pytest.mark.parametrize('flags', [['--cost_penalty', '1', '--cost', 'flops'], ['--location', 'end'],
                                   ['--alpha_attention', '--partial_channels', '2'], ['--max_skip', '1'],
                                   ['--drop_path_prob', '0.3']],
                         ids=lambda flags: flags[0].strip('-'))
def test_method_flags_beyond_the_presets_search_the_spaces(flags, space):
    """S4 has no skip_connect, so --max_skip has nothing to cap there."""
    sizes = dict(bench.TINY, search_channels=16 if '--location' in flags else 8)
    case = bench.search_case('darts', ['--search_space', space, *flags], sizes, True, SPEED)
    assert math.isfinite(case.step()[0].item())
    candidates = spaces.edge_candidates(space)
    assert all(entry[0] in candidates[cell][edge] for cell, entries in case.arch.derived().items()
               for entry, edge in entries)


def test_flags_that_set_the_ops_are_refused_in_one_sentence(in_tmp):
    tiny = ['--dataset', 'synthetic', '--search_space', 's2', '--epochs', '1']
    with pytest.raises(utils.UserError, match='--search_space s2 gives each edge its own candidate ops; leave out '
                                              '--primitives'):
        train_search.main(tiny + ['--primitives', 'darts'])
    with pytest.raises(utils.UserError, match='--location mixed_with_operation adds attentions to the candidate ops'):
        train_search.main(tiny + ['--location', 'mixed_with_operation'])
    args, _, notes = train_search.resolve_arguments(train_search.build_parser(), tiny + ['--method', 'beta_darts'])
    assert args.primitives == 'darts' and args.beta_decay_weight == 50
    assert notes == ['--search_space s2 gives each edge its own candidate ops, so --method beta_darts searches them '
                     'instead of its primitives darts_without_none']


TINY = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '64', '--synthetic_test_size',
        '32', '--num_classes', '4', '--init_channels', '8', '--layers', '3', '--batch_size', '32', '--device', 'cpu',
        '--report_freq', '1000']


@pytest.mark.slow
def test_an_s4_search_derives_noise_and_its_cell_retrains_tests_and_draws(in_tmp):
    searched = train_search.main(TINY + ['--search_space', 's4', '--epochs', '1', '--exp_path', 'search'])
    folder = in_tmp / 'search'
    assert genotypes.parse_genotype(str(folder / 'genotype.json')) == searched
    assert {op for op, _ in searched.normal + searched.reduce} <= {'noise', 'sep_conv_3x3'}
    assert len(metrics(folder)[-1]['arch_weights']['normal']['ops'][0]) == 2  # alpha: 14 x (noise, sep_conv_3x3)
    noisy = searched._replace(normal=[('noise', 0)] + list(searched.normal[1:]))  # a cell with noise, whatever won
    (in_tmp / 'noisy.json').write_text(json.dumps(genotypes.genotype_to_dict(noisy)))
    final = train.main(TINY + ['--arch_path', 'noisy.json', '--epochs', '1', '--exp_path', 'eval'])
    assert math.isfinite(final['train_loss']) and math.isfinite(final['test_loss'])
    test = load_script('test')
    result = test.main(TINY[:-2] + ['--arch_path', 'noisy.json', '--model_path', 'eval/weights.pt'])
    assert 0 <= result['top1'] <= 100 and math.isfinite(result['loss'])
    visualize = load_script('visualize')
    visualize.main(['noisy.json', '--outdir', 'drawn', '--format', 'svg'])
    assert 'noise' in (in_tmp / 'drawn' / 'normal.svg').read_text()
    visualize.main(['--report', 'search'])
    assert 'noise' in (folder / 'report.html').read_text()


@pytest.mark.slow
def test_darts_pt_selects_among_each_edges_own_candidates_in_s1(in_tmp):
    searched = train_search.main(TINY + ['--search_space', 's1', '--selection', 'pt', '--pt_interval', '1',
                                         '--epochs', '2', '--exp_path', 'search'])
    candidates = spaces.edge_candidates('s1')
    for cell in ('normal', 'reduce'):
        for node, ((op_a, a), (op_b, b)) in enumerate(zip(*[iter(getattr(searched, cell))] * 2)):
            first = node * (node + 3) // 2  # the node's first edge: node i has i + 2 inputs
            assert a != b and op_a in candidates[cell][first + a] and op_b in candidates[cell][first + b]
