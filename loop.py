"""The training loop's helpers: the run folder, mixed precision, stop requests, progress lines, the non-finite
loss guard and evaluation."""
import contextlib
import json
import logging
import os
import signal
import sys
import time

import numpy as np
import torch
from torch import nn

from checkpoints import restore_training_state, save_checkpoint
from parallel import Distributed, reduce_meters
from utils import (
    AverageMeter,
    RunStopped,
    UserError,
    accuracy,
    append_jsonl,
    bounded,
    create_exp_dir,
    format_duration,
    get_logger,
    write_json,
    write_text_atomically,
)


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
    run.add_argument('--report_freq', type=bounded(int, 1), default=50, help='log a line every N steps')
    return run


def add_speed_arguments(parser, compile_option=False):
    speed = parser.add_argument_group('speed')
    speed.add_argument('--amp', choices=['auto', 'bf16', 'fp16', 'off'], default='auto',
                       help='mixed precision; auto: bf16 on CUDA devices that support it, off elsewhere. '
                            'Architecture weights, their softmax, losses and BatchNorm statistics stay float32')
    speed.add_argument('--channels_last', dest='channels_last', action='store_const', const=True, default=None,
                       help='NHWC memory format (default: on with CUDA)')
    speed.add_argument('--no_channels_last', dest='channels_last', action='store_const', const=False,
                       help='keep the NCHW memory format')
    if compile_option:
        speed.add_argument('--compile', action='store_true', help='torch.compile the network (slow first steps)')
    return speed


class Precision:
    """A run's numeric settings: the autocast dtype (None: float32), the fp16 gradient scaler, the
    memory format. `step` does backward, clipping and the optimiser step in the right order for them."""

    def __init__(self, amp, device, channels_last=None):
        if amp == 'auto':
            amp = 'bf16' if device.type == 'cuda' and torch.cuda.is_bf16_supported() else 'off'
        self.dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'off': None}[amp]
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if self.dtype == torch.float16 else None
        self.channels_last = device.type == 'cuda' if channels_last is None else channels_last
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def step(self, loss, optimizer, parameters, grad_clip, gradient_sync=None):
        """`gradient_sync(parameters)` averages the gradients over ranks where DDP does not."""
        parameters = list(parameters)
        if self.scaler is None:
            loss.backward()
            if gradient_sync:
                gradient_sync(parameters)
            nn.utils.clip_grad_norm_(parameters, grad_clip)
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        if gradient_sync:
            gradient_sync(parameters)
        nn.utils.clip_grad_norm_(parameters, grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self):
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state):
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


class Run:
    """A run's experiment folder and logger; rank 0 alone writes files and log lines."""

    def __init__(self, kind, save, exp_path, distributed):
        self.distributed = distributed
        folder = create_exp_dir(kind, save, exp_path) if distributed.is_main else None
        self.exp_dir = distributed.broadcast(folder)
        self.logger = get_logger(self.exp_dir if distributed.is_main else None, enabled=distributed.is_main)

    def path(self, name):
        return os.path.join(self.exp_dir, name)

    def write_json(self, name, obj):
        if self.distributed.is_main:
            write_json(self.path(name), obj)

    def append_metrics(self, row):
        if self.distributed.is_main:
            append_jsonl(self.path('metrics.jsonl'), row)

    def begin(self, run_args, checkpoint, model, optimizers, scheduler, precision, meters):
        """(epoch, step, history) to start from: those of `checkpoint`, with metrics.jsonl cut back to the
        epochs it holds (redone epochs must not appear twice), or a fresh start. args.json records `run_args`
        (a dict) either way."""
        self.write_json('args.json', run_args)
        if checkpoint is None:
            return 0, 0, []
        epochs, saved_epochs = run_args['epochs'], checkpoint['args']['epochs']
        epoch, samples, history = restore_training_state(checkpoint, model, optimizers, scheduler, precision, meters,
                                                         self.distributed, run_args['seed'], epochs)
        step = samples // (run_args['batch_size'] * self.distributed.world_size)
        if self.distributed.is_main:
            write_text_atomically(self.path('metrics.jsonl'), ''.join(json.dumps(row) + '\n' for row in history))
        self.logger.info('resumed from epoch %d, step %d (%d process(es))', epoch, step, self.distributed.world_size)
        if epochs != saved_epochs:
            self.logger.info('the run grows from %d to %d epochs: its schedules are now those of a %d-epoch run, '
                             'continuing at epoch %d with learning rate %.3e', saved_epochs, epochs, epochs, epoch,
                             scheduler.get_last_lr()[0])
        return epoch, step, history

    def save(self, state, name='checkpoint.pt'):
        if self.distributed.is_main:
            save_checkpoint(state, self.path(name))


class GracefulStop:
    """SIGTERM and SIGINT set `requested` instead of killing the run, so the loop can save and exit."""

    def __init__(self):
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

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class NonFiniteLoss(UserError):
    """Training diverged; the run stops and the last good checkpoint stays."""


class FiniteLossGuard:
    """Remembers the first step whose loss was not finite, as a device tensor, so that recording never makes
    the device wait. `poll()` after each step stops a CPU run at that very step (reading a CPU tensor costs
    nothing); `check()`, at report lines, at the end of an epoch and before a save, reads it on any device
    and, in a distributed run, lets all ranks agree so that they stop together. Either names the epoch and
    the first bad step, and nothing computed after it is ever saved."""

    def __init__(self, epoch, distributed=None):
        self.epoch = epoch
        self.distributed = distributed
        self.first_bad = None

    def update(self, loss, step):
        bad = ~torch.isfinite(loss.detach())
        step_tensor = torch.full_like(bad, step, dtype=torch.long)
        if self.first_bad is None:
            self.first_bad = torch.where(bad, step_tensor, torch.full_like(step_tensor, -1))
        else:
            self.first_bad = torch.where((self.first_bad < 0) & bad, step_tensor, self.first_bad)

    def poll(self):
        """Raise if a loss so far was non-finite, where telling costs no wait (the CPU)."""
        if self.first_bad is not None and self.first_bad.device.type == 'cpu':
            self._raise_if(int(self.first_bad))

    def check(self):
        local = -1 if self.first_bad is None else int(self.first_bad)
        if self.distributed is not None and self.distributed.enabled:
            bad = [step for step in self.distributed.gather(local) if step >= 0]
            local = min(bad) if bad else -1
        self._raise_if(local)

    def _raise_if(self, step):
        if step >= 0:
            raise NonFiniteLoss(f'the loss became non-finite at epoch {self.epoch}, step {step}; the run '
                                f'stopped and the last good checkpoint was kept (lower the learning rate?)')


class StepMonitor:
    """The bookkeeping after each step of an epoch: loss and accuracy meters, the non-finite loss guard,
    progress, and whether a stop was requested. Progress is a log line at the epoch's first step, then one
    every `report_freq` steps or every `REPORT_SECONDS`, whichever comes first, each with the epoch's
    progress and the time it has left; on a terminal a tqdm bar shows the same between the lines."""

    REPORT_SECONDS = 30.0

    def __init__(self, epoch, epochs, steps, meters, stop, logger, report_freq, label, distributed):
        self.guard = FiniteLossGuard(epoch, distributed)
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.meters, self.stop, self.logger, self.report_freq, self.label = meters, stop, logger, report_freq, label
        self.distributed = distributed
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

    def after_step(self, step, loss, logits, targets):
        """Record the step; True when the loop should stop and save."""
        self.guard.update(loss, step)
        if not self.distributed.enabled:
            self.guard.poll()
        n = logits.size(0)
        self.meters['loss'].update(loss, n)
        self.meters['top1'].update(accuracy(logits, targets)[0], n)
        now = time.monotonic()
        # Ranks must check together (a collective), so only the step count decides; time adds lines of
        # rank 0 alone.
        scheduled = step % self.report_freq == 0
        if scheduled or step == self.start_step or now - self.last_report >= self.REPORT_SECONDS:
            if scheduled or not self.distributed.enabled:
                self.guard.check()
            self._report(step, now)
        requested = self.stop.requested is not None
        if self.distributed.enabled:  # all ranks must stop at the same step
            requested = step % Distributed.STOP_CHECK_STEPS == 0 and self.distributed.any(requested)
        if requested:
            self.guard.check()
            return True
        return False

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

    def end_epoch(self):
        """The epoch's last check: every loss of it was finite."""
        if self.bar is not None:
            self.bar.close()
        self.guard.check()

    def stop_run(self, step, exp_dir):
        """After the checkpoint of a requested stop is saved: say how to continue, and end the run."""
        if self.bar is not None:
            self.bar.close()
        self.logger.info('%s received: saved a checkpoint at epoch %d, step %d; continue with --resume %s',
                         self.stop.requested, self.epoch, step, exp_dir)
        raise RunStopped(self.stop.requested)


class RunClock:
    """The run's time left, from the mean duration of the epochs this process has run."""

    def __init__(self, first_epoch, epochs):
        self.first_epoch, self.epochs, self.started = first_epoch, epochs, time.monotonic()

    def time_left(self, epochs_done):
        per_epoch = (time.monotonic() - self.started) / max(epochs_done - self.first_epoch, 1)
        return format_duration(per_epoch * (self.epochs - epochs_done))


def evaluate(model, loader, criterion, forward=None, precision=None, distributed=None):
    """Loss and top-1/top-5 accuracy over `loader` (no gradients); `forward` replaces `model(x)`. In a
    distributed run each rank evaluates its shard and the results are summed over ranks."""
    forward = forward or model
    model.eval()
    loss_meter, top1, top5 = AverageMeter(), AverageMeter(), AverageMeter()
    logger = logging.getLogger('darts')
    started = last_report = time.monotonic()
    with torch.no_grad():
        for index, (images, targets) in enumerate(loader.iterate(0)):
            with precision.autocast() if precision else contextlib.nullcontext():
                logits = forward(images)
            logits = logits[0] if isinstance(logits, tuple) else logits
            acc1, acc5 = accuracy(logits, targets, topk=(1, 5))
            n = images.size(0)
            loss_meter.update(criterion(logits.float(), targets), n)
            top1.update(acc1, n)
            top5.update(acc5, n)
            now = time.monotonic()
            if now - last_report >= StepMonitor.REPORT_SECONDS:  # a long evaluation is not silence
                last_report, done = now, index + 1
                logger.info('evaluating: batch %d/%d, %s left', done, len(loader),
                            format_duration((now - started) / done * (len(loader) - done)))
    if distributed is not None:
        loss_meter, top1, top5 = reduce_meters({'loss': loss_meter, 'top1': top1, 'top5': top5}, distributed).values()
    return {'loss': loss_meter.avg, 'top1': top1.avg, 'top5': top5.avg, 'images': top1.count}


def summarize_weights(rows):
    """One log line for a vector of weights (its values) or a matrix of softmaxed rows (each row's largest
    weight and the mean entropy against a uniform row's); the full values go to metrics.jsonl."""
    if not rows or not isinstance(rows[0], list):
        return ' '.join(f'{value:.3f}' for value in rows)
    entropy = [-sum(p * np.log(p) for p in row if p > 0) for row in rows]
    return (f'largest per edge {" ".join(f"{max(row):.3f}" for row in rows)}; mean entropy '
            f'{np.mean(entropy):.3f} (uniform {np.log(len(rows[0])):.3f})')
