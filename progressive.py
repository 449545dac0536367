"""A search in stages, each with fewer candidates per edge: P-DARTS (Chen et al., ICCV 2019) and DrNAS's
progressive schedule (Chen et al., ICLR 2021).

Stage i searches a supernet of --stage_layers[i] cells at --stage_partial_channels[i] for --epochs epochs;
its edges offer only the candidates the previous stage ranked highest (the supernet's op masks), so that
a deeper or wider network fits the same memory. P-DARTS starts every stage afresh (weights, architecture,
schedules) on a deeper supernet, with dropout on the skip connections (--skip_dropout, one rate per stage)
that keeps them from winning by the speed they learn at, decaying over each stage; its cell is DARTS's
derivation from the last stage's candidates, with the skip cap (--max_skip) on the normal cell. DrNAS
(--stage_continue) carries the supernet on, widened to fewer partial channels, with its architecture,
its optimisers' states and one cosine schedule over all stages.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch

from utils import UserError, comma_list


@dataclass(frozen=True)
class Stage:
    """One stage of a search: its supernet's depth, its skip dropout, and how many candidates each edge
    keeps for the next stage (None: the last stage)."""
    index: int
    layers: int
    skip_dropout: float
    keep: Optional[int]
    partial_channels: int = 1

    def dropout_at(self, epoch, epochs, warmup_epochs):
        """P-DARTS's rate at `epoch` (from 0) of the stage: falling linearly during the warm-up, then
        exponentially (by exp(-0.2) an epoch) once the architecture trains."""
        if epoch < warmup_epochs:
            return self.skip_dropout * (epochs - epoch - 1) / epochs
        return self.skip_dropout * math.exp(-0.2 * (epoch - warmup_epochs))


def plan_stages(stage_layers, stage_keep, skip_dropout, stage_partial_channels, layers, partial_channels, n_ops,
                init_channels, continued):
    """The Stages of the flags: without --stage_layers one stage of --layers cells (DARTS). `continued`
    (--stage_continue) carries each stage's weights over to the next, which can widen them but not narrow them."""
    depths = tuple(stage_layers or (layers,))
    keep = tuple(stage_keep or ())
    rates = tuple(skip_dropout or (0.0,))
    widths = tuple(stage_partial_channels or (partial_channels,) * len(depths))
    if len(widths) != len(depths):
        raise UserError(f'--stage_partial_channels needs one K for each of the {len(depths)} stages, not {len(widths)}')
    if len(keep) != len(depths) - 1:
        raise UserError(f'--stage_keep needs one number for every stage but the last ({len(depths) - 1} for '
                        f'{len(depths)} --stage_layers), not {len(keep)}')
    if len(rates) not in (1, len(depths)):
        raise UserError(f'--skip_dropout needs one rate, or one for each of the {len(depths)} stages, not {len(rates)}')
    if any(later >= earlier for earlier, later in zip((n_ops,) + keep, keep)) or any(k < 2 for k in keep):
        raise UserError(f'--stage_keep {",".join(map(str, keep))} must fall from stage to stage, stay below the '
                        f'{n_ops} candidates of an edge and keep at least 2 (the last stage chooses one)')
    for index, width in enumerate(widths):
        if init_channels % width:
            flag = (f'--stage_partial_channels: K = {width} of stage {index + 1}' if stage_partial_channels
                    else f'--partial_channels {width}')
            raise UserError(f'{flag} must divide --init_channels {init_channels}')
    if continued and any(later > earlier for earlier, later in zip(widths, widths[1:])):
        raise UserError('--stage_continue widens the supernet from stage to stage, so --stage_partial_channels '
                        'must not grow')
    rates = rates * len(depths) if len(rates) == 1 else rates
    return [Stage(i, depth, rate, keep[i] if i < len(keep) else None, width)
            for i, (depth, rate, width) in enumerate(zip(depths, rates, widths))]


def keep_strongest(arch, keep):
    """{cell type: E x ops bool}: the `keep` candidates of largest weight on each edge of architecture `arch`
    among those that remain, `none` competing like any op (as P-DARTS ranks them)."""
    masks, net = {}, arch.net
    with torch.no_grad():
        for cell, weights in arch.weights().items():
            ops = weights.ops.float().masked_fill(~net.op_mask(cell), -math.inf)
            chosen = ops.topk(keep, dim=-1).indices
            masks[cell] = torch.zeros_like(net.op_mask(cell)).scatter_(1, chosen, True) & net.op_mask(cell)
    return masks


def prune_architecture(net, masks):
    """DrNAS's prune() (its utils.py): the op parameters of the candidates `masks` removes are set to 0, those
    kept stay as they are; the architecture optimiser keeps its state, as DrNAS's does."""
    with torch.no_grad():
        for cell, mask in masks.items():
            net.op_parameters(cell).masked_fill_(~mask.to(torch.bool), 0.0)


def stage_epochs(stage, net, warmup_epochs, epochs, logs_rate):
    """The stage's begin_epoch for train_search.search_epochs: sets the skip dropout of the epoch; the
    architecture trains after the warm-up."""
    def begin_epoch(epoch):
        net.skip_dropout = stage.dropout_at(epoch, epochs, warmup_epochs)
        return epoch >= warmup_epochs, {'skip_dropout': net.skip_dropout} if logs_rate else {}
    return begin_epoch


def enter_stage(previous, current, masks, continued, widening_seed, restart_lr):
    """The move from stage `previous` to `current` (train_search.StageState each): the new supernet keeps only
    the candidates in `masks`; with `continued` (--stage_continue, DrNAS) it also takes over the previous
    stage's weights, architecture and optimisers (carry_over, widening with a generator of `widening_seed`)
    and sets the op parameters of the candidates dropped to 0 (prune_architecture); without, the new supernet
    starts afresh, as P-DARTS's stages do."""
    if continued:
        carry_over(previous, current, torch.Generator().manual_seed(widening_seed), restart_lr)
    current.model.set_op_masks(masks)
    if continued:
        prune_architecture(current.model, masks)


def carry_over(previous, current, generator, restart_lr=True):
    """DrNAS's passage to the next stage: `current` takes over from `previous` (each a train_search.StageState:
    model, w_optimizer, scheduler, architect). The weights widen to the new partial channels as Net2Wider
    does (each added channel copies a random old one, in a weight and in its momentum alike); the
    architecture, the Adam state and the place in the schedule carry over unchanged. With `restart_lr` the
    new SGD keeps its initial rate, as DrNAS's code creates it (its configure_scheduler loads the old
    schedule's state only), so PyTorch's cosine schedule, which steps from the current rate, then decays it
    from there: epoch e of a T-epoch schedule that restarts at epoch s runs at
    lr * (1 + cos(pi e / T)) / (1 + cos(pi s / T)). Without it, the new SGD continues at the schedule's
    current rate."""
    old_net, old_sgd, old_scheduler, old_architect = (previous.model, previous.w_optimizer, previous.scheduler,
                                                      previous.architect)
    net, sgd, scheduler, architect = current.model, current.w_optimizer, current.scheduler, current.architect
    chosen = {}

    def widened(name, tensor, shape):
        for dim, (old, new) in enumerate(zip(tensor.shape, shape)):
            if new != old:
                index = chosen.setdefault((name, dim), torch.randint(old, (new - old,), generator=generator))
                tensor = torch.cat([tensor, tensor.index_select(dim, index.to(tensor.device))], dim)
        return tensor

    shapes = {name: value.shape for name, value in net.state_dict().items()}
    net.load_state_dict({name: widened(name, value, shapes[name]) for name, value in old_net.state_dict().items()})
    parameters = dict(net.named_parameters())
    for name, parameter in old_net.named_parameters():
        momentum = old_sgd.state.get(parameter, {}).get('momentum_buffer')
        if momentum is not None:
            sgd.state[parameters[name]]['momentum_buffer'] = widened(name, momentum, parameters[name].shape)
    architect.optimizer.load_state_dict(old_architect.optimizer.state_dict())
    scheduler.load_state_dict(old_scheduler.state_dict())
    if not restart_lr:
        for group, rate in zip(sgd.param_groups, scheduler.get_last_lr()):
            group['lr'] = rate


def add_arguments(parser):
    """The flags of a search in stages (P-DARTS's preset is in methods.PAPER_PRESETS, DrNAS's with its method)."""
    group = parser.add_argument_group('progressive stages (P-DARTS, DrNAS)')
    group.add_argument('--stage_layers', type=comma_list(int, 1), metavar='N,N,...',
                       help='search in stages of these many cells, each for --epochs epochs (P-DARTS: 5,11,17; '
                            'default: one stage of --layers cells)')
    group.add_argument('--stage_keep', type=comma_list(int, 1), metavar='K,K,...',
                       help='candidates each edge keeps after every stage but the last (P-DARTS: 5,3)')
    group.add_argument('--skip_dropout', type=comma_list(float, 0, 1), metavar='P[,P,...]',
                       help='dropout on skip connections, one rate or one per stage, decaying within each '
                            'stage (P-DARTS on CIFAR-10: 0.0,0.4,0.7; default 0: off)')
    group.add_argument('--stage_partial_channels', type=comma_list(int, 1), metavar='K,K,...',
                       help='partial channels K of each stage (DrNAS: 6,4; default: --partial_channels)')
    group.add_argument('--stage_continue', action='store_true',
                       help="DrNAS: each stage continues the previous one's supernet, widened to its partial "
                            'channels, with its architecture and optimisers, on one cosine schedule over all '
                            'stages (default: each stage starts afresh, as P-DARTS)')
    group.add_argument('--stage_lr', choices=('restart', 'continue'), default='restart',
                       help="with --stage_continue, the weights' learning rate at a new stage: restart at "
                            "--learning_rate, the carried cosine schedule then decaying from there as DrNAS's "
                            "code does; or continue at the schedule's current rate")
