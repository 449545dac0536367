"""Search methods as units: one class each, at the search engine's extension points, with flags and presets.

Each method writes its change to DARTS in one class and registers it here with its flags and its paper's
presets; adding a method is one class in one place (see docs/adding-a-method.md)."""
import argparse
import inspect

import torch
import torch.nn.functional as F

import discretization_aware
from utils import UserError

REGISTRY = []  # method classes, in the order their hooks apply


# Flags of train_search.py that a method may take besides its own (edge normalisation is on by default with
# partial channels or alpha-attention).
SHARED_FLAGS = ('partial_channels', 'alpha_attention', 'stage_partial_channels')


def register(method_class):
    """Class decorator: add a method's flags to train_search.py, its presets to --method, and its hooks
    to every search whose flags switch it on. The constructor takes flags' values by name, so each of its
    parameters must name one of the method's flags (or SHARED_FLAGS): a parameter that names none is an
    error here, when the method's module is imported, not a value silently left at its default."""
    parser = argparse.ArgumentParser(add_help=False)
    method_class.add_arguments(parser)
    flags = {action.dest for action in parser._actions} | set(SHARED_FLAGS)
    unknown = [name for name in inspect.signature(method_class).parameters if name not in flags]
    if unknown:
        raise TypeError(f'{method_class.__name__}.__init__ takes {", ".join(unknown)}, which no flag of its '
                        f'add_arguments (nor {", ".join(SHARED_FLAGS)}) sets')
    REGISTRY.append(method_class)
    return method_class


class Method:
    """A search method's changes to DARTS. The search (architecture.Architecture and architect.SearchObjective)
    calls these hooks; each default keeps DARTS as it is, so a method overrides only what it changes. `arch`
    is the architecture.Architecture being searched: `arch.net` is the supernet (DARTS's or NAS-Bench-201's:
    `arch.net.cell_types`, `.node_slices()`, `.op_names`, `.none_index`, `.chooses_edges`), `arch.weights()`
    the soft weights of every cell type, and the architecture parameters of a cell type are
    `arch.op_parameters(cell)` (alpha) and `arch.parameters_of(self, cell)` (the method's own, by its names).

    The architecture weights the supernet mixes with:
      arch_parameters(arch)             extra architecture parameters of one cell type, {name: initial value};
                                        the supernet registers them for each cell type (NAME_normal, ...)
      op_weights(alphas)                each edge's op mixture from its op parameters (DARTS: softmax)
      edge_weights(cell, arch)          each edge's weight in a cell type, from the method's own parameters
    A search step:
      set_epoch(epoch, epochs)          schedules; epochs count from 0
      hold_at_end(epochs)               the schedules' values once a search of `epochs` epochs has ended,
                                        held while DARTS-PT fine-tunes (default: its last epoch's)
      transform(weights, phase, arch)   the weights a phase mixes with: 'alpha' (the architecture step),
                                        'weights' (the weight step) or 'eval' (the validation pass)
      perturb(weights, loss_of, arch)   the weight step's weights, perturbed; loss_of(weights) is its loss
      regularisers(phase, arch)         named loss terms added in 'alpha' or 'weights' (in the weight step
                                        they are logged but move no weight)
      frozen(arch)                      architecture parameters held still this epoch
    The derived cell:
      edge_strength(strength, cell, arch)  how strongly each edge competes for its node's two inputs
                                           (DARTS: its best non-`none` op weight times its edge weight)
    Logging:
      logged(arch)                      values for the log and metrics.jsonl, every epoch

    `add_arguments(parser)` adds the method's flags, and the constructor takes their values by name (it may
    also read other flags of train_search.py, such as partial_channels). `presets` maps a --method name to
    the paper's settings, and `space_presets` what differs from them on another search space (a preset
    ranks above the search space's own defaults); any flag typed on the command line still wins. `switch`
    names the flag that turns the method on, for messages."""

    presets = {}
    space_presets = {}  # {preset name: {search space: settings}}: where a paper's code differs by space
    switch = ''
    op_weights_sum_to_one = True  # what op_weights gives: each edge's mixture sums to one (softmax)
    generator = None  # the source of a method's random draws, the same on every rank (set by the search)
    replaces_arch_weight_decay = False  # the method's regulariser stands in for Adam's weight decay of the architecture

    @staticmethod
    def add_arguments(parser):
        """The method's flags, in a group of their own."""

    def active(self):
        """Whether the flags switch the method on."""
        return True

    def arch_parameters(self, arch):
        return {}

    def op_weights(self, alphas):
        return F.softmax(alphas, dim=-1)

    def edge_weights(self, cell, arch):
        return None

    def set_epoch(self, epoch, epochs):
        pass

    def hold_at_end(self, epochs):
        self.set_epoch(epochs - 1, epochs)

    def transform(self, weights, phase, arch):
        return weights

    def perturb(self, weights, loss_of, arch):
        return weights

    def regularisers(self, phase, arch):
        return {}

    def frozen(self, arch):
        return set()

    def edge_strength(self, strength, cell, arch):
        return strength

    def logged(self, arch):
        return {}


# Hooks whose results do not compose: two methods that both define one cannot search together.
EXCLUSIVE_HOOKS = {'op_weights': 'define the op weights', 'edge_weights': 'define the edge weights',
                   'transform': 'replace the weights a phase mixes with',
                   'edge_strength': 'choose the edges of the derived cell'}


def overrides(method, hook):
    return getattr(type(method), hook) is not getattr(Method, hook)


def check_compatible(methods):
    """Two methods cannot both own a hook whose result is one value, such as the edge weights."""
    for hook, what in EXCLUSIVE_HOOKS.items():
        owners = [method for method in methods if overrides(method, hook)]
        if len(owners) > 1:
            raise UserError(f'{owners[0].switch} and {owners[1].switch} both {what}; use one of them')


class Methods(list):
    """The methods of one search, in the order their hooks apply, as the supernet takes them: a list that
    also names the method owning each hook whose result is one value (the op weights, the edge weights, the
    derived cell's edge strengths), or DARTS's defaults where none does. Two owners of one are refused."""

    def __init__(self, methods=()):
        super().__init__(methods)
        check_compatible(self)

    def owner(self, hook):
        return next((method for method in self if overrides(method, hook)), Method())


# The papers whose changes to DARTS are options of the supernet or of the search, not a method class: their
# presets alone. DARTS itself; alpha-DARTS's channel attention (--alpha_attention) and Att-DARTS's attention
# mixtures (--location) change what an edge computes, so they are options of the supernet (model_search.py);
# P-DARTS's stages are the search's (progressive.py).
PAPER_PRESETS = {
    'darts': {},
    'alpha_darts': dict(alpha_attention=True, partial_channels=4, edge_norm=True, primitives='alpha_darts',
                        warmup_epochs=15, learning_rate_min=0.0, arch_learning_rate=6e-4, epochs=80),
    'att_darts': dict(location='after_every'),
    # chenxin061/pdarts b880e87, train_search.py: its settings, num_to_keep [5, 3], add_layers [0, 6, 12], dropout
    # rates 0.0, 0.4, 0.7, and clip_grad_norm_(arch_parameters(), args.grad_clip = 5).
    'pdarts': dict(stage_layers=(5, 11, 17), stage_keep=(5, 3), skip_dropout=(0.0, 0.4, 0.7), epochs=25,
                   warmup_epochs=10, batch_size=96, learning_rate_min=0.0, arch_learning_rate=6e-4, max_skip=2,
                   arch_grad_clip=5.0),
    # automl/RobustDARTS 3dec3fe: DARTS-ES, --early_stop 1 of src/search/args.py (window 5, factor 1.3, es_start_epoch
    # 10, delta 4, early_stopping.py's defaults), the eigenvalue every 2 epochs and second order, as its
    # scripts/DARTS_search.sh searches (--report_freq_hessian 2 --unrolled); DARTS-ADA as its
    # scripts/DARTS-ADA_search.sh (--early_stop 3 --mul_factor 10 --max_weight_decay 0.03 --extra_rollback_epochs 0).
    'darts_es': dict(early_stop='es', hessian_eigenvalue=2, unrolled=True),
    'darts_ada': dict(early_stop='ada', hessian_eigenvalue=2, unrolled=True, ada_factor=10.0,
                      ada_max_weight_decay=0.03),
    # RobustDARTS's L2: a larger weight decay of w, the largest of its grid 3e-4 * 3^k (scripts/start_search.sh);
    # the paper picks the best of the grid by validation error. Second order, as its scripts/DARTS_search.sh.
    'rdarts_l2': dict(weight_decay=243e-4, unrolled=True),
}


def presets(search_space='darts'):
    """Every --method name and its settings on `search_space`: the methods' presets and PAPER_PRESETS."""
    return {**PAPER_PRESETS, **{name: {**settings, **method_class.space_presets.get(name, {}).get(search_space, {})}
                                for method_class in REGISTRY for name, settings in method_class.presets.items()}}


def add_arguments(parser):
    for method_class in REGISTRY:
        method_class.add_arguments(parser)


def fit_warmup(method, epochs, warmup_epochs, typed, default_epochs, search_space='darts', fix_alpha=False):
    """(warm-up epochs, what to tell the user). A preset's warm-up (PC-DARTS: 15 of 50 epochs) would freeze
    the architecture for the whole of a short run; unless --warmup_epochs was typed, it shrinks with the
    run, keeping the paper's share, and at least one epoch trains the architecture. With `fix_alpha` the
    whole search is a warm-up."""
    if fix_alpha:
        return epochs, ["--fix_alpha: the architecture weights keep their initial values (DARTS-PT's fixed alpha)"]
    if warmup_epochs < epochs:
        return warmup_epochs, []
    if typed:
        return warmup_epochs, [f'warning: the architecture will not train, because --warmup_epochs {warmup_epochs} '
                               f'keeps it frozen for all {epochs} epochs']
    paper_epochs = presets(search_space)[method].get('epochs', default_epochs)
    warmup = min(round(epochs * warmup_epochs / paper_epochs), epochs - 1)
    return warmup, [f'{method} freezes the architecture for {warmup_epochs} of its {paper_epochs} epochs; this run '
                    f'of {epochs} keeps it frozen for {warmup} (the same share; --warmup_epochs sets it)']


def build(options):
    """The Methods that `options` (flag name -> value) switch on, each given the values it takes."""
    methods = []
    for method_class in REGISTRY:
        names = inspect.signature(method_class).parameters
        method = method_class(**{name: options[name] for name in names if name in options})
        if method.active():
            methods.append(method)
    return Methods(methods)


# ---------------------------------------------------------------------------------------------
# The methods of the seed papers.

@register
class EdgeNormalization(Method):
    """PC-DARTS's edge normalisation (Xu et al., ICLR 2020): one parameter beta per edge, softmaxed over the
    edges of each node; it multiplies the edge's output and its strength when the cell is derived. On by
    default with partial channels, whose sampling noise it steadies. Partial channels themselves change
    what an edge computes, so they are an option of the supernet (--partial_channels)."""
    presets = {'pc_darts': dict(partial_channels=4, edge_norm=True, batch_size=256, learning_rate=0.1,
                                learning_rate_min=0.0, arch_learning_rate=6e-4, warmup_epochs=15),
               # yuhuixu1993/PC-DARTS b74702f, train_search_imagenet.py and model_search_imagenet.py (K = 2), on its
               # class-balanced 10% and 2.5% of train/; 8 GPUs there, so the batch of 1024 is theirs in all. Its
               # architecture step clips the architecture's gradient at --grad_clip (5), which its CIFAR one does not.
               'pc_darts_imagenet': dict(dataset='imagenet', partial_channels=2, edge_norm=True, batch_size=1024,
                                         learning_rate=0.5, learning_rate_min=0.0, lr_ramp_epochs=5,
                                         arch_learning_rate=6e-3, warmup_epochs=35, train_subset=0.1,
                                         arch_subset=0.025, arch_grad_clip=5.0)}
    switch = '--edge_norm (on by default with --partial_channels or --alpha_attention)'

    def __init__(self, edge_norm=None, partial_channels=1, alpha_attention=False, stage_partial_channels=()):
        searched_partially = partial_channels > 1 or any(k > 1 for k in stage_partial_channels or ())
        self.on = edge_norm if edge_norm is not None else searched_partially or alpha_attention

    @staticmethod
    def add_arguments(parser):
        group = parser.add_argument_group('edge normalisation (PC-DARTS)')
        group.add_argument('--edge_norm', dest='edge_norm', action='store_const', const=True, default=None,
                           help='edge normalisation (default: on with partial channels or alpha-attention)')
        group.add_argument('--no_edge_norm', dest='edge_norm', action='store_const', const=False,
                           help='no edge normalisation')

    def active(self):
        return self.on

    def arch_parameters(self, arch):
        return {'betas': 1e-3 * torch.randn(arch.net.num_edges)}

    def edge_weights(self, cell, arch):
        betas = arch.parameters_of(self, cell)['betas']
        return torch.cat([F.softmax(betas[rows], dim=-1) for rows in arch.net.node_slices()])


@register
class DiscretizationAware(Method):
    """DADARTS's options: the hard-discretized cell in the weight step (hd_on_weights), differentiable top-k
    masks whose temperature may rise linearly (topk_on_alphas, topk_on_weights), and the discretization
    loss (dal_on_alphas, dal_on_weights)."""
    presets = {'dadarts': dict(dal_on_alphas=True, topk_on_alphas=True, linear_temperature_increase=True,
                               linear_temperature_max=200.0, hd_on_weights=True)}
    switch = '--hd_on_weights, --topk_on_* or --dal_on_*'

    def __init__(self, hd_on_weights=False, topk_on_alphas=False, topk_on_weights=False, temperature=1.0,
                 linear_temperature_increase=False, linear_temperature_max=200.0, dal_on_alphas=False,
                 dal_on_weights=False, dal_factor=1.0, dal_starting_epoch=0):
        self.hd_on_weights, self.topk = hd_on_weights, {'alpha': topk_on_alphas, 'weights': topk_on_weights,
                                                        'eval': topk_on_weights}
        self.base_temperature, self.temperature = temperature, temperature
        self.linear_temperature_increase, self.linear_temperature_max = linear_temperature_increase, \
            linear_temperature_max
        self.dal = {'alpha': dal_on_alphas, 'weights': dal_on_weights}
        self.dal_factor, self.dal_starting_epoch, self.epoch = dal_factor, dal_starting_epoch, 0

    @staticmethod
    def add_arguments(parser):
        """The single-dash spellings of the DADARTS seed work too."""
        group = parser.add_argument_group('discretization-aware search (DADARTS)')
        flag = lambda name, **kw: group.add_argument(f'--{name}', f'-{name}', **kw)
        flag('hd_on_weights', action='store_true', help='the weight step and the validation pass use the '
                                                        'hard-discretized cell (two edges per node, one op each)')
        flag('topk_on_alphas', action='store_true', help='the architecture step uses differentiable top-k masked '
                                                         'weights')
        flag('topk_on_weights', action='store_true', help='the weight step uses differentiable top-k masked weights')
        flag('temperature', type=float, default=1.0, help='top-k temperature when it does not increase')
        flag('linear_temperature_increase', action='store_true',
             help='raise the top-k temperature linearly: max(1, linear_temperature_max * epoch / epochs)')
        flag('linear_temperature_max', type=float, default=200.0, help='final top-k temperature')
        flag('dal_on_alphas', action='store_true',
             help='add the discretization loss (MSE between soft and hard weights) to the architecture step')
        flag('dal_on_weights', action='store_true',
             help='add the discretization loss to the weight step (it depends on the architecture only, so it is '
                  'reported there but moves no weight)')
        flag('dal_factor', type=float, default=1.0, help='weight of the discretization loss')
        flag('dal_starting_epoch', type=int, default=0, help='first epoch (from 0) with the discretization loss')

    def active(self):
        return self.hd_on_weights or any(self.topk.values()) or any(self.dal.values())

    def set_epoch(self, epoch, epochs):
        self.epoch = epoch
        self.temperature = discretization_aware.linear_temperature(epoch, epochs, self.linear_temperature_max) \
            if self.linear_temperature_increase else self.base_temperature

    def transform(self, weights, phase, arch):
        if phase != 'alpha' and self.hd_on_weights:
            return hard_weights(weights, arch)
        if self.topk[phase]:
            return {cell: w.replace(ops=discretization_aware.topk_ops(w.ops, arch.net, self.temperature))
                    for cell, w in weights.items()}
        return weights

    def regularisers(self, phase, arch):
        if not self.dal[phase] or self.epoch < self.dal_starting_epoch:
            return {}
        total = 0
        for weights in arch.weights().values():
            hard = discretization_aware.hard_ops(weights, arch.net)
            total = total + discretization_aware.dal_loss(weights.ops, hard, arch.net.node_slices())
        return {'dal': self.dal_factor * total}

    def logged(self, arch):
        return {'temperature': self.temperature}


def hard_weights(weights, arch):
    """The hard-discretized cells (DARTS: per node the two strongest edges with weight 1 on their best op;
    NAS-Bench-201: every edge's best op), and which ops and edges are worth computing: `none` never is.
    Knowing them takes one transfer to the host for all cell types, the price of computing 8 ops a cell
    instead of all of them."""
    hard = {cell: discretization_aware.hard_ops(w, arch.net) for cell, w in weights.items()}
    on_host = torch.stack(list(hard.values())).cpu().tolist()
    result = {}
    for (cell, w), rows in zip(weights.items(), on_host):
        active = [[i for i, value in enumerate(row) if value and i != arch.net.none_index] for row in rows]
        result[cell] = w.replace(ops=hard[cell], edges=hard[cell].sum(dim=1), active=active)
    return result


@register
class DA2S(Method):
    """DA2S: sharpened op weights softmax(f(alpha)), edge parameters beta for every node with more than two
    inputs (a node with n inputs weights them by n * softmax(min(beta, 1))), and the loss
    lambda * r(e) * (q(e) * H_ops + edge_factor * L_edges) in both steps. The op parameters stay still until
    the entropy term starts, and the derived cell takes each node's two largest betas. Where every node
    keeps all its inputs (NAS-Bench-201) there are no betas and no edge term: only the sharpened op
    weights and their entropy."""
    presets = {'da2s': dict(da2s=True, edge_norm=False)}
    switch = '--da2s'

    def __init__(self, da2s=False, da2s_weight=0.1, da2s_edge_factor=4.0, da2s_alpha_start=8):
        self.on, self.weight, self.edge_factor, self.alpha_start = da2s, da2s_weight, da2s_edge_factor, \
            da2s_alpha_start
        self.epoch, self.epochs = 0, 1

    @staticmethod
    def add_arguments(parser):
        group = parser.add_argument_group('discretization-aware architecture search (DA2S)')
        flag = lambda name, **kw: group.add_argument(f'--{name}', f'-{name}', **kw)
        flag('da2s', action='store_true', help="DA2S: sharpened op weights, per-node edge parameters and DA2S's loss")
        flag('da2s_weight', type=float, default=0.1, help='DA2S: weight lambda of its loss')
        flag('da2s_edge_factor', type=float, default=4.0, help='DA2S: weight of the edge term inside its loss')
        flag('da2s_alpha_start', type=int, default=8,
             help='DA2S: epoch (from 1) at which the op parameters start to learn and the entropy term starts')

    def active(self):
        return self.on

    @staticmethod
    def beta_slices(arch):
        """Its betas: one per input of each node with more than two inputs (nodes 1 onwards)."""
        return [slice(rows.start - 2, rows.stop - 2) for rows in arch.net.node_slices()[1:]]

    def arch_parameters(self, arch):
        if not arch.net.chooses_edges:
            return {}
        return {'betas': torch.cat([discretization_aware.da2s_initial_betas(rows.stop - rows.start)
                                    for rows in arch.net.node_slices()[1:]])}

    def op_weights(self, alphas):
        return discretization_aware.da2s_op_weights(alphas)

    def edge_weights(self, cell, arch):
        betas = arch.parameters_of(self, cell).get('betas')
        if betas is None:
            return None
        return torch.cat([betas.new_ones(2)] + [discretization_aware.da2s_edge_weights(betas[rows])
                                                for rows in self.beta_slices(arch)])

    def set_epoch(self, epoch, epochs):
        self.epoch, self.epochs = epoch, epochs

    def regularisers(self, phase, arch):
        alphas = [arch.net.candidate_values(cell, arch.op_parameters(cell)) for cell in arch.net.cell_types]
        betas = [arch.parameters_of(self, cell)['betas'][rows] for cell in arch.net.cell_types
                 if 'betas' in arch.parameters_of(self, cell) for rows in self.beta_slices(arch)]
        loss = discretization_aware.da2s_loss(alphas, betas, self.epoch + 1, self.epochs, self.weight, self.edge_factor,
                                        self.alpha_start)
        return {'da2s_ops': loss.op_term, 'da2s_edges': loss.edge_term}

    def frozen(self, arch):
        """alpha's learning rate is 0 until the entropy term starts (epochs counted from 1)."""
        if self.epoch + 1 < self.alpha_start:
            return {arch.op_parameters(cell) for cell in arch.net.cell_types}
        return set()

    def edge_strength(self, strength, cell, arch):
        return torch.cat([strength[:2], arch.parameters_of(self, cell)['betas'].detach().float().cpu()])
