"""The curvature of the search (RobustDARTS, Zela et al., ICLR 2020): the dominant eigenvalue of the Hessian of
the validation loss with respect to the architecture parameters, which grows as DARTS collapses.

automl/RobustDARTS 3dec3fe, src/search/analyze.py (compute_Hw) and train_search.py: the Hessian of the cross-
entropy of the supernet on a batch of the architecture's half, the supernet in training mode, plus the
architecture's weight decay (its gradient adds arch_weight_decay * alpha); the dominant eigenvalue is the
largest real one. That code builds the whole Hessian row by row; here power iteration on Hessian-vector
products (double backward) finds it, which costs a few dozen backward passes whatever the size.
"""
import torch

import precision
import utils


def dominant_eigenvalue(hessian_vector_product, size, iterations=100, tolerance=1e-5, generator=None,
                        device=None, dtype=torch.float32):
    """The largest eigenvalue of a symmetric `size` x `size` matrix given by its products with vectors, by
    power iteration: it finds the eigenvalue of largest magnitude; when that one is negative, power
    iteration on H - lambda I (whose spectrum is >= 0) finds the largest. Stops when the estimate moves by
    less than `tolerance` of itself, or after `iterations` products."""
    def largest_magnitude(product):
        vector = torch.randn(size, generator=generator, dtype=dtype).to(device)
        vector /= vector.norm()
        estimate = None
        for _ in range(iterations):
            image = product(vector)
            previous, estimate = estimate, float(vector @ image)
            norm = image.norm()
            if norm == 0:
                return 0.0
            vector = image / norm
            if previous is not None and abs(estimate - previous) <= tolerance * abs(estimate):
                break
        return estimate

    first = largest_magnitude(hessian_vector_product)
    if first >= 0:
        return first
    return first + largest_magnitude(lambda v: hessian_vector_product(v) - first * v)


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
                            'eigenvalue is measured on (RobustDARTS: one)')
