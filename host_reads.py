"""Counting, on any device, what would make a GPU wait for the host inside a step: each value read back
(`.item()`, `.tolist()`, `if tensor:`, `.cpu()`, ...) and each tensor made from host data. On a GPU,
`torch.cuda.set_sync_debug_mode` sees every synchronisation; this counter sees the Python-level ones on the
CPU too, so that tests can hold a step to none."""
import contextlib
import os
import sys

import torch

import methods as methods_lib
import successors  # noqa: F401  (its methods are presets too)

# What waits for a GPU: reading a tensor's value on the host, and making a tensor from host data.
HOST_READS = ('item', 'tolist', '__bool__', '__int__', '__float__', '__index__', 'cpu', 'numpy')
HOST_TENSORS = ('tensor', 'as_tensor')


@contextlib.contextmanager
def count_host_reads():
    """Counts, on the CPU, what would make a GPU wait for the host: the list of (what, where) it yields grows
    by one for each value read (`HOST_READS`) or tensor made from host data (`HOST_TENSORS`). A tensor
    that `.cpu()` brought over is on the host already: reading it is free. Optimisers are left out: their
    step counters live on the host on GPUs too."""
    reads = []

    def counted(what, function):
        def wrapper(*args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if not (args and getattr(args[0], '_on_host', False)) and f'torch{os.sep}optim' not in caller:
                reads.append((what, f'{caller}:{sys._getframe(1).f_lineno}'))
            result = function(*args, **kwargs)
            if what == 'cpu':
                result._on_host = True
            return result
        return wrapper

    patched = [(torch.Tensor, name) for name in HOST_READS] + [(torch, name) for name in HOST_TENSORS]
    originals = [getattr(owner, name) for owner, name in patched]
    for (owner, name), original in zip(patched, originals):
        setattr(owner, name, counted(name, original))
    try:
        yield reads
    finally:
        for (owner, name), original in zip(patched, originals):
            setattr(owner, name, original)


# The search steps held to their allowance: (preset, second order, further flags, reads allowed per step).
# GDAS computes only its sampled ops and DADARTS's hard discretization only the kept ones, so each learns
# them in one transfer for all cell types, once per sampled pass (the architecture step's one or, unrolled,
# four; the weight step; the validation pass). Nothing else may read.
SAMPLED_PASSES = {('gdas', False): 3, ('gdas', True): 6, ('dadarts', False): 2, ('dadarts', True): 2}
NB201 = ['--search_space', 'nas_bench_201']
S1 = ['--search_space', 's1']
# DARTS-ES, DARTS-ADA and R-DARTS's L2 step as second-order DARTS does (they act between epochs, or by the weight
# decay); a preset that is second order is held to it once.
SAME_STEP_AS_DARTS = {'darts_es', 'darts_ada', 'rdarts_l2'}
STEP_CASES = [(method, unrolled, [], SAMPLED_PASSES.get((method, unrolled), 0))
              for method, preset in sorted(methods_lib.presets().items()) if method not in SAME_STEP_AS_DARTS
              for unrolled in ((True,) if preset.get('unrolled') else (False, True))] + [
    ('darts', False, ['--cost_penalty', '1'], 0), ('darts', True, ['--alpha_attention', '--partial_channels', '2'], 0),
    ('drnas', False, ['--dirichlet_kl', '1'], 0), ('darts', False, NB201, 0), ('darts', True, NB201, 0),
    ('darts', False, [*NB201, '--gdas'], 3), ('darts', False, [*NB201, '--hd_on_weights'], 2),
    *(('darts', False, [*NB201, *flags], 0) for flags in (['--dirichlet'], ['--partial_channels', '2'],
                                                          ['--sdarts', 'adv'], ['--auxiliary_skip', '1'])),
    # RobustDARTS's S1, whose edges mix different ops: the masks and the regularisers over each edge's own ops.
    ('darts', True, S1, 0), ('beta_darts', False, S1, 0), ('fair_darts', False, S1, 0), ('gdas', False, S1, 3),
    ('darts', False, [*S1, '--dirichlet', '--dirichlet_kl', '1'], 0), ('da2s', False, S1, 0)]
