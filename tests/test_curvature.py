"""curvature.py: the dominant eigenvalue of the Hessian of the validation loss with respect to the
architecture (RobustDARTS), against the whole Hessian, and in a search's metrics."""
import pytest
import torch
from conftest import load_script, metrics, supernet
from torch.func import functional_call

import curvature
from architect import SearchObjective

train_search = load_script('train_search')


@pytest.mark.parametrize('eigenvalues, largest', [((-5.0, 2.0, 1.0, -0.5), 2.0), ((3.0, -1.0, 0.5), 3.0),
                                                  ((-4.0, -2.0, -1.0), -1.0)])
def test_lanczos_finds_the_largest_eigenvalue_even_when_a_negative_one_is_larger_in_magnitude(eigenvalues, largest):
    generator = torch.Generator().manual_seed(1)
    size = len(eigenvalues)
    basis, _ = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))
    matrix = basis @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ basis.T
    found = curvature.dominant_eigenvalue(lambda v: matrix @ v, len(eigenvalues), iterations=2000, tolerance=1e-12,
                                          generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert found == pytest.approx(largest, rel=1e-6)


def test_lanczos_needs_few_products_where_the_top_eigenvalues_lie_close():
    """A spectrum like a supernet's Hessian: 224 eigenvalues (DARTS's architecture parameters), the top ones
    within 1% of each other, where power iteration needs thousands of products."""
    generator = torch.Generator().manual_seed(0)
    eigenvalues = torch.cat([torch.linspace(1.0, 0.99, 8, dtype=torch.float64),
                             torch.linspace(0.5, -0.3, 216, dtype=torch.float64)])
    basis, _ = torch.linalg.qr(torch.randn(224, 224, generator=generator, dtype=torch.float64))
    matrix = basis @ torch.diag(eigenvalues) @ basis.T
    products = []

    def product(vector):
        products.append(vector)
        return matrix @ vector

    found = curvature.dominant_eigenvalue(product, 224, generator=torch.Generator().manual_seed(0),
                                          dtype=torch.float64)
    assert found == pytest.approx(1.0, rel=1e-5) and len(products) <= 60


class WithWeights(torch.nn.Module):
    """The supernet mixing with the architecture's weights, as one module, so that functional_call can
    replace the architecture parameters the weights are computed from."""

    def __init__(self, arch):
        super().__init__()
        self.arch, self.net = arch, arch.net

    def forward(self, images):
        return self.net(images, self.arch.weights())


def test_the_eigenvalue_is_the_largest_of_the_whole_hessian_and_leaves_the_search_as_it_was():
    torch.manual_seed(0)
    arch = supernet(4, 3, 3, steps=2, multiplier=2, image_size=8, partial_channels=2)
    net = arch.net.double()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(torch.randn_like(p))
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(6, 3, 8, 8, generator=generator, dtype=torch.float64),
                torch.randint(0, 3, (6,), generator=generator)) for _ in range(2)]
    names = [name for name, _ in net.named_arch_parameters()]
    shapes = [p.shape for p in net.arch_parameters()]
    module = WithWeights(arch).train()
    buffers = {name: value.clone() for name, value in net.named_buffers()}

    def loss_of(flat):
        values = dict(zip((f'net.{name}' for name in names),
                          (chunk.view(shape) for chunk, shape in zip(flat.split([s.numel() for s in shapes]), shapes))))
        return sum(net.criterion(functional_call(module, values, (x,)), y) for x, y in batches) / len(batches)

    flat = torch.cat([p.detach().flatten() for p in net.arch_parameters()])
    weight_decay = 1e-3
    hessian = torch.autograd.functional.hessian(loss_of, flat)
    hessian = hessian + weight_decay * torch.eye(flat.numel(), dtype=flat.dtype)
    expected = torch.linalg.eigvalsh(hessian).max().item()
    with torch.no_grad():  # the reference's passes moved BatchNorm's statistics
        for name, value in net.named_buffers():
            value.copy_(buffers[name])
    rng = torch.get_rng_state()
    found = curvature.hessian_eigenvalue(SearchObjective(arch), batches, weight_decay, iterations=1000, tolerance=1e-9)
    assert found == pytest.approx(expected, rel=1e-3)
    assert all(torch.equal(value, buffers[name]) for name, value in net.named_buffers()), 'BatchNorm statistics moved'
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.slow
def test_a_search_logs_the_eigenvalue_every_n_epochs_and_at_the_last(in_tmp):
    flags = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '64', '--synthetic_test_size',
             '16', '--num_classes', '4', '--init_channels', '4', '--layers', '3', '--batch_size', '32',
             '--device', 'cpu', '--report_freq', '1000', '--epochs', '4']
    train_search.main(flags + ['--exp_path', 'plain'])
    train_search.main(flags + ['--exp_path', 'curved', '--hessian_eigenvalue', '2'])
    plain, curved = metrics(in_tmp / 'plain'), metrics(in_tmp / 'curved')
    assert [('hessian_eigenvalue' in row) for row in curved] == [True, False, True, True]
    assert all(row['hessian_eigenvalue'] > 0 for row in curved if 'hessian_eigenvalue' in row)
    assert [row['arch_weights'] for row in curved] == [row['arch_weights'] for row in plain], \
        'measuring the curvature changes nothing in the search'
