"""Checkpoints: atomic saving, loading that runs no code, weights in every released form, resuming a run.

A resumed run continues exactly: its arguments, training state and random streams come back."""
import argparse
import copy
import os
import pickle
import random
import warnings

import torch

from parallel import reduce_meters
from utils import UserError, seed_everything


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


def rng_state():
    """This process's random streams: the CPU's, Python's and its own CUDA device's (not every visible one:
    a run from an 8-GPU machine must resume on a 1-GPU one)."""
    state = {'torch': torch.get_rng_state(), 'python': random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state):
    torch.set_rng_state(state['torch'])
    random.setstate(_as_tuples(state['python']))
    if torch.is_tensor(state.get('cuda')) and torch.cuda.is_available():  # older checkpoints held a list: skipped
        torch.cuda.set_rng_state(state['cuda'])


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def given_arguments(parser, argv):
    """The flags present on the command line (defaults left out), so that presets, dataset defaults
    and resumed arguments yield to what the user typed."""
    shadow = copy.deepcopy(parser)
    for action in shadow._actions:
        action.default = argparse.SUPPRESS
    return vars(shadow.parse_args(argv))


# What may change when a run resumes: where the data lies, where and how fast the run goes, how often it
# reports, and how the final cell is selected (DARTS-PT may follow a finished search). Everything else
# (sizes, data, optimiser, schedules, seed) was built into the checkpoint, and --epochs may only grow.
RESUME_OVERRIDES = ('data', 'workers', 'device', 'gpu', 'amp', 'channels_last', 'compile', 'sync_bn', 'report_freq',
                    'benchmark', 'selection', 'pt_interval', 'pt_batches', 'tensorboard')


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
    # Flags newer than the checkpoint take their defaults.
    return argparse.Namespace(**{**vars(parser.parse_args([])), **saved, **given,
                                 'exp_path': os.path.dirname(path)}), checkpoint


def selecting(checkpoint):
    """Whether a search's checkpoint is within DARTS-PT's selection (written before 2026-11-28: stage 'pt')."""
    return checkpoint.get('selecting', False) or checkpoint.get('stage') == 'pt'


def search_stage(checkpoint, stages):
    """(stage index, selecting) of a search's checkpoint; a search of `stages` stages selects after its last."""
    return (stages - 1, True) if selecting(checkpoint) else (checkpoint.get('stage', 0), False)


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


def training_state(model, optimizers, scheduler, scaler, epoch, samples, meters, history, distributed):
    """Everything a run needs to continue exactly: weights, optimisers, schedule, gradient scaler,
    position, every rank's RNG, history. The position counts the epoch's samples all ranks have used,
    so that another number of processes can take over. Every rank calls it (it gathers)."""
    return {'model': model.state_dict(), 'optimizers': {name: opt.state_dict() for name, opt in optimizers.items()},
            'scheduler': scheduler.state_dict(), 'scaler': scaler.state_dict() if scaler else {}, 'epoch': epoch,
            'samples': samples, 'meters': meter_state(reduce_meters(meters, distributed)), 'history': history,
            'rng': distributed.gather(rng_state())}


def meter_state(meters):
    return {name: {'sum': float(meter.sum), 'count': meter.count} for name, meter in meters.items()}


def restore_training_state(checkpoint, model, optimizers, scheduler, scaler, meters, distributed, seed, epochs):
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
    if scaler is not None and checkpoint['scaler']:
        scaler.load_state_dict(checkpoint['scaler'])
    if distributed.is_main:  # the saved sums cover all ranks; the others start from zero
        for name, saved in checkpoint['meters'].items():
            meters[name].sum, meters[name].count = saved['sum'], saved['count']
    if len(checkpoint['rng']) == distributed.world_size:
        set_rng_state(checkpoint['rng'][distributed.rank])
    else:
        seed_everything(seed + 1000003 * (epoch + 1) + 7919 * samples + distributed.rank)
    return epoch, samples, checkpoint['history']
