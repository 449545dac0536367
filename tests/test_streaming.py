"""Images streamed from their files: JPEG decoded on the device (its CPU path here) against PIL in the workers,
the batched augmentation against torchvision's, unreadable files, and a folder too large to hold."""
import gc
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

import data
import loaders
import streaming


def write_jpegs(root, splits=('train', 'val'), per_class=6, classes=2, seed=0):
    """Smooth gradients with some noise, of random sizes, as JPEG files: root/<split>/c<k>/<i>.JPEG."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for label in range(classes):
            os.makedirs(root / split / f'c{label}')
            for index in range(per_class):
                height, width = rng.integers(40, 120, 2)
                y, x = np.mgrid[0:height, 0:width]
                pixels = np.stack([x * 255 / width, y * 255 / height,
                                   (x + y) * 127 / (height + width) + rng.normal(0, 20, (height, width))], -1)
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / split / f'c{label}' / f'{index}.JPEG',
                                                                           quality=90)


def first_batch(root, decoder, split=1, batch_size=12, augment=False, **config):
    splits = data.load_dataset(data.DataConfig(data=str(root), decoder=decoder, **config))
    loader = loaders.FolderLoader(splits[split], splits[2], batch_size, device='cpu', shuffle=augment,
                                  augment=augment, workers=0)
    return next(loader.iterate(0)), loader


def grey_levels(a, b, info):
    """Absolute differences of two normalised batches, in grey levels of the images."""
    return (a - b).abs() * torch.tensor(info.std).view(1, -1, 1, 1) * 255


def test_jpeg_decoded_on_the_device_equals_pil_in_the_workers_within_decoder_tolerance(tmp_path):
    write_jpegs(tmp_path)
    info = data.load_dataset(data.DataConfig(dataset='imagenet', data=str(tmp_path), image_size=32))[2]
    (pil, pil_labels), pil_loader = first_batch(tmp_path, 'workers', dataset='imagenet', image_size=32)
    (device, labels), device_loader = first_batch(tmp_path, 'device', dataset='imagenet', image_size=32)
    assert not pil_loader.on_device and device_loader.on_device
    assert device.shape == pil.shape == (12, 3, 32, 32) and torch.equal(labels, pil_labels)
    difference = grey_levels(device, pil, info)
    # Resize and centre crop of ImageNet's evaluation: torchvision 0.29 resizes uint8 as PIL does (mean 0.003 grey
    # levels apart); 0.19 (PyTorch 2.4's) leaves about 15% of the values one level off (mean 0.15).
    assert difference.max() <= 2 and difference.mean() < 0.25
    assert 'JPEG decoded on the device' in device_loader.decoding and 'PIL' in pil_loader.decoding
    assert streaming.decodes_on_device('auto', 'cuda') and not streaming.decodes_on_device('auto', 'cpu')


def test_a_torchvision_without_jpeg_decoding_falls_back_to_the_workers_or_says_so(monkeypatch):
    monkeypatch.delattr(streaming.torchvision.io, 'decode_jpeg')
    assert not streaming.decodes_on_device('auto', 'cuda') and not streaming.decodes_on_device('workers', 'cuda')
    with pytest.raises(streaming.UserError, match='no longer decodes JPEG on the device; give --decode workers'):
        streaming.decodes_on_device('device', 'cuda')


def test_the_device_paths_random_crops_are_seeded_bounded_and_resumable(tmp_path):
    write_jpegs(tmp_path)
    config = dict(dataset='imagenet', data=str(tmp_path), image_size=24, decoder='device')
    train, _, info = data.load_dataset(data.DataConfig(**config))
    loader = loaders.FolderLoader(train, info, 4, device='cpu', shuffle=True, augment=True, workers=0)
    batches = list(loader.iterate(1))
    again = list(loader.iterate(1, start_step=1))
    assert len(batches) == 3 and all(torch.equal(a[0], b[0]) for a, b in zip(batches[1:], again))
    assert not torch.equal(batches[0][0], next(loader.iterate(2))[0])
    in_a_worker = loaders.FolderLoader(train, info, 4, device='cpu', shuffle=True, augment=True, workers=1)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, in_a_worker.iterate(1), strict=True))
    generator = torch.Generator().manual_seed(0)
    for height, width in [(50, 80), (300, 20), (20, 300), (7, 7)]:
        for _ in range(50):
            top, left, h, w = streaming.crop_box(height, width, generator)
            assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0
    # Too narrow for any ratio in [3/4, 4/3]: RandomResizedCrop's fallback, the centred crop of the nearest ratio.
    assert streaming.crop_box(300, 20, torch.Generator().manual_seed(1))[2:] == (27, 20)


def test_a_dropped_loader_stops_its_workers_at_once(tmp_path):
    """Without the garbage collector: a loader in a reference cycle kept its persistent workers running, and
    the workers of the next loader, forked meanwhile, collected it too and failed ('can only test a child
    process'), as bench.py's loader cases did one after the other."""
    write_jpegs(tmp_path)
    train, _, info = data.load_dataset(data.DataConfig(dataset='imagenet', data=str(tmp_path), image_size=24))
    loader = loaders.FolderLoader(train, info, 4, device='cpu', shuffle=True, augment=False, workers=1)
    assert len(list(loader.iterate(0))) == 3
    workers = loader.loader._iterator._workers
    gc.disable()
    try:
        del loader
        for worker in workers:
            worker.join(timeout=10)
        assert not any(worker.is_alive() for worker in workers)
    finally:
        gc.enable()


def test_the_batched_colour_jitter_is_torchvisions_per_image():
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(6, 3, 9, 11, generator=generator)
    jittered = streaming.colour_jitter(images, torch.Generator().manual_seed(5))
    # The same draws, then torchvision's functions image by image in each image's order.
    draws = torch.Generator().manual_seed(5)
    factors = [0.6 + 0.8 * torch.rand(6, generator=draws) for _ in range(3)] + [
        -0.2 + 0.4 * torch.rand(6, generator=draws)]
    order = torch.rand(6, 4, generator=draws).argsort(1)
    adjust = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for index in range(6):
        expected = images[index]
        for k in order[index].tolist():
            expected = adjust[k](expected, factors[k][index].item())
        assert torch.allclose(jittered[index], expected, atol=1e-5), index


def test_unreadable_and_non_jpeg_files_on_the_device_path(tmp_path):
    write_jpegs(tmp_path, per_class=3)
    val = tmp_path / 'val'
    (val / 'c0' / '0.JPEG').write_bytes(b'\xff\xd8\xff truncated')  # looks like a JPEG, does not decode
    Image.new('RGB', (30, 40), (10, 200, 30)).save(val / 'c1' / 'png.png')  # another format: the worker decodes it
    (val / 'c1' / 'broken.png').write_bytes(b'not an image')
    with pytest.warns(UserWarning) as caught:
        (images, labels), _ = first_batch(tmp_path, 'device', dataset='imagenet', image_size=16, batch_size=8)
    named = ' '.join(str(warning.message) for warning in caught)
    assert 'skipped unreadable image file' in named and '0.JPEG' in named and 'broken.png' in named
    assert images.shape == (8, 3, 16, 16) and torch.isfinite(images).all() and len(labels) == 8
    green = (torch.tensor([10, 200, 30]) / 255 - torch.tensor(data.IMAGENET_MEAN)) / torch.tensor(data.IMAGENET_STD)
    assert any(torch.allclose(image.mean((1, 2)), green, atol=0.05) for image in images), 'the PNG is in the batch'


def write_folder(root, per_class, size=(14, 10)):
    rng = np.random.default_rng(1)
    for label in range(2):
        os.makedirs(root / f'c{label}')
        for index in range(per_class):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / f'c{label}' / f'{index}.png')


def test_a_folder_over_the_memory_limit_streams_and_gives_the_batches_of_the_in_memory_path(tmp_path):
    write_folder(tmp_path, 10)
    config = dict(dataset='folder', data=str(tmp_path), image_size=8, held_out_fraction=0.2)
    held, _, held_info = data.load_dataset(data.DataConfig(**config))
    streamed, test, info = data.load_dataset(data.DataConfig(**config, in_memory_limit=0.0, decoder='workers'))
    assert isinstance(held, data.ImageData) and isinstance(streamed, streaming.StreamedFolder)
    assert held_info.storage == 'held in memory: 0.00 GB of decoded images'
    assert info.storage == 'streamed from its files: 0.00 GB of decoded images exceed 0.00 GB (--in_memory_limit)'
    assert info.mean == pytest.approx(held_info.mean) and info.std == pytest.approx(held_info.std)
    assert (len(streamed), len(test)) == (16, 4)
    options = dict(device='cpu', shuffle=True, augment=True, cutout_length=3, seed=4)
    in_memory = loaders.DeviceLoader(held, held_info, 5, **options)
    from_files = loaders.FolderLoader(streamed, info, 5, workers=0, **options)
    for (a, a_labels), (b, b_labels) in zip(in_memory.iterate(2), from_files.iterate(2), strict=True):
        assert torch.equal(a_labels, b_labels) and torch.allclose(a, b, atol=1e-6)
    on_device = loaders.FolderLoader(data.load_dataset(data.DataConfig(**config, in_memory_limit=0.0,
                                                                       decoder='device'))[0], info, 5, workers=0,
                                     **options)
    (a, _), (b, _) = next(in_memory.iterate(0)), next(on_device.iterate(0))
    assert grey_levels(a, b, info).max() <= 2, 'PNG decoded by the worker, resized on the device'
    assert math.isfinite(data.free_memory('cpu') or 0.0)
