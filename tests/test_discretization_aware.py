import itertools
import math

import pytest
import torch

from discretization_aware import (
    da2s_clamp,
    da2s_edge_loss,
    da2s_edge_weights,
    da2s_entropy_schedule,
    da2s_initial_betas,
    da2s_loss,
    da2s_op_entropy,
    da2s_op_weights,
    da2s_ramp,
    da2s_sharpen,
    dal_loss,
    differentiable_topk,
    hard_discretize,
    linear_temperature,
    node_slices,
    topk_mask,
)

STEPS, EDGES, N_OPS = 4, 14, 8  # DARTS's cell: 2 + 3 + 4 + 5 edges, 8 ops with none at column 0


def random_weights(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(EDGES, N_OPS, generator=generator), dim=-1)


def hard_topk(values, k):
    hard = torch.zeros_like(values)
    return hard.scatter_(-1, values.topk(k, dim=-1).indices, 1.0)


# Two nodes (2 + 3 edges), ops [none, a, b]; none is the largest weight on edges 0 and 3.
# Node 0: edge 0 best real op a (0.30), edge 1 best b (0.50) -> both kept (only two inputs).
# Node 1: edge 2 best b (0.45), edge 3 best a (0.20), edge 4 best a (0.40) -> edges 2 and 4.
HAND_WEIGHTS = torch.tensor([
    [0.60, 0.30, 0.10],
    [0.20, 0.30, 0.50],
    [0.10, 0.45, 0.45 + 1e-3],
    [0.70, 0.20, 0.10],
    [0.35, 0.40, 0.25],
])
HAND_ANSWER = torch.tensor([
    [0., 1., 0.],
    [0., 0., 1.],
    [0., 0., 1.],
    [0., 0., 0.],
    [0., 1., 0.],
])


def test_node_slices_cover_edges_in_node_chunks():
    slices = node_slices(STEPS)
    assert [(rows.start, rows.stop) for rows in slices] == [(0, 2), (2, 5), (5, 9), (9, 14)]


def test_hard_discretize_keeps_two_one_hot_edges_per_node_never_none():
    for seed in range(5):
        weights = random_weights(seed).requires_grad_()
        hard = hard_discretize(weights, STEPS)
        assert not hard.requires_grad and hard.dtype == weights.dtype
        assert set(hard.unique().tolist()) <= {0.0, 1.0}
        assert hard[:, 0].sum() == 0
        for rows in node_slices(STEPS):
            row_sums = hard[rows].sum(dim=1)
            assert (row_sums > 0).sum() == 2 and set(row_sums.tolist()) <= {0.0, 1.0}
            kept = row_sums > 0
            best_real_op = weights[rows][:, 1:].argmax(dim=1) + 1
            assert torch.equal(hard[rows][kept].argmax(dim=1), best_real_op[kept])


def test_hard_discretize_hand_set_answer():
    assert torch.equal(hard_discretize(HAND_WEIGHTS, steps=2), HAND_ANSWER)


def test_hard_discretize_without_none_column_may_pick_column_zero():
    hard = hard_discretize(HAND_WEIGHTS, steps=2, none_index=None)
    assert hard[0, 0] == 1 and hard[3, 0] == 1 and hard[4].sum() == 0


def test_edge_strength_changes_the_chosen_edges():
    # Edge 3 (best 0.20) loses to edge 2 (0.45) on op weight alone but wins at 3x the edge weight.
    edge_strength = torch.tensor([1.0, 1.0, 0.5, 3.0, 1.0])
    hard = hard_discretize(HAND_WEIGHTS, steps=2, edge_strength=edge_strength)
    assert torch.equal(hard.sum(dim=1), torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0]))
    assert hard[3, 1] == 1


def test_topk_mask_at_high_temperature_is_the_hard_mask():
    # Distinct values 0.1 apart, so that T = 1e4 saturates the sigmoid.
    values = torch.stack([torch.randperm(6, generator=torch.Generator().manual_seed(row)) for row in range(4)])
    values = values.float() * 0.1
    for k in (1, 2):
        torch.testing.assert_close(topk_mask(values, k, 1e4), hard_topk(values, k), atol=1e-4, rtol=0)
        torch.testing.assert_close(topk_mask(values.t(), k, 1e4, dim=0), hard_topk(values, k).t(), atol=1e-4, rtol=0)


def test_topk_mask_is_differentiable_at_finite_temperature():
    values = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    (topk_mask(values, 2, 1.0) * values).sum().backward()
    assert values.grad.abs().sum() > 0


def test_topk_mask_with_k_at_least_size_keeps_everything():
    values = torch.randn(3, 4)
    assert torch.equal(topk_mask(values, 4, 10.0), torch.ones(3, 4))
    assert torch.equal(topk_mask(values, 7, 10.0), torch.ones(3, 4))


def test_topk_mask_approaches_the_hard_mask_monotonically_in_temperature():
    values = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    hard = hard_topk(values, 2)
    distances = [(topk_mask(values, 2, temperature) - hard).abs() for temperature in (1.0, 10.0, 100.0, 1000.0)]
    for smaller_t, larger_t in itertools.pairwise(distances):
        assert (larger_t <= smaller_t).all() and larger_t.sum() < smaller_t.sum()


# Two nodes, ops [none, a, b, c]; distinct entries at least 0.02 apart. none is the largest entry of edges 0
# and 3 and must not be kept. Node 0: top-2 real entries (0, c)=0.40, (1, a)=0.35. Node 1: top-2 real entries
# (4, b)=0.50, (2, a)=0.30 -- on different edges, each that edge's best real op.
TOPK_WEIGHTS = torch.tensor([
    [0.45, 0.05, 0.10, 0.40],
    [0.12, 0.35, 0.28, 0.25],
    [0.22, 0.30, 0.26, 0.24],
    [0.90, 0.02, 0.04, 0.06],
    [0.08, 0.18, 0.50, 0.14],
])


def test_differentiable_topk_at_high_temperature_keeps_the_node_top_two():
    masked = differentiable_topk(TOPK_WEIGHTS, steps=2, temperature=1e4)
    kept = torch.zeros_like(TOPK_WEIGHTS)
    kept[0, 3] = kept[1, 1] = kept[4, 2] = kept[2, 1] = 1
    torch.testing.assert_close(masked, TOPK_WEIGHTS * kept, atol=1e-4, rtol=0)
    assert torch.equal(kept, hard_discretize(TOPK_WEIGHTS, steps=2))
    assert torch.equal(masked[:, 0], torch.zeros(5))


def test_differentiable_topk_is_differentiable_at_moderate_temperature():
    alphas = torch.randn(EDGES, N_OPS, generator=torch.Generator().manual_seed(2), requires_grad=True)
    masked = differentiable_topk(torch.softmax(alphas, dim=-1), STEPS, temperature=10.0)
    assert masked.shape == alphas.shape
    (masked * torch.randn(EDGES, N_OPS, generator=torch.Generator().manual_seed(3))).sum().backward()
    assert torch.isfinite(alphas.grad).all() and alphas.grad.abs().sum() > 0


def test_dal_loss_is_zero_when_discrete_and_positive_with_gradient_otherwise():
    hard = hard_discretize(random_weights(), STEPS)
    assert dal_loss(hard, hard, node_slices(STEPS)) == 0
    alphas = torch.randn(EDGES, N_OPS, generator=torch.Generator().manual_seed(4), requires_grad=True)
    weights = torch.softmax(alphas, dim=-1)
    loss = dal_loss(weights, hard_discretize(weights, STEPS), node_slices(STEPS))
    assert loss > 0
    loss.backward()
    assert alphas.grad.abs().sum() > 0


def test_dal_loss_averages_node_means():
    weights, hard = random_weights(5), hard_discretize(random_weights(5), STEPS)
    node_means = [((weights[rows] - hard[rows]) ** 2).mean() for rows in node_slices(STEPS)]
    torch.testing.assert_close(dal_loss(weights, hard, node_slices(STEPS)), torch.stack(node_means).mean())


def test_linear_temperature():
    epochs = 50
    assert linear_temperature(0, epochs, 200) == 1
    assert linear_temperature(epochs // 2, epochs, 200) == 100
    assert linear_temperature(epochs, epochs, 200) == 200
    assert linear_temperature(10, epochs, 200) - linear_temperature(9, epochs, 200) == pytest.approx(4)
    assert all(linear_temperature(epoch, epochs, 20) >= 1 for epoch in range(epochs))
    assert linear_temperature(1, epochs, 20) == 1


def test_da2s_sharpen_and_op_weights():
    alpha = torch.tensor([0.2, -0.5, -1.0, 1.0])
    torch.testing.assert_close(da2s_sharpen(alpha), torch.tensor([0.4, -1.0, -8.0, 2.0]))
    weights = da2s_op_weights(torch.randn(EDGES, N_OPS))
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(EDGES))


def test_da2s_initial_betas_sum_to_about_two():
    for n_inputs in (3, 4, 5):
        betas = da2s_initial_betas(n_inputs, generator=torch.Generator().manual_seed(n_inputs))
        assert betas.shape == (n_inputs,)
        assert betas.sum().item() == pytest.approx(2, abs=1e-2)
        torch.testing.assert_close(betas, torch.full((n_inputs,), 2 / n_inputs), atol=1e-2, rtol=0)


def test_da2s_edge_weights_average_one_and_clamp():
    beta = torch.tensor([3.0, 0.5, -1.0, 0.2])
    assert torch.equal(da2s_clamp(beta), torch.tensor([1.0, 0.5, -1.0, 0.2]))
    assert da2s_edge_weights(beta).sum().item() == pytest.approx(4)
    torch.testing.assert_close(da2s_edge_weights(beta), da2s_edge_weights(torch.tensor([1.0, 0.5, -1.0, 0.2])))


def test_da2s_op_entropy_is_smallest_for_one_hot_alphas():
    peaked = torch.full((EDGES, N_OPS), -5.0)
    peaked[:, 3] = 5.0
    uniform = torch.zeros(EDGES, N_OPS)
    random = torch.randn(EDGES, N_OPS, generator=torch.Generator().manual_seed(6))
    entropies = {name: da2s_op_entropy([alphas, alphas]) for name, alphas in
                 (('peaked', peaked), ('uniform', uniform), ('random', random))}
    assert entropies['peaked'] < 1e-3
    assert entropies['peaked'] < entropies['random'] < entropies['uniform']
    torch.testing.assert_close(entropies['uniform'], torch.tensor(2 * EDGES * math.log(N_OPS)))


def test_da2s_edge_loss_prefers_exactly_two_active_edges():
    two_active = torch.tensor([1.0, -10.0, 1.0, -10.0])
    equal = torch.full((4,), 0.5)
    three_active = torch.tensor([1.0, 1.0, 1.0, -10.0])
    loss = {name: da2s_edge_loss([beta]) for name, beta in
            (('two', two_active), ('equal', equal), ('three', three_active))}
    assert loss['two'] < loss['equal'] and loss['two'] < loss['three']
    # β above 1 is clamped, so it counts as 1.
    torch.testing.assert_close(da2s_edge_loss([torch.tensor([4.0, -10.0, 1.0, -10.0])]), loss['two'])
    torch.testing.assert_close(da2s_edge_loss([two_active, equal]), loss['two'] + loss['equal'])


def test_da2s_ramp_is_linear_from_zero_to_one():
    epochs = 50
    ramps = [da2s_ramp(epoch, epochs) for epoch in range(1, epochs + 1)]
    assert ramps[0] == 0 and ramps[-1] == 1
    steps = [later - earlier for earlier, later in itertools.pairwise(ramps)]
    assert steps == pytest.approx([1 / (epochs - 1)] * (epochs - 1))
    assert da2s_ramp(1, 1) == 1


def test_da2s_entropy_schedule():
    epochs = 50
    schedule = [da2s_entropy_schedule(epoch, epochs) for epoch in range(1, epochs + 1)]
    assert schedule[:8] == [0.0] * 8  # epochs 1..8: zero, epoch 8 being log(1)
    assert all(later > earlier for earlier, later in itertools.pairwise(schedule[7:]))
    assert schedule[-1] == pytest.approx(math.log(epochs - 7) / math.log(epochs - 8))
    assert da2s_entropy_schedule(8, 9) == 1 and da2s_entropy_schedule(7, 9) == 0


def test_da2s_loss_combines_the_terms_and_reaches_alphas_and_betas():
    generator = torch.Generator().manual_seed(7)
    alphas = [torch.randn(EDGES, N_OPS, generator=generator, requires_grad=True) for _ in range(2)]
    betas = [(da2s_initial_betas(node + 2, generator=generator) + 0.3 * torch.randn(node + 2, generator=generator))
             .requires_grad_() for node in range(1, STEPS)]
    epoch, epochs = 20, 50
    loss = da2s_loss(alphas, betas, epoch, epochs)
    ramp, entropy_factor = da2s_ramp(epoch, epochs), da2s_entropy_schedule(epoch, epochs)
    assert loss.ramp == ramp and loss.entropy_factor == entropy_factor
    expected = 0.1 * ramp * (entropy_factor * da2s_op_entropy(alphas) + 4.0 * da2s_edge_loss(betas))
    torch.testing.assert_close(loss.total, expected)
    loss.total.backward()
    assert all(alpha.grad.abs().sum() > 0 for alpha in alphas)
    assert all(beta.grad.abs().sum() > 0 for beta in betas)
    assert da2s_loss(alphas, betas, 1, epochs).total == 0


def test_da2s_loss_without_betas():
    loss = da2s_loss([torch.zeros(2, N_OPS)], [], epoch=10, epochs=10)
    assert loss.edge_term == 0 and loss.total > 0
