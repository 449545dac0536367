"""SVHN (the cropped-digits format): download, and reading the official train_32x32.mat and test_32x32.mat.

The files are MATLAB 5 files holding X, uint8 of shape 32 x 32 x 3 x N, and y, N x 1 labels 1..10, where 10
stands for the digit 0. scipy reads them; it is imported only here, so it is needed only for SVHN."""
import os

import numpy as np
import torch
from torchvision.datasets.utils import download_url

from utils import UserError

URL = 'http://ufldl.stanford.edu/housenumbers/'
FILES = {'train': ('train_32x32.mat', 'e26dedcc434d2e4c54c9b2d4a06d8373'),
         'test': ('test_32x32.mat', 'eb5a983be6a315427106f1b164d9cef3')}
NUM_CLASSES = 10
# RobustDARTS's SVHN normalisation (automl/RobustDARTS src/utils.py, _data_transforms_svhn).
MEAN = (0.4377, 0.4438, 0.4728)
STD = (0.1980, 0.2010, 0.1970)


def _loadmat():
    try:
        from scipy.io import loadmat
    except ImportError:
        raise UserError('--dataset svhn reads MATLAB files with scipy; install it with "pip install scipy"') from None
    return loadmat


def _mat_file(root, split):
    """The path of a split's .mat file under root, downloaded (with its md5 checked) when missing."""
    name, md5 = FILES[split]
    path = os.path.join(root, name)
    if os.path.isfile(path):
        return path
    try:
        download_url(URL + name, root, filename=name, md5=md5)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad checksum a RuntimeError
        if os.path.isfile(path):
            os.remove(path)
        raise UserError(f'SVHN is not in {root} and could not be downloaded (no network? {str(error)[:100]}); '
                        f'put {FILES["train"][0]} and {FILES["test"][0]} from {URL} into {root}') from None
    return path


def _read_mat(path):
    """(images uint8 N x 3 x 32 x 32, labels int64 N with 0 for the digit 0) of one SVHN .mat file."""
    try:
        contents = _loadmat()(path, variable_names=('X', 'y'))
    except UserError:
        raise
    except Exception as error:  # scipy raises ValueError, TypeError, OSError and its own errors on damaged files
        raise UserError(f'{path} is not a readable SVHN MATLAB file ({type(error).__name__}); download it again') \
            from None
    images, labels = contents.get('X'), contents.get('y')
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
            and images.shape[:3] == (32, 32, 3)):
        raise UserError(f'{path} has no uint8 array X of shape (32, 32, 3, N); is it an SVHN cropped-digits file?')
    labels = np.asarray(labels).reshape(-1)
    if not (labels.shape == (images.shape[3],) and labels.dtype.kind in 'iuf'
            and np.all(np.isin(labels, np.arange(1, NUM_CLASSES + 1)))):
        raise UserError(f'{path} needs one label in 1..10 per image under y (10 for the digit 0)')
    images = torch.from_numpy(np.ascontiguousarray(images.transpose(3, 2, 0, 1)))
    return images, torch.from_numpy(labels.astype(np.int64) % NUM_CLASSES)


def read_svhn(root):
    """((train images, labels), (test images, labels)) of SVHN under root, downloaded when missing.
    The 'extra' split is not used, as in RobustDARTS."""
    return tuple(_read_mat(_mat_file(root, split)) for split in ('train', 'test'))
