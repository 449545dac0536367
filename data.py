"""Reading datasets (CIFAR-10/100, SVHN, ImageNet, a folder of your own images, synthetic).

CIFAR, SVHN, image folders and the synthetic set are held whole as uint8 tensors (`ImageData`), which
`loaders.DeviceLoader` keeps on the device. ImageNet, and a folder too large for that, are streamed from their
files (`streaming.StreamedFolder`) by `loaders.FolderLoader`.
"""
import json
import os
import sys
import warnings
from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm import tqdm

import cifar as cifar_format
import streaming
import svhn
import synthetic
from utils import UserError, bounded


DATASETS = ('cifar10', 'cifar100', 'svhn', 'imagenet16-120', 'imagenet', 'folder', 'synthetic')
DEFAULT_IMAGE_SIZE = {'cifar10': 32, 'cifar100': 32, 'svhn': 32, 'imagenet16-120': 16, 'imagenet': 224, 'folder': 32,
                      'synthetic': 32}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FIXED_SIZE = (*cifar_format.FORMATS, 'svhn')  # data sets whose images have one size
CLASS_ORDERED = ('imagenet', 'folder')  # read class after class, not shuffled as CIFAR's files are
HELD_OUT_SEED = 0  # a folder's held-out split is the same in every run, whatever --seed says
COLOUR_MODES = {1: 'L', 3: 'RGB', 4: 'RGBA'}


@dataclass
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: int  # side of the (square) training input
    mean: tuple  # per channel, in [0, 1] units
    std: tuple
    crop_padding: int = 4  # of the training crop: DARTS's 4 (ImageNet16-120: 2, as NAS-Bench-201 trains it)
    storage: str = 'held in memory'  # where the images are, and why, for the log


@dataclass
class ImageData:
    """A whole split in memory."""
    images: torch.Tensor  # uint8, N x C x H x W
    labels: torch.Tensor  # int64, N

    def __len__(self):
        return len(self.labels)


# ----------------------------------------------------------------------------------------- arguments

@dataclass(frozen=True)
class DataConfig:
    """What reading a data set takes: the values of the 'data' flags."""
    dataset: str = 'cifar10'
    data: str = '../data'  # the root folder
    image_size: Optional[int] = None  # None: the dataset's own
    in_channels: Optional[int] = None  # None: the images' own (folder), 3 (synthetic)
    num_classes: int = 10  # synthetic only
    synthetic_train_size: int = 5000
    synthetic_test_size: int = 1000
    synthetic_seed: int = 0
    held_out_fraction: float = 0.1  # folder without a test/ or val/ subfolder
    in_memory_limit: Optional[float] = None  # GB of decoded folder images held in memory; None: a share of the free
    decoder: str = 'auto'  # where streamed images are decoded: streaming.DECODERS
    # Not a flag: ImageNet's training pipeline has DARTS's colour jitter, PC-DARTS's search has none.
    colour_jitter: bool = field(default=True, metadata={'flag': False})

    @classmethod
    def from_flags(cls, namespace, **settings):
        """The config of a script's parsed flags, with `settings` that are not flags."""
        flags = {field.name for field in fields(cls) if field.metadata.get('flag', True)}
        return cls(**{name: getattr(namespace, name) for name in flags}, **settings)


def add_data_arguments(parser):
    """The 'data' argument group: which data set, where it lives, and the sizes of folder and synthetic sets."""
    group = parser.add_argument_group('data')
    default = DataConfig()
    group.add_argument('--dataset', '--set', '-dataset', dest='dataset', choices=DATASETS, default=default.dataset,
                       help='data set to use (--set is the alpha-DARTS spelling, -dataset the DADARTS one)')
    group.add_argument('--data', default=default.data,
                       help='root folder of the data; CIFAR and SVHN are downloaded there when missing')
    group.add_argument('--image_size', type=int, default=default.image_size,
                       help='side of the square training images: imagenet (default 224), folder and '
                            'synthetic (default 32); CIFAR and SVHN are always 32')
    group.add_argument('--in_channels', type=int, default=default.in_channels,
                       help="folder: convert images to 1, 3 or 4 channels (default: the first image's mode); "
                            'synthetic: number of channels (default 3)')
    group.add_argument('--num_classes', type=bounded(int, 2), default=default.num_classes,
                       help='synthetic: number of classes')
    group.add_argument('--synthetic_train_size', type=bounded(int, 1), default=default.synthetic_train_size,
                       help='synthetic: training images')
    group.add_argument('--synthetic_test_size', type=bounded(int, 1), default=default.synthetic_test_size,
                       help='synthetic: test images')
    group.add_argument('--synthetic_seed', type=bounded(int, 0), default=default.synthetic_seed,
                       help='synthetic: seed of the generated images (independent of the training --seed)')
    group.add_argument('--held_out_fraction', type=float, default=default.held_out_fraction,
                       help='folder without a test/ or val/ subfolder: fraction of each class held out for testing')
    group.add_argument('--in_memory_limit', type=bounded(float, 0), metavar='GB', default=default.in_memory_limit,
                       help='folder: hold the decoded images in memory (on the device) up to this size, else stream '
                            'them from their files as imagenet (default: a quarter of the free memory of the device)')
    group.add_argument('--decode', dest='decoder', choices=streaming.DECODERS, default=default.decoder,
                       help='imagenet and streamed folders: decode JPEG files on the device (torchvision.io.'
                            'decode_jpeg, augmentation batched there) or with PIL in the workers; auto: the device '
                            'with CUDA')
    group.add_argument('--workers', '-workers', type=bounded(int, 0), default=4,
                       help='imagenet and streamed folders: DataLoader processes reading (and with PIL decoding) files')
    return group


# ----------------------------------------------------------------------------------------- datasets

def load_dataset(config, device='cpu'):
    """(train split, test split, DatasetInfo) of a DataConfig. Splits are `ImageData` held in memory, or for
    imagenet and for a folder whose decoded images would not fit `device` (see --in_memory_limit) streaming's
    StreamedFolder."""
    _check_config(config)
    image_size = config.image_size or DEFAULT_IMAGE_SIZE[config.dataset]
    root = os.path.expanduser(config.data)
    if config.dataset == 'folder':
        return _load_folder(config, root, image_size, device)
    return _READERS[config.dataset](config, root, image_size)


def _check_config(config):
    name, channels = config.dataset, config.in_channels
    problems = [
        (name not in DATASETS, f'unknown dataset {name!r}; choose one of {", ".join(DATASETS)}'),
        (config.image_size is not None and config.image_size < 8,
         f'--image_size {config.image_size} is too small; use at least 8 pixels'),
        (name in FIXED_SIZE and config.image_size not in (None, DEFAULT_IMAGE_SIZE.get(name)),
         f'{name} images are {DEFAULT_IMAGE_SIZE.get(name)}x{DEFAULT_IMAGE_SIZE.get(name)}; leave out --image_size, '
         f'which is for imagenet, folder and synthetic'),
        (channels is not None and not _channels_fit(name, channels),
         (f'--in_channels {channels} does not fit --dataset {name}; folder takes 1, 3 or 4, synthetic any '
          f'positive number, and CIFAR, SVHN and ImageNet have 3')),
        (name == 'folder' and not 0 < config.held_out_fraction < 1,
         f'--held_out_fraction {config.held_out_fraction} must lie strictly between 0 and 1'),
    ]
    for failed, message in problems:
        if failed:
            raise UserError(message)


def _channels_fit(name, channels):
    if name == 'folder':
        return channels in COLOUR_MODES
    if name == 'synthetic':
        return channels >= 1
    return channels == 3


def split_indices(n, train_portion, flag=None):
    """The search split: the first int(n * train_portion) indices train the weights, the rest the
    architecture (train.py: the rest validates). Not shuffled here: the loaders reshuffle each part every
    epoch. `flag` names the flag that asked for it (default: --train_portion and its value)."""
    split = int(n * train_portion)
    if split < 1 or split >= n:
        raise UserError(f'{flag or f"--train_portion {train_portion}"} splits {n} images into {split} and '
                        f'{n - split}; both parts need at least one image')
    return torch.arange(split), torch.arange(split, n)


def labels_of(split):
    """The class of every image of a split, in memory (ImageData) or a torchvision folder."""
    return torch.as_tensor(split.labels if isinstance(split, ImageData) else split.targets)


def first_and_rest(split, dataset, portion, flag=None):
    """(first, rest) indices of a data split: DARTS's first `portion` of the data and the rest (split_indices);
    for data read class by class (imagenet, folder), where that would part the classes, the first `portion`
    of every class and the rest, so that both parts hold every class."""
    if dataset not in CLASS_ORDERED:
        return split_indices(len(split), portion, flag)
    labels = labels_of(split)
    first, rest = [], []
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        first.append(members[:int(len(members) * portion)])
        rest.append(members[int(len(members) * portion):])
    first, rest = torch.cat(first).sort().values, torch.cat(rest).sort().values
    if not len(first) or not len(rest):
        raise UserError(f'{flag or f"--train_portion {portion}"} splits {len(labels)} images into {len(first)} and '
                        f'{len(rest)}; both parts need at least one image')
    return first, rest


def read_split_file(path, keys, size):
    """The index lists `keys` of a NAS-Bench-201 split file, such as its configs/nas-benchmark/cifar-split.txt
    ({"train": ["int", ["0", "5", ...]], "valid": [...]}), as tensors; read as JSON, never evaluated."""
    try:
        with open(path) as f:
            content = json.load(f)
        lists = [torch.tensor([int(index) for index in content[key][1]], dtype=torch.int64) for key in keys]
    except OSError as error:
        raise UserError(f'cannot read the split file {path} ({error.strerror})') from None
    except (ValueError, KeyError, IndexError, TypeError):
        raise UserError(f'{path} is not a NAS-Bench-201 split file with the index lists {", ".join(keys)}') from None
    everything = torch.cat(lists)
    if everything.numel() and (everything.min() < 0 or everything.max() >= size):
        raise UserError(f'{path} names images outside the {size} of this data set; is it the split of another one?')
    if everything.unique().numel() != everything.numel():
        raise UserError(f'{path} names an image twice; its lists must be disjoint')
    return lists


def _channel_stats(images):
    """Per-channel mean and std of uint8 images in [0, 1] units, summed in chunks to bound memory."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for chunk in images.split(max(1, (1 << 22) // images[0].numel())):
        chunk = chunk.to(torch.float64) / 255
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    count = images.numel() // channels
    mean = total / count
    # A constant channel would divide by zero; one grey level is the smallest meaningful spread.
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1 / 255)
    return tuple(mean.tolist()), tuple(std.tolist())


def _load_cifar(config, root, image_size):
    (train_images, train_labels), (test_images, test_labels), cifar = cifar_format.read_cifar(config.dataset, root)
    return (ImageData(train_images, train_labels), ImageData(test_images, test_labels),
            DatasetInfo(config.dataset, cifar.num_classes, 3, cifar.side, cifar.mean, cifar.std,
                        crop_padding=cifar.side // 8))


def _load_svhn(config, root, image_size):
    (train_images, train_labels), (test_images, test_labels) = svhn.read_svhn(root)
    return (ImageData(train_images, train_labels), ImageData(test_images, test_labels),
            DatasetInfo('svhn', svhn.NUM_CLASSES, 3, 32, svhn.MEAN, svhn.STD))


# ----------------------------------------------------------------------------------------- ImageNet

def _load_imagenet(config, root, image_size):
    train_dir, val_dir = os.path.join(root, 'train'), os.path.join(root, 'val')
    if not (os.path.isdir(train_dir) and os.path.isdir(val_dir)):
        raise UserError(f'ImageNet is expected as class folders {train_dir}/<class>/<image> and '
                        f'{val_dir}/<class>/<image>, and {root} does not have both')
    train_pipeline = streaming.Pipeline('random_resized_crop', image_size, config.colour_jitter)
    try:
        train_files, test_files = ImageFolder(train_dir), ImageFolder(val_dir)
    except FileNotFoundError as error:  # ImageFolder's word for a folder without class folders or images
        raise UserError(f'{root} is not a usable ImageNet folder: {error}') from None
    if test_files.classes != train_files.classes:
        raise UserError(f'{val_dir} and {train_dir} must hold the same class folders')
    train = streaming.StreamedFolder(train_dir, train_files.samples, train_files.classes, train_pipeline,
                                     config.decoder)
    test = streaming.StreamedFolder(val_dir, test_files.samples, test_files.classes,
                                    streaming.Pipeline('resize_centre_crop', image_size), config.decoder)
    info = DatasetInfo('imagenet', len(train.classes), 3, image_size, IMAGENET_MEAN, IMAGENET_STD,
                       storage='streamed from its files')
    return train, test, info


# ----------------------------------------------------------------------------------------- image folders

def _subfolders(directory):
    return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir() and entry.name[0] != '.')


def _class_names(directory):
    names = _subfolders(directory)
    if len(names) < 2:
        raise UserError(f'{directory} needs at least two class subfolders (<class>/<image>); found {len(names)}')
    return names


def _image_files(directory, classes):
    """(path, label) of every image file under directory/<class>/, classes numbered in the given order."""
    present = _subfolders(directory)
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise UserError(f'{directory} has class folders that training does not: {", ".join(unknown[:5])}')
    return [(os.path.join(directory, name, file), label)
            for label, name in enumerate(classes) if name in present
            for file in sorted(os.listdir(os.path.join(directory, name)))
            if file[0] != '.' and file.lower().endswith(IMG_EXTENSIONS)]


def _hold_out(samples, fraction):
    """Stratified split: round(fraction * n) images of each class (at least one kept) go to the test set."""
    labels = np.array([label for _, label in samples])
    held_out = np.zeros(len(samples), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(round(fraction * len(members)), len(members) - 1)
        held_out[np.random.default_rng([HELD_OUT_SEED, label]).permutation(members)[:count]] = True
    train = [sample for sample, out in zip(samples, held_out) if not out]
    test = [sample for sample, out in zip(samples, held_out) if out]
    return train, test


def _first_mode(samples):
    """The colour mode of the first readable image: L, RGB or RGBA kept, anything else made RGB."""
    for path, _ in samples:
        try:
            with Image.open(path) as image:
                return image.mode if image.mode in COLOUR_MODES.values() else 'RGB'
        except streaming.UNREADABLE:
            continue
    return 'RGB'


def _decode_images(samples, mode, image_size, where):
    arrays, labels, unreadable = [], [], []
    for path, label in tqdm(samples, desc=f'decoding {where}', leave=False, disable=not sys.stderr.isatty()):
        try:
            with Image.open(path) as image:
                arrays.append(np.asarray(image.convert(mode).resize((image_size, image_size), Image.BILINEAR)))
            labels.append(label)
        except streaming.UNREADABLE:
            unreadable.append(path)
    if unreadable:
        more = f' and {len(unreadable) - 3} more' if len(unreadable) > 3 else ''
        warnings.warn(f'skipped {len(unreadable)} unreadable image file(s) in {where}: '
                      f'{", ".join(unreadable[:3])}{more}', stacklevel=2)
    if not arrays:
        raise UserError(f'{where} has no readable images')
    images = np.stack(arrays).reshape(len(arrays), image_size, image_size, -1)  # L images have no channel axis
    return ImageData(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels))


def free_memory(device):
    """Bytes free where a split held in memory lives: the GPU's memory, or the host's (Linux; else None)."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (ValueError, OSError, AttributeError):
        return None


def _gigabytes(size):
    return f'{size / 1e9:.2f} GB'


def _load_folder(config, root, image_size, device):
    if not os.path.isdir(root):
        raise UserError(f'the image folder {root} does not exist; --dataset folder expects '
                        f'{root}/<class>/<image> or {root}/train/<class>/<image>')
    train_dir, test_dir = root, None
    if os.path.isdir(os.path.join(root, 'train')):
        train_dir = os.path.join(root, 'train')
        test_dir = next((path for path in (os.path.join(root, 'test'), os.path.join(root, 'val'))
                         if os.path.isdir(path)), None)
    classes = _class_names(train_dir)
    train_files = _image_files(train_dir, classes)
    if not train_files:
        raise UserError(f'{train_dir} has no image files ({", ".join(IMG_EXTENSIONS)}) in its class folders')
    if test_dir:
        test_files = _image_files(test_dir, classes)
    else:
        train_files, test_files = _hold_out(train_files, config.held_out_fraction)
    if not test_files:
        raise UserError(f'{root} gives an empty test split; add images or a test/ subfolder')
    mode = COLOUR_MODES[config.in_channels] if config.in_channels else _first_mode(train_files)
    size = (len(train_files) + len(test_files)) * len(mode) * image_size ** 2  # uint8, one byte per channel
    if config.in_memory_limit is not None:
        limit, named = config.in_memory_limit * 1e9, '--in_memory_limit'
    else:
        free = free_memory(device)
        limit, named = (free / 4 if free is not None else float('inf')), f'a quarter of the free memory of {device}'
    if size > limit:
        return _streamed_folder(train_dir, test_dir, classes, train_files, test_files, mode, image_size, config,
                                f'streamed from its files: {_gigabytes(size)} of decoded images exceed '
                                f'{_gigabytes(limit)} ({named})')
    train = _decode_images(train_files, mode, image_size, train_dir)
    test = _decode_images(test_files, mode, image_size, test_dir or f'{train_dir} (held out)')
    mean, std = _channel_stats(train.images)
    return train, test, DatasetInfo('folder', len(classes), train.images.shape[1], image_size, mean, std,
                                    storage=f'held in memory: {_gigabytes(size)} of decoded images')


STATS_SAMPLE = 1000  # images of a streamed folder whose statistics stand for all


def _streamed_folder(train_dir, test_dir, classes, train_files, test_files, mode, image_size, config, storage):
    """A folder too large to hold: StreamedFolders resizing to a square as the in-memory path does, normalised by
    the statistics of a seeded sample of its training images."""
    chosen = np.random.default_rng(HELD_OUT_SEED).permutation(len(train_files))[:STATS_SAMPLE]
    sample = _decode_images([train_files[i] for i in sorted(chosen)], mode, image_size, f'a sample of {train_dir}')
    mean, std = _channel_stats(sample.images)
    pipeline = streaming.Pipeline('square', image_size, mode=mode)
    train = streaming.StreamedFolder(train_dir, train_files, classes, pipeline, config.decoder)
    test = streaming.StreamedFolder(test_dir or train_dir, test_files, classes, pipeline, config.decoder)
    return train, test, DatasetInfo('folder', len(classes), len(mode), image_size, mean, std, storage=storage)


def _load_synthetic(config, root, image_size):
    shape = (config.num_classes, config.in_channels or 3, image_size)
    # Train and test are drawn from different seeds derived from --synthetic_seed: independent samples.
    splits = []
    for count, part in ((config.synthetic_train_size, 0), (config.synthetic_test_size, 1)):
        images, labels = synthetic.synthetic_images(count, *shape, seed=(config.synthetic_seed, part))
        splits.append(ImageData(torch.from_numpy(images), torch.from_numpy(labels)))
    train, test = splits
    mean, std = _channel_stats(train.images)
    return train, test, DatasetInfo('synthetic', config.num_classes, shape[1], image_size, mean, std)


_READERS = {'cifar10': _load_cifar, 'cifar100': _load_cifar, 'svhn': _load_svhn, 'imagenet16-120': _load_cifar,
            'imagenet': _load_imagenet, 'synthetic': _load_synthetic}

