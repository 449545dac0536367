import gc
import warnings

import pytest
import torch
import torch.nn as nn
from torch.func import functional_call

from architect import Architect, SearchObjective
from model_search import Network


def tiny_supernet(**options):
    torch.manual_seed(0)
    net = Network(4, 3, 3, steps=2, multiplier=2, image_size=8, **options).double()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(torch.randn_like(p))
    return net


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


def exact_unrolled_gradient(net, x_train, y_train, x_valid, y_valid, eta):
    """grad_alpha L_val(w - eta * grad_w L_train(w, alpha), alpha) by autograd through the inner step."""
    arch = net.arch_parameters()
    named = [(name, p) for name, p in net.named_parameters() if all(p is not a for a in arch)]
    names, weights = zip(*named)
    train_loss = net._loss(x_train, y_train)
    grads = torch.autograd.grad(train_loss, weights, create_graph=True)
    unrolled = {name: w - eta * g for name, w, g in zip(names, weights, grads)}
    val_loss = net._criterion(functional_call(net, unrolled, (x_valid,)), y_valid)
    return torch.autograd.grad(val_loss, arch)


@pytest.mark.parametrize('options', [{}, {'partial_channels': 2}])
def test_second_order_gradient_matches_autograd_through_the_unrolled_step(options):
    net = smooth(tiny_supernet(primitives='none,avg_pool_3x3,skip_connect,sep_conv_3x3,dil_conv_3x3', **options))
    data = batches()
    eta = 0.5  # large, so that the second-order term is a sizeable part of the gradient
    exact = exact_unrolled_gradient(net, *data, eta)
    architect = Architect(net, SearchObjective(net), 0.0, 0.0, 3e-4, 1e-3)
    optimizer = torch.optim.SGD(net.weights(), eta)
    before = [w.detach().clone() for w in net.weights()]
    ours, _ = architect.unrolled_gradients(*data, eta, optimizer)
    first_order = torch.autograd.grad(net._loss(data[2], data[3]), net.arch_parameters())
    flat = lambda grads: torch.cat([g.flatten() for g in grads])  # noqa: E731
    error = (flat(ours) - flat(exact)).norm() / flat(exact).norm()
    assert error < 1e-3
    assert (flat(first_order) - flat(exact)).norm() / flat(exact).norm() > 10 * error
    assert all(torch.equal(b, w) for b, w in zip(before, net.weights())), 'weights were not restored exactly'


def test_first_order_step_moves_only_the_architecture():
    net = tiny_supernet()
    architect = Architect(net, SearchObjective(net), 0.9, 3e-4, 0.1, 1e-3)
    weights = [w.detach().clone() for w in net.weights()]
    alphas = [a.detach().clone() for a in net.arch_parameters()]
    architect.step(*batches(), 0.025, torch.optim.SGD(net.weights(), 0.025), unrolled=False)
    assert all(torch.equal(w, v) for w, v in zip(weights, net.weights()))
    assert all(not torch.equal(a, v) for a, v in zip(alphas, net.arch_parameters()))


def test_unrolled_steps_do_not_accumulate_tensors():
    net = tiny_supernet(partial_channels=2)
    optimizer = torch.optim.SGD(net.weights(), 0.1, momentum=0.9)
    architect = Architect(net, SearchObjective(net), 0.9, 3e-4, 3e-4, 1e-3)
    data = batches()

    def live_tensors():
        gc.collect()
        with warnings.catch_warnings():  # scanning every object touches deprecated torch attributes
            warnings.simplefilter('ignore')
            return sum(1 for obj in gc.get_objects() if torch.is_tensor(obj))

    counts = []
    for _ in range(4):
        architect.step(*data, 0.1, optimizer, unrolled=True)
        loss = net._loss(data[0], data[1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        del loss
        counts.append(live_tensors())
    assert counts[-1] == counts[1], counts
