import argparse
import dataclasses
import os
import pickle
import struct
import sys
import tarfile
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import io as scipy_io
from torch import nn

import cifar
import data
import loaders
import search_split
from utils import UserError

SIDE = 16  # small images keep the augmentation checks fast


def parse(*argv):
    """The DataConfig of a command line of data flags."""
    parser = argparse.ArgumentParser()
    data.add_data_arguments(parser)
    return data.DataConfig.from_flags(parser.parse_args([str(arg) for arg in argv]))


def noise_images(count, side=SIDE, channels=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, channels, side, side), generator=generator, dtype=torch.uint8)


def identity_info(num_classes, mean=0.0, channels=3):
    """Normalisation that keeps pixel values readable: x = p / 255 - mean."""
    return data.DatasetInfo('test', num_classes, channels, SIDE, (mean,) * channels, (1.0,) * channels)


def crop_flip_candidates(image, padding=4):
    """Every crop of the zero-padded image; the first half unflipped, the second half flipped."""
    _, height, width = image.shape
    padded = F.pad(image, (padding,) * 4)
    crops = [padded[:, y:y + height, x:x + width]
             for y in range(2 * padding + 1) for x in range(2 * padding + 1)]
    return torch.stack(crops + [crop.flip(-1) for crop in crops])


# ----------------------------------------------------------------------------------------- arguments

def test_arguments_defaults_alias_and_help():
    parser = argparse.ArgumentParser()
    data.add_data_arguments(parser)
    args = parser.parse_args([])
    assert (args.dataset, args.data, args.image_size, args.in_channels) == ('cifar10', '../data', None, None)
    assert args.synthetic_seed == 0 and args.workers == 4 and args.held_out_fraction == 0.1
    assert parser.parse_args(['--set', 'cifar100']).dataset == 'cifar100'
    assert all(action.help for action in parser._actions if action.dest != 'help')
    assert data.DataConfig.from_flags(args) == data.DataConfig()


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(UserError, match='cifar10, cifar100, svhn, imagenet16-120, imagenet, folder, synthetic'):
        data.load_dataset(dataclasses.replace(parse(), dataset='mnist'))
    with pytest.raises(UserError, match='image_size'):
        data.load_dataset(parse('--dataset', 'synthetic', '--image_size', 4))
    with pytest.raises(UserError, match='in_channels'):
        data.load_dataset(parse('--dataset', 'folder', '--data', tmp_path, '--in_channels', 2))
    with pytest.raises(SystemExit):
        parse('--dataset', 'synthetic', '--num_classes', 1)


# ----------------------------------------------------------------------------------------- CIFAR

def write_cifar(folder, names, label_key, num_classes, bytes_keys=True):
    """Batch files in the real format (protocol-2 pickled dicts); returns the images and labels written."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(len(names))
    images, labels = [], []
    for count, name in enumerate(names, start=7):
        batch = {'batch_label': f'batch {name}', 'data': rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 label_key: rng.integers(0, num_classes, count).tolist()}
        if bytes_keys:
            batch = {key.encode(): value for key, value in batch.items()}
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump(batch, f, protocol=2)
        images.append(batch[b'data' if bytes_keys else 'data'])
        labels += batch[label_key.encode() if bytes_keys else label_key]
    return torch.from_numpy(np.concatenate(images).reshape(-1, 3, 32, 32)), torch.tensor(labels)


CIFAR10_TRAIN = [f'data_batch_{i}' for i in range(1, 6)]


@pytest.mark.parametrize('dataset, folder, train_names, test_names, label_key, classes, bytes_keys', [
    ('cifar10', 'cifar-10-batches-py', CIFAR10_TRAIN, ['test_batch'], 'labels', 10, True),
    ('cifar100', 'cifar-100-python', ['train'], ['test'], 'fine_labels', 100, False),
])
def test_cifar_round_trip(tmp_path, dataset, folder, train_names, test_names, label_key, classes, bytes_keys):
    train_images, train_labels = write_cifar(tmp_path / folder, train_names, label_key, classes, bytes_keys)
    test_images, test_labels = write_cifar(tmp_path / folder, test_names, label_key, classes, bytes_keys)
    train, test, info = data.load_dataset(parse('--dataset', dataset, '--data', tmp_path))
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert torch.equal(train.images, train_images) and torch.equal(train.labels, train_labels)
    assert torch.equal(test.images, test_images) and torch.equal(test.labels, test_labels)
    assert (info.num_classes, info.in_channels, info.image_size, len(info.mean)) == (classes, 3, 32, 3)


def python2_batch(data_array, labels):
    """A batch file as CIFAR's Python 2 pickler wrote it: text and raw bytes as py2 `str` (BINSTRING), the
    array rebuilt through numpy.core.multiarray._reconstruct, hand-assembled from protocol-2 opcodes."""
    def string(value):
        return b'T' + struct.pack('<i', len(value)) + value

    def integer(value):
        return b'J' + struct.pack('<i', value)

    dtype = (b'cnumpy\ndtype\n' + string(b'u1') + b'K\x00K\x01\x87R(K\x03' + string(b'|') + b'NNN'
             + integer(-1) + integer(-1) + b'K\x00tb')
    array = (b'cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85' + string(b'b') + b'\x87R'
             + b'(K\x01' + integer(len(data_array)) + integer(3072) + b'\x86' + dtype + b'\x89'
             + string(data_array.tobytes()) + b'tb')
    label_list = b'](' + b''.join(integer(label) for label in labels) + b'e'
    return b'\x80\x02}(' + string(b'data') + array + string(b'labels') + label_list + b'u.'


def write_imagenet16(folder):
    """ImageNet16's batch files, as NAS-Bench-201's authors distribute them: 16x16 images, labels 1..1000 (a
    few of them above 120) and the mean, pickled with string keys; returns the images and labels of
    classes 1..120, counted from 0."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(16)
    kept = {}
    for name in [f'train_data_batch_{i}' for i in range(1, 11)] + ['val_data']:
        labels = rng.choice([1, 2, 60, 120, 121, 500, 1000], 9).tolist()
        batch = {'data': rng.integers(0, 256, (9, 768), dtype=np.uint8), 'labels': labels, 'mean': np.zeros(768)}
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump(batch, f, protocol=2)
        mask = np.array(labels) <= 120
        kept[name] = (torch.from_numpy(batch['data'][mask].reshape(-1, 3, 16, 16)),
                      torch.tensor(labels)[torch.from_numpy(mask)] - 1)
    return kept


def test_imagenet16_120_keeps_the_first_120_classes_at_16_pixels(tmp_path):
    kept = write_imagenet16(tmp_path / 'ImageNet16')
    train, test, info = data.load_dataset(parse('--dataset', 'imagenet16-120', '--data', tmp_path))
    assert (info.num_classes, info.image_size, info.crop_padding) == (120, 16, 2)
    assert info.mean == pytest.approx((122.68 / 255, 116.66 / 255, 104.01 / 255))
    assert torch.equal(test.images, kept['val_data'][0]) and torch.equal(test.labels, kept['val_data'][1])
    assert torch.equal(train.labels, torch.cat([kept[f'train_data_batch_{i}'][1] for i in range(1, 11)]))
    assert set(train.labels.tolist()) <= set(range(120)) and train.images.shape[1:] == (3, 16, 16)
    with pytest.raises(UserError, match='ImageNet16-120 is not in .*: put its folder ImageNet16'):
        data.load_dataset(parse('--dataset', 'imagenet16-120', '--data', tmp_path / 'elsewhere'))
    with pytest.raises(UserError, match='imagenet16-120 images are 16x16'):
        data.load_dataset(parse('--dataset', 'imagenet16-120', '--data', tmp_path, '--image_size', 32))


def test_cifar_reads_python2_pickles(tmp_path):
    folder = tmp_path / 'cifar-10-batches-py'
    images, labels = write_cifar(folder, CIFAR10_TRAIN + ['test_batch'], 'labels', 10)
    first = images[:7].reshape(7, 3072).numpy()
    (folder / 'data_batch_1').write_bytes(python2_batch(first, labels[:7].tolist()))
    train, _, _ = data.load_dataset(parse('--dataset', 'cifar10', '--data', tmp_path))
    assert torch.equal(train.images[:7], images[:7]) and torch.equal(train.labels[:7], labels[:7])


def test_cifar_archive_is_checked_and_extracted(tmp_path, monkeypatch):
    images, _ = write_cifar(tmp_path / 'staging' / 'cifar-10-batches-py', CIFAR10_TRAIN + ['test_batch'],
                            'labels', 10)
    with tarfile.open(tmp_path / 'cifar-10-python.tar.gz', 'w:gz') as archive:
        archive.add(tmp_path / 'staging' / 'cifar-10-batches-py', arcname='cifar-10-batches-py')
    with pytest.raises(UserError, match='checksum'):  # not the official archive
        data.load_dataset(parse('--dataset', 'cifar10', '--data', tmp_path))
    monkeypatch.setattr(cifar, 'check_integrity', lambda path, md5: True)
    train, test, _ = data.load_dataset(parse('--dataset', 'cifar10', '--data', tmp_path))
    assert torch.equal(torch.cat([train.images, test.images]), images)


class RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_cifar_pickle_naming_other_globals_is_refused(tmp_path):
    folder = tmp_path / 'cifar-10-batches-py'
    write_cifar(folder, CIFAR10_TRAIN + ['test_batch'], 'labels', 10)
    marker = tmp_path / 'MARKER'
    with open(folder / 'data_batch_1', 'wb') as f:
        pickle.dump({b'data': RunsCommand(f'touch {marker}'), b'labels': [0]}, f, protocol=2)
    with pytest.raises(UserError, match=r'refused: it references \w+\.system'):
        data.load_dataset(parse('--dataset', 'cifar10', '--data', tmp_path))
    assert not marker.exists()


def test_cifar_missing_offline_says_where_to_put_it(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError('no network')
    monkeypatch.setattr(cifar, 'download_and_extract_archive', offline)
    with pytest.raises(UserError, match='put cifar-100-python.tar.gz or its extracted folder cifar-100-python into'):
        data.load_dataset(parse('--dataset', 'cifar100', '--data', tmp_path))


def test_cifar_missing_or_bad_batch_file_is_named(tmp_path):
    folder = tmp_path / 'cifar-10-batches-py'
    write_cifar(folder, CIFAR10_TRAIN + ['test_batch'], 'labels', 10)
    os.remove(folder / 'data_batch_3')
    with pytest.raises(UserError, match='data_batch_3'):
        data.load_dataset(parse('--dataset', 'cifar10', '--data', tmp_path))
    with open(folder / 'data_batch_3', 'wb') as f:
        pickle.dump({b'data': np.zeros((2, 100), np.uint8), b'labels': [0, 1]}, f, protocol=2)
    with pytest.raises(UserError, match=r'data_batch_3 has no uint8 array of shape \(N, 3072\)'):
        data.load_dataset(parse('--dataset', 'cifar10', '--data', tmp_path))


def write_svhn(root, train_labels, test_labels):
    """SVHN files in the official MATLAB 5 layout (X: 32 x 32 x 3 x N, y: N x 1, 10 for the digit 0);
    returns the images each should read back as, N x 3 x 32 x 32."""
    expected = []
    for name, labels in (('train_32x32.mat', train_labels), ('test_32x32.mat', test_labels)):
        images = noise_images(len(labels), side=32, seed=len(expected))
        scipy_io.savemat(root / name, {'X': images.permute(2, 3, 1, 0).numpy(),
                                       'y': np.array(labels, np.uint8).reshape(-1, 1)})
        expected.append(images)
    return expected


def test_svhn_reads_the_official_layout_with_10_as_the_digit_0(tmp_path):
    train_images, test_images = write_svhn(tmp_path, [10, 1, 5, 9, 10], [3, 10, 7])
    train, test, info = data.load_dataset(parse('--dataset', 'svhn', '--data', tmp_path))
    assert torch.equal(train.images, train_images) and torch.equal(test.images, test_images)
    assert train.labels.tolist() == [0, 1, 5, 9, 0] and test.labels.tolist() == [3, 0, 7]
    assert (info.name, info.num_classes, info.in_channels, info.image_size) == ('svhn', 10, 3, 32)
    assert info.mean == (0.4377, 0.4438, 0.4728) and info.crop_padding == 4


def test_svhn_bad_files_are_named(tmp_path, monkeypatch):
    write_svhn(tmp_path, [0], [1])  # 0 is no SVHN label: the files count the digit 0 as 10
    with pytest.raises(UserError, match=r'train_32x32.mat needs one label in 1..10 per image'):
        data.load_dataset(parse('--dataset', 'svhn', '--data', tmp_path))
    (tmp_path / 'train_32x32.mat').write_bytes(b'MATLAB 5.0 MAT-file, truncated')
    with pytest.raises(UserError, match=r'train_32x32.mat is not a readable SVHN MATLAB file'):
        data.load_dataset(parse('--dataset', 'svhn', '--data', tmp_path))
    with pytest.raises(UserError, match=r'svhn images are 32x32; leave out --image_size'):
        data.load_dataset(parse('--dataset', 'svhn', '--data', tmp_path, '--image_size', 64))
    monkeypatch.setitem(sys.modules, 'scipy.io', None)  # as if scipy were not installed
    with pytest.raises(UserError, match=r'install it with "pip install scipy"'):
        data.load_dataset(parse('--dataset', 'svhn', '--data', tmp_path))


def test_svhn_missing_offline_says_where_to_put_it(tmp_path, monkeypatch):
    import svhn

    def offline(url, root, filename, md5):
        (tmp_path / filename).write_bytes(b'partial')
        raise urllib.error.URLError('no network')
    monkeypatch.setattr(svhn, 'download_url', offline)
    with pytest.raises(UserError, match=r'put train_32x32.mat and test_32x32.mat from '
                                        r'http://ufldl.stanford.edu/housenumbers/ into'):
        data.load_dataset(parse('--dataset', 'svhn', '--data', tmp_path))
    assert not (tmp_path / 'train_32x32.mat').exists()  # no partial file left to be read as data


def test_split_indices():
    first, rest = data.split_indices(10, 0.5)
    assert first.tolist() == [0, 1, 2, 3, 4] and rest.tolist() == [5, 6, 7, 8, 9]
    assert first.dtype == rest.dtype == torch.int64
    with pytest.raises(UserError, match='train_portion'):
        data.split_indices(10, 1.0)


# ----------------------------------------------------------------------------------------- synthetic

def synthetic(*argv):
    return data.load_dataset(parse('--dataset', 'synthetic', *argv))


def test_synthetic_is_deterministic_and_shaped_as_asked():
    train, test, info = synthetic('--synthetic_train_size', 100, '--synthetic_test_size', 30, '--num_classes', 5,
                                  '--in_channels', 2, '--image_size', 12, '--synthetic_seed', 4)
    assert train.images.shape == (100, 2, 12, 12) and train.images.dtype == torch.uint8
    assert test.images.shape == (30, 2, 12, 12)
    assert torch.bincount(train.labels).tolist() == [20] * 5
    assert (info.num_classes, info.in_channels, info.image_size, len(info.std)) == (5, 2, 12, 2)
    again, _, _ = synthetic('--synthetic_train_size', 100, '--synthetic_test_size', 30, '--num_classes', 5,
                            '--in_channels', 2, '--image_size', 12, '--synthetic_seed', 4)
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    other, _, _ = synthetic('--synthetic_train_size', 100, '--num_classes', 5, '--in_channels', 2,
                            '--image_size', 12, '--synthetic_seed', 5)
    assert not torch.equal(train.images, other.images)
    assert not torch.equal(train.images[:30], test.images)
    pixels = train.images.float() / 255
    assert info.mean == pytest.approx(pixels.mean((0, 2, 3)).tolist(), abs=1e-6)
    assert info.std == pytest.approx(pixels.std((0, 2, 3), correction=0).tolist(), abs=1e-6)


@pytest.fixture
def one_thread():
    """Tiny convolutions run fastest on one thread, which also does not stall when other processes hold
    the cores (OpenMP threads then spin for minutes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_synthetic_is_learnable_but_not_from_mean_colour(one_thread):
    torch.manual_seed(0)
    train, test, info = synthetic('--synthetic_train_size', 2000, '--synthetic_test_size', 500, '--image_size', 16)
    colour, test_colour = train.images.float().mean((2, 3)), test.images.float().mean((2, 3))
    centroids = torch.stack([colour[train.labels == label].mean(0) for label in range(10)])
    assert (torch.cdist(test_colour, centroids).argmin(1) == test.labels).float().mean() < 0.3
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    loader = loaders.DeviceLoader(train, info, 64, device='cpu', shuffle=True, augment=False)
    for epoch in range(4):
        for images, targets in loader.iterate(epoch):
            optimizer.zero_grad()
            F.cross_entropy(net(images), targets).backward()
            optimizer.step()
    net.eval()
    images, targets = next(loaders.DeviceLoader(test, info, 500, device='cpu', shuffle=False, augment=False).iterate(0))
    with torch.no_grad():
        assert (net(images).argmax(1) == targets).float().mean() > 0.8


# ----------------------------------------------------------------------------------------- image folders

COLOURS = {'cat': (220, 30, 30), 'dog': (30, 30, 220)}


def write_images(folder, colour, count, mode='RGB'):
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        shade = tuple(min(255, value + 3 * index) for value in colour)
        Image.new(mode, (12, 10), shade if mode == 'RGB' else shade[0]).save(folder / f'{index}.png')


def test_folder_with_test_subfolder_and_a_corrupt_file(tmp_path):
    for split, count in (('train', 4), ('test', 2)):
        for name, colour in COLOURS.items():
            write_images(tmp_path / split / name, colour, count)
    (tmp_path / 'train' / 'dog' / 'broken.png').write_bytes(b'not an image')
    with pytest.warns(UserWarning, match=r'skipped 1 unreadable .*broken\.png'):
        train, test, info = data.load_dataset(parse('--dataset', 'folder', '--data', tmp_path, '--image_size', 8))
    assert train.images.shape == (8, 3, 8, 8) and test.images.shape == (4, 3, 8, 8)
    assert train.labels.tolist() == [0] * 4 + [1] * 4 and test.labels.tolist() == [0, 0, 1, 1]
    red_dominant = train.images[:, 0].float().mean((1, 2)) > train.images[:, 2].float().mean((1, 2))
    assert red_dominant.tolist() == [True] * 4 + [False] * 4, 'cat (label 0) is red, dog blue'
    assert (info.num_classes, info.in_channels, info.image_size) == (2, 3, 8)
    assert info.mean == pytest.approx((train.images.float() / 255).mean((0, 2, 3)).tolist(), abs=1e-6)


def test_folder_channels_from_images_or_flag(tmp_path):
    for name, colour in COLOURS.items():
        write_images(tmp_path / 'train' / name, colour, 2, mode='L')
        write_images(tmp_path / 'val' / name, colour, 1, mode='L')
    train, test, info = data.load_dataset(parse('--dataset', 'folder', '--data', tmp_path))
    assert train.images.shape == (4, 1, 32, 32) and test.images.shape == (2, 1, 32, 32)
    assert info.in_channels == 1 and len(info.mean) == 1
    train, _, info = data.load_dataset(parse('--dataset', 'folder', '--data', tmp_path, '--in_channels', 4))
    assert train.images.shape[1] == info.in_channels == 4


def test_folder_without_test_split_holds_out_a_fraction_per_class(tmp_path):
    for name, colour in COLOURS.items():
        write_images(tmp_path / name, colour, 10)
    args = parse('--dataset', 'folder', '--data', tmp_path, '--image_size', 8, '--held_out_fraction', 0.2)
    train, test, _ = data.load_dataset(args)
    assert len(train) == 16 and test.labels.tolist() == [0, 0, 1, 1]
    again, _, _ = data.load_dataset(args)
    assert torch.equal(train.images, again.images)
    with pytest.raises(UserError, match='does not exist'):
        data.load_dataset(parse('--dataset', 'folder', '--data', tmp_path / 'nowhere'))


# ----------------------------------------------------------------------------------------- ImageNet

def write_imagenet(root, count, size):
    """train/ and val/ with `count` plain-coloured JPEGs per class, named 0.JPEG, 1.JPEG, ..."""
    for split in ('train', 'val'):
        for name, colour in COLOURS.items():
            os.makedirs(root / split / name)
            for index in range(count):
                Image.new('RGB', size, colour).save(root / split / name / f'{index}.JPEG')


def test_imagenet_folder_loader(tmp_path):
    write_imagenet(tmp_path, 3, (48, 40))
    train, test, info = data.load_dataset(parse('--dataset', 'imagenet', '--data', tmp_path, '--image_size', 32))
    assert (len(train), len(test), info.num_classes, info.image_size) == (6, 6, 2, 32)
    for workers in (0, 1):
        loader = loaders.FolderLoader(train, info, 4, device='cpu', shuffle=True, augment=False, workers=workers)
        batches = list(loader.iterate(0))
        assert len(batches) == len(loader) == 2
        images, labels = batches[0]
        assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32 and images.min() < 0
        assert labels.dtype == torch.int64
        assert [b[1].tolist() for b in loader.iterate(0, start_step=1)] == [batches[1][1].tolist()]
    evaluation = loaders.FolderLoader(test, info, 6, device='cpu', shuffle=False, augment=False, workers=0)
    assert next(evaluation.iterate(0))[1].tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(UserError, match='train'):
        data.load_dataset(parse('--dataset', 'imagenet', '--data', tmp_path / 'val'))


def test_imagenet_folder_serves_the_next_image_for_an_unreadable_one(tmp_path):
    write_imagenet(tmp_path, 2, (20, 20))
    (tmp_path / 'val' / 'cat' / '0.JPEG').write_bytes(b'\xff\xd8 truncated')
    _, test, _ = data.load_dataset(parse('--dataset', 'imagenet', '--data', tmp_path, '--image_size', 16))
    assert len(test) == 4  # the unreadable file still counts as a sample
    with pytest.warns(UserWarning, match=r'skipped unreadable image file .*cat.0\.JPEG'):
        image, label = test[0]
    readable, readable_label = test[1]
    assert label == readable_label == 0 and torch.equal(image, readable)


def test_a_search_split_of_data_read_class_by_class_keeps_every_class_in_both_halves(tmp_path):
    for name, colour in COLOURS.items():
        write_images(tmp_path / 'folder' / 'train' / name, colour, 5)
        write_images(tmp_path / 'folder' / 'test' / name, colour, 1)
    train, _, info = data.load_dataset(parse('--dataset', 'folder', '--data', tmp_path / 'folder', '--image_size', 8))
    assert train.labels.tolist() == [0] * 5 + [1] * 5  # read class after class
    first, rest = search_split.indices(train, info.name, 0.6)
    assert first.tolist() == [0, 1, 2, 5, 6, 7] and rest.tolist() == [3, 4, 8, 9]
    write_imagenet(tmp_path / 'imagenet', 4, (20, 20))
    train, _, info = data.load_dataset(parse('--dataset', 'imagenet', '--data', tmp_path / 'imagenet'))
    first, rest = search_split.indices(train, info.name, 0.5)
    assert [train.targets[i] for i in first] == [0, 0, 1, 1] and [train.targets[i] for i in rest] == [0, 0, 1, 1]
    cifar_like = data.ImageData(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]))
    assert [part.tolist() for part in search_split.indices(cifar_like, 'cifar10', 0.5)] == [[0, 1], [2, 3]]  # DARTS's
    with pytest.raises(UserError, match=r'--valid_portion 0.99 splits 10 images into 0 and 10'):
        data.first_and_rest(data.ImageData(torch.zeros(10, 3, 8, 8, dtype=torch.uint8), torch.arange(10) % 2),
                            'folder', 0.01, '--valid_portion 0.99')
