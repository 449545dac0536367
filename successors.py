"""The DARTS successors as search methods on the engine's extension points: β-DARTS, DARTS-, RobustDARTS's
drop path, FairDARTS, SDARTS, GDAS and DrNAS.

Each is one class registered in methods.py's registry, with its flags and its paper's presets; importing
this module (train_search.py does) adds them to --method.
"""
import torch
import torch.nn.functional as F

from methods import Method, register
from sampling import clip_rows, dirichlet_concentration, dirichlet_sample, gumbel_hard
from utils import UserError, bounded


# NAS-Bench-201 as SDARTS's nasbench201/train_search.py searches it (xiangning-chen/SmoothDARTS d3dbfed), and
# β-DARTS's and DARTS-PT's copies of it: 100 epochs at weight decay 3e-4, plain momentum, the architecture step
# first. The benchmark's own DARTS code (our NAS-Bench-201 defaults) runs 50 epochs at 5e-4 with Nesterov.
NB201_DARTS_OF_SDARTS = dict(epochs=100, weight_decay=3e-4, nesterov=False, step_order='architecture_first')


@register
class BetaDecay(Method):
    """β-DARTS (Ye et al., CVPR 2022): the Beta-Decay regulariser, the mean over a cell type's edges of
    logsumexp of their op parameters, summed over cell types, joins the architecture loss with a weight
    that grows linearly with the epoch: `beta_decay_weight * epoch / 100`, as the paper's code schedules it
    (epochs counted from 0). It keeps the op parameters from drifting apart and the search stable."""
    presets = {'beta_darts': dict(beta_decay_weight=50.0, primitives='darts_without_none')}
    # Sunshine-Ye/Beta-DARTS f307704: on NAS-Bench-201 its nasbench201/train_search.py, SDARTS's settings, so that
    # the weight reaches 50 * 99 / 100. In DARTS's space its sota/cnn/train_search.py is SDARTS's script, which
    # searches space s5 (7 ops) with SDARTS-RS's perturbation on by default, and stops at its first step (it
    # calls the Architect without the epoch that its Beta-Decay weight needs). The preset takes the 7 ops and
    # leaves the perturbation out: the paper adds one term to DARTS (--sdarts rs adds SDARTS-RS).
    space_presets = {'beta_darts': {'nas_bench_201': NB201_DARTS_OF_SDARTS}}
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

    def regularisers(self, phase, arch):
        if phase != 'alpha':
            return {}
        smoothmax = sum(torch.logsumexp(arch.net.candidate_values(cell, arch.op_parameters(cell)), dim=-1).mean()
                        for cell in arch.net.cell_types)
        return {'beta_decay': self.current * smoothmax}

    def logged(self, arch):
        return {'beta_decay_weight': self.current}


@register
class AuxiliarySkip(Method):
    """DARTS- (Chu et al., ICLR 2021): every edge gets an auxiliary skip connection, beta * x, besides its
    mixture, with beta decaying linearly from --auxiliary_skip to 0 over T epochs:
    beta = auxiliary_skip * max(T - epoch, 0) / T, set at each epoch's start as DARTS-'s code does, with
    T = --auxiliary_skip_epochs, 50 as DARTS-'s code fixes it whatever the search's length (its
    decay_max_epoch; 0 decays over the search's --epochs instead). The
    skip then no longer needs a large op weight to pass the gradient, which removes the unfair advantage
    that makes skip connections collapse a DARTS cell; it takes no part in the derived cell.
    Here the auxiliary skip joins the weight of the edge's skip_connect candidate, which is exact on
    stride-1 edges (skip_connect is the identity); on the stride-2 edges of a reduction cell it shares the
    candidate's FactorizedReduce, where DARTS- gives the auxiliary skip a FactorizedReduce of its own."""
    presets = {'darts_minus': dict(auxiliary_skip=1.0)}
    switch = '--auxiliary_skip'

    def __init__(self, auxiliary_skip=0.0, auxiliary_skip_epochs=50):
        self.initial, self.beta, self.decay_epochs = auxiliary_skip, auxiliary_skip, auxiliary_skip_epochs

    @staticmethod
    def add_arguments(parser):
        group = parser.add_argument_group('auxiliary skip connection (DARTS-)')
        group.add_argument('--auxiliary_skip', type=float, default=0.0,
                           help='initial coefficient of an auxiliary skip on every edge, decayed linearly to 0 '
                                '(DARTS-: 1; 0: off)')
        group.add_argument('--auxiliary_skip_epochs', type=int, default=50,
                           help="epochs over which the auxiliary skip decays to 0 (DARTS-'s code: 50, whatever "
                                '--epochs; 0: over the whole search)')

    def active(self):
        return self.initial > 0

    def set_epoch(self, epoch, epochs):
        decay_epochs = self.decay_epochs or epochs
        self.beta = self.initial * max(decay_epochs - epoch, 0) / decay_epochs

    def transform(self, weights, phase, arch):
        if not arch.net.offers_everywhere('skip_connect'):
            raise UserError('--auxiliary_skip (DARTS-) adds to the skip_connect candidate of every edge; keep '
                            'skip_connect in --primitives, or search a space that offers it on every edge (s2, s3)')
        i = arch.net.op_names.index('skip_connect')
        return {cell: w.replace(ops=torch.cat([w.ops[:, :i], w.ops[:, i:i + 1] + self.beta, w.ops[:, i + 1:]], dim=1))
                for cell, w in weights.items()}

    def logged(self, arch):
        return {'auxiliary_skip': self.beta}


@register
class SupernetDropPath(Method):
    """RobustDARTS's DP (Zela et al., ICLR 2020): drop path on the output of every edge of the supernet in
    training, the architecture step included, its probability rising linearly from 0 at the first epoch to
    --drop_path_prob at the last, as automl/RobustDARTS 3dec3fe's train_search.py schedules it
    (drop_path_prob * epoch / (epochs - 1)). A stronger regularisation of the weights that keeps the Hessian's
    eigenvalue low and the cell from collapsing. Its code also turns --cutout on with DP; it means to raise
    cutout's probability with the epoch too, but sets an attribute its Cutout does not read, so cutout runs
    at probability 1 throughout, as here. The preset takes the largest probability of its grid (0.6);
    the paper picks the best of 0, 0.2, 0.4 and 0.6 by validation error."""
    presets = {'rdarts_dp': dict(drop_path_prob=0.6, cutout=True, unrolled=True)}
    switch = '--drop_path_prob'

    def __init__(self, drop_path_prob=0.0):
        self.final, self.current = drop_path_prob, 0.0

    @staticmethod
    def add_arguments(parser):
        group = parser.add_argument_group('drop path in the supernet (RobustDARTS DP)')
        group.add_argument('--drop_path_prob', type=bounded(float, 0, 1), default=0.0,
                           help='drop path on every edge of the supernet, rising linearly to this probability at the '
                                'last epoch (RobustDARTS DP: 0.2, 0.4 or 0.6; 0: off)')

    def active(self):
        return self.final > 0

    def set_epoch(self, epoch, epochs):
        self.current = self.final * epoch / max(epochs - 1, 1)

    def arch_parameters(self, arch):
        if not arch.net.chooses_edges:  # checked as the architecture is built, before the run starts
            raise UserError('--drop_path_prob drops paths of the DARTS cell, RobustDARTS\'s; NAS-Bench-201\'s '
                            'supernet has no drop path')
        return {}

    def transform(self, weights, phase, arch):
        return {cell: w.replace(drop_path=self.current) for cell, w in weights.items()}

    def logged(self, arch):
        return {'drop_path_prob': self.current}


@register
class FairDARTS(Method):
    """FairDARTS (Chu et al., ECCV 2020): each op weight is sigmoid(alpha), so ops no longer compete within
    an edge for a share of one softmax (the competition that hands skip connections their unfair
    advantage), and the zero-one loss, -mean over all op weights (each edge's own in S1-S4) of
    (sigmoid(alpha) - 0.5)^2, times --zero_one_weight (10), joins the architecture loss to push every weight
    toward 0 or 1.
    FairDARTS derives its cell by threshold: per node the two edges of strongest weight, and on each its
    best op if that weight reaches 0.85, so a node may keep fewer than two inputs. The DARTS cell that
    train.py builds, and every released genotype, has exactly two inputs per node, so here the derived
    cell keeps both and `fair_below_threshold` logs how many of its ops fall below --fair_threshold."""
    # xiaomi-automl/FairDARTS 270cfc9, fairdarts/train_search.py and architect.py (Adam betas (arch_lr_gamma
    # 0.9, 0.999)).
    presets = {'fair_darts': dict(sigmoid_weights=True, primitives='darts_without_none', batch_size=128,
                                  learning_rate=0.005, arch_learning_rate=3e-3, arch_beta1=0.9)}
    switch = '--sigmoid_weights'
    op_weights_sum_to_one = False

    def __init__(self, sigmoid_weights=False, zero_one_weight=10.0, fair_threshold=0.85):
        self.on, self.weight, self.threshold = sigmoid_weights, zero_one_weight, fair_threshold

    @staticmethod
    def add_arguments(parser):
        group = parser.add_argument_group('sigmoid op weights and the zero-one loss (FairDARTS)')
        group.add_argument('--sigmoid_weights', action='store_true',
                           help='each op weight is sigmoid(alpha), independent of the edge\'s other ops')
        group.add_argument('--zero_one_weight', type=float, default=10.0,
                           help='weight of the zero-one loss with --sigmoid_weights (0: none)')
        group.add_argument('--fair_threshold', type=float, default=0.85,
                           help='op weight below which FairDARTS would drop a derived op (logged)')

    def active(self):
        return self.on

    def op_weights(self, alphas):
        return torch.sigmoid(alphas)

    def regularisers(self, phase, arch):
        if phase != 'alpha' or not self.weight:
            return {}
        weights = torch.cat([arch.net.candidate_values(cell, w.ops).flatten() for cell, w in arch.weights().items()])
        return {'zero_one': -self.weight * (weights - 0.5).pow(2).mean()}

    def logged(self, arch):
        weights = arch.detached_weights()
        chosen = [weights[cell].ops[edge, arch.net.op_names.index(entry[0])].item()
                  for cell, entries in arch.derived().items() for entry, edge in entries]
        return {'fair_below_threshold': sum(weight < self.threshold for weight in chosen)}


@register
class SmoothDARTS(Method):
    """SDARTS (Chen and Hsieh, ICML 2020): the weight step mixes with perturbed op weights, so that the
    weights do well around the architecture and not only at it, which smooths the validation loss the
    architecture descends. `rs`: uniform noise in [-epsilon, epsilon]; `adv`: the worst case that 7 steps of
    sign ascent find within that box (from a random start, kept only if it raises the loss), with BatchNorm
    in evaluation mode. Rows are clipped to [0, 1] and renormalised; epsilon grows linearly from 0.03 to
    --sdarts_epsilon over the search."""
    # SDARTS's code searches DARTS's space without `none` (its sota/cnn/spaces.py, space s5).
    presets = {'sdarts_rs': dict(sdarts='rs', primitives='darts_without_none'),
               'sdarts_adv': dict(sdarts='adv', primitives='darts_without_none')}
    space_presets = {name: {'nas_bench_201': NB201_DARTS_OF_SDARTS} for name in presets}
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

    def hold_at_end(self, epochs):
        self.epsilon = self.max_epsilon  # darts-pt 4ec3149, train_search.py: pt_project(..., args.epsilon_alpha)

    def perturb(self, weights, loss_of, arch):
        if self.kind == 'rs':
            return {cell: w.replace(ops=clip_rows(w.ops + self._noise(w.ops))) for cell, w in weights.items()}
        return self._adversarial(weights, loss_of, arch)

    def _noise(self, ops):
        return torch.empty_like(ops).uniform_(-self.epsilon, self.epsilon, generator=self.generator)

    def _adversarial(self, weights, loss_of, arch):
        was_training = arch.net.training
        arch.net.eval()
        clean = {cell: w.ops for cell, w in weights.items()}

        def with_ops(ops):
            return {cell: weights[cell].replace(ops=ops[cell]) for cell in weights}
        step = 2 * self.epsilon / self.ATTACK_STEPS
        ops = {cell: clip_rows(o + self._noise(o)) for cell, o in clean.items()}
        with torch.no_grad():
            loss_before = loss_of(weights)
        for _ in range(self.ATTACK_STEPS):
            leaves = {cell: o.detach().requires_grad_() for cell, o in ops.items()}
            with torch.enable_grad():
                grads = torch.autograd.grad(loss_of(with_ops(leaves)), list(leaves.values()))
            ops = {cell: clip_rows(clean[cell] + (leaves[cell].detach() + step * grad.sign() - clean[cell]).clamp(
                -self.epsilon, self.epsilon)) for (cell, grad) in zip(leaves, grads)}
        with torch.no_grad():
            raised = loss_of(with_ops(ops)) >= loss_before
        arch.net.train(was_training)
        return with_ops({cell: torch.where(raised, ops[cell], clean[cell]) for cell in ops})  # chosen on the device

    def logged(self, arch):
        return {'sdarts_epsilon': self.epsilon}


@register
class GDAS(Method):
    """GDAS (Dong and Yang, CVPR 2019): every forward pass samples one op per edge from the op weights with
    hard Gumbel-softmax, and computes only that op, so a search step costs about one op per edge; the
    gradient reaches every op parameter through the soft sample. The temperature falls linearly from
    --tau_max (10) to --tau_min (0.1) over the search; the derived cell is DARTS's, from the op weights.
    As GDAS's code does, its preset takes the weight step before the architecture step (--step_order
    weights_first) and Nesterov momentum, and on NAS-Bench-201
    each edge adds the weights of its unsampled ops to its output as numbers (AutoDL-Projects'
    forward_gdas): 0 in the forward pass, they give every unsampled op weight the gradient of the edge's
    output summed over its elements, where the DARTS space's cell (forward_gdas of its MixedOp) has none."""
    # D-X-Y/AutoDL-Projects f46486e: exps/NAS-Bench-201-algos/GDAS.py's search_func updates the weights, then the
    # architecture; configs/nas-benchmark/algos/GDAS.config: 250 epochs of batch 64, Nesterov momentum.
    presets = {'gdas': dict(gdas=True, epochs=250, batch_size=256, weight_decay=5e-4, nesterov=True,
                            step_order='weights_first')}
    space_presets = {'gdas': {'nas_bench_201': dict(batch_size=64)}}
    switch = '--gdas'

    def __init__(self, gdas=False, tau_max=10.0, tau_min=0.1):
        self.on, self.tau_max, self.tau_min, self.tau = gdas, tau_max, tau_min, tau_max

    @staticmethod
    def add_arguments(parser):
        group = parser.add_argument_group('hard Gumbel-softmax sampling (GDAS)')
        group.add_argument('--gdas', action='store_true', help='sample and compute one op per edge in every pass')
        group.add_argument('--tau_max', type=float, default=10.0, help='Gumbel-softmax temperature of the first epoch')
        group.add_argument('--tau_min', type=float, default=0.1, help='Gumbel-softmax temperature of the last epoch')

    def active(self):
        return self.on

    def set_epoch(self, epoch, epochs):
        self.tau = self.tau_max - (self.tau_max - self.tau_min) * epoch / max(epochs - 1, 1)

    def transform(self, weights, phase, arch):
        samples = {cell: gumbel_hard(w.ops, self.tau, self.generator) for cell, w in weights.items()}
        # The sampled ops, the only ones computed, reach the host in one transfer for all cell types.
        on_host = torch.stack([indices for _, indices in samples.values()]).tolist()
        sampled = {}
        for (cell, w), indices in zip(weights.items(), on_host):
            ops, index = samples[cell]
            offsets = None
            if not arch.net.chooses_edges:  # NAS-Bench-201: the unsampled ops' weights, exactly 0 forward
                offsets = (ops * (1 - F.one_hot(index, ops.size(-1)).to(ops.dtype))).sum(dim=-1)
            sampled[cell] = w.replace(ops=ops, active=[[i] for i in indices], offsets=offsets)
        return sampled

    def logged(self, arch):
        return {'tau': self.tau}


@register
class DirichletSampling(Method):
    """DrNAS (Chen et al., ICLR 2021): every forward pass samples each edge's op weights from a Dirichlet
    distribution with concentration elu(alpha) + 1, by the reparameterisation trick, so the architecture
    learns a distribution and the weights meet many mixtures. Its default regulariser is the architecture's
    L2 weight decay (--arch_weight_decay 1e-3); --dirichlet_kl W takes the other one instead, as its code's
    reg_type kl does: W * KL(Dir(c) || Dir(1)) summed over edges and over all the ops they offer, those pruned
    away too (their parameters set to 0 at the pruning, progressive.prune_architecture, and then moved by the KL
    alone), and no weight decay. The
    derived cell is DARTS's, from softmax(alpha), as DrNAS's code derives it. The preset
    runs DrNAS's progressive schedule as two stages (progressive.py) of 25 epochs: 7 ops at K = 6, then
    the 4 strongest at K = 4, the supernet widened in between, the warm-up repeated in each."""
    presets = {'drnas': dict(dirichlet=True, primitives='darts_without_none', partial_channels=6, edge_norm=False,
                             init_channels=36, stage_layers=(20, 20), stage_keep=(4,), stage_partial_channels=(6, 4),
                             stage_continue=True, epochs=25, learning_rate=0.1, learning_rate_min=0.0,
                             arch_learning_rate=6e-4, warmup_epochs=10, pool_bn=False)}
    # xiangning-chen/DrNAS f2caa4d, 201-space/train_search_progressive.py: C = 16, N = 5, ks [4, 2], num_keeps
    # [5, 3], train_epochs [50, 50] on one cosine schedule from 0.025 to 0.001, weight decay 3e-4, batch 64, the
    # architecture at 3e-4 from epoch 10 of each stage, the architecture step first, plain momentum.
    space_presets = {'drnas': {'nas_bench_201': dict(
        init_channels=16, stage_layers=(5, 5), stage_keep=(3,), stage_partial_channels=(4, 2), partial_channels=4,
        epochs=50, learning_rate=0.025, learning_rate_min=0.001, weight_decay=3e-4, arch_learning_rate=3e-4,
        nesterov=False, step_order='architecture_first')}}
    switch = '--dirichlet'

    def __init__(self, dirichlet=False, dirichlet_kl=0.0):
        self.on, self.kl_weight = dirichlet, dirichlet_kl

    @property
    def replaces_arch_weight_decay(self):
        return self.kl_weight > 0

    @staticmethod
    def add_arguments(parser):
        group = parser.add_argument_group('Dirichlet architecture distribution (DrNAS)')
        group.add_argument('--dirichlet', action='store_true',
                           help='sample the op weights of every pass from Dirichlet(elu(alpha) + 1)')
        group.add_argument('--dirichlet_kl', type=float, default=0.0,
                           help="weight of KL(Dirichlet || Dirichlet(1)) in the architecture loss, which then replaces "
                                "the architecture's weight decay, as DrNAS's reg_type kl (0: none)")

    def active(self):
        return self.on

    def transform(self, weights, phase, arch):
        return {cell: w.replace(ops=arch.net.mask_ops(cell, dirichlet_sample(dirichlet_concentration(
                    arch.op_parameters(cell).float()), self.generator)))
                for cell, w in weights.items()}

    def regularisers(self, phase, arch):
        if phase != 'alpha' or not self.kl_weight:
            return {}
        total = 0
        for cell in arch.net.cell_types:
            concentration = dirichlet_concentration(arch.net.candidate_values(cell, arch.op_parameters(cell).float()))
            prior = torch.distributions.Dirichlet(torch.ones_like(concentration), validate_args=False)
            total = total + torch.distributions.kl_divergence(
                torch.distributions.Dirichlet(concentration, validate_args=False), prior).sum()
        return {'dirichlet_kl': self.kl_weight * total}

    def logged(self, arch):
        with torch.no_grad():  # each edge's total concentration over the ops that remain on it
            totals = [(dirichlet_concentration(arch.op_parameters(cell).float())
                       * arch.net.op_mask(cell)).sum(dim=-1) for cell in arch.net.cell_types]
        return {'dirichlet_concentration': torch.cat(totals).mean().item()}
