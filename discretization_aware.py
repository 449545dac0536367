"""Discretization-aware search: hard discretization, differentiable top-k, DADARTS's loss and DA2S's loss.

Every function takes an E × n_ops matrix of one cell type, edges ordered node by node and, within a
node, by input index (node i has i + 2 inputs). "Weights" are op weights after softmax. All of it is
tensor arithmetic on the caller's device: nothing here reads a value back to the host.
"""
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from derivation import INPUTS_PER_NODE, best_ops, node_slices, strongest_edges

DA2S_EDGE_COUNT_WEIGHT = 0.2  # DA2S's weight of the (Σ active β − 2)² term


def _without_none(weights, none_index):
    """Weights with the `none` column removed (none is never a candidate to keep)."""
    if none_index is None:
        return weights
    return torch.cat([weights[:, :none_index], weights[:, none_index + 1:]], dim=1)


def _with_none(weights, none_index):
    """Put back an all-zero `none` column at none_index."""
    if none_index is None:
        return weights
    zeros = weights.new_zeros(weights.shape[0], 1)
    return torch.cat([weights[:, :none_index], zeros, weights[:, none_index:]], dim=1)


def hard_discretize(weights, steps, none_index=0, edge_strength=None):
    """HD(w)[e, o] = 1 if e is among its node's 2 strongest edges and o = argmax_{o ≠ none} w[e], else 0.

    Edge strength = best non-none op weight (× edge_strength[e] under edge normalisation): the genotype's
    rule (derivation.py), ties included. The result is a constant: no gradient flows through it.
    """
    weights = weights.detach()
    best = best_ops(weights, none_index)
    best_weight = weights.gather(1, best.unsqueeze(1)).squeeze(1)
    strength = best_weight if edge_strength is None else best_weight * edge_strength.detach()
    kept_edges = strongest_edges(strength, node_slices(steps)).flatten()
    # scatter, unlike one_hot or boolean indexing, never waits on the device to learn a size
    edge_kept = torch.zeros_like(strength).scatter_(0, kept_edges, 1.0)
    best_one_hot = torch.zeros_like(weights).scatter_(1, best.unsqueeze(1), 1.0)
    return best_one_hot * edge_kept.unsqueeze(1)


def one_hot_best(weights):
    """1 on each row's largest weight (ties to the lower index), 0 elsewhere: NAS-Bench-201's hard
    discretization, `none` included."""
    weights = weights.detach()
    return torch.zeros_like(weights).scatter_(1, best_ops(weights).unsqueeze(1), 1.0)


def topk_mask(values, k, temperature, dim=-1):
    """m_i = sigmoid(T · (x_i − τ)), τ = (k-th largest + (k+1)-th largest) / 2 along dim.

    τ is detached: it only says where the hard top-k boundary lies, so each entry's gradient comes from
    its own distance to that boundary, as if the boundary were fixed. All ones when k ≥ size.
    """
    if k >= values.shape[dim]:
        return torch.ones_like(values)
    largest = values.detach().topk(k + 1, dim=dim).values
    threshold = (largest.narrow(dim, k - 1, 1) + largest.narrow(dim, k, 1)) / 2
    return torch.sigmoid(temperature * (values - threshold))


def _node_topk_mask(node_weights, temperature):
    """Top-2 mask over all (edge, op) entries of one node, in the node's edges × ops shape."""
    return topk_mask(node_weights.flatten(), INPUTS_PER_NODE, temperature).view_as(node_weights)


def differentiable_topk(weights, steps, temperature, none_index=0):
    """w ⊙ m_edge ⊙ m_node: m_edge = top-1 mask over each edge's ops, m_node = top-2 mask over a node's entries.

    `none` takes no part and its column comes back zero: hard_discretize and genotype derivation never
    keep none, so as T grows the masked weights approach the same structure (two edges, one real op
    each), and none (which outputs zero anyway) cannot take a node's slot by growing its weight.
    """
    candidates = _without_none(weights, none_index)
    edge_mask = topk_mask(candidates, 1, temperature, dim=1)
    node_mask = torch.cat([_node_topk_mask(candidates[rows], temperature) for rows in node_slices(steps)])
    return _with_none(candidates * edge_mask * node_mask, none_index)


def hard_ops(weights, net):
    """The hard discretization of one cell type's CellWeights in supernet `net`'s cell: per node of the DARTS
    cell the two strongest edges with weight 1 on their best non-`none` op; where every node keeps all its
    inputs (NAS-Bench-201) weight 1 on each edge's best op, `none` included."""
    if net.chooses_edges:
        return hard_discretize(weights.ops, net.steps, net.none_index, weights.edges)
    return one_hot_best(weights.ops)


def topk_ops(ops, net, temperature):
    """The differentiable top-k of one cell type's op weights in supernet `net`'s cell: top-1 over each edge's
    ops and, in the DARTS cell, top-2 over each node's (edge, op) weights; where every node keeps all its
    inputs, top-1 over each edge's ops, `none` included."""
    if net.chooses_edges:
        return differentiable_topk(ops, net.steps, temperature, net.none_index)
    return ops * topk_mask(ops, 1, temperature, dim=1)


def linear_temperature(epoch, epochs, t_max):
    """T = max(1, T_max · epoch / epochs), epoch counted from 0 (the last epoch gets T_max · (E − 1) / E)."""
    return max(1.0, t_max * epoch / epochs)


def dal_loss(weights, hard_weights, slices):
    """DADARTS's discretization loss: mean over nodes of mean((w_node − HD(w)_node)²); `slices` are the
    nodes' rows (`node_slices(steps)` in the DARTS cell)."""
    return torch.stack([F.mse_loss(weights[rows], hard_weights[rows]) for rows in slices]).mean()


def da2s_sharpen(alpha):
    """f(t) = (2t)³ where 2t < −1, else 2t: weak ops are pushed down much harder than strong ones move."""
    doubled = 2 * alpha
    return torch.where(doubled < -1, doubled ** 3, doubled)


def da2s_op_weights(alpha):
    """DA2S's op weights: softmax(f(α)) over each edge's ops."""
    return torch.softmax(da2s_sharpen(alpha), dim=-1)


def da2s_initial_betas(n_inputs, noise=1e-3, generator=None):
    """β_j = 2/n + noise · N(0, 1): n edge parameters that sum to about 2, i.e. two inputs' worth."""
    return INPUTS_PER_NODE / n_inputs + noise * torch.randn(n_inputs, generator=generator)


def da2s_clamp(beta):
    """min(β, 1): DA2S caps each edge parameter at 1 before use."""
    return beta.clamp(max=1)


def da2s_edge_weights(beta):
    """n · softmax(min(β, 1)) for a node's n edges, so that an average edge keeps weight 1."""
    return beta.shape[-1] * torch.softmax(da2s_clamp(beta), dim=-1)


def _entropy(logits):
    """H(softmax(logits)) summed over all rows, from log-probabilities so that tiny ones give 0, not NaN."""
    log_probs = torch.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs).sum()


def da2s_op_entropy(alphas_list):
    """H_ops = Σ over cell types and edges of H(softmax(f(α_edge)))."""
    return torch.stack([_entropy(da2s_sharpen(alphas)) for alphas in alphas_list]).sum()


def da2s_edge_loss(betas_list):
    """L_edges = Σ_nodes [0.2 · (Σ_j relu(min(β_j, 1)) − 2)² + H(softmax(min(β, 1)))].

    "The positive clamped β" is read as the positive parts of the clamped values: edges pushed below
    zero count as switched off, so the square asks for two edges' worth of positive weight per node.
    """
    return torch.stack([
        DA2S_EDGE_COUNT_WEIGHT * (F.relu(da2s_clamp(beta)).sum() - INPUTS_PER_NODE) ** 2
        + _entropy(da2s_clamp(beta)) for beta in betas_list]).sum()


def da2s_ramp(epoch, epochs):
    """r(e) = (e − 1) / (E − 1), e counted from 1 (pass the loop's epoch + 1); 1 when E = 1."""
    if epochs <= 1:
        return 1.0
    return (epoch - 1) / (epochs - 1)


def da2s_entropy_schedule(epoch, epochs, start=8):
    """q(e) = 0 for e < start, else log(e − start + 1) / log(E − start); e counted from 1.

    When E − start ≤ 1 the log ratio is undefined, so q = 1 from `start` on.
    """
    if epoch < start:
        return 0.0
    if epochs - start <= 1:
        return 1.0
    return math.log(epoch - start + 1) / math.log(epochs - start)


class DA2SLoss(NamedTuple):
    """DA2S's loss as its two terms, each logged: the op entropy's lambda * r(e) * q(e) * H_ops and the edges'
    lambda * r(e) * edge_factor * L_edges; ramp and entropy_factor are r(e) and q(e)."""

    op_term: torch.Tensor
    edge_term: torch.Tensor
    ramp: float
    entropy_factor: float

    @property
    def total(self):
        return self.op_term + self.edge_term


def da2s_loss(alphas_list, betas_list, epoch, epochs, weight=0.1, edge_factor=4.0, entropy_start=8):
    """lambda * r(e) * (q(e) * H_ops + edge_factor * L_edges), e counted from 1 (pass the loop's epoch + 1)."""
    op_entropy = da2s_op_entropy(alphas_list)
    # a cell with a single node has no node with more than two inputs, hence no beta
    edge_loss = da2s_edge_loss(betas_list) if betas_list else op_entropy.new_zeros(())
    ramp = da2s_ramp(epoch, epochs)
    entropy_factor = da2s_entropy_schedule(epoch, epochs, entropy_start)
    return DA2SLoss(weight * ramp * entropy_factor * op_entropy, weight * ramp * edge_factor * edge_loss, ramp,
                    entropy_factor)
