"""The architecture step of the bilevel optimisation (DARTS, section 2.3) and the search objective.

`SearchObjective` decides, for each phase of a search step, which architecture weights the supernet
mixes with and which extra losses apply: 'alpha' (the architecture step), 'weights' (the weight step)
and 'eval' (the validation pass). `Architect` updates the architecture parameters with Adam, from
the first-order gradient or the second-order (unrolled) one.
"""
from dataclasses import replace

import torch
from torch.func import functional_call

import discretization
import loop


def add_discretization_arguments(parser):
    """DADARTS's and DA2S's options; the single-dash spellings of the DADARTS seed work too."""
    group = parser.add_argument_group('discretization-aware search (DADARTS, DA2S)')
    flag = lambda name, **kw: group.add_argument(f'--{name}', f'-{name}', **kw)  # noqa: E731
    flag('hd_on_weights', action='store_true',
         help='the weight step and the validation pass use the hard-discretized cell (two edges per node, one op each)')
    flag('topk_on_alphas', action='store_true', help='the architecture step uses differentiable top-k masked weights')
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
    flag('da2s', action='store_true', help="DA2S: sharpened op weights, per-node edge parameters and DA2S's loss")
    flag('da2s_weight', type=float, default=0.1, help='DA2S: weight lambda of its loss')
    flag('da2s_edge_factor', type=float, default=4.0, help='DA2S: weight of the edge term inside its loss')
    flag('da2s_alpha_start', type=int, default=8,
         help='DA2S: epoch (from 1) at which the op parameters start to learn and the entropy term starts')


class SearchObjective:
    """Which architecture weights each phase mixes with, and which extra losses apply (SPEC section 5).

    Plain DARTS uses the soft weights everywhere. DADARTS's options: `hd_on_weights` (the weight step
    and the validation pass run the hard-discretized cell), `topk_on_alphas` / `topk_on_weights` (a
    differentiable top-k mask whose temperature may rise linearly), `dal_on_alphas` / `dal_on_weights`
    (a discretization loss). `da2s` adds DA2S's entropy and edge loss."""

    def __init__(self, model, hd_on_weights=False, topk_on_alphas=False, topk_on_weights=False, temperature=1.0,
                 linear_temperature_increase=False, linear_temperature_max=200.0, dal_on_alphas=False,
                 dal_on_weights=False, dal_factor=1.0, dal_starting_epoch=0, da2s=False, da2s_weight=0.1,
                 da2s_edge_factor=4.0, da2s_alpha_start=8, precision=None):
        self.model = model
        self.precision = precision or loop.Precision('off', torch.device('cpu'))
        self.hd_on_weights, self.topk_on_alphas, self.topk_on_weights = hd_on_weights, topk_on_alphas, topk_on_weights
        self.base_temperature, self.linear_temperature_max = temperature, linear_temperature_max
        self.linear_temperature_increase = linear_temperature_increase
        self.dal_on = {'alpha': dal_on_alphas, 'weights': dal_on_weights}
        self.dal_factor, self.dal_starting_epoch = dal_factor, dal_starting_epoch
        self.da2s, self.da2s_weight, self.da2s_edge_factor = da2s, da2s_weight, da2s_edge_factor
        self.da2s_alpha_start = da2s_alpha_start
        self.none_index = model.op_names.index('none') if 'none' in model.op_names else None
        self.set_epoch(0, 1)

    @classmethod
    def from_args(cls, model, args, precision=None):
        names = ('hd_on_weights', 'topk_on_alphas', 'topk_on_weights', 'temperature', 'linear_temperature_increase',
                 'linear_temperature_max', 'dal_on_alphas', 'dal_on_weights', 'dal_factor', 'dal_starting_epoch',
                 'da2s', 'da2s_weight', 'da2s_edge_factor', 'da2s_alpha_start')
        return cls(model, **{name: getattr(args, name) for name in names}, precision=precision)

    def set_epoch(self, epoch, epochs):
        """Epochs count from 0, as the search loop does; DA2S's schedules count from 1."""
        self.epoch, self.epochs = epoch, epochs
        self.temperature = discretization.linear_temperature(epoch, epochs, self.linear_temperature_max) \
            if self.linear_temperature_increase else self.base_temperature
        self.terms = {}

    def frozen_arch_parameters(self):
        """DA2S keeps the op parameters still until its entropy term starts."""
        if self.da2s and self.epoch + 1 < self.da2s_alpha_start:
            return {name for name, _ in self.model.named_arch_parameters() if not name.startswith('betas')}
        return set()

    # ----------------------------------------------------------------------------------------------

    def _hard(self, weights):
        ops = discretization.hard_discretize(weights.ops, self.model._steps, self.none_index, weights.edges)
        kept = ops.sum(dim=1)
        rows = ops.cpu()  # one transfer per step tells which ops and edges are worth computing
        active = [row.nonzero().flatten().tolist() for row in rows]
        return replace(weights, ops=ops, edges=kept, active=active)

    def _topk(self, weights):
        ops = discretization.differentiable_topk(weights.ops, self.model._steps, self.temperature, self.none_index)
        return replace(weights, ops=ops)

    def arch_weights(self, phase):
        if phase == 'alpha':
            weights = self.model.arch_weights()
            return {cell: self._topk(w) for cell, w in weights.items()} if self.topk_on_alphas else weights
        with torch.no_grad():  # the weight step and evaluation treat the architecture as constant
            weights = self.model.arch_weights()
            if self.hd_on_weights:
                return {cell: self._hard(w) for cell, w in weights.items()}
            if self.topk_on_weights:
                return {cell: self._topk(w) for cell, w in weights.items()}
            return weights

    def extra_losses(self, phase):
        """Named loss terms added to the cross-entropy in `phase`. In the weight step they depend on the
        architecture only, so they are reported there but move no weight."""
        terms = {}
        if phase == 'eval':
            return terms
        if self.dal_on[phase] and self.epoch >= self.dal_starting_epoch:
            total = 0
            for weights in self.model.arch_weights().values():
                hard = discretization.hard_discretize(weights.ops, self.model._steps, self.none_index, weights.edges)
                total = total + discretization.dal_loss(weights.ops, hard, self.model._steps)
            terms['dal'] = self.dal_factor * total
        if self.da2s:
            alphas = [self.model.alphas_normal, self.model.alphas_reduce]
            betas = [betas[s] for betas in (self.model.betas_normal, self.model.betas_reduce)
                     for s in self.model.da2s_beta_slices()]
            loss = discretization.da2s_loss(alphas, betas, self.epoch + 1, self.epochs, self.da2s_weight,
                                            self.da2s_edge_factor, self.da2s_alpha_start)
            scale = self.da2s_weight * loss.ramp
            terms.update(da2s_ops=scale * loss.entropy_factor * loss.op_entropy,
                         da2s_edges=scale * self.da2s_edge_factor * loss.edge_loss)
        if phase == 'weights':
            terms = {name: value.detach() for name, value in terms.items()}
        return terms

    def loss(self, x, target, phase, params=None):
        """(total loss, logits, {term: value}) for a batch; `params` replaces the weights (unrolled step)."""
        weights = self.arch_weights(phase)  # float32, outside autocast
        with self.precision.autocast():
            if params is None:
                logits = self.model(x, weights)
            else:
                logits = functional_call(self.model, params, (x,), {'weights': weights})
        loss = self.model._criterion(logits.float(), target)
        terms = self.extra_losses(phase)
        for name, value in terms.items():
            loss = loss + value
            self.terms.setdefault(f'{phase}_{name}', []).append(value.detach())
        return loss, logits, terms

    def summary(self):
        """The epoch's temperature and the mean of each loss term (one device sync, at epoch end)."""
        row = {'temperature': self.temperature}
        for name, values in self.terms.items():
            row[name] = torch.stack(values).mean().item()
        return row


class Architect:
    """Adam on the architecture parameters (betas 0.5, 0.999), as DARTS."""

    def __init__(self, model, objective, network_momentum, network_weight_decay, arch_learning_rate,
                 arch_weight_decay, gradient_sync=None):
        self.model = model
        self.objective = objective
        # With several processes every gradient is averaged over them, so all ranks take the same step.
        self.gradient_sync = gradient_sync or (lambda tensors: None)
        self.network_momentum = network_momentum
        self.network_weight_decay = network_weight_decay
        # One group per parameter, so that a method can hold some of them still (DA2S's early epochs).
        self.optimizer = torch.optim.Adam(
            [{'params': [p], 'name': name} for name, p in model.named_arch_parameters()],
            lr=arch_learning_rate, betas=(0.5, 0.999), weight_decay=arch_weight_decay)
        self.arch_learning_rate = arch_learning_rate
        self._backup = None

    def step(self, x_train, y_train, x_valid, y_valid, eta, network_optimizer, unrolled):
        """One architecture update; returns the validation loss (a tensor, no host sync)."""
        arch = self.model.arch_parameters()
        if unrolled:
            grads, loss = self.unrolled_gradients(x_train, y_train, x_valid, y_valid, eta, network_optimizer)
        else:
            loss, _, _ = self.objective.loss(x_valid, y_valid, 'alpha')
            # Only the architecture gradient is needed: autograd skips the weights' gradient kernels.
            grads = torch.autograd.grad(loss, arch, allow_unused=True)
            self.gradient_sync(grads)
        for parameter, grad in zip(arch, grads):
            parameter.grad = torch.zeros_like(parameter) if grad is None else grad
        frozen = self.objective.frozen_arch_parameters()
        for group in self.optimizer.param_groups:
            group['lr'] = 0.0 if group['name'] in frozen else self.arch_learning_rate
        self.optimizer.step()
        return loss.detach()

    def _named_weights(self):
        arch = {id(p) for p in self.model.arch_parameters()}
        return [(name, p) for name, p in self.model.named_parameters() if id(p) not in arch]

    def unrolled_gradients(self, x_train, y_train, x_valid, y_valid, eta, network_optimizer):
        """DARTS eq. 7: grad_alpha L_val(w', alpha) - eta * [grad_alpha L_train(w+) - grad_alpha L_train(w-)] / 2eps,
        with w' = w - eta * (grad_w L_train + momentum * buffer + weight_decay * w) and
        w+- = w +- eps * grad_w' L_val(w', alpha), eps = 0.01 / |grad_w' L_val|."""
        arch = self.model.arch_parameters()
        names, weights = zip(*self._named_weights())

        loss, _, _ = self.objective.loss(x_train, y_train, 'alpha')
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        self.gradient_sync(grads)
        unrolled = {}
        with torch.no_grad():
            for name, w, g in zip(names, weights, grads):
                direction = self.network_weight_decay * w if g is None else g + self.network_weight_decay * w
                buffer = network_optimizer.state.get(w, {}).get('momentum_buffer')
                if buffer is not None:
                    direction = direction + self.network_momentum * buffer
                unrolled[name] = (w - eta * direction).requires_grad_()

        val_loss, _, _ = self.objective.loss(x_valid, y_valid, 'alpha', params=unrolled)
        grads = torch.autograd.grad(val_loss, list(arch) + list(unrolled.values()), allow_unused=True)
        self.gradient_sync(grads)
        d_alpha = [torch.zeros_like(p) if g is None else g for p, g in zip(arch, grads[:len(arch)])]
        vector = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads[len(arch):])]
        del unrolled, grads

        implicit = self._hessian_vector_product(vector, weights, x_train, y_train)
        return [g - eta * h for g, h in zip(d_alpha, implicit)], val_loss

    def _hessian_vector_product(self, vector, weights, x, target, r=1e-2):
        """Central finite difference of grad_alpha L_train along `vector` in weight space. The weights
        are restored from a copy kept in reused buffers, so rounding never drifts them."""
        arch = self.model.arch_parameters()
        if self._backup is None or len(self._backup) != len(weights):
            self._backup = [torch.empty_like(w) for w in weights]
        with torch.no_grad():
            eps = r / torch.cat([v.flatten() for v in vector]).norm()
            for saved, w, v in zip(self._backup, weights, vector):
                saved.copy_(w)
                w.add_(eps * v)
        loss, _, _ = self.objective.loss(x, target, 'alpha')
        grads_plus = torch.autograd.grad(loss, arch, allow_unused=True)
        self.gradient_sync(grads_plus)
        with torch.no_grad():
            for saved, w, v in zip(self._backup, weights, vector):
                w.copy_(saved).sub_(eps * v)
        loss, _, _ = self.objective.loss(x, target, 'alpha')
        grads_minus = torch.autograd.grad(loss, arch, allow_unused=True)
        self.gradient_sync(grads_minus)
        with torch.no_grad():
            for saved, w in zip(self._backup, weights):
                w.copy_(saved)
        return [torch.zeros_like(p) if gp is None else (gp - gm) / (2 * eps)
                for p, gp, gm in zip(arch, grads_plus, grads_minus)]
