"""The architecture step of the bilevel optimisation (DARTS, section 2.3) and the search engine around it.

`SearchObjective` computes a search step's losses: for each phase, the architecture weights the supernet
mixes with and the regularisers that join the cross-entropy, as the search methods (methods.py) decide; it
holds the methods, with the architecture they search (architecture.Architecture).
`Architect` updates the architecture parameters with Adam, from the first-order gradient or the
second-order (unrolled) one.
"""
import contextlib

import torch
from torch.func import functional_call

import precision


class SearchObjective:
    """The engine of a search step. For each phase ('alpha': the architecture step, 'weights': the weight step,
    'eval': the validation pass) it asks the search methods of `arch` (architecture.Architecture; see
    methods.py) which architecture weights to mix with, how to perturb them in the weight step, and which
    regularisers join the cross-entropy; it averages what they log over the epoch. `model` is the supernet."""

    def __init__(self, arch, amp_autocast=contextlib.nullcontext, generator=None, weight_step_first=False):
        """`generator`: where the methods draw their random numbers (None: torch's global one); a search under
        torchrun gives every rank the same one, so that all ranks sample the same architecture.
        `weight_step_first`: a search step takes the weight step before the architecture step (GDAS's code)."""
        self.arch, self.model, self.methods = arch, arch.net, arch.methods
        self.weight_step_first = weight_step_first
        self.amp_autocast = amp_autocast
        self.generator = generator
        for method in self.methods:
            method.generator = generator
        self.set_epoch(0, 1)

    def set_epoch(self, epoch, epochs):
        """Epochs count from 0, as the search loop does."""
        for method in self.methods:
            method.set_epoch(epoch, epochs)
        self.terms = {}

    def hold_at_end(self, epochs):
        """The methods' schedules as a search of `epochs` epochs leaves them (DARTS-PT's fine-tuning)."""
        for method in self.methods:
            method.hold_at_end(epochs)
        self.terms = {}

    def frozen_arch_parameters(self):
        return set().union(*(method.frozen(self.arch) for method in self.methods))

    def arch_weights(self, phase):
        """The weights `phase` mixes with; the weight step and evaluation treat the architecture as constant."""
        with contextlib.nullcontext() if phase == 'alpha' else torch.no_grad():
            weights = self.arch.weights()
            for method in self.methods:
                weights = method.transform(weights, phase, self.arch)
        return weights

    def extra_losses(self, phase):
        """Named loss terms added to the cross-entropy in `phase`. In the weight step they depend on the
        architecture only, so they are reported there but move no weight."""
        if phase == 'eval':
            return {}
        terms = {}
        for method in self.methods:
            terms.update(method.regularisers(phase, self.arch))
        if phase == 'weights':
            terms = {name: value.detach() for name, value in terms.items()}
        return terms

    @contextlib.contextmanager
    def float32(self):
        """The passes inside run in float32 with TF32 off, whatever --amp says: the finite difference of the
        unrolled step perturbs each weight by about 1e-5 of itself, below the rounding of bf16 (and of TF32,
        which cuDNN's convolutions use by default on Ampere and later GPUs)."""
        amp_autocast = self.amp_autocast
        self.amp_autocast = contextlib.nullcontext
        try:
            with precision.exact_float32():
                yield
        finally:
            self.amp_autocast = amp_autocast

    def _cross_entropy(self, x, target, weights, params=None):
        with self.amp_autocast():
            if params is None:
                logits = self.model(x, weights)
            else:
                logits = functional_call(self.model, params, (x,), {'weights': weights})
        return self.model.criterion(logits.float(), target), logits

    def loss(self, x, target, phase, params=None):
        """(total loss, logits, {term: value}) for a batch; `params` replaces the weights (unrolled step)."""
        weights = self.arch_weights(phase)  # float32, outside autocast
        if phase == 'weights':
            for method in self.methods:
                weights = method.perturb(weights, lambda w: self._cross_entropy(x, target, w)[0], self.arch)
        loss, logits = self._cross_entropy(x, target, weights, params)
        terms = self.extra_losses(phase)
        for name, value in terms.items():
            loss = loss + value
            self.terms.setdefault(f'{phase}_{name}', []).append(value.detach())
        return loss, logits, terms

    def summary(self):
        """What the methods log and the epoch's mean of each loss term (one device sync, at epoch end)."""
        row = {}
        for method in self.methods:
            row.update(method.logged(self.arch))
        for name, values in self.terms.items():
            row[name] = torch.stack(values).mean().item()
        return row


class Architect:
    """Adam on the architecture parameters (betas `arch_beta1` and 0.999; DARTS: 0.5)."""

    def __init__(self, objective, network_momentum, network_weight_decay, arch_learning_rate,
                 arch_weight_decay, gradient_sync=None, arch_beta1=0.5, arch_grad_clip=0.0):
        self.model = model = objective.model
        self.objective = objective
        # With several processes every gradient is averaged over them, so all ranks take the same step.
        self.gradient_sync = gradient_sync or (lambda tensors, parameters: None)
        self.network_momentum = network_momentum
        self.network_weight_decay = network_weight_decay
        if any(method.replaces_arch_weight_decay for method in objective.methods):
            arch_weight_decay = 0.0  # DrNAS's KL regulariser
        # One group per parameter, so that a method can hold some of them still (DA2S's early epochs).
        self.optimizer = torch.optim.Adam(
            [{'params': [p], 'name': name} for name, p in model.named_arch_parameters()],
            lr=arch_learning_rate, betas=(arch_beta1, 0.999), weight_decay=arch_weight_decay)
        self.arch_learning_rate = arch_learning_rate
        self.arch_grad_clip = arch_grad_clip  # the gradient's norm over all architecture parameters; 0: none
        self._backup = None

    def step(self, x_train, y_train, x_valid, y_valid, eta, network_optimizer, unrolled):
        """One architecture update; returns the validation loss (a tensor, no host sync)."""
        arch = self.model.arch_parameters()
        if unrolled:
            with self.objective.float32():
                grads, loss = self.unrolled_gradients(x_train, y_train, x_valid, y_valid, eta, network_optimizer)
        else:
            loss, _, _ = self.objective.loss(x_valid, y_valid, 'alpha')
            # Only the architecture gradient is needed: autograd skips the weights' gradient kernels.
            grads = torch.autograd.grad(loss, arch, allow_unused=True)
            self.gradient_sync(grads, arch)
        for parameter, grad in zip(arch, grads):
            parameter.grad = torch.zeros_like(parameter) if grad is None else grad
        if self.arch_grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(arch, self.arch_grad_clip)
        frozen = {id(parameter) for parameter in self.objective.frozen_arch_parameters()}
        for group in self.optimizer.param_groups:
            group['lr'] = 0.0 if id(group['params'][0]) in frozen else self.arch_learning_rate
        self.optimizer.step()
        return loss.detach()

    def unrolled_gradients(self, x_train, y_train, x_valid, y_valid, eta, network_optimizer):
        """DARTS eq. 7: grad_alpha L_val(w', alpha) - eta * [grad_alpha L_train(w+) - grad_alpha L_train(w-)] / 2eps,
        with w' = w - eta * (grad_w L_train + momentum * buffer + weight_decay * w) and
        w+- = w +- eps * grad_w' L_val(w', alpha), eps = 0.01 / |grad_w' L_val|."""
        arch = self.model.arch_parameters()
        names, weights = zip(*self.model.named_network_weights())

        loss, _, _ = self.objective.loss(x_train, y_train, 'alpha')
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        self.gradient_sync(grads, weights)
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
        self.gradient_sync(grads, list(arch) + list(weights))
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
        self.gradient_sync(grads_plus, arch)
        with torch.no_grad():
            for saved, w, v in zip(self._backup, weights, vector):
                w.copy_(saved).sub_(eps * v)
        loss, _, _ = self.objective.loss(x, target, 'alpha')
        grads_minus = torch.autograd.grad(loss, arch, allow_unused=True)
        self.gradient_sync(grads_minus, arch)
        with torch.no_grad():
            for saved, w in zip(self._backup, weights):
                w.copy_(saved)
        return [torch.zeros_like(p) if gp is None else (gp - gm) / (2 * eps)
                for p, gp, gm in zip(arch, grads_plus, grads_minus)]
