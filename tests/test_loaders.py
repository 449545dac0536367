"""loaders.py: per-sample augmentation in batched tensor operations, epoch order and sharding, resuming
mid-epoch, and make_loader."""
import argparse

import torch
from test_data import SIDE, crop_flip_candidates, identity_info, noise_images
from torch.overrides import TorchFunctionMode

import data
import loaders


def parse(*argv):
    parser = argparse.ArgumentParser()
    loaders.add_augmentation_arguments(parser)
    return parser.parse_args([str(arg) for arg in argv])


def test_augmentation_arguments_defaults_and_help():
    parser = argparse.ArgumentParser()
    loaders.add_augmentation_arguments(parser)
    args = parser.parse_args([])
    assert (args.cutout, args.cutout_length, args.cutmix_prob, args.cutmix_beta) == (False, 16, 0.0, 1.0)
    assert all(action.help for action in parser._actions if action.dest != 'help')
    assert loaders.Augmentation.from_flags(args) == loaders.Augmentation()
    no_cutmix = argparse.ArgumentParser()
    loaders.add_augmentation_arguments(no_cutmix, cutmix=False)
    assert not hasattr(no_cutmix.parse_args([]), 'cutmix_prob')


def loader_batch(images, info, **options):
    split = data.ImageData(images, torch.zeros(len(images), dtype=torch.int64))
    loader = loaders.DeviceLoader(split, info, len(images), device='cpu', shuffle=False, augment=True, **options)
    return next(loader.iterate(0))


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
    mixed, targets = loaders.cutmix(images, labels, 2, prob=0.5, beta=1.0, generator=generator)
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
    plain = loaders.DeviceLoader(split, info, 16, device='cpu', shuffle=True, augment=True, channels_last=True)
    images, targets = next(plain.iterate(0))
    assert images.dtype == torch.float32 and images.is_contiguous(memory_format=torch.channels_last)
    assert targets.dtype == torch.int64 and targets.shape == (16,)
    mixing = loaders.DeviceLoader(split, info, 16, device='cpu', shuffle=True, augment=True, cutmix_prob=1.0)
    _, soft = next(mixing.iterate(0))
    assert soft.shape == (16, 4) and torch.allclose(soft.sum(1), torch.ones(16))
    evaluation = loaders.DeviceLoader(split, info, 16, device='cpu', shuffle=False, augment=False, cutmix_prob=1.0)
    assert next(evaluation.iterate(0))[1].dtype == torch.int64


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
        loader = loaders.DeviceLoader(split, identity_info(10), batch_size, device='cpu', shuffle=True, augment=True,
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
    loader = loaders.DeviceLoader(split, identity_info(5), 8, device='cpu', shuffle=True, augment=True,
                               cutout_length=8, cutmix_prob=0.5, seed=3)
    whole = list(loader.iterate(2))
    resumed = list(loader.iterate(2, start_step=4))
    assert len(whole) == len(loader) == 7 and len(resumed) == 3
    for (images, targets), (again, again_targets) in zip(whole[4:], resumed):
        assert torch.equal(images, again) and torch.equal(targets, again_targets)


def test_epoch_order_shuffles_shards_and_subsets():
    n = 51
    split = data.ImageData(noise_images(n), torch.arange(n))  # label = sample index

    def make(**options):
        settings = {'shuffle': True, 'seed': 7, **options}
        return loaders.DeviceLoader(split, identity_info(n), 4, device='cpu', augment=False, **settings)

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
    augmentation = loaders.Augmentation.from_flags(parse('--cutout', '--cutout_length', 4, '--cutmix_prob', 1.0))
    assert augmentation == loaders.Augmentation(cutout_length=4, cutmix_prob=1.0, cutmix_beta=1.0)
    train = loaders.make_loader(split, identity_info(20), 8, device='cpu', train=True, augmentation=augmentation,
                                seed=5, indices=torch.arange(12))
    images, targets = next(train.iterate(0))
    assert isinstance(train, loaders.DeviceLoader) and len(train) == 2 and targets.shape == (8, 20)
    assert (images == 0).any(), 'cutout on'
    evaluation = loaders.make_loader(split, identity_info(20), 8, device='cpu', train=False, augmentation=augmentation)
    assert order_of(evaluation, 0) == list(range(20))
    assert next(evaluation.iterate(0))[1].dtype == torch.int64, 'no CutMix when evaluating'
