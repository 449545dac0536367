"""Shared small pieces: user errors, meters, accuracy, counting, seeding, devices, logging,
experiment folders, and safe checkpoint saving and loading."""
import argparse
import contextlib
import copy
import json
import logging
import os
import pickle
import random
import signal
import sys
import time
import warnings

import numpy as np
import torch
from torch import nn


class UserError(ValueError):
    """A mistake in what the user asked for. Scripts print its message as one sentence and exit 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument gets one sentence (and a pointer to --help) instead of a usage block."""

    def error(self, message):
        print(f'error: {message} (see {self.prog} --help)', file=sys.stderr)
        sys.exit(2)


def bounded(kind, low, high=None):
    """An argparse type: a `kind` (int or float) from `low` to `high` inclusive; anything else is refused
    with one sentence before the run starts (NaN included)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not {"an integer" if kind is int else "a number"}') from None
        if not (value >= low and (high is None or value <= high)):
            bounds = f'at least {low}' if high is None else f'between {low} and {high}'
            raise argparse.ArgumentTypeError(f'must be {bounds}, not {text}')
        return value
    parse.__name__ = kind.__name__
    return parse


class RunStopped(Exception):
    """A run that SIGTERM or SIGINT stopped after it saved its checkpoint. It did not finish, so the command
    exits with the shell's status for the signal (143, 130), and a job scheduler sees that."""

    def __init__(self, signal_name):
        super().__init__(f'stopped by {signal_name}')
        self.exit_status = 128 + signal.Signals[signal_name].value


def run_cli(main):
    """Run a script's `main()`: a UserError becomes one line on stderr and exit status 2, no traceback; a
    run stopped by a signal exits 128 + its number."""
    try:
        main()
    except UserError as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
    except RunStopped as stopped:
        sys.exit(stopped.exit_status)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)


class AverageMeter:
    """Weighted running mean. Values may stay tensors on the device, so updating never waits for it."""

    def __init__(self):
        self.sum = 0.0
        self.count = 0

    def update(self, value, n=1):
        if torch.is_tensor(value):
            value = value.detach().float()
        self.sum = self.sum + value * n
        self.count += n

    @property
    def avg(self):
        return float(self.sum) / max(self.count, 1)


def accuracy(logits, target, topk=(1,)):
    """Top-k accuracies in percent, as 0-dim tensors. Soft (mixed) targets count their largest class."""
    if target.dim() == 2:
        target = target.argmax(dim=1)
    maxk = min(max(topk), logits.size(1))
    pred = logits.topk(maxk, dim=1).indices
    correct = pred.eq(target.unsqueeze(1))
    return [correct[:, :min(k, maxk)].any(dim=1).float().mean() * 100.0 for k in topk]


def count_parameters_in_millions(model):
    """Parameters in millions, auxiliary head excluded: the figure DARTS papers report."""
    return sum(p.numel() for name, p in model.named_parameters() if 'auxiliary' not in name) / 1e6


def count_flops(model, input_shape):
    """FLOPs of one inference pass, counted by torch's own flop counter (a multiply-add counts as 2)."""
    from torch.utils.flop_counter import FlopCounterMode
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(input_shape, device=parameter.device, dtype=parameter.dtype))
    model.train(was_training)
    return counter.get_total_flops()


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def get_device(device='auto', gpu=0):
    """`--device cpu|cuda|cuda:N|auto` with DARTS's `--gpu N` choosing the CUDA device."""
    if device == 'cpu':
        return torch.device('cpu')
    if device == 'auto':
        return torch.device('cuda', gpu) if torch.cuda.is_available() else torch.device('cpu')
    if not device.startswith('cuda'):
        raise UserError(f'unknown --device {device!r}; use cpu, cuda, cuda:N or auto')
    if not torch.cuda.is_available():
        raise UserError(f'--device {device} was asked for, but this machine has no usable CUDA device; '
                        f'use --device cpu')
    index = int(device.split(':')[1]) if ':' in device else gpu
    if index >= torch.cuda.device_count():
        raise UserError(f'CUDA device {index} does not exist; this machine has '
                        f'{torch.cuda.device_count()} (--gpu counts from 0)')
    return torch.device('cuda', index)


class _ConsoleHandler(logging.StreamHandler):
    """Log lines on stdout; on a terminal they pass through tqdm, so that a progress bar stays whole below them."""

    def emit(self, record):
        if not self.stream.isatty():
            return super().emit(record)
        try:
            from tqdm import tqdm
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging's own convention: a failing handler reports and never raises
            self.handleError(record)


def get_logger(exp_dir=None, enabled=True):
    """The 'darts' logger: stdout plus EXP/log.txt. Disabled loggers (non-zero ranks) stay silent."""
    logger = logging.getLogger('darts')
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO if enabled else logging.CRITICAL + 1)
    logger.propagate = False
    if enabled:
        formatter = logging.Formatter('%(asctime)s %(message)s', datefmt='%m/%d %H:%M:%S')
        handlers = [_ConsoleHandler(sys.stdout)]
        if exp_dir is not None:
            handlers.append(logging.FileHandler(os.path.join(exp_dir, 'log.txt')))
        for handler in handlers:
            handler.setFormatter(formatter)
            logger.addHandler(handler)
    return logger


def create_exp_dir(kind, save, exp_path=None):
    """`{kind}-{save}-YYYYMMDD-HHMMSS/` in the current folder, or exactly `exp_path` when given."""
    path = exp_path or f'{kind}-{save}-{time.strftime("%Y%m%d-%H%M%S")}'
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, '.write-test')
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as error:
        raise UserError(f'cannot write the experiment folder {path} ({error.strerror})') from None
    return path


def check_output_folder(path, flag):
    """Refuse an output file whose folder does not exist now, before minutes of work rather than after."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f'cannot write {flag} {path}: {folder} is not a folder')


def write_text_atomically(path, text):
    """Write through a temporary file renamed over the old one, so that readers never see half a file."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path, obj):
    write_text_atomically(path, json.dumps(obj, indent=2) + '\n')


def append_jsonl(path, row):
    with open(path, 'a') as f:
        f.write(json.dumps(row) + '\n')


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def save_checkpoint(state, path):
    """Save atomically: write a temporary file, flush it to disk, then rename it over the old one."""
    tmp = f'{path}.tmp'
    with open(tmp, 'wb') as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path, map_location='cpu'):
    """`torch.load(weights_only=True)`: tensors and plain data only, so a hostile pickle cannot run code."""
    if not os.path.isfile(path):
        raise UserError(f'{path} does not exist')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()
        detail = next((line.strip() for line in reason if 'global' in line.lower()), '')
        raise UserError(f'{path} was refused because it holds Python objects other than tensors and plain '
                        f'data, and loading it could run code{f" ({detail})" if detail else ""}') from None
    except Exception as error:  # torch.load fails in many ways on damaged files; all mean the same here
        raise UserError(f'{path} is not a readable PyTorch checkpoint; it may be truncated or damaged '
                        f'({str(error).splitlines()[0][:120] if str(error) else type(error).__name__})') from None


# Att-DARTS keeps a cell's ops in `_first_layers` and its attentions in `_second_layers`.
ATT_DARTS_NAMES = {'._first_layers.': '._ops.', '._second_layers.': '._attentions.'}


def normalise_keys(state_dict):
    """Keys saved from DataParallel/DDP (`module.`) or a compiled model (`_orig_mod.`) lose the prefix;
    Att-DARTS's cell attribute names become ours."""
    cleaned = {}
    for key, value in state_dict.items():
        for prefix in ('module.', '_orig_mod.'):
            while key.startswith(prefix):
                key = key[len(prefix):]
        key = key.replace('._orig_mod.', '.')
        for theirs, ours in ATT_DARTS_NAMES.items():
            key = key.replace(theirs, ours)
        cleaned[key] = value
    return cleaned


def extract_state_dict(source):
    """The model state_dict inside any accepted form: our checkpoint, `{'state_dict': ...}`, or a bare one."""
    if isinstance(source, dict):
        for key in ('model', 'state_dict'):
            if key in source and isinstance(source[key], dict):
                return source[key]
        if all(torch.is_tensor(value) for value in source.values()):
            return source
    raise UserError('the file holds no model weights (expected a checkpoint from this toolkit or a state_dict)')


def _name_keys(keys, limit=6):
    keys = sorted(keys)
    more = f' and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def load_weights(model, source, origin=None, hint='another genotype or size?'):
    """Load weights into `model` from a path or a dict: our checkpoints, bare state_dicts (the form DARTS,
    PC-DARTS and alpha-DARTS release), `module.`-prefixed ones, and Att-DARTS's. Mismatches are named,
    followed by `hint`."""
    if isinstance(source, (str, os.PathLike)):
        origin = origin or str(source)
        source = load_checkpoint(source)
    origin = origin or 'the given weights'
    state_dict = normalise_keys(extract_state_dict(source))
    expected = model.state_dict()
    # Weights saved by PyTorch < 0.4.1 (the DARTS release) have no BatchNorm step counters.
    for key, value in expected.items():
        if key.endswith('num_batches_tracked') and key not in state_dict:
            state_dict[key] = value
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f'missing keys: {_name_keys(missing)}')
        if unexpected:
            parts.append(f'unexpected keys: {_name_keys(unexpected)}')
        raise UserError(f'{origin} does not fit this model ({hint}); ' + '; '.join(parts))
    mismatched = [f'{key} {tuple(state_dict[key].shape)} vs {tuple(value.shape)}'
                  for key, value in expected.items() if tuple(state_dict[key].shape) != tuple(value.shape)]
    if mismatched:
        raise UserError(f'{origin} does not fit this model ({hint}); shapes differ for {_name_keys(mismatched)}')
    model.load_state_dict(state_dict)
    return model


# ---------------------------------------------------------------------------------------------
# Runs: arguments, random state, interruption, progress, evaluation.

def given_arguments(parser, argv):
    """The flags present on the command line (defaults left out), so that presets, dataset defaults
    and resumed arguments yield to what the user typed."""
    shadow = copy.deepcopy(parser)
    for action in shadow._actions:
        action.default = argparse.SUPPRESS
    return vars(shadow.parse_args(argv))


def rng_state():
    state = {'torch': torch.get_rng_state(), 'python': random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state['torch'])
    random.setstate(_as_tuples(state['python']))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


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


def format_duration(seconds):
    """1:02:03 or 2:03, as a person reads a time left."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f'{hours}:{minutes:02d}:{seconds:02d}' if hours else f'{minutes}:{seconds:02d}'


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


# What may change when a run resumes: where the data lies, where and how fast the run goes, how often it
# reports. Everything else (sizes, data, optimiser, schedules, seed) was built into the checkpoint, and
# --epochs may only grow (a longer run).
RESUME_OVERRIDES = ('data', 'workers', 'device', 'gpu', 'amp', 'channels_last', 'compile', 'sync_bn', 'report_freq')


def resolve_arguments(parser, argv, kind, presets=lambda args: {}):
    """(args, checkpoint or None). On --resume the saved arguments return, with what the command line
    gives on top: RESUME_OVERRIDES, a larger --epochs, and any flag equal to its saved value (so that a
    requeued job may repeat its whole command line); otherwise `presets(args)` (a method's or a dataset's
    defaults) fill what the command line leaves out."""
    args = parser.parse_args(argv)
    given = given_arguments(parser, argv)
    if args.resume is None:
        for key, value in presets(args).items():
            if key not in given:
                setattr(args, key, value)
        return args, None
    path = find_checkpoint(args.resume, args.exp_path)
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict) or checkpoint.get('kind') != kind:
        raise UserError(f'{path} is not a checkpoint of {"train.py" if kind == "train" else "train_search.py"}')
    saved = checkpoint['args']
    for name in sorted(set(given) - set(RESUME_OVERRIDES) - {'resume', 'exp_path'}):
        if name == 'epochs' and given[name] > saved['epochs']:
            continue
        if given[name] != saved.get(name):
            more = ' (--epochs may only grow)' if name == 'epochs' else ''
            allowed = ', '.join(f'--{option}' for option in RESUME_OVERRIDES if option in vars(args))
            raise UserError(f'--{name} {given[name]} differs from the checkpoint\'s {saved.get(name)}, and a resumed '
                            f'run keeps the values it was built with{more}; beside --resume give only flags of '
                            f'the same value, a larger --epochs, or {allowed}; or start a new run')
    return argparse.Namespace(**{**saved, **given, 'exp_path': os.path.dirname(path)}), checkpoint


def training_state(model, optimizers, scheduler, precision, epoch, samples, meters, history, distributed):
    """Everything a run needs to continue exactly: weights, optimisers, schedule, gradient scaler,
    position, every rank's RNG, history. The position counts the epoch's samples all ranks have used,
    so that another number of processes can take over. Every rank calls it (it gathers)."""
    return {'model': model.state_dict(), 'optimizers': {name: opt.state_dict() for name, opt in optimizers.items()},
            'scheduler': scheduler.state_dict(), 'scaler': precision.state_dict(), 'epoch': epoch,
            'samples': samples, 'meters': meter_state(reduce_meters(meters, distributed)), 'history': history,
            'rng': distributed.gather(rng_state())}


def restore_training_state(checkpoint, model, optimizers, scheduler, precision, meters, distributed, seed, epochs):
    """Load `training_state` back; returns (epoch, samples, history). With the number of processes that
    saved it, every rank continues its own random stream; with another, streams restart from the seed.
    If the run now has more `epochs` than the checkpoint's (a run made longer), the schedule is not loaded;
    `scheduler`, built for the longer run, is moved to the checkpoint's epoch instead."""
    load_weights(model, checkpoint['model'], origin='the checkpoint')
    epoch, samples = checkpoint['epoch'], checkpoint['samples']
    fresh_rates = [group['lr'] for group in scheduler.optimizer.param_groups]
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(checkpoint['optimizers'][name])
    if epochs == checkpoint['args']['epochs']:
        scheduler.load_state_dict(checkpoint['scheduler'])
    else:
        for group, rate in zip(scheduler.optimizer.param_groups, fresh_rates):
            group['lr'] = rate
        with warnings.catch_warnings():  # stepping a schedule without optimiser steps is what is meant here
            warnings.simplefilter('ignore')
            for _ in range(epoch):
                scheduler.step()
    precision.load_state_dict(checkpoint['scaler'])
    if distributed.is_main:  # the saved sums cover all ranks; the others start from zero
        for name, saved in checkpoint['meters'].items():
            meters[name].sum, meters[name].count = saved['sum'], saved['count']
    if len(checkpoint['rng']) == distributed.world_size:
        set_rng_state(checkpoint['rng'][distributed.rank])
    else:
        seed_everything(seed + 1000003 * (epoch + 1) + 7919 * samples + distributed.rank)
    return epoch, samples, checkpoint['history']


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


def find_checkpoint(resume, exp_path):
    """`--resume PATH` names a checkpoint file or an experiment folder; bare `--resume` uses --exp_path."""
    path = resume or exp_path
    if not path:
        raise UserError('--resume needs a checkpoint file or an experiment folder (or give --exp_path)')
    if os.path.isdir(path):
        path = os.path.join(path, 'checkpoint.pt')
    if not os.path.isfile(path):
        raise UserError(f'there is no checkpoint at {path}; a run stopped before its first epoch ended has none '
                        f'and starts again without --resume')
    return path


def meter_state(meters):
    return {name: {'sum': float(meter.sum), 'count': meter.count} for name, meter in meters.items()}


def reset_peak_memory(device):
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device):
    """CUDA: peak allocated since the last reset. CPU: the process's peak resident set size."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------
# Speed: mixed precision, memory format, compilation.

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


def configure_device(device):
    """cudnn picks the fastest convolution algorithms for the fixed shapes of these networks."""
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
        torch.cuda.set_device(device)


# ---------------------------------------------------------------------------------------------
# Several processes: torchrun.

class Distributed:
    """This process's place in a `torchrun` job (even one of a single process); without torchrun, rank 0 of 1
    and every call is a no-op. NCCL connects GPUs, gloo CPUs."""

    # In a distributed run the ranks agree on stopping every this many steps (a collective each time).
    STOP_CHECK_STEPS = 10

    def __init__(self):
        self.world_size = int(os.environ.get('WORLD_SIZE', 1))
        self.rank = int(os.environ.get('RANK', 0))
        self.local_rank = int(os.environ.get('LOCAL_RANK', 0))
        self.enabled = 'RANK' in os.environ and 'MASTER_ADDR' in os.environ  # set by torchrun
        self.device = None

    @property
    def is_main(self):
        return self.rank == 0

    def start(self, device):
        self.device = device
        if self.enabled:
            import torch.distributed as dist
            dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo',
                                    device_id=device if device.type == 'cuda' else None)

    def stop(self):
        if self.enabled:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()

    def sum(self, values):
        """Element-wise sum over ranks of a list of numbers or tensors (one collective)."""
        if not self.enabled:
            return values
        import torch.distributed as dist
        packed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device).reshape(())
                              for v in values])
        dist.all_reduce(packed)
        return packed.tolist()

    def average(self, tensors):
        """Average tensors (gradients) over ranks in place, in one flat collective."""
        tensors = [t for t in tensors if t is not None]
        if not self.enabled or not tensors:
            return
        import torch.distributed as dist
        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world_size
        for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
            t.copy_(part.view_as(t))

    def average_gradients(self, parameters):
        self.average([p.grad for p in parameters])

    def any(self, flag):
        """True on every rank if it is true on any."""
        return bool(self.sum([float(bool(flag))])[0]) if self.enabled else bool(flag)

    def broadcast(self, obj):
        """Rank 0's value of a picklable object, on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as dist
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def gather(self, obj):
        """Every rank's value, as a list on every rank."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered


def run_distributed(work, args, *inputs):
    """Join the torchrun job if there is one (one device per process), call
    `work(*inputs, device, distributed)`, and leave the job however it ends."""
    distributed = Distributed()
    device = get_device(args.device, distributed.local_rank if distributed.enabled else args.gpu)
    distributed.start(device)
    try:
        return work(*inputs, device, distributed)
    finally:
        distributed.stop()


def reduce_meters(meters, distributed):
    """The meters summed over ranks (new meters; the local ones keep counting)."""
    totals = distributed.sum([value for meter in meters.values() for value in (meter.sum, meter.count)])
    reduced = {}
    for i, name in enumerate(meters):
        reduced[name] = AverageMeter()
        reduced[name].sum, reduced[name].count = totals[2 * i], int(totals[2 * i + 1])
    return reduced
