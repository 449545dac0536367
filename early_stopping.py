"""What a search does when the dominant eigenvalue of the Hessian (`--hessian_eigenvalue`) grows too fast
(Zela et al., ICLR 2020): DARTS-ES stops it and keeps the cell of an earlier epoch; DARTS-ADA goes back to
that epoch and carries on with a larger weight decay.

As automl/RobustDARTS 3dec3fe computes it (src/utils.py, EVLocalAvg; src/search/train_search.py): the
eigenvalues measured every N epochs are smoothed by a local average over a window of `window` measurements
(while fewer have been made, over all of them), which stands for the epoch `N * (window // 2)` before the
latest measurement. Once that epoch minus `N * delta` reaches `start_epoch`, the eigenvalue has grown too
fast when the latest local average exceeds the one `delta` measurements earlier by more than `factor`; the
earlier local average's epoch is the one kept or gone back to. The last epoch never decides.

The decision is a function of the eigenvalues logged so far, so a resumed search decides as an
uninterrupted one; DARTS-ADA keeps the checkpoints of the epochs it may go back to in the run folder.
"""
import glob
import math
import os
from dataclasses import dataclass

import checkpoints
import genotypes
from utils import UserError, bounded

MODES = ('off', 'es', 'ada')


@dataclass(frozen=True)
class Rule:
    window: int = 5
    factor: float = 1.3
    start_epoch: int = 10
    delta: int = 4
    adaptive: bool = False  # DARTS-ADA: go back and raise the weight decay instead of stopping
    decay_factor: float = 3.0
    max_weight_decay: float = 243e-4
    rollback_epochs: int = 0  # further epochs to go back (RobustDARTS's extra_rollback_epochs)


@dataclass(frozen=True)
class Stop:
    epoch: int      # the epoch whose cell the search keeps, or that DARTS-ADA goes back to
    current: float  # the latest local average of the eigenvalue
    previous: float  # the local average `delta` measurements earlier, at `epoch`


def add_arguments(parser):
    group = parser.add_argument_group('early stopping and adaptive regularisation on the curvature (DARTS-ES, -ADA)')
    default = Rule()
    group.add_argument('--early_stop', nargs='?', const='es', choices=MODES, default='off',
                       help="es (alone, --early_stop): DARTS-ES, stop when the local average of --hessian_eigenvalue "
                            "grows by more than --es_factor and keep the cell of the epoch it grew from; ada: "
                            "DARTS-ADA, go back to that epoch and multiply the weight decay by --ada_factor")
    group.add_argument('--es_window', type=bounded(int, 1), default=default.window,
                       help='measurements in the local average of the eigenvalue (DARTS-ES: 5)')
    group.add_argument('--es_factor', type=bounded(float, 0), default=default.factor,
                       help='growth of the local average that stops the search (DARTS-ES: 1.3)')
    group.add_argument('--es_start_epoch', type=bounded(int, 0), default=default.start_epoch,
                       help='earliest epoch whose cell early stopping may keep (DARTS-ES: 10)')
    group.add_argument('--es_delta', type=bounded(int, 1), default=default.delta,
                       help='measurements between the two local averages compared (DARTS-ES: 4)')
    group.add_argument('--ada_factor', type=bounded(float, 1), default=default.decay_factor,
                       help="DARTS-ADA: the weight decay's factor at each going back (RobustDARTS's default 3; its "
                            "DARTS-ADA script 10)")
    group.add_argument('--ada_max_weight_decay', type=bounded(float, 0), default=default.max_weight_decay,
                       help="DARTS-ADA: once the weight decay reaches this, the search no longer goes back "
                            "(RobustDARTS's default 0.0243; its DARTS-ADA script 0.03)")
    group.add_argument('--ada_rollback_epochs', type=bounded(int, 0), default=default.rollback_epochs,
                       help='DARTS-ADA: epochs to go back beyond the one the eigenvalue grew from')


def rule_of(mode, window, factor, start_epoch, delta, decay_factor, max_weight_decay, rollback_epochs,
            hessian_every, stages, selection):
    """The Rule of the flags (--early_stop `mode`, the --es_* and --ada_* values), or None when `mode` is off;
    refuses what it cannot work with."""
    if mode == 'off':
        return None
    if not hessian_every:
        raise UserError(f'--early_stop {mode} watches the Hessian\'s eigenvalue: give --hessian_eigenvalue N as '
                        f'well (RobustDARTS measures every 2 epochs: --hessian_eigenvalue 2)')
    if stages > 1 or selection != 'darts':
        raise UserError(f'--early_stop {mode} works on a search of one stage that derives its cell from the '
                        f'architecture weights; leave out --stage_layers and --selection pt')
    return Rule(window, factor, start_epoch, delta, mode == 'ada', decay_factor, max_weight_decay, rollback_epochs)


def local_averages(values, window):
    """RobustDARTS's local averages of the eigenvalues measured so far, one per measurement from the
    ceil(window / 2)-th on: the mean of the last `window` values, or of all while there are fewer."""
    first = math.ceil(window / 2)
    return [sum(values[max(0, k + 1 - window):k + 1]) / min(k + 1, window) for k in range(first - 1, len(values))]


def decide(history, epoch, fields, epochs, every, rule):
    """A Stop if the eigenvalue grew too fast by `epoch`, else None: from the eigenvalues of the metrics rows
    `history` and of this epoch's `fields`, measured every `every` epochs (and at the last)."""
    if rule is None or epoch == epochs - 1 or 'hessian_eigenvalue' not in fields:
        return None
    values = [row['hessian_eigenvalue'] for row in history if 'hessian_eigenvalue' in row]
    averages = local_averages(values + [fields['hessian_eigenvalue']], rule.window)
    kept = epoch - every * (rule.window // 2 + rule.delta)  # the epoch of the local average `delta` back
    if len(averages) <= rule.delta or kept < rule.start_epoch:
        return None
    current, previous = averages[-1], averages[-1 - rule.delta]
    return Stop(kept, current, previous) if current / previous > rule.factor else None


def row_fields(stop, rule, w_optimizer):
    """What the epoch's metrics row adds: the epoch DARTS-ES keeps; DARTS-ADA's current weight decay."""
    if rule is None:
        return {}
    if rule.adaptive:
        return {'weight_decay': w_optimizer.param_groups[0]['weight_decay']}
    return {'early_stop_keeps': stop.epoch} if stop else {}


def after_epoch(rule, stop, epoch, end_epoch, run, w_optimizer, every, history, checkpoint_at, restore):
    """The epoch the search carries on with after `epoch`, having saved the checkpoint of that point:
    `epoch` + 1; `end_epoch` when DARTS-ES stops (with its log line and the kept cell in genotype.json); or,
    when DARTS-ADA goes back, the epoch after the one gone back to, whose checkpoint `restore` has loaded
    before the weight decay grows. checkpoint_at(epoch to carry on with) -> the checkpoint to save."""
    if stop is not None and not rule.adaptive:
        report_stop(run, stop, epoch, history, rule.factor)
        run.save(checkpoint_at(end_epoch))  # a stopped search is finished
        return end_epoch
    decay = w_optimizer.param_groups[0]['weight_decay']
    if stop is not None and not at_max_weight_decay(decay, rule.max_weight_decay):
        back = stop.epoch - rule.rollback_epochs
        restore(checkpoints.load_checkpoint(_snapshot(run, back)))
        for group in w_optimizer.param_groups:
            group['weight_decay'] = decay * rule.decay_factor
        run.logger.info('DARTS-ADA: the local average of the Hessian\'s dominant eigenvalue grew from %.4g (epoch %d) '
                        'to %.4g after epoch %d, %.2f times, more than --es_factor %.2f: back to the end of epoch %d, '
                        'with the weight decay of w raised from %.4g to %.4g', stop.previous, stop.epoch,
                        stop.current, epoch, stop.current / stop.previous, rule.factor, back, decay,
                        decay * rule.decay_factor)
        epoch = back
    checkpoint = checkpoint_at(epoch + 1)
    run.save(checkpoint)
    if rule is not None and rule.adaptive:
        _keep_snapshots(run, epoch, checkpoint, every * (rule.window // 2 + rule.delta) + rule.rollback_epochs,
                        done=epoch + 1 >= end_epoch)
    return epoch + 1


def at_max_weight_decay(decay, max_weight_decay):
    """RobustDARTS's last round of DARTS-ADA: log(max) / log(decay) rounds to 1.0 at one decimal."""
    return round(math.log(max_weight_decay) / math.log(decay), 1) == 1.0 if 0 < decay < 1 else True


def _snapshot(run, epoch):
    return run.path(f'snapshot-{epoch}.pt')


def _keep_snapshots(run, epoch, checkpoint, reach, done):
    """DARTS-ADA's checkpoints of the epochs it may still go back to, `reach` epochs at most, in the run
    folder (written by the main process; all read them); none once the search is done."""
    if not run.distributed.is_main:
        return
    if not done:
        checkpoints.save_checkpoint(checkpoint, _snapshot(run, epoch))
    for path in glob.glob(run.path('snapshot-*.pt')):
        kept = int(os.path.basename(path)[len('snapshot-'):-len('.pt')])
        if done or kept < epoch - reach or kept > epoch:
            os.remove(path)


def report_stop(run, stop, epoch, history, factor):
    """DARTS-ES's log line, and genotype.json rewritten with the cell kept."""
    run.logger.info('DARTS-ES: the local average of the Hessian\'s dominant eigenvalue grew from %.4g (epoch %d) '
                    'to %.4g, %.2f times, more than --es_factor %.2f: the search stops after epoch %d and keeps '
                    'the cell of epoch %d', stop.previous, stop.epoch, stop.current, stop.current / stop.previous,
                    factor, epoch, stop.epoch)
    if run.distributed.is_main:
        genotypes.save_genotype(kept_genotype(history), run.path('genotype.json'))


def kept_genotype(history):
    """The cell an early-stopped search keeps, from its metrics rows `history`; None if it did not stop."""
    stopped = [row['early_stop_keeps'] for row in history if 'early_stop_keeps' in row]
    kept = [row for row in history if stopped and row['epoch'] == stopped[-1]]
    return genotypes.genotype_from_fields(kept[0]['genotype']) if kept else None
