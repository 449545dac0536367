"""Datasets, the search split, and the batch loaders.

CIFAR-10/100, image folders and the synthetic set are held whole as uint8 tensors (`ImageData`);
`DeviceLoader` keeps a split on the device and augments each batch there, per sample, in a few batched
tensor operations. ImageNet is decoded by torchvision in DataLoader workers and batched by `FolderLoader`.
Both loaders draw epoch e's order from (seed, e) and the randomness of batch (e, step) from
(seed, e, step, rank), so a run resumes mid-epoch without saving any loader state.
"""
import codecs
import math
import os
import pickle
import sys
import warnings
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.datasets.utils import (
    check_integrity,
    download_and_extract_archive,
    extract_archive,
)
from tqdm import tqdm

from utils import UserError, bounded

try:
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
except ImportError:  # numpy < 2 has no numpy._core
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct

DATASETS = ('cifar10', 'cifar100', 'imagenet', 'folder', 'synthetic')
DEFAULT_IMAGE_SIZE = {'cifar10': 32, 'cifar100': 32, 'imagenet': 224, 'folder': 32, 'synthetic': 32}
CROP_PADDING = 4  # DARTS: RandomCrop(32, padding=4)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_JITTER = (0.4, 0.4, 0.4, 0.2)  # DARTS's ImageNet brightness, contrast, saturation, hue
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


@dataclass
class ImageData:
    """A whole split in memory."""
    images: torch.Tensor  # uint8, N x C x H x W
    labels: torch.Tensor  # int64, N

    def __len__(self):
        return len(self.labels)


# ----------------------------------------------------------------------------------------- arguments

def add_data_arguments(parser):
    """The 'data' argument group: which data set, where it lives, and the sizes of folder and synthetic sets."""
    group = parser.add_argument_group('data')
    group.add_argument('--dataset', '--set', '-dataset', dest='dataset', choices=DATASETS, default='cifar10',
                       help='data set to use (--set is the alpha-DARTS spelling, -dataset the DADARTS one)')
    group.add_argument('--data', default='../data',
                       help='root folder of the data; CIFAR is downloaded there when missing')
    group.add_argument('--image_size', type=int, default=None,
                       help='side of the square training images: imagenet (default 224), folder and '
                            'synthetic (default 32); CIFAR is always 32')
    group.add_argument('--in_channels', type=int, default=None,
                       help="folder: convert images to 1, 3 or 4 channels (default: the first image's mode); "
                            'synthetic: number of channels (default 3)')
    group.add_argument('--num_classes', type=bounded(int, 2), default=10, help='synthetic: number of classes')
    group.add_argument('--synthetic_train_size', type=bounded(int, 1), default=5000, help='synthetic: training images')
    group.add_argument('--synthetic_test_size', type=bounded(int, 1), default=1000, help='synthetic: test images')
    group.add_argument('--synthetic_seed', type=bounded(int, 0), default=0,
                       help='synthetic: seed of the generated images (independent of the training --seed)')
    group.add_argument('--held_out_fraction', type=float, default=0.1,
                       help='folder without a test/ or val/ subfolder: fraction of each class held out for testing')
    group.add_argument('--workers', '-workers', type=bounded(int, 0), default=4,
                       help='imagenet: DataLoader processes decoding images')
    return group


def add_augmentation_arguments(parser, cutmix=True):
    """Cutout, and CutMix unless `cutmix` is False (scripts that never train leave it out)."""
    group = parser.add_argument_group('augmentation')
    group.add_argument('--cutout', action='store_true', help='zero a random square of every training image')
    group.add_argument('--cutout_length', type=bounded(int, 0), default=16, help='side of the cutout square in pixels')
    if cutmix:
        group.add_argument('--cutmix_prob', type=bounded(float, 0, 1), default=0.0,
                           help='probability that a training image gets a CutMix box from another (0: off)')
        group.add_argument('--cutmix_beta', type=float, default=1.0,
                           help='CutMix mixing ratio ~ Beta(beta, beta)')
    return group


# ----------------------------------------------------------------------------------------- datasets

def load_dataset(args):
    """(train split, test split, DatasetInfo). Splits are `ImageData` except for imagenet, where they are
    torchvision ImageFolder datasets with the DARTS transforms."""
    _check_data_arguments(args)
    image_size = args.image_size or DEFAULT_IMAGE_SIZE[args.dataset]
    return _LOADERS[args.dataset](args, os.path.expanduser(args.data), image_size)


def _check_data_arguments(args):
    name, channels = args.dataset, args.in_channels
    problems = [
        (name not in DATASETS, f'unknown dataset {name!r}; choose one of {", ".join(DATASETS)}'),
        (args.image_size is not None and args.image_size < 8,
         f'--image_size {args.image_size} is too small; use at least 8 pixels'),
        (name.startswith('cifar') and args.image_size not in (None, 32),
         'CIFAR images are 32x32; leave out --image_size, which is for imagenet, folder and synthetic'),
        (channels is not None and not _channels_fit(name, channels),
         (f'--in_channels {channels} does not fit --dataset {name}; folder takes 1, 3 or 4, synthetic any '
          f'positive number, and CIFAR and ImageNet have 3')),
        (name == 'folder' and not 0 < args.held_out_fraction < 1,
         f'--held_out_fraction {args.held_out_fraction} must lie strictly between 0 and 1'),
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


def split_indices(n, train_portion):
    """The search split: the first int(n * train_portion) indices train the weights, the rest the
    architecture. Not shuffled here: the loaders reshuffle each part every epoch."""
    split = int(n * train_portion)
    if split < 1 or split >= n:
        raise UserError(f'--train_portion {train_portion} splits {n} images into {split} and {n - split}; '
                        f'both parts need at least one image')
    return torch.arange(split), torch.arange(split, n)


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


# ----------------------------------------------------------------------------------------- CIFAR

@dataclass(frozen=True)
class _CifarFormat:
    title: str
    folder: str
    archive: str
    url: str
    md5: str
    train_files: tuple
    test_files: tuple
    label_key: str
    num_classes: int
    mean: tuple
    std: tuple


_CIFAR = {
    'cifar10': _CifarFormat(
        'CIFAR-10', 'cifar-10-batches-py', 'cifar-10-python.tar.gz',
        'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz', 'c58f30108f718f92721af3b95e74349a',
        tuple(f'data_batch_{i}' for i in range(1, 6)), ('test_batch',), 'labels', 10,
        (0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),
    'cifar100': _CifarFormat(
        'CIFAR-100', 'cifar-100-python', 'cifar-100-python.tar.gz',
        'https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz', 'eb9058c3a382ffc7106e4002c42a8d85',
        ('train',), ('test',), 'fine_labels', 100,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


# The only globals a data pickle may name: what numpy arrays need to be rebuilt.
_SAFE_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'): _numpy_reconstruct,
    ('numpy._core.multiarray', '_reconstruct'): _numpy_reconstruct,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
    ('_codecs', 'encode'): codecs.encode,  # how protocol-2 pickles written by Python 3 store bytes
}
# What loading a damaged pickle can raise.
_DAMAGED_PICKLE = (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
                   OverflowError, MemoryError)


class _ArrayUnpickler(pickle.Unpickler):
    """Admits numpy arrays, lists, dicts, strings and numbers only: any other global named by a pickle
    could run code while loading, and a data file has no business naming one."""

    def __init__(self, file, path):
        super().__init__(file, encoding='bytes')  # the CIFAR files are Python 2 pickles
        self.path = path

    def find_class(self, module, name):
        if (module, name) not in _SAFE_GLOBALS:
            raise UserError(f'{self.path} was refused: it references {module}.{name}, and a data file must '
                            f'hold only arrays, lists, dicts, strings and numbers')
        return _SAFE_GLOBALS[module, name]


def _cifar_folder(root, cifar):
    """The extracted CIFAR folder under root, extracted from the archive there or downloaded if missing."""
    folder = os.path.join(root, cifar.folder)
    archive = os.path.join(root, cifar.archive)
    if os.path.isdir(folder):
        return folder
    if os.path.isfile(archive):
        if not check_integrity(archive, cifar.md5):
            raise UserError(f'{archive} is damaged or incomplete (wrong md5 checksum); replace it, or put '
                            f'the extracted folder {cifar.folder} into {root}')
        extract_archive(archive, root)
    else:
        created = not os.path.exists(root)
        try:
            download_and_extract_archive(cifar.url, root, filename=cifar.archive, md5=cifar.md5)
        except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad checksum a RuntimeError
            _remove_failed_download(root, archive, created)
            raise UserError(f'{cifar.title} is not in {root} and could not be downloaded (no network? '
                            f'{str(error)[:100]}); put {cifar.archive} or its extracted folder '
                            f'{cifar.folder} into {root}') from None
    if not os.path.isdir(folder):
        raise UserError(f'{archive} does not hold the folder {cifar.folder}; is it the {cifar.title} '
                        f'python archive?')
    return folder


def _remove_failed_download(root, archive, created):
    """Leave nothing behind that looks like data: the partial archive, and the folder if the download made it."""
    if os.path.isfile(archive):
        os.remove(archive)
    if created and os.path.isdir(root) and not os.listdir(root):
        os.rmdir(root)


def _read_cifar_batch(path, cifar):
    if not os.path.isfile(path):
        raise UserError(f'{path} is missing from the {cifar.title} folder; extract {cifar.archive} again')
    try:
        with open(path, 'rb') as f:
            batch = _ArrayUnpickler(f, path).load()
    except UserError:
        raise
    except _DAMAGED_PICKLE as error:
        raise UserError(f'{path} is not a readable {cifar.title} batch file ({type(error).__name__})') from None
    if not isinstance(batch, dict):
        raise UserError(f'{path} does not hold a dict, so it is not a {cifar.title} batch file')
    batch = {key.decode('latin1') if isinstance(key, bytes) else key: value for key, value in batch.items()}
    data, labels = batch.get('data'), np.asarray(batch.get(cifar.label_key, []))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f'{path} has no uint8 array of shape (N, 3072) under "data"')
    valid_labels = (labels.shape == (len(data),) and labels.dtype.kind in 'iu'
                    and np.all((labels >= 0) & (labels < cifar.num_classes)))
    if not valid_labels:
        raise UserError(f'{path} needs one label in 0..{cifar.num_classes - 1} per image under '
                        f'"{cifar.label_key}"')
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32))
    return images, torch.from_numpy(labels.astype(np.int64))


def _read_cifar_split(folder, names, cifar):
    batches = [_read_cifar_batch(os.path.join(folder, name), cifar) for name in names]
    return ImageData(torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches]))


def _load_cifar(args, root, image_size):
    cifar = _CIFAR[args.dataset]
    folder = _cifar_folder(root, cifar)
    train = _read_cifar_split(folder, cifar.train_files, cifar)
    test = _read_cifar_split(folder, cifar.test_files, cifar)
    return train, test, DatasetInfo(args.dataset, cifar.num_classes, 3, 32, cifar.mean, cifar.std)


# ----------------------------------------------------------------------------------------- ImageNet

def _imagenet_transforms(image_size):
    """DARTS's ImageNet pipelines; crop and resize scale together when --image_size is not 224."""
    normalise = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = transforms.Compose([
        transforms.RandomResizedCrop(image_size),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(*IMAGENET_JITTER),
        transforms.ToTensor(),
        normalise,
    ])
    test = transforms.Compose([
        transforms.Resize(round(image_size * 256 / 224)),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        normalise,
    ])
    return train, test


class TolerantImageFolder(ImageFolder):
    """ImageFolder that serves the next readable image, with a warning, in place of an unreadable one: a
    folder of a million files is too large to check up front, and one bad file must not end an epoch."""

    def __getitem__(self, index):
        for offset in range(len(self)):
            position = (index + offset) % len(self)
            try:
                return super().__getitem__(position)
            except _UNREADABLE:
                warnings.warn(f'skipped unreadable image file {self.samples[position][0]}', stacklevel=2)
        raise UserError(f'{self.root} has no readable images')


def _load_imagenet(args, root, image_size):
    train_dir, val_dir = os.path.join(root, 'train'), os.path.join(root, 'val')
    if not (os.path.isdir(train_dir) and os.path.isdir(val_dir)):
        raise UserError(f'ImageNet is expected as class folders {train_dir}/<class>/<image> and '
                        f'{val_dir}/<class>/<image>, and {root} does not have both')
    train_transform, test_transform = _imagenet_transforms(image_size)
    try:
        train = TolerantImageFolder(train_dir, train_transform)
        test = TolerantImageFolder(val_dir, test_transform)
    except FileNotFoundError as error:  # ImageFolder's word for a folder without class folders or images
        raise UserError(f'{root} is not a usable ImageNet folder: {error}') from None
    if test.classes != train.classes:
        raise UserError(f'{val_dir} and {train_dir} must hold the same class folders')
    info = DatasetInfo('imagenet', len(train.classes), 3, image_size, IMAGENET_MEAN, IMAGENET_STD)
    return train, test, info


# ----------------------------------------------------------------------------------------- image folders

_UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)  # what PIL raises on bad files


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
        except _UNREADABLE:
            continue
    return 'RGB'


def _decode_images(samples, mode, image_size, where):
    arrays, labels, unreadable = [], [], []
    for path, label in tqdm(samples, desc=f'decoding {where}', leave=False, disable=not sys.stderr.isatty()):
        try:
            with Image.open(path) as image:
                arrays.append(np.asarray(image.convert(mode).resize((image_size, image_size), Image.BILINEAR)))
            labels.append(label)
        except _UNREADABLE:
            unreadable.append(path)
    if unreadable:
        more = f' and {len(unreadable) - 3} more' if len(unreadable) > 3 else ''
        warnings.warn(f'skipped {len(unreadable)} unreadable image file(s) in {where}: '
                      f'{", ".join(unreadable[:3])}{more}', stacklevel=2)
    if not arrays:
        raise UserError(f'{where} has no readable images')
    images = np.stack(arrays).reshape(len(arrays), image_size, image_size, -1)  # L images have no channel axis
    return ImageData(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels))


def _load_folder(args, root, image_size):
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
        train_files, test_files = _hold_out(train_files, args.held_out_fraction)
    if not test_files:
        raise UserError(f'{root} gives an empty test split; add images or a test/ subfolder')
    mode = COLOUR_MODES[args.in_channels] if args.in_channels else _first_mode(train_files)
    train = _decode_images(train_files, mode, image_size, train_dir)
    test = _decode_images(test_files, mode, image_size, test_dir or f'{train_dir} (held out)')
    mean, std = _channel_stats(train.images)
    return train, test, DatasetInfo('folder', len(classes), train.images.shape[1], image_size, mean, std)


# ----------------------------------------------------------------------------------------- synthetic
# One base pattern per class, cycled at finer scales beyond ten classes. u, v: pixel-centre x and y in
# [0, 1]; p: per-image random parameters shaped n x 1 x 1, so each pattern renders a whole class at once.

def _stripes(t, p):
    return (t / p.period + p.phase) % 1 < 0.5


def _horizontal_stripes(u, v, p):
    return _stripes(v, p)


def _vertical_stripes(u, v, p):
    return _stripes(u, p)


def _diagonal_stripes(u, v, p):
    return _stripes((u + v) / math.sqrt(2), p)


def _checkerboard(u, v, p):
    return _stripes(u, p) ^ _stripes(v, p)


def _disc(u, v, p):
    return np.hypot(u - p.x, v - p.y) < p.radius


def _ring(u, v, p):
    return np.abs(np.hypot(u - p.x, v - p.y) - 0.75 * p.radius) < 0.25 * p.radius


def _cross(u, v, p):
    across, down = np.abs(u - p.x), np.abs(v - p.y)
    arm = 0.3 * p.radius
    return ((across < arm) & (down < p.radius)) | ((down < arm) & (across < p.radius))


def _square_outline(u, v, p):
    distance = np.maximum(np.abs(u - p.x), np.abs(v - p.y))
    return (distance < p.radius) & (distance > 0.6 * p.radius)


def _dot_grid(u, v, p):
    return np.hypot((u / p.period + p.phase) % 1 - 0.5, (v / p.period + p.phase) % 1 - 0.5) < 0.25


def _triangle(u, v, p):
    depth = v - p.y + p.radius  # 0 at the apex, 2 * radius at the base
    return (depth > 0) & (depth < 2 * p.radius) & (np.abs(u - p.x) < depth / 2)


_PATTERNS = (_horizontal_stripes, _vertical_stripes, _diagonal_stripes, _checkerboard, _disc, _ring, _cross,
             _square_outline, _dot_grid, _triangle)


def _pattern_parameters(count, scale, rng):
    shape = (count, 1, 1)
    return SimpleNamespace(
        phase=rng.random(shape),
        period=0.3 * scale * rng.uniform(0.85, 1.15, shape),
        x=rng.uniform(0.3, 0.7, shape),
        y=rng.uniform(0.3, 0.7, shape),
        radius=0.28 * scale * rng.uniform(0.8, 1.2, shape),
    )


def _colourise(masks, channels, rng):
    """Foreground and background colours per image, one bright and one dark (at random which), plus noise:
    the pattern is always visible, and the mean colour says little about the class."""
    count, size = len(masks), masks.shape[-1]
    bright = rng.uniform(0.55, 1.0, (count, channels, 1, 1)).astype(np.float32)
    dark = rng.uniform(0.0, 0.45, (count, channels, 1, 1)).astype(np.float32)
    inverted = rng.random((count, 1, 1, 1)) < 0.5
    foreground, background = np.where(inverted, dark, bright), np.where(inverted, bright, dark)
    noise = 0.05 * rng.standard_normal((count, channels, size, size), dtype=np.float32)
    images = np.where(masks[:, None], foreground, background) + noise
    return np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)


def synthetic_images(count, num_classes, channels, image_size, seed):
    """`count` images of balanced random classes, each class a visual pattern at a random position, with
    random colours and noise. Deterministic for `seed` (an int or a sequence of ints)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % num_classes)
    images = np.empty((count, channels, image_size, image_size), dtype=np.uint8)
    centres = (np.arange(image_size) + 0.5) / image_size
    u, v = centres[None, None, :], centres[None, :, None]
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        scale = 1 / (1 + 0.5 * (label // len(_PATTERNS)))
        masks = _PATTERNS[label % len(_PATTERNS)](u, v, _pattern_parameters(len(members), scale, rng))
        masks = np.broadcast_to(masks, (len(members), image_size, image_size))  # stripes vary along one axis
        images[members] = _colourise(masks, channels, rng)
    return ImageData(torch.from_numpy(images), torch.from_numpy(labels).long())


def _load_synthetic(args, root, image_size):
    shape = (args.num_classes, args.in_channels or 3, image_size)
    # Train and test are drawn from different seeds derived from --synthetic_seed: independent samples.
    train = synthetic_images(args.synthetic_train_size, *shape, seed=(args.synthetic_seed, 0))
    test = synthetic_images(args.synthetic_test_size, *shape, seed=(args.synthetic_seed, 1))
    mean, std = _channel_stats(train.images)
    return train, test, DatasetInfo('synthetic', args.num_classes, shape[1], image_size, mean, std)


_LOADERS = {'cifar10': _load_cifar, 'cifar100': _load_cifar, 'imagenet': _load_imagenet,
            'folder': _load_folder, 'synthetic': _load_synthetic}


# ----------------------------------------------------------------------------------------- augmentation

def _mix(*numbers):
    """One seed from several integers: a polynomial hash modulo the prime 2**61 - 1, so that tuples such as
    (seed, epoch, step, rank) practically never share a seed."""
    seed = 0
    for number in numbers:
        seed = (seed * 1_000_003 + number + 1) % (2 ** 61 - 1)
    return seed


def _clipped_boxes(centre_y, centre_x, half_height, half_width, height, width):
    """Per sample a box around the centre, clipped at the border as DARTS's Cutout clips: B x H x W masks
    and the boxes' areas."""
    top, bottom = (centre_y - half_height).clamp(0, height), (centre_y + half_height).clamp(0, height)
    left, right = (centre_x - half_width).clamp(0, width), (centre_x + half_width).clamp(0, width)
    rows = torch.arange(height, device=centre_y.device)
    cols = torch.arange(width, device=centre_x.device)
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])
    return in_rows[:, :, None] & in_cols[:, None, :], (bottom - top) * (right - left)


def random_crop_flip(images, padding, generator):
    """Per sample: crop H x W from the zero-padded image at a random offset, then flip with p = 0.5."""
    batch, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4)
    offsets = torch.randint(2 * padding + 1, (2, batch, 1), generator=generator, device=device)
    rows = offsets[0] + torch.arange(height, device=device)
    cols = offsets[1] + torch.arange(width, device=device)
    flipped = torch.rand(batch, 1, generator=generator, device=device) < 0.5
    cols = torch.where(flipped, cols.flip(1), cols)
    samples = torch.arange(batch, device=device)[:, None, None, None]
    planes = torch.arange(channels, device=device)[None, :, None, None]
    return padded[samples, planes, rows[:, None, :, None], cols[:, None, None, :]]


def cutout(images, length, generator):
    """DARTS's Cutout per sample: zero a length x length square centred anywhere, clipped at the border."""
    batch, _, height, width = images.shape
    centres = [torch.randint(side, (batch,), generator=generator, device=images.device) for side in (height, width)]
    square, _ = _clipped_boxes(*centres, length // 2, length // 2, height, width)
    return images.masked_fill(square[:, None], 0.0)


def cutmix(images, labels, num_classes, prob, beta, generator):
    """CutMix per sample: with probability prob a sample gets a box from its neighbour in the batch,
    its side sqrt(1 - lam) of the image's, lam ~ Beta(beta, beta); soft targets weigh each class by area."""
    batch, _, height, width = images.shape
    device = images.device
    # Beta from two Gammas, because torch.distributions.Beta takes no generator.
    gammas = torch._standard_gamma(torch.full((2, batch), float(beta), device=device), generator=generator)
    lam = gammas[0] / gammas.sum(0).clamp_min(torch.finfo(gammas.dtype).tiny)
    mixed = torch.rand(batch, generator=generator, device=device) < prob
    side = (1 - lam).sqrt() * mixed  # an unmixed sample gets an empty box
    centres = [torch.randint(size, (batch,), generator=generator, device=device) for size in (height, width)]
    box, area = _clipped_boxes(*centres, (height * side).long() // 2, (width * side).long() // 2, height, width)
    images = torch.where(box[:, None], images.roll(1, 0), images)
    own_weight = (1 - area / (height * width))[:, None]
    one_hot = F.one_hot(labels, num_classes).float()
    return images, own_weight * one_hot + (1 - own_weight) * one_hot.roll(1, 0)


# ----------------------------------------------------------------------------------------- loaders

def _rank_samples(num_samples, shuffle, rank, world_size):
    """Training ranks take the same number of samples, so that they step in lockstep; evaluation ranks
    split every sample between them."""
    return num_samples // world_size if shuffle else len(range(rank, num_samples, world_size))


def _shard_order(num_samples, shuffle, seed, epoch, rank, world_size):
    """This rank's samples of epoch `epoch`, in order: every rank shuffles alike and takes every
    world_size-th sample. The first k * batch * world_size samples of the epoch's permutation are thus
    exactly those of the first k steps of all ranks together, whatever the number of ranks."""
    if shuffle:
        order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(_mix(seed, epoch)))
    else:
        order = torch.arange(num_samples)
    return order[rank::world_size][:_rank_samples(num_samples, shuffle, rank, world_size)]


class _ShardedLoader:
    """What both loaders share: batch counting, epoch order, per-batch generators, and the augmentations
    applied to normalised batches on the device."""

    def __init__(self, num_samples, info, batch_size, device, shuffle, augment, cutout_length, cutmix_prob,
                 cutmix_beta, drop_last, seed, rank, world_size, channels_last):
        problems = [
            (batch_size < 1, f'the batch size must be at least 1, not {batch_size}'),
            (cutout_length < 0, f'--cutout_length must not be negative, not {cutout_length}'),
            (not 0 <= cutmix_prob <= 1, f'--cutmix_prob must lie in [0, 1], not {cutmix_prob}'),
            (cutmix_beta <= 0, f'--cutmix_beta must be positive, not {cutmix_beta}'),
            (not 0 <= rank < world_size, f'rank {rank} does not exist among {world_size} processes'),
        ]
        for failed, message in problems:
            if failed:
                raise UserError(message)
        self.num_samples, self.num_classes = num_samples, info.num_classes
        self.batch_size, self.device = batch_size, torch.device(device)
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.cutout_length, self.cutmix_prob, self.cutmix_beta = cutout_length, cutmix_prob, cutmix_beta
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.epoch = 0

    def __len__(self):
        samples = _rank_samples(self.num_samples, self.shuffle, self.rank, self.world_size)
        return samples // self.batch_size if self.drop_last else math.ceil(samples / self.batch_size)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        return self.iterate(self.epoch)

    def _order(self, epoch):
        return _shard_order(self.num_samples, self.shuffle, self.seed, epoch, self.rank, self.world_size)

    def _generator(self, epoch, step):
        return torch.Generator(device=self.device).manual_seed(_mix(self.seed, epoch, step, self.rank))

    def _finish(self, images, labels, generator):
        """Cutout and CutMix on the normalised batch; soft targets whenever CutMix is on."""
        if self.augment and self.cutout_length > 0:
            images = cutout(images, self.cutout_length, generator)
        if self.augment and self.cutmix_prob > 0:
            images, labels = cutmix(images, labels, self.num_classes, self.cutmix_prob, self.cutmix_beta,
                                    generator)
        return images.contiguous(memory_format=self.memory_format), labels


class DeviceLoader(_ShardedLoader):
    """Batches of an in-memory split that lives on the device as uint8 and is augmented there per sample:
    random crop with 4-pixel zero padding, flip, normalisation, cutout, CutMix, in a few batched operations.

    Epoch e's order is a permutation drawn from (seed, e), shared by all ranks, each taking every
    world_size-th sample; batch (e, step) draws its augmentation from (seed, e, step, rank). So
    `iterate(e, start_step=k)` yields exactly batches k.. of epoch e, and resuming needs no saved state.
    """

    def __init__(self, data, info, batch_size, *, device, shuffle, augment, cutout_length=0, cutmix_prob=0.0,
                 cutmix_beta=1.0, indices=None, drop_last=False, seed=0, rank=0, world_size=1,
                 channels_last=False):
        if indices is not None:
            data = ImageData(data.images[indices], data.labels[indices])
        super().__init__(len(data), info, batch_size, device, shuffle, augment, cutout_length, cutmix_prob,
                         cutmix_beta, drop_last, seed, rank, world_size, channels_last)
        self.images, self.labels = data.images.to(self.device), data.labels.to(self.device)
        self.mean = torch.tensor(info.mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(info.std, device=self.device).view(1, -1, 1, 1)

    def iterate(self, epoch, start_step=0):
        """Batches start_step.. of epoch `epoch`: (float32 images, int64 classes or soft targets)."""
        order = self._order(epoch).to(self.device)
        for step in range(start_step, len(self)):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            yield self._batch(index, self._generator(epoch, step) if self.augment else None)

    def _batch(self, index, generator):
        images, labels = self.images[index], self.labels[index]
        if self.augment:
            images = random_crop_flip(images, CROP_PADDING, generator)
        images = images.float().div_(255).sub_(self.mean).div_(self.std)
        return self._finish(images, labels, generator)


class _ShardSampler(torch.utils.data.Sampler):
    """One rank's sample indices of an epoch, from a given batch on; `position` is set before iterating."""

    def __init__(self, loader):
        self.order = loader._order
        self.batch_size = loader.batch_size
        self.samples = _rank_samples(loader.num_samples, loader.shuffle, loader.rank, loader.world_size)
        self.position = (0, 0)  # (epoch, start_step)

    def __iter__(self):
        epoch, start_step = self.position
        return iter(self.order(epoch)[start_step * self.batch_size:].tolist())

    def __len__(self):
        return max(0, self.samples - self.position[1] * self.batch_size)


class FolderLoader(_ShardedLoader):
    """Batches of a torchvision dataset (ImageNet) decoded by `workers` DataLoader processes, moved to the
    device. Order and sharding are the DeviceLoader's, so resuming mid-epoch is exact in which images come;
    crops and flips are the dataset's transforms, and `augment` adds cutout and CutMix on the device."""

    def __init__(self, dataset, info, batch_size, *, device, shuffle, augment, cutout_length=0, cutmix_prob=0.0,
                 cutmix_beta=1.0, indices=None, drop_last=False, seed=0, rank=0, world_size=1,
                 channels_last=False, workers=4):
        if indices is not None:
            dataset = torch.utils.data.Subset(dataset, torch.as_tensor(indices).tolist())
        super().__init__(len(dataset), info, batch_size, device, shuffle, augment, cutout_length, cutmix_prob,
                         cutmix_beta, drop_last, seed, rank, world_size, channels_last)
        self.sampler = _ShardSampler(self)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size, sampler=self.sampler, num_workers=workers, drop_last=drop_last,
            pin_memory=self.device.type == 'cuda', persistent_workers=workers > 0,
            # Worker seeds from our own generator, so that building the iterator leaves torch's RNG alone.
            generator=torch.Generator().manual_seed(_mix(seed, rank)))

    def iterate(self, epoch, start_step=0):
        """Batches start_step.. of epoch `epoch`, on the device."""
        self.sampler.position = (epoch, start_step)
        for step, (images, labels) in enumerate(self.loader, start=start_step):
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            yield self._finish(images, labels, self._generator(epoch, step) if self.augment else None)


def make_loader(split, info, batch_size, *, device, train, args, indices=None, rank=0, world_size=1):
    """The loader a script needs: a training loader shuffles and augments as the flags say, an evaluation
    loader keeps the order and does not augment. Flags a script did not add count as off."""
    in_memory = isinstance(split, ImageData)
    extra = {} if in_memory else {'workers': args.workers}
    return (DeviceLoader if in_memory else FolderLoader)(
        split, info, batch_size, device=device, shuffle=train, augment=train, indices=indices,
        seed=getattr(args, 'seed', 0), rank=rank, world_size=world_size,
        channels_last=getattr(args, 'channels_last', False),
        cutout_length=args.cutout_length if getattr(args, 'cutout', False) else 0,
        cutmix_prob=getattr(args, 'cutmix_prob', 0.0), cutmix_beta=getattr(args, 'cutmix_beta', 1.0), **extra)
