"""successors.py: each successor's formula on small known tensors, against its paper's definition, and each
preset running a search on the synthetic data."""
import contextlib
import math

import pytest
import torch
from conftest import load_script, metrics, supernet

import bench
import methods
import operations
import parallel
import progressive
import sampling
import successors
from architect import SearchObjective
from utils import UserError

train_search = load_script('train_search')

TINY = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '128', '--synthetic_test_size',
        '32', '--num_classes', '4', '--init_channels', '4', '--layers', '3', '--batch_size', '32', '--device', 'cpu',
        '--report_freq', '1000', '--epochs', '2']


def only(arch, method_class):
    return next(method for method in arch.methods if isinstance(method, method_class))


def test_beta_decay_is_the_mean_logsumexp_of_the_op_parameters_with_a_linear_weight():
    arch = supernet(4, 3, 3, image_size=8, beta_decay_weight=50.0)
    net = arch.net
    beta = only(arch, successors.BetaDecay)
    with torch.no_grad():
        net.alphas_normal.copy_(torch.arange(14 * 8.0).view(14, 8) / 20)
        net.alphas_reduce.zero_()
    beta.set_epoch(10, 50)
    expected = 50.0 * 10 / 100 * (torch.log(torch.exp(net.alphas_normal).sum(-1)).mean() + torch.log(torch.tensor(8.0)))
    assert torch.allclose(beta.regularisers('alpha', arch)['beta_decay'], expected)
    # Its gradient by hand: d/d alpha of 5 * mean over 14 edges of logsumexp(alpha_e) = 5 * softmax(alpha_e) / 14.
    gradient, = torch.autograd.grad(beta.regularisers('alpha', arch)['beta_decay'], net.alphas_normal)
    assert torch.allclose(gradient, 5.0 * torch.softmax(net.alphas_normal.detach(), dim=-1) / 14)
    assert beta.regularisers('weights', arch) == {} and beta.logged(arch) == {'beta_decay_weight': 5.0}
    beta.set_epoch(0, 50)
    assert beta.regularisers('alpha', arch)['beta_decay'].item() == 0.0


def test_beta_decay_pulls_the_op_parameters_together():
    arch = supernet(4, 3, 3, image_size=8, beta_decay_weight=50.0)
    net = arch.net
    beta = only(arch, successors.BetaDecay)
    beta.set_epoch(50, 50)
    with torch.no_grad():
        net.alphas_normal.copy_(torch.randn(14, 8))
    gradient, = torch.autograd.grad(beta.regularisers('alpha', arch)['beta_decay'], [net.alphas_normal])
    spread = net.alphas_normal.detach()
    stepped = spread - 0.1 * gradient
    assert (stepped.std(-1) < spread.std(-1)).all(), 'a descent step lowers the largest relative to the others'


def test_clip_rows_projects_onto_the_simplex():
    ops = torch.tensor([[0.5, -0.2, 0.9], [-0.1, -0.3, -0.2], [0.2, 0.3, 0.5]])
    clipped = sampling.clip_rows(ops)
    assert torch.allclose(clipped.sum(-1), torch.ones(3)) and (clipped >= 0).all()
    assert torch.allclose(clipped[0], torch.tensor([0.5, 0.0, 0.9]) / 1.4)
    assert torch.equal(clipped[1], torch.tensor([1.0, 0.0, 0.0])), 'an all-negative row keeps its largest entry'
    assert torch.allclose(clipped[2], ops[2])


def sdarts_setup(kind):
    torch.manual_seed(0)
    arch = supernet(4, 3, 3, image_size=8, sdarts=kind, sdarts_epsilon=0.3)
    net = arch.net
    sdarts = only(arch, successors.SmoothDARTS)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
    return arch, sdarts, (lambda weights: net.criterion(net(x, weights), y))


def test_sdarts_epsilon_grows_linearly_from_0_03():
    sdarts = successors.SmoothDARTS('rs', 0.3)
    sdarts.set_epoch(0, 50)
    assert sdarts.epsilon == pytest.approx(0.03)
    sdarts.set_epoch(25, 50)
    assert sdarts.epsilon == pytest.approx(0.165) and sdarts.logged(None) == {'sdarts_epsilon': pytest.approx(0.165)}


@pytest.mark.parametrize('kind', ['rs', 'adv'])
def test_sdarts_perturbations_stay_within_epsilon_before_the_projection(kind, monkeypatch):
    arch, sdarts, loss_of = sdarts_setup(kind)
    monkeypatch.setattr(successors, 'clip_rows', lambda ops: ops)
    sdarts.set_epoch(25, 50)
    clean = arch.weights()
    perturbed = sdarts.perturb(clean, loss_of, arch)
    for cell in clean:
        difference = (perturbed[cell].ops - clean[cell].ops).abs()
        assert difference.max() <= sdarts.epsilon + 1e-6 and difference.mean() > sdarts.epsilon / 10


@pytest.mark.parametrize('kind', ['rs', 'adv'])
def test_sdarts_perturbed_weights_are_mixtures(kind):
    arch, sdarts, loss_of = sdarts_setup(kind)
    perturbed = sdarts.perturb(arch.weights(), loss_of, arch)
    for weights in perturbed.values():
        assert (weights.ops >= 0).all() and torch.allclose(weights.ops.sum(-1), torch.ones(len(weights.ops)))
    assert arch.net.training, 'the attack runs BatchNorm in evaluation mode and restores the mode'


def test_sdarts_adversarial_raises_the_loss_more_than_random_noise():
    arch, adversarial, loss_of = sdarts_setup('adv')
    random = successors.SmoothDARTS('rs', 0.3)
    for method in (adversarial, random):
        method.set_epoch(49, 50)
    clean = arch.weights()
    with torch.no_grad():
        clean_loss = loss_of(clean)
        attacked_loss = loss_of(adversarial.perturb(clean, loss_of, arch))
        random_loss = torch.stack([loss_of(random.perturb(clean, loss_of, arch)) for _ in range(5)]).mean()
    assert attacked_loss > clean_loss and attacked_loss > random_loss


def test_darts_minus_adds_a_linearly_decaying_skip_to_every_edge():
    arch = supernet(4, 3, 3, image_size=8, auxiliary_skip=1.0)
    net = arch.net
    auxiliary = only(arch, successors.AuxiliarySkip)
    skip = net.op_names.index('skip_connect')
    genotype = arch.genotype()
    for epoch, beta in ((0, 1.0), (25, 0.5), (49, 0.02)):
        auxiliary.set_epoch(epoch, 50)
        clean = arch.weights()
        for phase in ('alpha', 'weights', 'eval'):
            added = auxiliary.transform(clean, phase, arch)['normal'].ops - clean['normal'].ops
            assert torch.allclose(added[:, skip], torch.full((14,), beta)) and added[:, :skip].abs().max() == 0
    assert auxiliary.logged(arch) == {'auxiliary_skip': pytest.approx(0.02)}
    assert arch.genotype() == genotype, 'the auxiliary skip takes no part in the derived cell'


@pytest.mark.parametrize('decay_epochs, epochs, expected', [
    # Meituan-AutoML/DARTS- adb81a8, src/utils.py DecayScheduler 'linear' with src/search/args.py's
    # decay_max_epoch = decay_stop_epoch = 50: 1 * (50 - epoch) / 50 up to epoch 50, then held.
    (50, 100, {0: 1.0, 10: 0.8, 49: 0.02, 50: 0.0, 80: 0.0}),
    (50, 25, {0: 1.0, 24: 0.52}),
    (0, 100, {0: 1.0, 50: 0.5, 99: 0.01}),  # --auxiliary_skip_epochs 0: over the whole search
])
def test_darts_minus_decays_over_fifty_epochs_as_its_code_whatever_the_search_length(decay_epochs, epochs,
                                                                                    expected):
    auxiliary = successors.AuxiliarySkip(1.0, decay_epochs)
    for epoch, beta in expected.items():
        auxiliary.set_epoch(epoch, epochs)
        assert auxiliary.beta == pytest.approx(beta)


def test_darts_minus_needs_skip_connect_among_the_ops():
    arch = supernet(4, 3, 3, image_size=8, auxiliary_skip=1.0, primitives='sep_conv_3x3,max_pool_3x3')
    with pytest.raises(UserError, match='keep skip_connect in --primitives'):
        SearchObjective(arch).loss(torch.randn(2, 3, 8, 8), torch.tensor([0, 1]), 'weights')


def test_fair_darts_weighs_each_op_by_its_own_sigmoid_with_the_zero_one_loss():
    arch = supernet(4, 3, 3, image_size=8, sigmoid_weights=True, primitives='darts_without_none')
    net = arch.net
    fair = only(arch, successors.FairDARTS)
    with torch.no_grad():
        net.alphas_normal.copy_(torch.linspace(-3, 3, 14 * 7).view(14, 7))
        net.alphas_reduce.zero_()
    weights = arch.weights()
    assert torch.equal(weights['normal'].ops, torch.sigmoid(net.alphas_normal))
    assert torch.equal(weights['reduce'].ops, torch.full((14, 7), 0.5)), 'sigmoid(0): no competition between ops'
    squared = (torch.sigmoid(net.alphas_normal) - 0.5).pow(2).sum() / (2 * 14 * 7)
    assert torch.allclose(fair.regularisers('alpha', arch)['zero_one'], -10 * squared)
    # Its gradient by hand: -10 * 2 (sigma - 0.5) sigma (1 - sigma) / (2 * 14 * 7) for each op parameter.
    gradient, = torch.autograd.grad(fair.regularisers('alpha', arch)['zero_one'], net.alphas_normal)
    sigma = torch.sigmoid(net.alphas_normal.detach())
    assert torch.allclose(gradient, -10 * 2 * (sigma - 0.5) * sigma * (1 - sigma) / (2 * 14 * 7))
    assert fair.regularisers('weights', arch) == {}


def test_fair_darts_derives_the_strongest_sigmoid_weights_and_counts_those_below_the_threshold():
    arch = supernet(4, 3, 3, image_size=8, sigmoid_weights=True, primitives='darts_without_none')
    net = arch.net
    fair = only(arch, successors.FairDARTS)
    with torch.no_grad():
        net.alphas_normal.fill_(-5.0)
        net.alphas_reduce.fill_(-5.0)
        for edge, op, alpha in ((0, 3, 4.0), (1, 6, 1.0), (2, 2, 3.0), (3, 0, 0.5), (4, 4, 2.0)):
            net.alphas_normal[edge, op] = alpha  # nodes 0 and 1; sigmoid 0.98, 0.73, 0.95, 0.62, 0.88
    genotype = arch.genotype()
    assert genotype.normal[:4] == [('sep_conv_3x3', 0), ('dil_conv_5x5', 1), ('skip_connect', 0),
                                   ('sep_conv_5x5', 2)]
    below = 1 + 4 + 8  # node 0's dil_conv_5x5 (0.73), the four ops of nodes 2 and 3, the whole reduction cell
    assert fair.logged(arch) == {'fair_below_threshold': below}


def test_fair_darts_cannot_share_the_op_weights_with_da2s():
    with pytest.raises(UserError, match='--da2s and --sigmoid_weights both define the op weights; use one of them'):
        methods.build({'sigmoid_weights': True, 'da2s': True})


def test_gumbel_sample_for_known_noise_is_gdas_one_hot_with_the_soft_gradient():
    """D-X-Y/AutoDL-Projects f46486e, xautodl/models/cell_searchs/search_model_gdas.py: logits =
    (log_softmax(alpha) + gumbels) / tau, hardwts = one_hot(argmax) - probs.detach() + probs."""
    alphas = torch.tensor([[1.0, 0.0, -1.0, 2.0]], requires_grad=True)
    gumbels = torch.tensor([[0.5, 1.0, 2.5, -0.3]])  # alpha + gumbel: 1.5, 1.0, 1.5, 1.7, so op 3 is drawn
    hard, index = sampling.gumbel_hard_with(torch.softmax(alphas, dim=-1), gumbels, tau=2.0)
    assert index.tolist() == [3] and hard.detach().tolist() == [[0.0, 0.0, 0.0, 1.0]]
    # The gradient of the soft sample s = softmax((alpha + gumbel) / tau) against values v, by hand:
    # (s * v - s * (s . v)) / tau.
    exps = [math.exp(z / 2.0) for z in (1.5, 1.0, 1.5, 1.7)]
    s = [e / sum(exps) for e in exps]
    v = [0.3, -1.0, 2.0, 0.5]
    dot = sum(a * b for a, b in zip(s, v))
    gradient, = torch.autograd.grad((hard * torch.tensor([v])).sum(), alphas)
    assert gradient[0].tolist() == pytest.approx([(si * vi - si * dot) / 2.0 for si, vi in zip(s, v)], abs=1e-6)


def test_gumbel_samples_are_drawn_with_the_op_weights_frequencies():
    probabilities = torch.softmax(torch.tensor([1.0, 0.0, -1.0, 2.0]), dim=-1)
    _, indices = sampling.gumbel_hard(probabilities.expand(20000, 4), tau=0.5,
                                        generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(indices, minlength=4) / 20000
    assert torch.allclose(frequencies, probabilities, atol=0.015)


def test_gdas_computes_only_the_sampled_op_and_anneals_its_temperature():
    torch.manual_seed(0)
    arch = supernet(4, 3, 3, image_size=8, gdas=True)
    net = arch.net
    gdas = only(arch, successors.GDAS)
    gdas.set_epoch(0, 250)
    assert gdas.tau == 10.0
    gdas.set_epoch(249, 250)
    assert gdas.tau == pytest.approx(0.1)
    sampled = gdas.transform(arch.weights(), 'alpha', arch)
    for w in sampled.values():
        assert [len(ops) for ops in w.active] == [1] * 14
        assert torch.equal(w.ops.detach().argmax(-1), torch.tensor([ops[0] for ops in w.active]))
    net.eval()
    x = torch.randn(2, 3, 8, 8)
    every_op = {cell: w.replace(active=None) for cell, w in sampled.items()}
    assert torch.allclose(net(x, sampled), net(x, every_op), atol=1e-6), 'the other ops weigh exactly 0'


def test_gdas_on_nas_bench_201_gives_each_unsampled_op_the_gradient_of_its_edges_output():
    """AutoDL-Projects f46486e, xautodl/models/cell_searchs/search_cells.py forward_gdas (NAS-Bench-201's
    cell): sum(weights[i] * edge(x) if i == argmax else weights[i] for each op i), so an unsampled op's weight,
    0 in the forward pass, gets d(loss)/d(edge output) summed over its elements, in every cell that shares
    it; in the DARTS space's cell (its MixedOp's forward_gdas: op(x) * weights[index]) it gets nothing."""
    from architecture import Architecture
    from model_search_nb201 import NB201SearchCell, SearchNetworkNB201
    for arch in (Architecture(SearchNetworkNB201(4, 1, 3, image_size=8), methods.build({'gdas': True})),
                 supernet(4, 3, 3, image_size=8, gdas=True)):
        net = arch.net
        torch.manual_seed(0)
        sampled = only(arch, successors.GDAS).transform(arch.weights(), 'alpha', arch)
        ops = sampled['normal'].ops
        ops.retain_grad()
        outputs = {}  # edge -> its output in every NAS-Bench-201 cell
        for cell in net.cells:
            for edge, mixed in enumerate(cell._ops if isinstance(cell, NB201SearchCell) else ()):
                mixed.register_forward_hook(lambda module, inputs, output, edge=edge, kept=outputs:
                                            output.retain_grad() or kept.setdefault(edge, []).append(output))
        net(torch.randn(2, 3, 8, 8), sampled).pow(2).sum().backward()
        for edge, active in enumerate(sampled['normal'].active):
            unsampled = [i for i in range(ops.size(1)) if i != active[0]]
            expected = sum(output.grad.sum() for output in outputs.get(edge, [])) if outputs else torch.tensor(0.0)
            assert torch.allclose(ops.grad[edge, unsampled], expected.expand(len(unsampled)), rtol=1e-4, atol=1e-6)


def test_step_order_weights_first_takes_the_weight_step_before_the_architecture_step(monkeypatch):
    """AutoDL-Projects f46486e, exps/NAS-Bench-201-algos/GDAS.py search_func: w_optimizer.step(), then
    a_optimizer.step(); DARTS takes the architecture step first."""
    phases = []
    loss = SearchObjective.loss
    monkeypatch.setattr(SearchObjective, 'loss', lambda self, x, y, phase, params=None: phases.append(phase) or
                        loss(self, x, y, phase, params))
    for flags, order in (([], ['alpha', 'weights']), (['--step_order', 'weights_first'], ['weights', 'alpha'])):
        phases.clear()
        bench.search_case('darts', flags, dict(bench.TINY, search_channels=8), True,
                                bench.Speed(None, False, False, torch.device('cpu'))).step()
        assert phases == order


def dirichlet_supernet(kl_weight):
    """A DrNAS supernet whose normal cell's op parameters spread from -2 to 3, and its method."""
    torch.manual_seed(0)
    arch = supernet(4, 3, 3, image_size=8, dirichlet=True, dirichlet_kl=kl_weight)
    net = arch.net
    with torch.no_grad():
        net.alphas_normal.copy_(torch.linspace(-2, 3, 14 * 8).view(14, 8))
    return arch, only(arch, successors.DirichletSampling)


def test_dirichlet_samples_have_the_distribution_mean_and_carry_the_gradient():
    arch, drnas = dirichlet_supernet(0.5)
    net = arch.net
    concentration = torch.nn.functional.elu(net.alphas_normal.detach()) + 1
    samples = torch.stack([drnas.transform(arch.weights(), 'eval', arch)['normal'].ops for _ in range(4000)])
    assert (samples > 0).all() and torch.allclose(samples.sum(-1), torch.ones(4000, 14))
    assert torch.allclose(samples.mean(0), concentration / concentration.sum(-1, keepdim=True), atol=0.01)
    loss = (drnas.transform(arch.weights(), 'alpha', arch)['normal'].ops[:, 0]).sum()
    assert torch.autograd.grad(loss, net.alphas_normal)[0].abs().sum() > 0, 'reparameterised: alpha learns'
    kl = drnas.regularisers('alpha', arch)['dirichlet_kl']
    with torch.no_grad():
        net.alphas_normal.zero_()
        net.alphas_reduce.zero_()
    assert kl > 0 and drnas.regularisers('alpha', arch)['dirichlet_kl'].item() == pytest.approx(0, abs=1e-6)
    assert drnas.logged(arch) == {'dirichlet_concentration': pytest.approx(8.0)}


def test_with_masks_the_dirichlet_covers_the_remaining_ops_and_its_kl_all_ops_as_drnas_code():
    """xiangning-chen/DrNAS f2caa4d: the sample is masked and renormalised (process_step_matrix); the KL of
    DARTS-space/model_search.py _get_kl_reg covers the whole alpha matrix, whose pruned entries utils.py's
    prune() has set to 0 (concentration elu(0) + 1 = 1) and which the KL alone then moves."""
    arch, drnas = dirichlet_supernet(1.0)
    net = arch.net
    kept = net.alphas_normal.detach().clone()
    mask = torch.zeros(14, 8, dtype=torch.bool)
    mask[:, [1, 4, 5, 7]] = True
    mask[3] = False
    mask[3, [2, 6]] = True  # an edge with two ops left
    mask[9] = False
    mask[9, 4] = True  # an edge decided: no distribution left
    masks = {'normal': mask, 'reduce': torch.ones(14, 8, dtype=torch.bool)}
    net.set_op_masks(masks)
    progressive.prune_architecture(net, masks)
    assert torch.equal(net.alphas_normal.detach(), torch.where(mask, kept, torch.zeros_like(kept)))
    sample = drnas.transform(arch.weights(), 'alpha', arch)['normal'].ops
    assert torch.count_nonzero(sample[~mask]) == 0 and torch.allclose(sample.sum(-1), torch.ones(14))
    concentration = torch.nn.functional.elu(kept) + 1

    def kl(c):
        return torch.distributions.kl_divergence(torch.distributions.Dirichlet(c),
                                                 torch.distributions.Dirichlet(torch.ones_like(c))).sum()
    reduce = torch.nn.functional.elu(net.alphas_reduce.detach()) + 1
    expected = kl(torch.where(mask, concentration, torch.ones_like(concentration))) + kl(reduce)
    assert drnas.regularisers('alpha', arch)['dirichlet_kl'].item() == pytest.approx(expected.item(), rel=1e-5)
    gradient, = torch.autograd.grad(drnas.regularisers('alpha', arch)['dirichlet_kl'], net.alphas_normal)
    assert (gradient[~mask] != 0).all(), 'the KL moves the pruned parameters, as in its code'
    assert drnas.logged(arch)['dirichlet_concentration'] == pytest.approx(
        (torch.cat([(concentration * mask).sum(-1), reduce.sum(-1)])).mean().item())


def test_two_methods_that_replace_the_weights_are_refused_in_one_sentence():
    with pytest.raises(UserError, match=r'^--hd_on_weights.* and --gdas both replace the weights a phase mixes '
                                        r'with; use one of them$'):
        methods.build({'hd_on_weights': True, 'gdas': True})


def test_successor_presets_are_registered():
    presets = methods.presets()
    assert {'beta_darts', 'darts_minus', 'fair_darts', 'sdarts_rs', 'sdarts_adv', 'drnas', 'gdas'} <= set(presets)
    assert presets['sdarts_adv'] == {'sdarts': 'adv', 'primitives': 'darts_without_none'}


# Each preset with a supernet option it composes with; `moving` is logged and changes from epoch to epoch.
PRESET_RUNS = [('beta_darts', ['--search_space', 'nas_bench_201'], 'beta_decay_weight'),
               ('darts_minus', ['--partial_channels', '2'], 'auxiliary_skip'),
               ('fair_darts', ['--alpha_attention'], 'alpha_zero_one'),
               ('sdarts_rs', ['--search_space', 'nas_bench_201'], 'sdarts_epsilon'),
               ('sdarts_adv', ['--partial_channels', '2'], 'sdarts_epsilon'),
               ('gdas', ['--search_space', 'nas_bench_201', '--batch_size', '32'], 'tau'),
               ('drnas', ['--init_channels', '6', '--stage_partial_channels', '3,3', '--stage_layers', '3,3',
                          '--epochs', '1'], 'dirichlet_concentration')]


@pytest.mark.slow
@pytest.mark.parametrize('preset, flags, moving', PRESET_RUNS)
def test_each_successor_preset_runs_a_search(preset, flags, moving, in_tmp):
    tiny = TINY[:TINY.index('--layers')] + TINY[TINY.index('--layers') + 2:] if '--stage_layers' in flags else TINY
    train_search.main(tiny + flags + ['--method', preset, '--exp_path', 'run'])
    rows = metrics(in_tmp / 'run')
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(row['train_loss'])) for row in rows)
    assert rows[1][moving] != rows[0][moving]


@pytest.mark.parametrize('method', ['sdarts_rs', 'sdarts_adv'])
def test_sdarts_searches_darts_space_without_none_as_its_code_does(method):
    # xiangning-chen/SmoothDARTS d3dbfed, sota/cnn/spaces.py: PRIMITIVES of space s5 has 'none' commented out.
    reference = ['max_pool_3x3', 'avg_pool_3x3', 'skip_connect', 'sep_conv_3x3', 'sep_conv_5x5', 'dil_conv_3x3',
                 'dil_conv_5x5']
    args, _, _ = train_search.resolve_arguments(train_search.build_parser(), ['--method', method])
    assert operations.resolve_primitives(args.primitives) == reference


def test_fair_darts_trains_the_architecture_with_its_codes_adam_betas():
    # xiaomi-automl/FairDARTS 270cfc9, fairdarts/architect.py: Adam(betas=(args.arch_lr_gamma, 0.999)), and
    # fairdarts/train_search.py: --arch_lr_gamma 0.9, --arch_learning_rate 3e-3, --batch_size 128,
    # --learning_rate 0.005, --aux_loss_weight 10, --op_threshold 0.85.
    args, _, _ = train_search.resolve_arguments(train_search.build_parser(), ['--method', 'fair_darts'])
    assert (args.arch_beta1, args.arch_learning_rate, args.batch_size, args.learning_rate, args.zero_one_weight,
            args.fair_threshold) == (0.9, 3e-3, 128, 0.005, 10.0, 0.85)
    arch = supernet(4, 3, 3, image_size=8, sigmoid_weights=True)
    _, _, architect = train_search.build_optimizers(args, arch, parallel.Distributed(), contextlib.nullcontext, 50)
    assert architect.optimizer.defaults['betas'] == (0.9, 0.999)


def test_drnas_kl_replaces_the_architectures_weight_decay_as_its_reg_type_kl():
    # xiangning-chen/DrNAS f2caa4d, architect.py: Adam weight_decay = reg_scale for 'l2', 0 for 'kl'.
    import architect as architect_lib
    for kl_weight, weight_decay in ((0.0, 1e-3), (1.0, 0.0)):
        arch, _ = dirichlet_supernet(kl_weight)
        architect = architect_lib.Architect(architect_lib.SearchObjective(arch), 0.9, 3e-4, 6e-4, 1e-3)
        assert {group['weight_decay'] for group in architect.optimizer.param_groups} == {weight_decay}


def test_drnas_pools_without_batchnorm_as_its_supernet():
    # xiangning-chen/DrNAS f2caa4d, DARTS-space/model_search.py: a MixedOp whose pooling candidates have no
    # BatchNorm after them (its preset's other settings: tests/test_presets.py).
    darts, drnas = (supernet(8, 3, 3, image_size=8, primitives='darts_without_none', pool_bn=pool_bn).net.cells[0]
                    ._ops[0]._ops[0] for pool_bn in (True, False))  # each edge's max_pool_3x3
    assert isinstance(darts[1], torch.nn.BatchNorm2d) and isinstance(drnas, torch.nn.MaxPool2d)


def test_supernet_drop_path_rises_to_its_probability_and_drops_whole_samples_of_each_edge_in_training():
    arch = supernet(4, 3, 3, image_size=8, drop_path_prob=0.6)
    dropping = only(arch, successors.SupernetDropPath)
    objective = SearchObjective(arch)
    for epoch, expected in ((0, 0.0), (10, 0.6 * 10 / 49), (49, 0.6)):
        objective.set_epoch(epoch, 50)
        assert all(w.drop_path == pytest.approx(expected) for w in objective.arch_weights('alpha').values())
        assert dropping.logged(arch) == {'drop_path_prob': pytest.approx(expected)}
    cell, x = arch.net.cells[0], torch.randn(64, 4, 8, 8)
    weights = objective.arch_weights('weights')['normal']
    cell.train()
    whole = cell._edge(0, x, weights.replace(drop_path=0.0), None)
    torch.manual_seed(0)
    dropped = cell._edge(0, x, weights, None).flatten(1)
    zeroed = (dropped == 0).all(dim=1)
    assert torch.allclose(dropped[~zeroed], whole.flatten(1)[~zeroed] / 0.4)
    assert 0.4 < zeroed.float().mean() < 0.8  # about 0.6 of the samples
    cell.eval()
    assert torch.equal(cell._edge(0, x, weights, None), cell._edge(0, x, weights.replace(drop_path=0.0), None))
    with pytest.raises(UserError, match="NAS-Bench-201's supernet has no drop path"):
        bench.search_case('rdarts_dp', ['--search_space', 'nas_bench_201'], bench.TINY, True,
                          bench.Speed(None, False, False, torch.device('cpu')))
