"""progressive.py and the supernet's op masks: P-DARTS's stages, its skip dropout schedule, the pruning between
stages, and a staged search on the synthetic data."""
import math

import pytest
import torch
from conftest import load_script, metrics, supernet

import progressive
from mixed_op import MixedOp
from utils import UserError

train_search = load_script('train_search')

TINY = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '128', '--synthetic_test_size',
        '32', '--num_classes', '4', '--init_channels', '4', '--batch_size', '32', '--device', 'cpu',
        '--report_freq', '1000']


def test_plan_stages_pairs_depths_with_keeps_and_rates():
    stages = progressive.plan_stages((5, 11, 17), (5, 3), (0.0, 0.4, 0.7), None, 8, 2, 8, 16, False)
    assert [(s.index, s.layers, s.skip_dropout, s.keep, s.partial_channels) for s in stages] == [
        (0, 5, 0.0, 5, 2), (1, 11, 0.4, 3, 2), (2, 17, 0.7, None, 2)]
    one_stage = progressive.plan_stages(None, None, None, None, 8, 1, 8, 16, False)
    assert one_stage == [progressive.Stage(0, 8, 0.0, None, 1)]
    stages = progressive.plan_stages((2, 3), (4,), (0.3,), (6, 4), 8, 1, 8, 24, False)
    assert [(s.skip_dropout, s.partial_channels) for s in stages] == [(0.3, 6), (0.3, 4)]


@pytest.mark.parametrize('layers, keep, rates, widths, says', [
    ((5, 11), (), None, None, 'one number for every stage but the last'),
    ((5, 11), (5,), (0.1, 0.2, 0.3), None, 'one rate, or one for each of the 2 stages'),
    ((5, 11, 17), (3, 5), None, None, 'must fall from stage to stage'),
    ((5, 11), (8,), None, None, 'stay below the 8 candidates'),
    ((5, 11), (1,), None, None, 'keep at least 2'),
    ((5, 11), (4,), None, (6, 4, 2), 'one K for each of the 2 stages'),
])
def test_plan_stages_refuses_plans_that_do_not_fit(layers, keep, rates, widths, says):
    with pytest.raises(UserError, match=says):
        progressive.plan_stages(layers, keep, rates, widths, 8, 1, 8, 16, False)


def test_plan_stages_refuses_partial_channels_that_do_not_divide_the_channels_or_grow_when_carried_over():
    with pytest.raises(UserError, match='--partial_channels 3 must divide --init_channels 16'):
        progressive.plan_stages(None, None, None, None, 8, 3, 8, 16, False)
    with pytest.raises(UserError, match='K = 6 of stage 1 must divide --init_channels 16'):
        progressive.plan_stages((5, 11), (4,), None, (6, 4), 8, 1, 8, 16, False)
    assert len(progressive.plan_stages((5, 11), (4,), None, (2, 4), 8, 1, 8, 16, False)) == 2
    with pytest.raises(UserError, match='--stage_continue widens the supernet'):
        progressive.plan_stages((5, 11), (4,), None, (2, 4), 8, 1, 8, 16, True)


def test_skip_dropout_falls_linearly_in_the_warm_up_then_by_exp_minus_0_2_an_epoch():
    stage = progressive.Stage(1, 11, 0.4, 3)
    assert stage.dropout_at(0, 25, 10) == pytest.approx(0.4 * 24 / 25)
    assert stage.dropout_at(9, 25, 10) == pytest.approx(0.4 * 15 / 25)
    assert stage.dropout_at(10, 25, 10) == pytest.approx(0.4)
    assert stage.dropout_at(14, 25, 10) == pytest.approx(0.4 * math.exp(-0.8))


def test_skip_dropout_drops_the_identity_only_in_training():
    op = MixedOp(4, 1, ['skip_connect'], 8, 1, False)
    x, weights = torch.randn(2, 4, 8, 8), torch.ones(1)
    assert torch.equal(op.eval()(x, weights, skip_dropout=1.0), x)
    assert torch.count_nonzero(op.train()(x, weights, skip_dropout=1.0)) == 0
    assert torch.equal(op.train()(x, weights), x)


def test_keep_strongest_keeps_the_k_largest_remaining_weights_with_none_competing():
    arch = supernet(4, 3, 3, image_size=8)
    net = arch.net
    with torch.no_grad():
        net.alphas_normal.copy_(torch.arange(8.0).repeat(14, 1))  # none (index 0) weakest ... dil_conv_5x5 strongest
        net.alphas_normal[0, 0] = 100.0  # on edge 0, none is strongest
        net.alphas_reduce.copy_(-torch.arange(8.0).repeat(14, 1))
    masks = progressive.keep_strongest(arch, 3)
    assert masks['normal'][1].nonzero().flatten().tolist() == [5, 6, 7]
    assert masks['normal'][0].nonzero().flatten().tolist() == [0, 6, 7]
    assert masks['reduce'][3].nonzero().flatten().tolist() == [0, 1, 2]
    net.set_op_masks(masks)
    assert progressive.keep_strongest(arch, 2)['reduce'][3].nonzero().flatten().tolist() == [0, 1]
    with torch.no_grad():
        net.alphas_reduce.copy_(torch.arange(8.0).repeat(14, 1))  # the removed ones now largest: they stay out
    assert progressive.keep_strongest(arch, 2)['reduce'][3].nonzero().flatten().tolist() == [1, 2]


def test_a_masked_supernet_mixes_and_computes_only_the_remaining_ops():
    arch = supernet(4, 3, 3, image_size=8)
    net = arch.net
    mask = torch.zeros(14, 8, dtype=torch.bool)
    mask[:, [0, 4, 5]] = True  # none, sep_conv_3x3, sep_conv_5x5
    net.set_op_masks({'normal': mask, 'reduce': mask})
    weights = arch.weights()['normal']
    soft = torch.softmax(net.alphas_normal.detach()[:, [0, 4, 5]], dim=-1)
    assert torch.allclose(weights.ops[:, [0, 4, 5]], soft) and torch.count_nonzero(weights.ops[:, [1, 2, 3, 6, 7]]) == 0
    assert weights.active == [[4, 5]] * 14
    computed = []
    hooks = [op.register_forward_hook(lambda module, inputs, output: computed.append(module))
             for cell in net.cells for edge in cell._ops for op in edge._ops]
    net.eval()(torch.randn(2, 3, 8, 8), arch.weights())
    for hook in hooks:
        hook.remove()
    assert {type(module).__name__ for module in computed} == {'SepConv'}
    restored = supernet(4, 3, 3, image_size=8).net
    restored.load_state_dict(net.state_dict())
    assert restored.masked_active()['reduce'] == [[4, 5]] * 14


def test_the_skip_cap_leaves_a_skip_whose_edge_has_nothing_else_left():
    arch = supernet(4, 3, 3, image_size=8, max_skip=0)
    net = arch.net
    with torch.no_grad():
        net.alphas_normal.copy_(torch.tensor([0.0, 1, 1, 5, 2, 2, 2, 2]).repeat(14, 1))  # skip_connect wins
    mask = torch.ones(14, 8, dtype=torch.bool)
    mask[:2] = False
    mask[:2, [0, 3]] = True  # node 0's inputs keep only none and skip_connect
    net.set_op_masks({'normal': mask, 'reduce': torch.ones(14, 8, dtype=torch.bool)})
    normal = arch.genotype().normal
    assert normal[:2] == [('skip_connect', 0), ('skip_connect', 1)]
    assert all(op != 'skip_connect' for op, _ in normal[2:])


@pytest.mark.slow
def test_the_pdarts_preset_searches_in_stages_that_prune_and_deepen(in_tmp):
    genotype = train_search.main(TINY + ['--method', 'pdarts', '--stage_layers', '2,3,4', '--epochs', '2',
                                         '--exp_path', 'run'])
    rows = metrics(in_tmp / 'run')
    assert [(row['epoch'], row['stage']) for row in rows] == [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (5, 2)]
    assert [round(row['skip_dropout'], 6) for row in rows] == [0.0, 0.0, 0.2, 0.4, 0.35, 0.7]  # warm-up 1 of 2 epochs
    state = torch.load(in_tmp / 'run' / 'checkpoint.pt', weights_only=True)['model']
    assert (state['op_mask_normal'].sum(dim=1) == 3).all() and (state['op_mask_reduce'].sum(dim=1) == 3).all()
    assert max(int(key.split('.')[1]) for key in state if key.startswith('cells.')) == 3  # 4 cells
    op_names, first_edge_of_node = rows[-1]['op_names'], [0, 2, 5, 9]
    for cell in ('normal', 'reduce'):
        for k, (op, source) in enumerate(getattr(genotype, cell)):
            assert state[f'op_mask_{cell}'][first_edge_of_node[k // 2] + source, op_names.index(op)]
    assert sum(op == 'skip_connect' for op, _ in genotype.normal) <= 2
    log = (in_tmp / 'run' / 'log.txt').read_text()
    assert 'stage 3 of 3: supernet of 4 cells at partial channels K = 1' in log and '3 candidate(s) per edge' in log


@pytest.mark.parametrize('flags, says', [
    (['--method', 'pdarts', '--layers', '5'], '--layers and --stage_layers both set'),
    (['--method', 'drnas', '--init_channels', '12', '--partial_channels', '4'],
     '--partial_channels and --stage_partial_channels both set'),
    (['--stage_layers', '2,3'], '--stage_keep needs one number'),
    (['--method', 'pdarts', '--search_space', 'nas_bench_201'],
     r'--max_skip \(set by --method pdarts\) shapes the DARTS cell and cannot apply'),
    (['--stage_layers', '2,3', '--stage_keep', '4', '--stage_partial_channels', '4,3'],
     'K = 3 of stage 2 must divide --init_channels 4'),
    (['--stage_layers', '2,3', '--stage_keep', '4', '--stage_partial_channels', '2,4', '--stage_continue'],
     'must not grow'),
])
def test_bad_stage_flags_give_one_sentence(flags, says):
    with pytest.raises(UserError, match=says):
        train_search.resolve_arguments(train_search.build_parser(), TINY + flags)


def test_carry_over_widens_weights_and_momentum_alike_and_keeps_the_architecture_and_the_schedule():
    import architect as architect_lib
    old_arch, arch = (supernet(8, 3, 3, image_size=8, partial_channels=k) for k in (4, 2))
    old_net, net = old_arch.net, arch.net
    old_sgd = torch.optim.SGD(old_net.network_weights(), 0.1, momentum=0.9)
    old_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(old_sgd, 4)
    old_architect = architect_lib.Architect(architect_lib.SearchObjective(old_arch), 0.9, 3e-4, 6e-4, 1e-3)
    loss = old_net(torch.randn(2, 3, 8, 8), old_arch.weights()).sum()
    loss.backward()
    old_sgd.step()
    old_architect.optimizer.step()
    old_scheduler.step()
    sgd = torch.optim.SGD(net.network_weights(), 0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, 4)
    new_architect = architect_lib.Architect(architect_lib.SearchObjective(arch), 0.9, 3e-4, 6e-4, 1e-3)
    progressive.carry_over(train_search.StageState(old_net, old_sgd, old_scheduler, old_architect),
                           train_search.StageState(net, sgd, scheduler, new_architect),
                           torch.Generator().manual_seed(0))
    name = 'cells.0._ops.0._ops.4.op.1.weight'  # sep_conv_3x3's first depthwise conv: 2 channels, now 4
    old_weight, weight = dict(old_net.named_parameters())[name], dict(net.named_parameters())[name]
    assert (old_weight.shape[0], weight.shape[0]) == (2, 4) and torch.equal(weight[:2], old_weight)
    copied = [next(i for i in range(2) if torch.equal(weight[j], old_weight[i])) for j in (2, 3)]
    momentum = sgd.state[weight]['momentum_buffer']
    assert torch.equal(momentum[2:], old_sgd.state[old_weight]['momentum_buffer'][copied])
    assert torch.equal(net.alphas_normal, old_net.alphas_normal) and torch.equal(net.betas_reduce, old_net.betas_reduce)
    assert new_architect.optimizer.state_dict()['state'].keys() == old_architect.optimizer.state_dict()['state'].keys()
    assert scheduler.get_last_lr()[0] == old_scheduler.get_last_lr()[0] < sgd.param_groups[0]['lr'] == 0.1


@pytest.mark.parametrize('restart_lr', [True, False])
def test_drnas_second_half_runs_at_the_rates_of_its_code(restart_lr):
    """xiangning-chen/DrNAS f2caa4d, DARTS-space/train_search.py and net2wider.py: after 25 of 50 epochs a
    new SGD at --learning_rate 0.1 and a new cosine schedule loaded with the old one's state. PyTorch's
    cosine schedule steps from the current rate, so epoch e runs at 0.1 (1 + cos(pi e / 50)) / (1 + cos(pi 25 /
    50)) = 0.1 (1 + cos(pi e / 50)); --stage_lr continue keeps the single cosine, 0.05 (1 + cos(pi e / 50))."""
    import architect as architect_lib
    archs = [supernet(8, 3, 3, image_size=8, partial_channels=k) for k in (4, 2)]
    nets = [arch.net for arch in archs]
    sgds = [torch.optim.SGD(net.network_weights(), 0.1, momentum=0.9) for net in nets]
    schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(sgd, 50, eta_min=0.0) for sgd in sgds]
    architects = [architect_lib.Architect(architect_lib.SearchObjective(arch), 0.9, 3e-4, 6e-4, 1e-3)
                  for arch in archs]
    for _ in range(25):
        sgds[0].step()
        schedulers[0].step()
    progressive.carry_over(train_search.StageState(nets[0], sgds[0], schedulers[0], architects[0]),
                           train_search.StageState(nets[1], sgds[1], schedulers[1], architects[1]),
                           torch.Generator().manual_seed(0), restart_lr=restart_lr)
    rates = []
    for _ in range(25):
        rates.append(sgds[1].param_groups[0]['lr'])
        sgds[1].step()
        schedulers[1].step()
    scale = 0.1 if restart_lr else 0.05
    assert rates == pytest.approx([scale * (1 + math.cos(math.pi * e / 50)) for e in range(25, 50)], abs=1e-12)


@pytest.mark.slow
def test_the_drnas_preset_widens_its_supernet_after_the_first_half(in_tmp):
    train_search.main(TINY + ['--method', 'drnas', '--init_channels', '8', '--stage_layers', '2,2',
                              '--stage_partial_channels', '4,2', '--epochs', '2', '--exp_path', 'run'])
    rows = metrics(in_tmp / 'run')
    assert [row['stage'] for row in rows] == [0, 0, 1, 1]
    rates = [row['lr'] for row in rows]  # one cosine over the four epochs, from 0.1, restarted at 0.1 at epoch 2
    assert rates == pytest.approx([0.1, 0.05 * (1 + math.cos(math.pi / 4)), 0.1, 0.1 * (1 + math.cos(3 * math.pi / 4))])
    state = torch.load(in_tmp / 'run' / 'checkpoint.pt', weights_only=True)['model']
    assert (state['op_mask_normal'].sum(dim=1) == 4).all() and state['cells.0._ops.0._ops.3.op.1.weight'].shape[0] == 8
    log = (in_tmp / 'run' / 'log.txt').read_text()
    assert 'stage 2 of 2: supernet of 2 cells at partial channels K = 2' in log


@pytest.mark.slow
def test_the_drnas_preset_on_nas_bench_201_keeps_3_of_5_ops_at_k_2_after_the_first_half(in_tmp):
    # xiangning-chen/DrNAS f2caa4d, 201-space/train_search_progressive.py: ks [4, 2], num_keeps [5, 3], a new SGD
    # at the initial rate for the second half.
    train_search.main(TINY + ['--search_space', 'nas_bench_201', '--method', 'drnas', '--init_channels', '8',
                              '--epochs', '1', '--exp_path', 'run'])
    rows = metrics(in_tmp / 'run')
    assert [row['stage'] for row in rows] == [0, 1] and [row['lr'] for row in rows] == [0.025, 0.025]
    state = torch.load(in_tmp / 'run' / 'checkpoint.pt', weights_only=True)['model']
    assert (state['op_mask_normal'].sum(dim=1) == 3).all()
    log = (in_tmp / 'run' / 'log.txt').read_text()
    assert 'stage 1 of 2: supernet of 5 cells at partial channels K = 4' in log
    assert 'stage 2 of 2: supernet of 5 cells at partial channels K = 2' in log and '3 candidate(s) per edge' in log


@pytest.mark.slow
def test_stages_and_darts_pt_on_nas_bench_201(in_tmp):
    cell = train_search.main(TINY + ['--search_space', 'nas_bench_201', '--stage_layers', '1,2', '--stage_keep', '3',
                                     '--epochs', '1', '--selection', 'pt', '--pt_interval', '1', '--pt_batches', '1',
                                     '--exp_path', 'run'])
    rows = metrics(in_tmp / 'run')
    assert [row['stage'] for row in rows] == [0, 1] + ['pt'] * 6 and rows[-1]['pt_decisions'] == 6
    mask = torch.load(in_tmp / 'run' / 'checkpoint.pt', weights_only=True)['model']['op_mask_normal']
    assert (mask.sum(dim=1) == 1).all()
    op_names = rows[-1]['op_names']
    assert [op_names[int(row.nonzero())] for row in mask] == [op for node in cell.nodes for op, _ in node]


def test_the_architecture_gradient_is_clipped_to_its_norm_when_asked():
    from architect import Architect, SearchObjective
    norms = {}
    for clip in (0.0, 1e-3):
        arch = supernet(4, 3, 3, image_size=8)
        net = arch.net
        architect = Architect(SearchObjective(arch), 0.9, 3e-4, 3e-4, 1e-3, arch_grad_clip=clip)
        x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
        architect.step(x, y, x, y, 0.025, torch.optim.SGD(net.network_weights(), 0.025), unrolled=False)
        norms[clip] = torch.cat([p.grad.flatten() for p in net.arch_parameters()]).norm().item()
    assert norms[0.0] > 1e-3 and norms[1e-3] == pytest.approx(1e-3, rel=1e-4)
