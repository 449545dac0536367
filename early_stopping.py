"""DARTS-ES (Zela et al., ICLR 2020): stop the search when the dominant eigenvalue of the Hessian
(`--hessian_eigenvalue`) grows too fast, and keep the cell of an earlier epoch.

As automl/RobustDARTS 3dec3fe computes it (src/utils.py, EVLocalAvg; src/search/train_search.py): the
eigenvalues measured every N epochs are smoothed by a local average over a window of `window` measurements
(while fewer have been made, over all of them), which stands for the epoch `N * (window // 2)` before the
latest measurement. Once that epoch minus `N * delta` reaches `start_epoch`, the search stops when the
latest local average exceeds the one `delta` measurements earlier by more than `factor`, and the cell
derived at that earlier local average's epoch is the result. The last epoch never stops.

The decision is a function of the eigenvalues logged so far, so a resumed search decides as an
uninterrupted one.
"""
import math
from dataclasses import dataclass

import genotypes
from utils import UserError, bounded


@dataclass(frozen=True)
class Rule:
    window: int = 5
    factor: float = 1.3
    start_epoch: int = 10
    delta: int = 4


@dataclass(frozen=True)
class Stop:
    epoch: int      # the epoch whose cell the search keeps
    current: float  # the latest local average of the eigenvalue
    previous: float  # the local average `delta` measurements earlier, at `epoch`


def add_arguments(parser):
    group = parser.add_argument_group('early stopping on the curvature (DARTS-ES)')
    default = Rule()
    group.add_argument('--early_stop', action='store_true',
                       help="DARTS-ES: stop when the local average of --hessian_eigenvalue grows by more than "
                            "--es_factor, and keep the cell of the epoch it grew from")
    group.add_argument('--es_window', type=bounded(int, 1), default=default.window,
                       help='measurements in the local average of the eigenvalue (DARTS-ES: 5)')
    group.add_argument('--es_factor', type=bounded(float, 0), default=default.factor,
                       help='growth of the local average that stops the search (DARTS-ES: 1.3)')
    group.add_argument('--es_start_epoch', type=bounded(int, 0), default=default.start_epoch,
                       help='earliest epoch whose cell early stopping may keep (DARTS-ES: 10)')
    group.add_argument('--es_delta', type=bounded(int, 1), default=default.delta,
                       help='measurements between the two local averages compared (DARTS-ES: 4)')


def rule_of(early_stop, window, factor, start_epoch, delta, hessian_every, stages, selection):
    """The Rule of the flags, or None without --early_stop; refuses what it cannot work with."""
    if not early_stop:
        return None
    if not hessian_every:
        raise UserError('--early_stop watches the Hessian\'s eigenvalue: give --hessian_eigenvalue N as well '
                        '(DARTS-ES measures every 2 epochs: --hessian_eigenvalue 2)')
    if stages > 1 or selection != 'darts':
        raise UserError('--early_stop ends a search of one stage that derives its cell from the architecture '
                        'weights; leave out --stage_layers and --selection pt')
    return Rule(window, factor, start_epoch, delta)


def local_averages(values, window):
    """RobustDARTS's local averages of the eigenvalues measured so far, one per measurement from the
    ceil(window / 2)-th on: the mean of the last `window` values, or of all while there are fewer."""
    first = math.ceil(window / 2)
    return [sum(values[max(0, k + 1 - window):k + 1]) / min(k + 1, window) for k in range(first - 1, len(values))]


def decide(history, epoch, fields, epochs, every, rule):
    """A Stop if the search stops after `epoch`, else None: from the eigenvalues of the metrics rows
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


def kept_genotype(history):
    """The cell an early-stopped search keeps, from its metrics rows `history`; None if it did not stop."""
    stopped = [row['early_stop_keeps'] for row in history if 'early_stop_keeps' in row]
    kept = [row for row in history if stopped and row['epoch'] == stopped[-1]]
    return genotypes.genotype_from_fields(kept[0]['genotype']) if kept else None


def report(run, stop, epoch, history, factor):
    """The log line of a stop, and genotype.json rewritten with the cell kept."""
    run.logger.info('DARTS-ES: the local average of the Hessian\'s dominant eigenvalue grew from %.4g (epoch %d) '
                    'to %.4g, %.2f times, more than --es_factor %.2f: the search stops after epoch %d and keeps '
                    'the cell of epoch %d', stop.previous, stop.epoch, stop.current, stop.current / stop.previous,
                    factor, epoch, stop.epoch)
    if run.distributed.is_main:
        genotypes.save_genotype(kept_genotype(history), run.path('genotype.json'))
