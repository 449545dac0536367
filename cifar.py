"""CIFAR-10, CIFAR-100 and ImageNet16-120 in CIFAR's python format: download, checksum, extraction, safe reading.

Batch files are read by an unpickler that admits only arrays, lists, dicts, strings and numbers, so that a
doctored file cannot run code. Any number of images per file is read, so small files in the same format
serve the tests."""
import codecs
import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.datasets.utils import (
    check_integrity,
    download_and_extract_archive,
    extract_archive,
)

from utils import UserError

try:
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
except ImportError:  # numpy < 2 has no numpy._core
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct


@dataclass(frozen=True)
class CifarFormat:
    title: str
    folder: str
    archive: str
    url: str  # None: no download (the user puts the folder in place)
    md5: str
    train_files: tuple
    test_files: tuple
    label_key: str
    num_classes: int
    mean: tuple
    std: tuple
    side: int = 32
    first_label: int = 0  # ImageNet16's files number their 1,000 classes from 1
    file_classes: int = None  # classes in the files, of which the first num_classes are kept (None: all)


FORMATS = {
    'cifar10': CifarFormat(
        'CIFAR-10', 'cifar-10-batches-py', 'cifar-10-python.tar.gz',
        'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz', 'c58f30108f718f92721af3b95e74349a',
        tuple(f'data_batch_{i}' for i in range(1, 6)), ('test_batch',), 'labels', 10,
        (0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),
    'cifar100': CifarFormat(
        'CIFAR-100', 'cifar-100-python', 'cifar-100-python.tar.gz',
        'https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz', 'eb9058c3a382ffc7106e4002c42a8d85',
        ('train',), ('test',), 'fine_labels', 100,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    # NAS-Bench-201's ImageNet16-120: ImageNet at 16x16, its first 120 classes; train on the training batches,
    # test on the validation data (the benchmark's "ori-test"), with the benchmark's mean and std.
    'imagenet16-120': CifarFormat(
        'ImageNet16-120', 'ImageNet16', 'ImageNet16.tar', None, None,
        tuple(f'train_data_batch_{i}' for i in range(1, 11)), ('val_data',), 'labels', 120,
        (122.68 / 255, 116.66 / 255, 104.01 / 255), (63.22 / 255, 61.26 / 255, 65.09 / 255),
        side=16, first_label=1, file_classes=1000),
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
        if cifar.md5 and not check_integrity(archive, cifar.md5):
            raise UserError(f'{archive} is damaged or incomplete (wrong md5 checksum); replace it, or put '
                            f'the extracted folder {cifar.folder} into {root}')
        extract_archive(archive, root)
    elif cifar.url is None:
        raise UserError(f'{cifar.title} is not in {root}: put its folder {cifar.folder} (or {cifar.archive}) there, '
                        f'as NAS-Bench-201\'s authors distribute it; it cannot be downloaded automatically')
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
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != 3 * cifar.side ** 2):
        raise UserError(f'{path} has no uint8 array of shape (N, {3 * cifar.side ** 2}) under "data"')
    first, count = cifar.first_label, cifar.file_classes or cifar.num_classes
    valid_labels = (labels.shape == (len(data),) and labels.dtype.kind in 'iu'
                    and np.all((labels >= first) & (labels < first + count)))
    if not valid_labels:
        raise UserError(f'{path} needs one label in {first}..{first + count - 1} per image under '
                        f'"{cifar.label_key}"')
    kept = labels < first + cifar.num_classes
    images = torch.from_numpy(np.ascontiguousarray(data[kept]).reshape(-1, 3, cifar.side, cifar.side))
    return images, torch.from_numpy((labels[kept] - first).astype(np.int64))


def _read_cifar_split(folder, names, cifar):
    batches = [_read_cifar_batch(os.path.join(folder, name), cifar) for name in names]
    return torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches])


def read_cifar(name, root):
    """((train images, labels), (test images, labels), the format) of 'cifar10', 'cifar100' or
    'imagenet16-120' under root: the extracted folder, else the archive there, else a download (CIFAR).
    Images are uint8 N x 3 x side x side."""
    cifar = FORMATS[name]
    folder = _cifar_folder(root, cifar)
    train, test = (_read_cifar_split(folder, files, cifar) for files in (cifar.train_files, cifar.test_files))
    return train, test, cifar
