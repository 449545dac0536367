"""successors.py: each successor's formula on small known tensors, against its paper's definition, and each
preset running a search on the synthetic data."""
import pytest
import torch
from conftest import load_script, metrics, supernet

import methods
import successors

train_search = load_script('train_search')

TINY = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '128', '--synthetic_test_size',
        '32', '--num_classes', '4', '--init_channels', '4', '--layers', '3', '--batch_size', '32', '--device', 'cpu',
        '--report_freq', '1000', '--epochs', '2']


def only(net, method_class):
    return next(method for method in net.methods if isinstance(method, method_class))


def test_beta_decay_is_the_mean_logsumexp_of_the_op_parameters_with_a_linear_weight():
    net = supernet(4, 3, 3, image_size=8, beta_decay_weight=50.0)
    beta = only(net, successors.BetaDecay)
    with torch.no_grad():
        net.alphas_normal.copy_(torch.arange(14 * 8.0).view(14, 8) / 20)
        net.alphas_reduce.zero_()
    beta.set_epoch(10, 50)
    expected = 50.0 * 10 / 100 * (torch.log(torch.exp(net.alphas_normal).sum(-1)).mean() + torch.log(torch.tensor(8.0)))
    assert torch.allclose(beta.regularisers('alpha', net)['beta_decay'], expected)
    assert beta.regularisers('weights', net) == {} and beta.logged() == {'beta_decay_weight': 5.0}
    beta.set_epoch(0, 50)
    assert beta.regularisers('alpha', net)['beta_decay'].item() == 0.0


def test_beta_decay_pulls_the_op_parameters_together():
    net = supernet(4, 3, 3, image_size=8, beta_decay_weight=50.0)
    beta = only(net, successors.BetaDecay)
    beta.set_epoch(50, 50)
    with torch.no_grad():
        net.alphas_normal.copy_(torch.randn(14, 8))
    gradient, = torch.autograd.grad(beta.regularisers('alpha', net)['beta_decay'], [net.alphas_normal])
    spread = net.alphas_normal.detach()
    stepped = spread - 0.1 * gradient
    assert (stepped.std(-1) < spread.std(-1)).all(), 'a descent step lowers the largest relative to the others'


def test_clip_rows_projects_onto_the_simplex():
    ops = torch.tensor([[0.5, -0.2, 0.9], [-0.1, -0.3, -0.2], [0.2, 0.3, 0.5]])
    clipped = successors.clip_rows(ops)
    assert torch.allclose(clipped.sum(-1), torch.ones(3)) and (clipped >= 0).all()
    assert torch.allclose(clipped[0], torch.tensor([0.5, 0.0, 0.9]) / 1.4)
    assert torch.equal(clipped[1], torch.tensor([1.0, 0.0, 0.0])), 'an all-negative row keeps its largest entry'
    assert torch.allclose(clipped[2], ops[2])


def sdarts_setup(kind):
    torch.manual_seed(0)
    net = supernet(4, 3, 3, image_size=8, sdarts=kind, sdarts_epsilon=0.3)
    sdarts = only(net, successors.SmoothDARTS)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
    return net, sdarts, (lambda weights: net._criterion(net(x, weights), y))


def test_sdarts_epsilon_grows_linearly_from_0_03():
    sdarts = successors.SmoothDARTS('rs', 0.3)
    sdarts.set_epoch(0, 50)
    assert sdarts.epsilon == pytest.approx(0.03)
    sdarts.set_epoch(25, 50)
    assert sdarts.epsilon == pytest.approx(0.165) and sdarts.logged() == {'sdarts_epsilon': pytest.approx(0.165)}


@pytest.mark.parametrize('kind', ['rs', 'adv'])
def test_sdarts_perturbations_stay_within_epsilon_before_the_projection(kind, monkeypatch):
    net, sdarts, loss_of = sdarts_setup(kind)
    monkeypatch.setattr(successors, 'clip_rows', lambda ops: ops)
    sdarts.set_epoch(25, 50)
    clean = net.arch_weights()
    perturbed = sdarts.perturb(clean, loss_of, net)
    for cell in clean:
        difference = (perturbed[cell].ops - clean[cell].ops).abs()
        assert difference.max() <= sdarts.epsilon + 1e-6 and difference.mean() > sdarts.epsilon / 10


@pytest.mark.parametrize('kind', ['rs', 'adv'])
def test_sdarts_perturbed_weights_are_mixtures(kind):
    net, sdarts, loss_of = sdarts_setup(kind)
    perturbed = sdarts.perturb(net.arch_weights(), loss_of, net)
    for weights in perturbed.values():
        assert (weights.ops >= 0).all() and torch.allclose(weights.ops.sum(-1), torch.ones(len(weights.ops)))
    assert net.training, 'the attack runs BatchNorm in evaluation mode and restores the mode'


def test_sdarts_adversarial_raises_the_loss_more_than_random_noise():
    net, adversarial, loss_of = sdarts_setup('adv')
    random = successors.SmoothDARTS('rs', 0.3)
    for method in (adversarial, random):
        method.set_epoch(49, 50)
    clean = net.arch_weights()
    with torch.no_grad():
        clean_loss = loss_of(clean)
        attacked_loss = loss_of(adversarial.perturb(clean, loss_of, net))
        random_loss = torch.stack([loss_of(random.perturb(clean, loss_of, net)) for _ in range(5)]).mean()
    assert attacked_loss > clean_loss and attacked_loss > random_loss


def test_successor_presets_are_registered():
    presets = methods.presets()
    assert presets['beta_darts'] == {'beta_decay_weight': 50.0}
    assert presets['sdarts_rs'] == {'sdarts': 'rs'} and presets['sdarts_adv'] == {'sdarts': 'adv'}


@pytest.mark.slow
@pytest.mark.parametrize('preset, logged', [('beta_darts', ['beta_decay_weight', 'alpha_beta_decay']),
                                            ('sdarts_rs', ['sdarts_epsilon']),
                                            ('sdarts_adv', ['sdarts_epsilon'])])
def test_each_successor_preset_runs_a_search(preset, logged, in_tmp):
    train_search.main(TINY + ['--method', preset, '--exp_path', 'run'])
    rows = metrics(in_tmp / 'run')
    assert len(rows) == 2 and all(name in row for row in rows for name in logged)
    assert all(torch.isfinite(torch.tensor(row['train_loss'])) for row in rows)
    assert rows[1][logged[0]] > rows[0][logged[0]], 'the schedule moves with the epoch'
