"""The DARTS successors as search methods on the engine's extension points: β-DARTS and SDARTS so far.

Each is one class registered in methods.py's registry, with its flags and its paper's presets; importing
this module (train_search.py does) adds them to --method.
"""
import torch

from methods import Method, register


@register
class BetaDecay(Method):
    """β-DARTS (Ye et al., CVPR 2022): the Beta-Decay regulariser, the mean over a cell type's edges of
    logsumexp of their op parameters, summed over cell types, joins the architecture loss with a weight
    that grows linearly with the epoch: `beta_decay_weight * epoch / 100`, as the paper's code schedules it
    (epochs counted from 0). It keeps the op parameters from drifting apart and the search stable."""
    presets = {'beta_darts': dict(beta_decay_weight=50.0)}
    switch = '--beta_decay_weight'

    def __init__(self, beta_decay_weight=0.0):
        self.weight, self.current = beta_decay_weight, 0.0

    @staticmethod
    def add_arguments(parser):
        group = parser.add_argument_group('beta-decay regularisation (beta-DARTS)')
        group.add_argument('--beta_decay_weight', type=float, default=0.0,
                           help='weight of the Beta-Decay term after 100 epochs, grown linearly from 0 '
                                '(beta-DARTS: 50; 0: off)')

    def active(self):
        return self.weight > 0

    def set_epoch(self, epoch, epochs):
        self.current = self.weight * epoch / 100

    def regularisers(self, phase, net):
        if phase != 'alpha':
            return {}
        smoothmax = sum(torch.logsumexp(getattr(net, f'alphas_{cell}'), dim=-1).mean() for cell in net.cell_types)
        return {'beta_decay': self.current * smoothmax}

    def logged(self):
        return {'beta_decay_weight': self.current}


def clip_rows(ops):
    """SDARTS's projection of perturbed op weights: each row clamped to [0, 1] and divided by its sum; a row
    clamped to all zeros keeps its largest entry, at 1."""
    clamped = ops.clamp(0, 1)
    largest = torch.zeros_like(ops).scatter_(1, ops.argmax(dim=1, keepdim=True), 1.0)
    clamped = torch.where(clamped.sum(dim=1, keepdim=True) == 0, largest, clamped)
    return clamped / clamped.sum(dim=1, keepdim=True)


@register
class SmoothDARTS(Method):
    """SDARTS (Chen and Hsieh, ICML 2020): the weight step mixes with perturbed op weights, so that the
    weights do well around the architecture and not only at it, which smooths the validation loss the
    architecture descends. `rs`: uniform noise in [-epsilon, epsilon]; `adv`: the worst case that 7 steps of
    sign ascent find within that box (from a random start, kept only if it raises the loss), with BatchNorm
    in evaluation mode. Rows are clipped to [0, 1] and renormalised; epsilon grows linearly from 0.03 to
    --sdarts_epsilon over the search."""
    presets = {'sdarts_rs': dict(sdarts='rs'), 'sdarts_adv': dict(sdarts='adv')}
    switch = '--sdarts'
    ATTACK_STEPS = 7
    START_EPSILON = 0.03

    def __init__(self, sdarts='off', sdarts_epsilon=0.3):
        self.kind, self.max_epsilon, self.epsilon = sdarts, sdarts_epsilon, self.START_EPSILON

    @staticmethod
    def add_arguments(parser):
        group = parser.add_argument_group('smoothed architecture weights (SDARTS)')
        group.add_argument('--sdarts', choices=('off', 'rs', 'adv'), default='off',
                           help='perturb the op weights of the weight step: rs (random smoothing) or adv '
                                '(adversarial, 7 sign-ascent steps)')
        group.add_argument('--sdarts_epsilon', type=float, default=0.3,
                           help='final radius of the perturbation, reached linearly from 0.03')

    def active(self):
        return self.kind != 'off'

    def set_epoch(self, epoch, epochs):
        self.epsilon = self.START_EPSILON + (self.max_epsilon - self.START_EPSILON) * epoch / epochs

    def perturb(self, weights, loss_of, net):
        if self.kind == 'rs':
            return {cell: w.replace(ops=clip_rows(w.ops + torch.empty_like(w.ops).uniform_(-self.epsilon,
                                                                                            self.epsilon)))
                    for cell, w in weights.items()}
        return self._adversarial(weights, loss_of, net)

    def _adversarial(self, weights, loss_of, net):
        was_training = net.training
        net.eval()
        clean = {cell: w.ops for cell, w in weights.items()}

        def with_ops(ops):
            return {cell: weights[cell].replace(ops=ops[cell]) for cell in weights}
        step = 2 * self.epsilon / self.ATTACK_STEPS
        ops = {cell: clip_rows(o + torch.empty_like(o).uniform_(-self.epsilon, self.epsilon))
               for cell, o in clean.items()}
        with torch.no_grad():
            loss_before = loss_of(weights)
        for _ in range(self.ATTACK_STEPS):
            leaves = {cell: o.detach().requires_grad_() for cell, o in ops.items()}
            with torch.enable_grad():
                grads = torch.autograd.grad(loss_of(with_ops(leaves)), list(leaves.values()))
            ops = {cell: clip_rows(clean[cell] + (leaves[cell].detach() + step * grad.sign() - clean[cell]).clamp(
                -self.epsilon, self.epsilon)) for (cell, grad) in zip(leaves, grads)}
        with torch.no_grad():
            attacked = with_ops(ops)
            raised = loss_of(attacked) >= loss_before
        net.train(was_training)
        return attacked if raised else weights

    def logged(self):
        return {'sdarts_epsilon': self.epsilon}
