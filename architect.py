"""The architecture step of the bilevel optimisation (DARTS, section 2.3) and the search objective.

`SearchObjective` decides, for each phase of a search step, which architecture weights the supernet
mixes with and which extra losses apply: 'alpha' (the architecture step), 'weights' (the weight step)
and 'eval' (the validation pass). `Architect` updates the architecture parameters with Adam, from
the first-order gradient or the second-order (unrolled) one.
"""
import torch
from torch.func import functional_call


class SearchObjective:
    """Plain DARTS: soft weights in every phase, cross-entropy only."""

    def __init__(self, model):
        self.model = model
        self.epoch, self.epochs = 0, 1

    def set_epoch(self, epoch, epochs):
        self.epoch, self.epochs = epoch, epochs

    def arch_weights(self, phase):
        if phase == 'alpha':
            return self.model.arch_weights()
        with torch.no_grad():  # the weight step and evaluation treat the architecture as constant
            return self.model.arch_weights()

    def extra_losses(self, phase):
        """Named loss terms added to the cross-entropy in `phase` (none for plain DARTS)."""
        return {}

    def loss(self, x, target, phase, params=None):
        """(total loss, logits, {term: value}) for a batch; `params` replaces the weights (unrolled step)."""
        weights = self.arch_weights(phase)
        if params is None:
            logits = self.model(x, weights)
        else:
            logits = functional_call(self.model, params, (x,), {'weights': weights})
        loss = self.model._criterion(logits.float(), target)
        terms = self.extra_losses(phase)
        for value in terms.values():
            loss = loss + value
        return loss, logits, terms


class Architect:
    """Adam on the architecture parameters (betas 0.5, 0.999), as DARTS."""

    def __init__(self, model, objective, network_momentum, network_weight_decay, arch_learning_rate,
                 arch_weight_decay):
        self.model = model
        self.objective = objective
        self.network_momentum = network_momentum
        self.network_weight_decay = network_weight_decay
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=arch_learning_rate, betas=(0.5, 0.999),
                                          weight_decay=arch_weight_decay)
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
        for parameter, grad in zip(arch, grads):
            parameter.grad = torch.zeros_like(parameter) if grad is None else grad
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
        with torch.no_grad():
            for saved, w, v in zip(self._backup, weights, vector):
                w.copy_(saved).sub_(eps * v)
        loss, _, _ = self.objective.loss(x, target, 'alpha')
        grads_minus = torch.autograd.grad(loss, arch, allow_unused=True)
        with torch.no_grad():
            for saved, w in zip(self._backup, weights):
                w.copy_(saved)
        return [torch.zeros_like(p) if gp is None else (gp - gm) / (2 * eps)
                for p, gp, gm in zip(arch, grads_plus, grads_minus)]
