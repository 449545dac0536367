import argparse
import os
import pickle
import struct
import tarfile
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.overrides import TorchFunctionMode

import data
from utils import UserError

SIDE = 16  # small images keep the augmentation checks fast


def parse(*argv):
    parser = argparse.ArgumentParser()
    data.add_data_arguments(parser)
    data.add_augmentation_arguments(parser)
    return parser.parse_args([str(arg) for arg in argv])


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
    data.add_augmentation_arguments(parser)
    args = parser.parse_args([])
    assert (args.dataset, args.data, args.image_size, args.in_channels) == ('cifar10', '../data', None, None)
    assert (args.cutout, args.cutout_length, args.cutmix_prob, args.cutmix_beta) == (False, 16, 0.0, 1.0)
    assert args.synthetic_seed == 0 and args.workers == 4 and args.held_out_fraction == 0.1
    assert parser.parse_args(['--set', 'cifar100']).dataset == 'cifar100'
    assert all(action.help for action in parser._actions if action.dest != 'help')
    no_cutmix = argparse.ArgumentParser()
    data.add_augmentation_arguments(no_cutmix, cutmix=False)
    assert not hasattr(no_cutmix.parse_args([]), 'cutmix_prob')


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(UserError, match='cifar10, cifar100, imagenet, folder, synthetic'):
        data.load_dataset(argparse.Namespace(**{**vars(parse()), 'dataset': 'mnist'}))
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
    monkeypatch.setattr(data, 'check_integrity', lambda path, md5: True)
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
    monkeypatch.setattr(data, 'download_and_extract_archive', offline)
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


# ----------------------------------------------------------------------------------------- augmentation

def loader_batch(images, info, **options):
    split = data.ImageData(images, torch.zeros(len(images), dtype=torch.int64))
    loader = data.DeviceLoader(split, info, len(images), device='cpu', shuffle=False, augment=True, **options)
    return next(iter(loader))


def test_random_crop_and_flip_per_sample():
    image = noise_images(1)[0]
    output, _ = loader_batch(image.expand(64, -1, -1, -1).clone(), identity_info(1))
    pixels = (output * 255).round().to(torch.uint8)
    candidates = crop_flip_candidates(image)
    matches = (pixels[:, None] == candidates[None]).flatten(2).all(2)
    assert matches.any(1).all(), 'every output is a crop of the zero-padded image, flipped or not'
    chosen = matches.float().argmax(1)
    assert len(set(chosen.tolist())) > 10
    flipped = chosen >= len(candidates) // 2
    assert 10 < flipped.sum() < 54


def test_cutout_zeroes_a_clipped_square_per_sample():
    length = 8
    image = noise_images(1)[0]
    # With mean 0.5 no pixel value normalises to exactly 0, so the zeros are the cutout.
    output, _ = loader_batch(image.expand(64, -1, -1, -1).clone(), identity_info(1, mean=0.5),
                             cutout_length=length)
    cut = (output == 0).all(1)
    pixels = ((output + 0.5) * 255).round().to(torch.uint8)
    candidates = crop_flip_candidates(image)
    agrees = (pixels[:, None] == candidates[None]) | cut[:, None, None]
    assert agrees.flatten(2).all(2).any(1).all(), 'outside the square, the image is a crop of the original'
    corners = set()
    for square in cut:
        rows, cols = square.any(1).nonzero().flatten(), square.any(0).nonzero().flatten()
        assert torch.equal(square, square.any(1)[:, None] & square.any(0)[None, :]), 'a rectangle'
        for index in (rows, cols):
            assert index[-1] - index[0] + 1 == len(index) <= length
            if index[0] > 0 and index[-1] < SIDE - 1:
                assert len(index) == length, 'only clipping at the border shortens a side'
        corners.add((rows[0].item(), cols[0].item(), len(rows), len(cols)))
    assert len(corners) > 10
    assert any(height < length or width < length for _, _, height, width in corners), 'some squares clipped'


def test_cutmix_weights_are_the_pasted_area():
    batch = 256
    labels = torch.randint(0, 2, (batch,), generator=torch.Generator().manual_seed(0))
    images = labels.float()[:, None, None, None].expand(batch, 3, SIDE, SIDE)  # class 0 black, class 1 white
    generator = torch.Generator().manual_seed(1)
    mixed, targets = data.cutmix(images, labels, 2, prob=0.5, beta=1.0, generator=generator)
    assert targets.shape == (batch, 2) and targets.dtype == torch.float32
    assert torch.allclose(targets.sum(1), torch.ones(batch))
    own_weight = targets.gather(1, labels[:, None]).squeeze(1)
    pasted = (mixed != images).all(1)
    assert torch.equal(pasted.flatten(1).sum(1), ((1 - own_weight) * SIDE * SIDE).round().long())
    for box in pasted:
        assert torch.equal(box, box.any(1)[:, None] & box.any(0)[None, :]), 'a pasted box is a rectangle'
    # About half the samples get a box, and about half of those from the other class.
    assert 0.1 < (own_weight < 1).float().mean() < 0.45


def test_loader_targets_soft_only_with_cutmix():
    split = data.ImageData(noise_images(40), torch.arange(40) % 4)
    info = identity_info(4)
    plain = data.DeviceLoader(split, info, 16, device='cpu', shuffle=True, augment=True, channels_last=True)
    images, targets = next(iter(plain))
    assert images.dtype == torch.float32 and images.is_contiguous(memory_format=torch.channels_last)
    assert targets.dtype == torch.int64 and targets.shape == (16,)
    mixing = data.DeviceLoader(split, info, 16, device='cpu', shuffle=True, augment=True, cutmix_prob=1.0)
    _, soft = next(iter(mixing))
    assert soft.shape == (16, 4) and torch.allclose(soft.sum(1), torch.ones(16))
    evaluation = data.DeviceLoader(split, info, 16, device='cpu', shuffle=False, augment=False, cutmix_prob=1.0)
    assert next(iter(evaluation))[1].dtype == torch.int64


class CountTorchCalls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_no_python_loop_over_images():
    split = data.ImageData(noise_images(256), torch.arange(256) % 10)
    calls = []
    for batch_size in (8, 128):
        loader = data.DeviceLoader(split, identity_info(10), batch_size, device='cpu', shuffle=True, augment=True,
                                   cutout_length=8, cutmix_prob=0.5)
        batches = loader.iterate(0)
        with CountTorchCalls() as counter:
            next(batches)
        calls.append(counter.calls)
    assert calls[0] == calls[1] < 150


# ----------------------------------------------------------------------------------------- order

def order_of(loader, epoch, start_step=0):
    return torch.cat([targets for _, targets in loader.iterate(epoch, start_step)]).tolist()


def test_resume_mid_epoch_gives_the_same_batches():
    split = data.ImageData(noise_images(50), torch.arange(50) % 5)
    loader = data.DeviceLoader(split, identity_info(5), 8, device='cpu', shuffle=True, augment=True,
                               cutout_length=8, cutmix_prob=0.5, seed=3)
    whole = list(loader.iterate(2))
    resumed = list(loader.iterate(2, start_step=4))
    assert len(whole) == len(loader) == 7 and len(resumed) == 3
    for (images, targets), (again, again_targets) in zip(whole[4:], resumed):
        assert torch.equal(images, again) and torch.equal(targets, again_targets)
    loader.set_epoch(2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(loader, whole))


def test_epoch_order_shuffles_shards_and_subsets():
    n = 51
    split = data.ImageData(noise_images(n), torch.arange(n))  # label = sample index

    def make(**options):
        settings = {'shuffle': True, 'seed': 7, **options}
        return data.DeviceLoader(split, identity_info(n), 4, device='cpu', augment=False, **settings)

    single = make()
    assert sorted(order_of(single, 0)) == list(range(n))
    assert order_of(single, 0) != order_of(single, 1)
    assert order_of(single, 0) == order_of(make(), 0)
    assert order_of(make(shuffle=False), 0) == list(range(n))
    ranks = [order_of(make(rank=rank, world_size=2), 0) for rank in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == n // 2
    assert not set(ranks[0]) & set(ranks[1])
    assert set(ranks[0]) | set(ranks[1]) == set(order_of(single, 0)[:2 * (n // 2)])
    assert len(make(drop_last=True)) == n // 4 and len(single) == -(-n // 4)
    assert sorted(order_of(make(indices=torch.arange(10, 20)), 0)) == list(range(10, 20))


def test_make_loader_follows_the_flags():
    split = data.ImageData(noise_images(20), torch.arange(20))
    args = parse('--cutout', '--cutout_length', 4, '--cutmix_prob', 1.0)
    args.seed = 5
    train = data.make_loader(split, identity_info(20), 8, device='cpu', train=True, args=args,
                             indices=torch.arange(12))
    images, targets = next(iter(train))
    assert isinstance(train, data.DeviceLoader) and len(train) == 2 and targets.shape == (8, 20)
    assert (images == 0).any(), 'cutout on'
    evaluation = data.make_loader(split, identity_info(20), 8, device='cpu', train=False, args=args)
    assert order_of(evaluation, 0) == list(range(20))


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
    loader = data.DeviceLoader(train, info, 64, device='cpu', shuffle=True, augment=False)
    for epoch in range(4):
        for images, targets in loader.iterate(epoch):
            optimizer.zero_grad()
            F.cross_entropy(net(images), targets).backward()
            optimizer.step()
    net.eval()
    images, targets = next(iter(data.DeviceLoader(test, info, 500, device='cpu', shuffle=False, augment=False)))
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
        loader = data.FolderLoader(train, info, 4, device='cpu', shuffle=True, augment=False, workers=workers)
        batches = list(loader.iterate(0))
        assert len(batches) == len(loader) == 2
        images, labels = batches[0]
        assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32 and images.min() < 0
        assert labels.dtype == torch.int64
        assert [b[1].tolist() for b in loader.iterate(0, start_step=1)] == [batches[1][1].tolist()]
    evaluation = data.FolderLoader(test, info, 6, device='cpu', shuffle=False, augment=False, workers=0)
    assert next(iter(evaluation))[1].tolist() == [0, 0, 0, 1, 1, 1]
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
