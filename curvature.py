"""The curvature of the search (RobustDARTS, Zela et al., ICLR 2020): the dominant eigenvalue of the Hessian of
the validation loss with respect to the architecture parameters, which grows as DARTS collapses.

automl/RobustDARTS 3dec3fe, src/search/analyze.py (compute_Hw) and train_search.py: the Hessian of the cross-
entropy of the supernet on a batch of the architecture's half, the supernet in training mode, plus the
architecture's weight decay (its gradient adds arch_weight_decay * alpha); the dominant eigenvalue is the
largest real one. That code builds the whole Hessian row by row; here the Lanczos method on Hessian-vector
products (double backward) finds it, which costs a few dozen backward passes whatever the size.
"""
import torch

import precision
import utils


def dominant_eigenvalue(hessian_vector_product, size, iterations=100, tolerance=1e-5, generator=None,
                        device=None, dtype=torch.float32):
    """The largest eigenvalue of a symmetric `size` x `size` matrix given by its products with vectors, by the
    Lanczos method with full reorthogonalisation: the largest eigenvalue of the tridiagonal matrix of the
    Krylov basis (a Ritz value) approaches the matrix's largest from below, far faster than power iteration
    where the top eigenvalues lie close (on a toy DARTS supernet 14 to 21 products where power iteration took
    43 to 100), and a negative eigenvalue of larger magnitude does not get in its way. Stops when the Ritz
    value's residual |H y - theta y| is within `tolerance` of theta, when the basis spans an invariant subspace
    (all of it at the latest), or after `iterations` products."""
    vector = torch.randn(size, generator=generator, dtype=dtype).to(device)
    basis = [vector / vector.norm()]
    diagonal, off_diagonal = [], []
    for _ in range(min(iterations, size)):
        image = hessian_vector_product(basis[-1])
        diagonal.append(float(basis[-1] @ image))
        spanned = torch.stack(basis)
        for _ in range(2):  # Gram-Schmidt twice keeps the basis orthogonal in float32
            image = image - spanned.T @ (spanned @ image)
        norm = float(image.norm())
        beside = torch.tensor(off_diagonal, dtype=torch.float64)
        tridiagonal = torch.diag(torch.tensor(diagonal, dtype=torch.float64)) + beside.diag(1) + beside.diag(-1)
        ritz_values, ritz_vectors = torch.linalg.eigh(tridiagonal)
        largest, residual = ritz_values[-1].item(), norm * abs(ritz_vectors[-1, -1].item())
        if residual <= tolerance * abs(largest) or norm <= 1e-12 * max(map(abs, diagonal)):
            break
        off_diagonal.append(norm)
        basis.append(image / norm)
    return largest


def _flat(gradients, parameters):
    """One vector of the gradients of `parameters`, zeros where a parameter took no part."""
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(parameters, gradients)])


def hessian_eigenvalue(objective, batches, arch_weight_decay=0.0, iterations=100, tolerance=1e-5):
    """The dominant eigenvalue of the Hessian of the mean cross-entropy over `batches` ((images, targets)
    of the architecture's half) with respect to the architecture parameters, plus arch_weight_decay * I, as
    RobustDARTS computes it: the supernet in training mode mixing with the soft weights the methods define
    (architecture.Architecture.weights(), no sampling or perturbation). It runs in float32 with TF32 off,
    and leaves the search as it found it: BatchNorm's running statistics and the random streams."""
    net = objective.model
    parameters = net.arch_parameters()
    buffers = [buffer.detach().clone() for buffer in net.buffers()]
    was_training = net.training
    device = parameters[0].device
    devices = [device] if device.type == 'cuda' else []
    net.train()
    try:
        with torch.random.fork_rng(devices=devices), precision.exact_float32():
            loss = sum(net.criterion(net(images, objective.arch.weights()), targets) for images, targets in batches)
            loss = loss / len(batches)
            gradient = _flat(torch.autograd.grad(loss, parameters, create_graph=True, allow_unused=True), parameters)

            def hessian_vector_product(vector):
                image = torch.autograd.grad(gradient, parameters, vector, retain_graph=True, allow_unused=True)
                return _flat(image, parameters).detach() + arch_weight_decay * vector

            generator = torch.Generator().manual_seed(0)
            return dominant_eigenvalue(hessian_vector_product, gradient.numel(), iterations, tolerance, generator,
                                       device, gradient.dtype)
    finally:
        with torch.no_grad():
            for buffer, saved in zip(net.buffers(), buffers):
                buffer.copy_(saved)
        net.train(was_training)


def due(epoch, epochs, every):
    """Whether epoch `epoch` (from 0) of `epochs` measures the eigenvalue: every `every` epochs from the first,
    and the last, as RobustDARTS's train_search.py (epoch % report_freq_hessian == 0 or the last); never when
    `every` is 0."""
    return every > 0 and (epoch % every == 0 or epoch == epochs - 1)


def add_arguments(parser):
    group = parser.add_argument_group('curvature (RobustDARTS)')
    group.add_argument('--hessian_eigenvalue', type=utils.bounded(int, 0), nargs='?', const=1, default=0, metavar='N',
                       help="log the dominant eigenvalue of the validation loss's Hessian with respect to the "
                            'architecture every N epochs and at the last (N default 1; 0: off), in metrics.jsonl, '
                            'the log, TensorBoard and the history plots')
    group.add_argument('--hessian_batches', type=utils.bounded(int, 1), default=1,
                       help="how many batches of the architecture's half (always the same ones, its first) the "
                            'eigenvalue is measured on (RobustDARTS: one); the memory it takes grows with them')
