"""Small shared pieces, as in DARTS's utils.py: meters, accuracy, counts, seeding, devices, logging, user errors.

Also argument checks, plain files and experiment folders."""
import argparse
import importlib
import json
import logging
import os
import random
import signal
import statistics
import sys
import time

import numpy as np
import torch


class UserError(ValueError):
    """A mistake in what the user asked for. Scripts print its message as one sentence and exit 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument gets one sentence (and a pointer to --help) instead of a usage block, and an
    option whose metavar is FLAGS (another script's flags, in quotes) takes a value that starts with '--'."""

    def parse_known_args(self, args=None, namespace=None):
        # argparse reads `--search_flags "--unrolled"` as two options; glue such a value to its option first.
        args = sys.argv[1:] if args is None else list(args)
        takes_flags = {name for action in self._actions if action.metavar == 'FLAGS' for name in action.option_strings}
        glued = []
        for word in args:
            if glued and glued[-1] in takes_flags:
                glued[-1] = f'{glued[-1]}={word}'
            else:
                glued.append(word)
        return super().parse_known_args(glued, namespace)

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


def comma_list(kind, low, high=None):
    """An argparse type: a comma-separated tuple of `bounded(kind, low, high)` values, such as 5,11,17."""
    item = bounded(kind, low, high)

    def parse(text):
        return tuple(item(part) for part in text.split(','))
    parse.__name__ = f'comma list of {kind.__name__}'
    return parse


def optional_import(module, purpose, package):
    """An optional dependency, imported where it is used; missing, it is one sentence that says how to
    install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f'{purpose} needs {package}; install it with `pip install {package}`') from None


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
    except RuntimeError as error:
        op = nondeterministic_op(error)
        if op is None:
            raise
        print(f'error: --deterministic: {op} has no deterministic implementation on this device; run without '
              f'--deterministic', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)


def nondeterministic_op(error):
    """The op PyTorch names in `error` when deterministic algorithms are on and it has none, else None."""
    message = str(error)
    marker = ' does not have a deterministic implementation'
    return message.split(marker)[0].split()[-1] if marker in message else None


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


def timed(step, sync, steps, warmup):
    """Median seconds per call of `step` after `warmup` calls, waiting for the device around each one."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync()
        started = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


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


def configure_device(device, deterministic=False):
    """cudnn picks the fastest convolution algorithms for the fixed shapes of these networks; with
    `deterministic` (--deterministic), deterministic algorithms everywhere instead, cuDNN's and PyTorch's, no
    autotuning, and the cuBLAS workspace that deterministic matrix products need. An op that has no
    deterministic version then stops the run with one sentence naming it (run_cli)."""
    if deterministic:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if device.type == 'cuda':
        torch.cuda.set_device(device)


class _ConsoleHandler(logging.StreamHandler):
    """Log lines on stdout; on a terminal they pass through tqdm, so that a progress bar stays whole below them."""

    def emit(self, record):
        try:
            if not self.stream.isatty():
                return super().emit(record)
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


def format_duration(seconds):
    """1:02:03 or 2:03, as a person reads a time left."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f'{hours}:{minutes:02d}:{seconds:02d}' if hours else f'{minutes}:{seconds:02d}'


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


def reset_peak_memory(device):
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device):
    """CUDA: peak allocated since the last reset. CPU: the process's peak resident set size."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summarize_weights(rows):
    """One log line for a vector of weights (its values) or a matrix of softmaxed rows (each row's largest
    weight and the mean entropy against a uniform row's); the full values go to metrics.jsonl."""
    if not rows or not isinstance(rows[0], list):
        return ' '.join(f'{value:.3f}' for value in rows)
    entropy = [-sum(p * np.log(p) for p in row if p > 0) for row in rows]
    return (f'largest per edge {" ".join(f"{max(row):.3f}" for row in rows)}; mean entropy '
            f'{np.mean(entropy):.3f} (uniform {np.log(len(rows[0])):.3f})')
