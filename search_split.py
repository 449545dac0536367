"""The search split: which training images train the weights and which the architecture.

DARTS's first --train_portion and the rest (data.first_and_rest), a NAS-Bench-201 split file, or PC-DARTS's
ImageNet protocol: the weights train on a class-balanced share of the training set (10%) and the architecture on
another, disjoint one (2.5%), both drawn per class with the run's seed. The images drawn are written to the run
folder (`subsets.json`, paths relative to the training folder, or indices for a data set held in memory), so that
a resumed run reads the same ones even if the folder has changed since, and `--subset_file` repeats a run on them.
"""
import json
import os

import numpy as np
import torch

from data import ImageData, first_and_rest, labels_of, read_split_file
from utils import UserError, bounded

FILE_NAME = 'subsets.json'


def add_arguments(parser):
    group = parser.add_argument_group('search split')
    group.add_argument('--train_portion', type=float, default=0.5,
                       help='share of the training set that trains w; the rest trains the architecture')
    group.add_argument('--split_file', metavar='PATH',
                       help="the search split as a NAS-Bench-201 split file (its cifar-split.txt): its train indices "
                            "train w, its valid indices the architecture (instead of --train_portion)")
    group.add_argument('--train_subset', type=bounded(float, 0, 1), metavar='SHARE',
                       help='with --arch_subset, instead of --train_portion: w trains on this share of every class, '
                            'drawn with --seed (PC-DARTS on ImageNet: 0.1)')
    group.add_argument('--arch_subset', type=bounded(float, 0, 1), metavar='SHARE',
                       help='the architecture trains on this share of every class, drawn apart from '
                            "--train_subset's (PC-DARTS on ImageNet: 0.025)")
    group.add_argument('--subset_file', metavar='PATH',
                       help="the subsets of an earlier run's subsets.json, to search again on the same images")
    return group


def check_arguments(train_portion, split_file, train_subset, arch_subset, subset_file):
    if not 0 < train_portion < 1:
        raise UserError('--train_portion must lie strictly between 0 and 1')
    if (train_subset is None) != (arch_subset is None):
        raise UserError('--train_subset and --arch_subset come together: give both shares or neither')
    if subset_file and train_subset is None:
        raise UserError('--subset_file repeats the subsets of a run with --train_subset and --arch_subset; give them')
    if split_file and train_subset is not None:
        raise UserError('--split_file and --train_subset both choose the search split; give one of them')


def indices(split, dataset, train_portion, split_file=None, subsets=None):
    """(indices that train the weights, indices that train the architecture) of the training split of
    `dataset`: a NAS-Bench-201 split file's train and valid lists, `subsets` (a dict of search_subsets's
    arguments past the split) when given, or first_and_rest's."""
    if split_file:
        return read_split_file(split_file, ('train', 'valid'), len(split))
    if subsets:
        return search_subsets(split, **subsets)
    return first_and_rest(split, dataset, train_portion)


def sample(labels, train_share, arch_share, seed):
    """(weights' indices, architecture's indices): of every class, a seeded draw of round(train_share * n) images
    for the weights and the next round(arch_share * n) for the architecture."""
    if not (0 < train_share < 1 and 0 < arch_share < 1 and train_share + arch_share <= 1):
        raise UserError(f'--train_subset {train_share} and --arch_subset {arch_share} must be shares in (0, 1) that '
                        f'add up to at most 1')
    labels = np.asarray(labels)
    train, arch = [], []
    for label in np.unique(labels):
        members = np.random.default_rng([seed, int(label)]).permutation(np.flatnonzero(labels == label))
        train_count = round(train_share * len(members))
        train.append(members[:train_count])
        arch.append(members[train_count:train_count + round(arch_share * len(members))])
    train, arch = np.sort(np.concatenate(train)), np.sort(np.concatenate(arch))
    if not len(train) or not len(arch):
        raise UserError(f'--train_subset {train_share} and --arch_subset {arch_share} of {len(labels)} images leave '
                        f'{len(train)} and {len(arch)}; both need at least one image')
    return torch.from_numpy(train), torch.from_numpy(arch)


def _names(split):
    """Each image's name in the file: its path relative to the training folder, or its index in memory."""
    if isinstance(split, ImageData):
        return list(range(len(split)))
    return [os.path.relpath(path, split.root) for path, _ in split.samples]


def write(path, split, train, arch):
    names = _names(split)
    with open(path, 'w') as f:
        json.dump({'train': [names[i] for i in train.tolist()], 'arch': [names[i] for i in arch.tolist()]}, f)


def read(path, split):
    """The (weights', architecture's) indices of a subsets.json into `split`; a missing image is an error."""
    try:
        with open(path) as f:
            content = json.load(f)
        lists = content['train'], content['arch']
    except OSError as error:
        raise UserError(f'cannot read the subset file {path} ({error.strerror})') from None
    except (ValueError, KeyError, TypeError):
        raise UserError(f'{path} is not a subsets.json of a search (lists "train" and "arch")') from None
    position = {name: index for index, name in enumerate(_names(split))}
    missing = [name for name in (*lists[0], *lists[1]) if name not in position]
    if missing:
        raise UserError(f'{path} names {len(missing)} image(s) the training set does not hold, such as {missing[0]}')
    return tuple(torch.tensor([position[name] for name in names], dtype=torch.int64) for names in lists)


def search_subsets(split, train_share, arch_share, seed, run_file, resuming, subset_file=None, write_file=True):
    """The subsets of a search: those of the run folder's `run_file` when the run resumes, else those of
    `subset_file`, else a fresh draw; written to `run_file` (by the process that writes files: `write_file`)."""
    if resuming and os.path.exists(run_file):
        return read(run_file, split)
    if subset_file:
        train, arch = read(subset_file, split)
    else:
        train, arch = sample(labels_of(split), train_share, arch_share, seed)
    if write_file:
        write(run_file, split, train, arch)
    return train, arch
