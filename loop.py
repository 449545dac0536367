"""The helpers that train.py's and train_search.py's own epoch loops call.

Run flags, the backward step, the schedules of w, the run folder, resuming (begin_run), stop requests,
progress lines, the non-finite loss guard (all three through Session and Epoch) and evaluation."""
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from checkpoints import restore_training_state, save_checkpoint
import tensorboard_log
from parallel import reduce_meters
from utils import (AverageMeter, RunStopped, UserError, accuracy, append_jsonl, bounded, create_exp_dir,
                   format_duration, get_logger, peak_memory_mb, reset_peak_memory, write_json, write_text_atomically)


def add_run_arguments(parser, default_seed):
    run = parser.add_argument_group('run')
    run.add_argument('--save', '-name', default='EXP',
                     help='experiment name; the folder is {search,eval}-NAME-YYYYMMDD-HHMMSS (-name: DADARTS spelling)')
    run.add_argument('--exp_path', help='use exactly this experiment folder instead')
    run.add_argument('--resume', nargs='?', const='', metavar='PATH',
                     help='continue from a checkpoint file or experiment folder (alone: the --exp_path folder)')
    run.add_argument('--seed', type=bounded(int, 0), default=default_seed, help='random seed')
    run.add_argument('--device', default='auto', help='cpu, cuda, cuda:N, or auto (CUDA when there is one)')
    run.add_argument('--gpu', type=bounded(int, 0), default=0, help='CUDA device index, as in DARTS')
    run.add_argument('--report_freq', type=bounded(int, 1), default=50,
                     help='log a line every N steps (and at least every 30 seconds)')
    run.add_argument('--tensorboard', action='store_true',
                     help='also write TensorBoard event files into the run folder (needs: pip install tensorboard)')
    return run


def backward_step(loss, optimizer, parameters, grad_clip, scaler=None, gradient_sync=None):
    """Backward, averaging over ranks where DDP does not (`gradient_sync(parameters)`), clipping (none when
    `grad_clip` is 0) and the optimiser step, in the order a gradient scaler needs."""
    parameters = list(parameters)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    if gradient_sync:
        gradient_sync(parameters)
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(parameters, grad_clip)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()


# ---------------------------------------------------------------------------------------------
# The learning-rate schedules of w.

def search_schedule(optimizer, epochs, eta_min, ramp_epochs=0):
    """The search's learning rate of w per epoch: DARTS's cosine from the optimiser's rate to `eta_min` over
    `epochs`, with its first `ramp_epochs` epochs replaced by a linear ramp (ramped)."""
    if not ramp_epochs:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=eta_min)
    return ramped(optimizer, cosine_factor(optimizer.param_groups[0]['lr'], eta_min, epochs), ramp_epochs)


def ramped(optimizer, factor, ramp_epochs):
    """The optimiser's rate times `factor(epoch)`, but epoch e < `ramp_epochs` at rate * (e + 1) / ramp_epochs:
    PC-DARTS's ImageNet search and retraining override their schedules so for 5 epochs at batches over 256."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: (epoch + 1) / ramp_epochs if epoch < ramp_epochs else factor(epoch))


def cosine_factor(base, eta_min, epochs):
    """CosineAnnealingLR's rate from `base` to `eta_min` over `epochs`, as a multiple of `base`."""
    return lambda epoch: (eta_min + (base - eta_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2) / base \
        if base else 1.0


# ---------------------------------------------------------------------------------------------
# The run folder.

def new_meters():
    return {'loss': AverageMeter(), 'top1': AverageMeter()}


@dataclass
class Start:
    """Where a run starts: its first epoch and step, the meters of that epoch, and the metrics so far."""
    epoch: int
    step: int
    meters: dict
    history: list


class Run:
    """A run's experiment folder and logger; rank 0 alone writes files and log lines."""

    def __init__(self, kind, save, exp_path, distributed, tensorboard=False):
        self.distributed = distributed
        if tensorboard:
            tensorboard_log.summary_writer_class()  # a missing TensorBoard must not leave a folder behind
        folder = create_exp_dir(kind, save, exp_path) if distributed.is_main else None
        self.exp_dir = distributed.broadcast(folder)
        self.logger = get_logger(self.exp_dir if distributed.is_main else None, enabled=distributed.is_main)
        self.tensorboard = tensorboard_log.TensorBoardLog(self.exp_dir) if tensorboard and distributed.is_main \
            else None

    def path(self, name):
        return os.path.join(self.exp_dir, name)

    def write_json(self, name, obj):
        if self.distributed.is_main:
            write_json(self.path(name), obj)

    def append_metrics(self, row):
        if self.distributed.is_main:
            append_jsonl(self.path('metrics.jsonl'), row)
        if self.tensorboard is not None:
            self.tensorboard.write(row)

    def save(self, state, name='checkpoint.pt'):
        if self.distributed.is_main:
            save_checkpoint(state, self.path(name))

def begin_run(run, run_args, checkpoint, model, optimizers, scheduler, scaler):
    """The Start of a run: from `checkpoint`, with metrics.jsonl cut back to the epochs it holds (redone
    epochs must not appear twice), or from scratch. args.json records `run_args` (a dict) either way."""
    run.write_json('args.json', run_args)
    meters = new_meters()
    if checkpoint is None:
        return Start(0, 0, meters, [])
    epochs, saved_epochs = run_args['epochs'], checkpoint['args']['epochs']
    epoch, samples, history = restore_training_state(checkpoint, model, optimizers, scheduler, scaler, meters,
                                                     run.distributed, run_args['seed'], epochs)
    step = samples // (run_args['batch_size'] * run.distributed.world_size)
    if run.distributed.is_main:
        write_text_atomically(run.path('metrics.jsonl'), ''.join(json.dumps(row) + '\n' for row in history))
    run.logger.info('resumed from epoch %d, step %d (%d process(es))', epoch, step, run.distributed.world_size)
    if epochs != saved_epochs:
        run.logger.info('the run grows from %d to %d epochs: its schedules are now those of a %d-epoch run, '
                        'continuing at epoch %d with learning rate %.3e', saved_epochs, epochs, epochs, epoch,
                        scheduler.get_last_lr()[0])
    return Start(epoch, step, meters, history)


# ---------------------------------------------------------------------------------------------
# Within an epoch: stop requests, the non-finite loss guard, progress.

class GracefulStop:
    """SIGTERM and SIGINT set `requested` instead of killing the run, so the loop can save and exit."""

    # In a distributed run the ranks agree on stopping every this many steps (a collective each time).
    CHECK_STEPS = 10

    def __init__(self, distributed):
        self.distributed = distributed
        self.requested = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc_info):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    def stops_at(self, step):
        """Whether the loop stops after `step`; all ranks of a distributed run answer alike."""
        if not self.distributed.enabled:
            return self.requested is not None
        return step % self.CHECK_STEPS == 0 and self.distributed.any(self.requested is not None)


class NonFiniteLoss(UserError):
    """Training diverged; the run stops and the last good checkpoint stays."""


class FiniteLossGuard:
    """Remembers the first step whose loss was not finite, as a device tensor, so that recording never makes
    the device wait. A CPU run stops at that very step (reading a CPU tensor costs nothing); elsewhere
    `check()` reads it where the loop reads the device anyway (report lines, the end of an epoch, before a
    save) and lets all ranks agree, so that they stop together. The error names the epoch and the first bad
    step, and nothing computed after it is ever saved."""

    def __init__(self, epoch, distributed):
        self.epoch = epoch
        self.distributed = distributed
        self.first_bad = None

    def record(self, step, losses):
        for loss in losses:
            bad = ~torch.isfinite(loss.detach())
            step_tensor = torch.full_like(bad, step, dtype=torch.long)
            if self.first_bad is None:
                self.first_bad = torch.where(bad, step_tensor, torch.full_like(step_tensor, -1))
            else:
                self.first_bad = torch.where((self.first_bad < 0) & bad, step_tensor, self.first_bad)
        if self.first_bad.device.type == 'cpu' and not self.distributed.enabled:
            self._raise_if(int(self.first_bad))

    def check(self):
        local = -1 if self.first_bad is None else int(self.first_bad)
        if self.distributed.enabled:
            bad = [step for step in self.distributed.gather(local) if step >= 0]
            local = min(bad) if bad else -1
        self._raise_if(local)

    def _raise_if(self, step):
        if step >= 0:
            raise NonFiniteLoss(f'the loss became non-finite at epoch {self.epoch}, step {step}; the run '
                                f'stopped and the last good checkpoint was kept (lower the learning rate?)')


class Progress:
    """An epoch's loss and accuracy meters and its progress: a log line at the epoch's first step, then one
    every `report_freq` steps or every `REPORT_SECONDS`, whichever comes first, each with the epoch's
    progress and the time it has left; on a terminal a tqdm bar shows the same between the lines."""

    REPORT_SECONDS = 30.0

    def __init__(self, epoch, epochs, steps, meters, logger, report_freq, label):
        self.epoch, self.epochs, self.steps, self.meters = epoch, epochs, steps, meters
        self.logger, self.report_freq, self.label = logger, report_freq, label
        self.bar = None

    def track(self, batches, start_step):
        """The epoch's batches from `start_step` on, behind a tqdm bar on a terminal."""
        self.start_step = start_step
        self.started = self.last_report = time.monotonic()
        if sys.stdout.isatty() and self.logger.isEnabledFor(logging.INFO):
            from tqdm import tqdm
            self.bar = tqdm(batches, total=self.steps, initial=start_step, leave=False, dynamic_ncols=True,
                            desc=f'{self.label} epoch {self.epoch}/{self.epochs}')
            return self.bar
        return batches

    def update(self, step, loss, logits, targets):
        """Count the step, and write a line when one is due. True at the lines due by step count, which
        every rank writes alike (rank 0 alone shows them); they read the device anyway."""
        n = logits.size(0)
        self.meters['loss'].update(loss, n)
        self.meters['top1'].update(accuracy(logits, targets)[0], n)
        now = time.monotonic()
        scheduled = step % self.report_freq == 0
        if scheduled or step == self.start_step or now - self.last_report >= self.REPORT_SECONDS:
            self._report(step, now)
        return scheduled

    def _report(self, step, now):
        self.last_report = now
        done = step + 1
        seconds_per_step = (now - self.started) / (done - self.start_step)
        loss, top1 = self.meters['loss'].avg, self.meters['top1'].avg
        self.logger.info('%s epoch %d/%d step %d/%d (%d%%) loss %.4f top1 %.2f | %.2f s/step, %s left in the epoch',
                         self.label, self.epoch, self.epochs, done, self.steps, 100 * done // self.steps, loss, top1,
                         seconds_per_step, format_duration(seconds_per_step * (self.steps - done)))
        if self.bar is not None:
            self.bar.set_postfix_str(f'loss {loss:.4f} top1 {top1:.2f}', refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------
# What the scripts' own epoch loops call: a Session per run, an Epoch per epoch.

class RunClock:
    """The time left in a span of epochs, from the mean duration of the epochs this process has run."""

    def __init__(self, first_epoch, epochs):
        self.first_epoch, self.epochs, self.started = first_epoch, epochs, time.monotonic()

    def time_left(self, epochs_done):
        per_epoch = (time.monotonic() - self.started) / max(epochs_done - self.first_epoch, 1)
        return format_duration(per_epoch * (self.epochs - epochs_done))


class Session:
    """The epochs of a run, as a script loops over them: where it starts (`begin`: a checkpoint's epoch, step
    and meters, or the beginning), the metrics so far (`history`) and stop requests. Use it as a context
    manager, so that SIGTERM and SIGINT become stop requests while it lasts."""

    def __init__(self, run, label, report_freq, device):
        self.run, self.label, self.report_freq, self.device = run, label, report_freq, device
        self.start = self.history = None
        self.stop = GracefulStop(run.distributed)

    def begin(self, run_args, checkpoint, model, optimizers, scheduler, scaler):
        """Start from `checkpoint`, or from scratch (begin_run); returns the Start."""
        self.start = begin_run(self.run, run_args, checkpoint, model, optimizers, scheduler, scaler)
        self.history = self.start.history
        return self.start

    def __enter__(self):
        self.stop.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self.stop.__exit__(*exc_info)

    def epochs(self, first_epoch, end_epoch):
        """The epochs first_epoch..end_epoch-1 this process still has to run."""
        return range(max(first_epoch, self.start.epoch), end_epoch)

    def epoch(self, epoch, epochs, steps):
        """The Epoch `epoch` of `epochs`, of `steps` steps: a resumed run's first one starts at the
        checkpoint's step, with its meters."""
        resumed = epoch == self.start.epoch
        return Epoch(self, epoch, epochs, steps, self.start.step if resumed else 0,
                     self.start.meters if resumed else new_meters())


class Epoch:
    """One epoch of a script's training loop: `for step, batch in epoch.steps(batches)` runs from the
    epoch's first step and ends early, with `stopped_at` the step to resume from, when a stop is requested;
    `record(step, losses, logits, targets)` feeds the progress lines and the non-finite loss guard (losses[0]
    is the reported training loss); `finish` writes the epoch's metrics row and log line."""

    def __init__(self, session, epoch, epochs, steps, start_step, meters):
        self.session, self.epoch, self.start_step, self.meters = session, epoch, start_step, meters
        self.progress = Progress(epoch, epochs, steps, meters, session.run.logger, session.report_freq, session.label)
        self.guard = FiniteLossGuard(epoch, session.run.distributed)
        self.stopped_at = None
        self.started = time.time()
        reset_peak_memory(session.device)

    def steps(self, batches):
        try:
            for step, batch in enumerate(self.progress.track(batches, self.start_step), start=self.start_step):
                yield step, batch
                if self.session.stop.stops_at(step):
                    self.guard.check()
                    self.stopped_at = step + 1
                    return
            self.guard.check()
        finally:
            self.progress.close()
        self.seconds = time.time() - self.started

    def record(self, step, losses, logits, targets):
        self.guard.record(step, losses)
        if self.progress.update(step, losses[0], logits, targets):
            self.guard.check()

    def stop(self, state):
        """Save `state` (the checkpoint that resumes at `stopped_at`) and end the run with RunStopped."""
        run = self.session.run
        run.save(state)
        run.logger.info('%s received: saved a checkpoint at epoch %d, step %d; continue with --resume %s',
                        self.session.stop.requested, self.epoch, self.stopped_at, run.exp_dir)
        raise RunStopped(self.session.stop.requested)

    def finish(self, lr, fields, words, clock, span='the run'):
        """The epoch's metrics row, appended to metrics.jsonl and the history, and its log line; `lr` the rate
        the epoch ran at, `fields` and `words` what the script measured after it, `clock` the RunClock of
        `span`, the epochs whose time left the line tells."""
        run = self.session.run
        totals = reduce_meters(self.meters, run.distributed)
        row = {'epoch': self.epoch, 'lr': lr, 'train_loss': totals['loss'].avg, 'train_top1': totals['top1'].avg,
               **fields, 'time_s': self.seconds, 'images_per_s': totals['loss'].count / max(self.seconds, 1e-9),
               'peak_memory_mb': peak_memory_mb(self.session.device)}
        self.session.history.append(row)
        run.append_metrics(row)
        run.logger.info('epoch %d lr %.3e train_acc %.2f %s (%.1fs, %.0f img/s; %s left in %s)', self.epoch, lr,
                        row['train_top1'], words, self.seconds, row['images_per_s'], clock.time_left(self.epoch + 1),
                        span)
        return row


def eager_smaller_batches(compiled, net, batch_size):
    """A forward pass that runs `compiled` on batches of `batch_size` and the eager `net` on a smaller last
    batch, for which the compiled network would compile a second graph."""
    return lambda images: compiled(images) if images.size(0) == batch_size else net(images)


def evaluate(model, loader, criterion, forward=None, amp_autocast=contextlib.nullcontext, distributed=None,
             batch_statistics=False, max_batches=0):
    """Loss and top-1/top-5 accuracy over `loader` (no gradients); `forward` replaces `model(x)`. In a
    distributed run each rank evaluates its shard and the results are summed over ranks. An evaluation
    of more than 30 seconds logs its progress. `batch_statistics`: BN normalises with each batch's
    statistics (train mode); `max_batches` > 0 stops after that many batches."""
    forward = model if forward is None else forward  # a compiled module has no truth value
    model.train(batch_statistics)
    loss_meter, top1, top5 = AverageMeter(), AverageMeter(), AverageMeter()
    logger = logging.getLogger('darts')
    started = last_report = time.monotonic()
    total = min(len(loader), max_batches) if max_batches else len(loader)
    with torch.no_grad():
        for index, (images, targets) in enumerate(loader.iterate(0)):
            if index == max_batches > 0:
                break
            with amp_autocast():
                logits = forward(images)
            logits = logits[0] if isinstance(logits, tuple) else logits
            acc1, acc5 = accuracy(logits, targets, topk=(1, 5))
            n = images.size(0)
            loss_meter.update(criterion(logits.float(), targets), n)
            top1.update(acc1, n)
            top5.update(acc5, n)
            now = time.monotonic()
            if now - last_report >= Progress.REPORT_SECONDS:
                last_report, done = now, index + 1
                logger.info('evaluating: batch %d/%d, %s left', done, total,
                            format_duration((now - started) / done * (total - done)))
    if distributed is not None:
        loss_meter, top1, top5 = reduce_meters({'loss': loss_meter, 'top1': top1, 'top5': top5}, distributed).values()
    return {'loss': loss_meter.avg, 'top1': top1.avg, 'top5': top5.avg, 'images': top1.count}

