import contextlib
import gc
import signal
import warnings

import pytest
import torch
import torch.nn as nn
import bench
import gpu_check
import loop
import methods
import parallel
import progressive
from conftest import supernet
from host_reads import STEP_CASES, count_host_reads
from torch.func import functional_call

from architect import Architect, SearchObjective


def tiny_supernet(**options):
    """An architecture.Architecture of a tiny supernet in float64, with random architecture parameters."""
    torch.manual_seed(0)
    arch = supernet(4, 3, 3, steps=2, multiplier=2, image_size=8, **options)
    arch.net.double()
    with torch.no_grad():
        for p in arch.net.arch_parameters():
            p.copy_(torch.randn_like(p))
    return arch


def smooth(module):
    """Swap ReLU and max pooling for smooth stand-ins. A finite difference of gradients across a ReLU or
    max kink is off by O(1/eps), which would hide the architect's own error; its algebra is the same."""
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, nn.SiLU())
        elif isinstance(child, nn.MaxPool2d):
            setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
        else:
            smooth(child)
    return module


def batches():
    torch.manual_seed(1)
    x_train, x_valid = torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.randn(6, 3, 8, 8, dtype=torch.float64)
    return x_train, torch.randint(0, 3, (6,)), x_valid, torch.randint(0, 3, (6,))


def exact_unrolled_gradient(arch, x_train, y_train, x_valid, y_valid, eta, momentum=0.0, weight_decay=0.0,
                            buffers=None):
    """grad_alpha L_val(w - eta * (grad_w L_train(w, alpha) + weight_decay * w + momentum * buffer), alpha) by
    autograd through the inner step."""
    net = arch.net
    alphas = net.arch_parameters()
    named = [(name, p) for name, p in net.named_parameters() if all(p is not a for a in alphas)]
    names, weights = zip(*named)
    buffers = buffers or [torch.zeros_like(w) for w in weights]
    train_loss = net.criterion(net(x_train, arch.weights()), y_train)
    grads = torch.autograd.grad(train_loss, weights, create_graph=True)
    unrolled = {name: w - eta * (g + weight_decay * w + momentum * b)
                for name, w, g, b in zip(names, weights, grads, buffers)}
    val_loss = net.criterion(functional_call(net, unrolled, (x_valid, arch.weights())), y_valid)
    return torch.autograd.grad(val_loss, alphas)


def flat(grads):
    return torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize('options', [{}, {'partial_channels': 2}])
@pytest.mark.parametrize('momentum, weight_decay', [(0.0, 0.0), (0.9, 3e-4)])
def test_second_order_gradient_matches_autograd_through_the_unrolled_step(options, momentum, weight_decay):
    arch = tiny_supernet(primitives='none,avg_pool_3x3,skip_connect,sep_conv_3x3,dil_conv_3x3', **options)
    net = smooth(arch.net)
    data = batches()
    eta = 0.5  # large, so that the second-order term is a sizeable part of the gradient
    optimizer = torch.optim.SGD(net.network_weights(), eta, momentum=momentum, weight_decay=weight_decay)
    if momentum:  # one weight step first, so that a momentum buffer enters the unrolled step
        optimizer.zero_grad()
        net.criterion(net(data[0], arch.weights()), data[1]).backward()
        optimizer.step()
        net.zero_grad()
    buffers = [optimizer.state[w]['momentum_buffer'] if momentum else None for w in net.network_weights()]
    exact = exact_unrolled_gradient(arch, *data, eta, momentum, weight_decay, buffers if momentum else None)
    architect = Architect(SearchObjective(arch), momentum, weight_decay, 3e-4, 1e-3)
    before = [w.detach().clone() for w in net.network_weights()]
    ours, _ = architect.unrolled_gradients(*data, eta, optimizer)
    first_order = torch.autograd.grad(net.criterion(net(data[2], arch.weights()), data[3]), net.arch_parameters())
    error = (flat(ours) - flat(exact)).norm() / flat(exact).norm()
    assert error < 1e-3
    assert (flat(first_order) - flat(exact)).norm() / flat(exact).norm() > 10 * error
    assert all(torch.equal(b, w) for b, w in zip(before, net.network_weights())), 'weights were not restored exactly'


def test_the_second_order_gradient_survives_bf16_autocast():
    """The unrolled gradient runs in float32 whatever --amp says: bf16's rounding (about 4e-3) would swallow
    the finite difference's perturbation of each weight (about 1e-5 of it). Same weights, momentum buffer and
    batches in both precisions (the GPU check measures it at C = 16, 5 cells, batch 32)."""
    gradient, product = gpu_check.second_order_agreement(torch.device('cpu'), C=8, layers=5, batch_size=16,
                                                         image_size=16)
    assert gradient >= 0.999 and product >= 0.99


def test_first_order_step_moves_only_the_architecture():
    arch = tiny_supernet()
    net = arch.net
    architect = Architect(SearchObjective(arch), 0.9, 3e-4, 0.1, 1e-3)
    weights = [w.detach().clone() for w in net.network_weights()]
    alphas = [a.detach().clone() for a in net.arch_parameters()]
    architect.step(*batches(), 0.025, torch.optim.SGD(net.network_weights(), 0.025), unrolled=False)
    assert all(torch.equal(w, v) for w, v in zip(weights, net.network_weights()))
    assert all(not torch.equal(a, v) for a, v in zip(alphas, net.arch_parameters()))


def test_unrolled_steps_do_not_accumulate_tensors():
    arch = tiny_supernet(partial_channels=2)
    net = arch.net
    optimizer = torch.optim.SGD(net.network_weights(), 0.1, momentum=0.9)
    architect = Architect(SearchObjective(arch), 0.9, 3e-4, 3e-4, 1e-3)
    data = batches()

    def live_tensors():
        gc.collect()
        with warnings.catch_warnings():  # scanning every object touches deprecated torch attributes
            warnings.simplefilter('ignore')
            return sum(1 for obj in gc.get_objects() if torch.is_tensor(obj))

    counts = []
    for _ in range(4):
        architect.step(*data, 0.1, optimizer, unrolled=True)
        loss = net.criterion(net(data[0], arch.weights()), data[1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        del loss
        counts.append(live_tensors())
    assert counts[-1] == counts[1], counts


def small_supernet(**options):
    torch.manual_seed(0)
    return supernet(4, 3, 3, image_size=8, **options)


def test_hard_discretization_runs_two_ops_per_node_in_the_weight_step():
    arch = small_supernet(partial_channels=2, hd_on_weights=True)
    objective = SearchObjective(arch)
    weights = objective.arch_weights('weights')['normal']
    for start, size in ((0, 2), (2, 3), (5, 4), (9, 5)):
        kept = weights.ops[start:start + size]
        assert (kept.sum(1) > 0).sum() == 2 and set(kept.unique().tolist()) <= {0.0, 1.0}
        assert weights.edges[start:start + size].sum() == 2
    assert sum(len(active) for active in weights.active) == 8
    calls = []
    for cell in arch.net.cells:
        for edge in cell._ops:
            for op in edge._ops:
                op.register_forward_hook(lambda *args: calls.append(1))
    objective.loss(torch.randn(2, 3, 8, 8), torch.tensor([0, 1]), 'weights')
    assert len(calls) == 8 * len(arch.net.cells)
    # The architecture step still learns from the soft weights.
    soft = objective.arch_weights('alpha')['normal']
    assert soft.active is None and soft.ops.requires_grad and (soft.ops > 0).all()


def test_top_k_masks_and_the_temperature_schedule():
    arch = small_supernet(topk_on_alphas=True, linear_temperature_increase=True, linear_temperature_max=200)
    objective = SearchObjective(arch)
    for epoch, expected in ((0, 1.0), (25, 100.0), (49, 196.0)):
        objective.set_epoch(epoch, 50)
        assert objective.summary()['temperature'] == pytest.approx(expected)
    masked = objective.arch_weights('alpha')['normal'].ops
    soft = arch.weights()['normal'].ops
    assert masked.requires_grad and not torch.allclose(masked, soft)
    assert torch.equal(objective.arch_weights('weights')['normal'].ops, soft.detach())


def test_discretization_loss_terms_are_reported_and_only_move_the_architecture():
    arch, plain_arch = small_supernet(dal_on_alphas=True, dal_on_weights=True, dal_factor=2.0), small_supernet()
    net, plain_net = arch.net, plain_arch.net
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    plain, dal = SearchObjective(plain_arch), SearchObjective(arch)
    loss, _, terms = dal.loss(x, y, 'alpha')
    assert set(terms) == {'dal'} and terms['dal'] > 0
    assert torch.autograd.grad(terms['dal'], net.alphas_normal)[0].abs().sum() > 0
    with_term = torch.autograd.grad(dal.loss(x, y, 'weights')[0], net.network_weights(), allow_unused=True)
    without = torch.autograd.grad(plain.loss(x, y, 'weights')[0], plain_net.network_weights(), allow_unused=True)
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(with_term, without))
    summary = dal.summary()
    assert summary['temperature'] == 1.0 and summary['alpha_dal'] > 0 and summary['weights_dal'] > 0


def test_da2s_holds_the_op_parameters_until_its_start_epoch():
    arch = small_supernet(da2s=True, da2s_alpha_start=3)
    net = arch.net
    assert net.betas_normal.shape == (12,)  # nodes with 3, 4 and 5 inputs
    edges = arch.weights()['normal'].edges
    assert edges[:2].tolist() == [1.0, 1.0] and edges[2:5].sum().item() == pytest.approx(3.0)
    objective = SearchObjective(arch)
    architect = Architect(objective, 0.9, 3e-4, 0.01, 1e-3)
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    optimizer = torch.optim.SGD(net.network_weights(), 0.1)
    for epoch, alphas_move in ((1, False), (2, True)):
        objective.set_epoch(epoch, 5)
        alphas, betas = net.alphas_normal.detach().clone(), net.betas_normal.detach().clone()
        architect.step(x, y, x, y, 0.1, optimizer, unrolled=False)
        assert torch.equal(alphas, net.alphas_normal) != alphas_move
        assert not torch.equal(betas, net.betas_normal)
    _, _, terms = objective.loss(x, y, 'alpha')
    assert set(terms) == {'da2s_ops', 'da2s_edges'}


@pytest.mark.parametrize('method, unrolled, flags, allowed', STEP_CASES)
def test_a_search_step_never_reads_the_device_on_the_host(method, unrolled, flags, allowed):
    """An architecture step, a weight step and a validation pass, as on a GPU: each value read on the host
    would wait for the device. Supernets with candidates removed (P-DARTS, DrNAS) take the masked paths."""
    speed = bench.Speed(None, True, False, torch.device('cpu'))
    sizes = dict(bench.TINY, search_channels=16 if method == 'att_darts' else 8)  # attention needs 16
    case = bench.search_case(method, ['--unrolled'] * unrolled + flags, sizes, True, speed)
    if 'stage_layers' in methods.presets()[method]:
        case.arch.net.set_op_masks(progressive.keep_strongest(case.arch, 4))
    case.step(), case.validate()  # the first step makes the optimisers' state
    with count_host_reads() as reads:
        case.step()
        case.validate()
    assert len(reads) == allowed, reads


@contextlib.contextmanager
def time_limit(seconds):
    """Fail instead of hanging (a redraw loop that cannot end, say)."""
    def expired(signum, frame):
        raise AssertionError(f'still running after {seconds} s')
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize('method', sorted(methods.presets()))
def test_nan_architecture_weights_reach_the_loss_guard_in_every_method(method):
    speed = bench.Speed(None, False, False, torch.device('cpu'))
    sizes = dict(bench.TINY, search_channels=16 if method == 'att_darts' else 8)
    case = bench.search_case(method, [], sizes, True, speed)
    with torch.no_grad():
        for parameter in case.arch.net.arch_parameters():
            parameter.fill_(float('nan'))
    guard = loop.FiniteLossGuard(3, parallel.Distributed())
    with time_limit(30), pytest.raises(loop.NonFiniteLoss, match='non-finite at epoch 3, step 7'):
        loss, _, alpha_loss = case.step()
        guard.record(7, (loss, alpha_loss))
