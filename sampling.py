"""How the successors perturb and sample op weights, as tensor functions: SDARTS's projection of perturbed
weights onto the simplex, GDAS's hard Gumbel-softmax and DrNAS's Dirichlet (successors.py holds the methods)."""
import torch
import torch.nn.functional as F


def clip_rows(ops):
    """SDARTS's projection of perturbed op weights: each row clamped to [0, 1] and divided by its sum; a row
    clamped to all zeros keeps its largest entry, at 1."""
    clamped = ops.clamp(0, 1)
    largest = torch.zeros_like(ops).scatter_(1, ops.argmax(dim=1, keepdim=True), 1.0)
    clamped = torch.where(clamped.sum(dim=1, keepdim=True) == 0, largest, clamped)
    return clamped / clamped.sum(dim=1, keepdim=True)


def gumbel_hard(ops, tau, generator=None):
    """GDAS's sample of one op per edge: (weights, indices). The forward weights are exactly one-hot on an op
    drawn with probability `ops` (Gumbel-max); their gradient is that of the Gumbel-softmax at temperature
    `tau` (straight-through). GDAS draws again while a Gumbel noise is infinite; here an infinite one is
    drawn again once, on the device, so the sample never waits for the host and never loops (non-finite
    `ops` give a non-finite loss, which the loss guard reports)."""
    def draw():
        return -torch.empty_like(ops).exponential_(generator=generator).log()
    gumbels = draw()
    return gumbel_hard_with(ops, torch.where(torch.isfinite(gumbels), gumbels, draw()), tau)


def gumbel_hard_with(ops, gumbels, tau):
    """gumbel_hard's sample for the Gumbel noise `gumbels`."""
    log_ops = ops.clamp_min(torch.finfo(ops.dtype).tiny).log()
    soft = F.softmax((log_ops + gumbels) / tau, dim=-1)
    indices = soft.argmax(dim=-1)
    hard = F.one_hot(indices, ops.size(-1)).to(soft.dtype)
    return hard - soft.detach() + soft, indices


def dirichlet_concentration(alphas):
    """DrNAS's concentration of each edge's Dirichlet: elu(alpha) + 1, positive."""
    return F.elu(alphas) + 1


class _DirichletSample(torch.autograd.Function):
    """torch.distributions.Dirichlet's reparameterised sample, drawn from a given generator."""

    @staticmethod
    def forward(ctx, concentration, generator):
        sample = torch._sample_dirichlet(concentration, generator=generator)
        ctx.save_for_backward(sample, concentration)
        return sample

    @staticmethod
    def backward(ctx, grad_output):
        sample, concentration = ctx.saved_tensors
        return torch.distributions.dirichlet._Dirichlet_backward(sample, concentration, grad_output), None


def dirichlet_sample(concentration, generator=None):
    """One reparameterised sample of each row's Dirichlet. Unchecked, as checking would read the
    concentration on the host at every pass: instead a row with a non-finite concentration samples NaN,
    where torch's CPU sampler would return a uniform row, so that the loss guard stops the run."""
    sample = _DirichletSample.apply(concentration, generator)
    return sample.masked_fill(~torch.isfinite(concentration).all(dim=-1, keepdim=True), float('nan'))
