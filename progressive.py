"""P-DARTS (Chen et al., ICCV 2019): a search in stages, each on a deeper supernet with fewer candidates.

Stage i searches a fresh supernet of --stage_layers[i] cells, for --epochs epochs with its own weights,
architecture and schedules; its edges offer only the candidates the previous stage ranked highest (the
supernet's op masks), so that the deeper network fits the same memory. Dropout on the skip connections
(--skip_dropout, one rate per stage) keeps them from winning by the speed they learn at, decaying over
each stage. The last stage's cell is DARTS's derivation from its remaining candidates, with the skip cap
(--max_skip) on the normal cell, as P-DARTS derives it.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch

from methods import Method, register
from utils import UserError, comma_list


@dataclass(frozen=True)
class Stage:
    """One stage of a search: its supernet's depth, its skip dropout, and how many candidates each edge
    keeps for the next stage (None: the last stage)."""
    index: int
    layers: int
    skip_dropout: float
    keep: Optional[int]

    def dropout_at(self, epoch, epochs, warmup_epochs):
        """P-DARTS's rate at `epoch` (from 0) of the stage: falling linearly during the warm-up, then
        exponentially (by exp(-0.2) an epoch) once the architecture trains."""
        if epoch < warmup_epochs:
            return self.skip_dropout * (epochs - epoch - 1) / epochs
        return self.skip_dropout * math.exp(-0.2 * (epoch - warmup_epochs))


def plan_stages(stage_layers, stage_keep, skip_dropout, layers, n_ops):
    """The Stages of the flags: without --stage_layers one stage of --layers cells (DARTS)."""
    depths = tuple(stage_layers or (layers,))
    keep = tuple(stage_keep or ())
    rates = tuple(skip_dropout or (0.0,))
    if len(keep) != len(depths) - 1:
        raise UserError(f'--stage_keep needs one number for every stage but the last ({len(depths) - 1} for '
                        f'{len(depths)} --stage_layers), not {len(keep)}')
    if len(rates) not in (1, len(depths)):
        raise UserError(f'--skip_dropout needs one rate, or one for each of the {len(depths)} stages, not {len(rates)}')
    if any(later >= earlier for earlier, later in zip((n_ops,) + keep, keep)) or any(k < 2 for k in keep):
        raise UserError(f'--stage_keep {",".join(map(str, keep))} must fall from stage to stage, stay below the '
                        f'{n_ops} candidates of an edge and keep at least 2 (the last stage chooses one)')
    rates = rates * len(depths) if len(rates) == 1 else rates
    return [Stage(i, depth, rate, keep[i] if i < len(keep) else None)
            for i, (depth, rate) in enumerate(zip(depths, rates))]


def keep_strongest(net, keep):
    """{cell type: E x ops bool}: the `keep` candidates of largest weight on each edge among those that
    remain, `none` competing like any op (as P-DARTS ranks them)."""
    masks = {}
    with torch.no_grad():
        for cell, weights in net.arch_weights().items():
            ops = weights.ops.float().masked_fill(~net.op_mask(cell), -math.inf)
            chosen = ops.topk(keep, dim=-1).indices
            masks[cell] = torch.zeros_like(net.op_mask(cell)).scatter_(1, chosen, True) & net.op_mask(cell)
    return masks


def stage_epochs(stage, net, warmup_epochs, epochs, logs_rate):
    """The stage's on_epoch for search_loop: sets the skip dropout of the epoch; the architecture trains
    after the warm-up."""
    def on_epoch(epoch):
        net.skip_dropout = stage.dropout_at(epoch, epochs, warmup_epochs)
        return epoch >= warmup_epochs, {'skip_dropout': net.skip_dropout} if logs_rate else {}
    return on_epoch


@register
class ProgressiveStages(Method):
    """P-DARTS's settings. The stages are driven by train_search.py (plan_stages) and the skip dropout is
    applied by the supernet, so no hook of a search step changes."""
    presets = {'pdarts': dict(stage_layers=(5, 11, 17), stage_keep=(5, 3), skip_dropout=(0.0, 0.4, 0.7), epochs=25,
                              warmup_epochs=10, batch_size=96, learning_rate_min=0.0, arch_learning_rate=6e-4,
                              max_skip=2)}
    switch = '--stage_layers'

    @staticmethod
    def add_arguments(parser):
        group = parser.add_argument_group('progressive stages (P-DARTS)')
        group.add_argument('--stage_layers', type=comma_list(int, 1), metavar='N,N,...',
                           help='search in stages of these many cells, each for --epochs epochs (P-DARTS: 5,11,17; '
                                'default: one stage of --layers cells)')
        group.add_argument('--stage_keep', type=comma_list(int, 1), metavar='K,K,...',
                           help='candidates each edge keeps after every stage but the last (P-DARTS: 5,3)')
        group.add_argument('--skip_dropout', type=comma_list(float, 0, 1), metavar='P[,P,...]',
                           help='dropout on skip connections, one rate or one per stage, decaying within each '
                                'stage (P-DARTS on CIFAR-10: 0.0,0.4,0.7; default 0: off)')

    def active(self):
        return False
