"""Batch loaders and batched augmentation on the device.

`DeviceLoader` keeps an in-memory split on the device and augments each batch there, per sample, in a few
batched tensor operations. `FolderLoader` streams ImageNet or a large folder from its files (see streaming.py).
Both draw epoch e's order from (seed, e) and the randomness of batch (e, step) from
(seed, e, step, rank), so a run resumes mid-epoch without saving any loader state.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import streaming
from data import ImageData
from utils import UserError, bounded

@dataclass(frozen=True)
class Augmentation:
    """What a training loader adds to crop and flip: the values of the 'augmentation' flags."""
    cutout_length: int = 0  # 0: no cutout
    cutmix_prob: float = 0.0
    cutmix_beta: float = 1.0

    @classmethod
    def from_flags(cls, namespace):
        """The augmentation of a script's parsed flags; a script without CutMix flags has none."""
        return cls(namespace.cutout_length if namespace.cutout else 0, getattr(namespace, 'cutmix_prob', 0.0),
                   getattr(namespace, 'cutmix_beta', 1.0))


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
        self.mean = torch.tensor(info.mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(info.std, device=self.device).view(1, -1, 1, 1)

    def __len__(self):
        samples = _rank_samples(self.num_samples, self.shuffle, self.rank, self.world_size)
        return samples // self.batch_size if self.drop_last else math.ceil(samples / self.batch_size)

    def _order(self, epoch):
        return _shard_order(self.num_samples, self.shuffle, self.seed, epoch, self.rank, self.world_size)

    def _generator(self, epoch, step):
        return torch.Generator(device=self.device).manual_seed(_mix(self.seed, epoch, step, self.rank))

    def _normalise(self, images):
        """uint8 images as the network takes them: in [0, 1] units, less the mean, over the std."""
        return images.float().div_(255).sub_(self.mean).div_(self.std)

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
        self.crop_padding = info.crop_padding

    decoding = 'decoded once when read'  # for the log, as FolderLoader's

    def iterate(self, epoch, start_step=0):
        """Batches start_step.. of epoch `epoch`: (float32 images, int64 classes or soft targets)."""
        order = self._order(epoch).to(self.device)
        for step in range(start_step, len(self)):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            yield self._batch(index, self._generator(epoch, step) if self.augment else None)

    def _batch(self, index, generator):
        images, labels = self.images[index], self.labels[index]
        if self.augment:
            images = random_crop_flip(images, self.crop_padding, generator)
        images = self._normalise(images)
        return self._finish(images, labels, generator)


class _ShardSampler(torch.utils.data.Sampler):
    """One rank's sample indices of an epoch, from a given batch on; `position` is set before iterating."""

    def __init__(self, loader):
        # The loader's fields, not the loader: a reference back would make a cycle that only the garbage collector
        # frees, its persistent workers running on till then (and a worker forked meanwhile collecting it too).
        self.shard = (loader.num_samples, loader.shuffle, loader.seed, loader.rank, loader.world_size)
        self.batch_size = loader.batch_size
        self.samples = _rank_samples(loader.num_samples, loader.shuffle, loader.rank, loader.world_size)
        self.position = (0, 0)  # (epoch, start_step)

    def __iter__(self):
        epoch, start_step = self.position
        num_samples, shuffle, seed, rank, world_size = self.shard
        order = _shard_order(num_samples, shuffle, seed, epoch, rank, world_size)
        return iter(order[start_step * self.batch_size:].tolist())

    def __len__(self):
        return max(0, self.samples - self.position[1] * self.batch_size)


class FolderLoader(_ShardedLoader):
    """Batches of a streaming.StreamedFolder (ImageNet, a large folder), read by `workers` DataLoader processes
    and decoded by them with PIL or, as the folder's decoder says, on the device, then normalised there. Order and
    sharding are the DeviceLoader's, so resuming mid-epoch is exact in which images come; a folder resized to a
    square is cropped and flipped as the DeviceLoader does, and `augment` adds cutout and CutMix on the device."""

    def __init__(self, dataset, info, batch_size, *, device, shuffle, augment, cutout_length=0, cutmix_prob=0.0,
                 cutmix_beta=1.0, indices=None, drop_last=False, seed=0, rank=0, world_size=1,
                 channels_last=False, workers=4):
        chosen = None if indices is None else torch.as_tensor(indices).tolist()  # once: a list indexes 16x faster
        samples = dataset.samples if chosen is None else [dataset.samples[i] for i in chosen]
        super().__init__(len(samples), info, batch_size, device, shuffle, augment, cutout_length, cutmix_prob,
                         cutmix_beta, drop_last, seed, rank, world_size, channels_last)
        self.pipeline, self.crop_padding, self.workers = dataset.pipeline, info.crop_padding, workers
        self.on_device = streaming.decodes_on_device(dataset.decoder, self.device)
        if self.on_device:
            files, collate = streaming.EncodedFiles(samples, self.pipeline.mode), streaming.collate
        else:
            files, collate = (dataset if chosen is None else torch.utils.data.Subset(dataset, chosen)), None
        self.sampler = _ShardSampler(self)
        self.loader = torch.utils.data.DataLoader(
            files, batch_size, sampler=self.sampler, num_workers=workers, drop_last=drop_last, collate_fn=collate,
            pin_memory=self.device.type == 'cuda', persistent_workers=workers > 0,
            # Worker seeds from our own generator, so that building the iterator leaves torch's RNG alone.
            generator=torch.Generator().manual_seed(_mix(seed, rank)))

    @property
    def decoding(self):
        """Where the files are decoded, for the log."""
        where = 'JPEG decoded on the device' if self.on_device else 'decoded with PIL'
        return f'{where}, read by {self.workers} DataLoader worker(s)' if self.workers else f'{where}, read in the ' \
            'main process'

    def iterate(self, epoch, start_step=0):
        """Batches start_step.. of epoch `epoch`, on the device."""
        self.sampler.position = (epoch, start_step)
        for step, batch in enumerate(self.loader, start=start_step):
            if self.on_device:
                images, labels = streaming.decode(batch, self.pipeline.mode, self.device)
                crops = torch.Generator().manual_seed(_mix(self.seed, epoch, step, self.rank))
                images = streaming.transform(images, self.pipeline, crops)
            else:
                images = batch[0].to(self.device, non_blocking=True)
                labels = batch[1]
            labels = labels.to(self.device, non_blocking=True)
            generator = self._generator(epoch, step) if self.augment else None
            if self.augment and self.pipeline.kind == 'square':
                images = random_crop_flip(images, self.crop_padding, generator)
            images = self._normalise(images)
            yield self._finish(images, labels, generator)


def data_line(info, loader):
    """The log's line on where a loader's images come from."""
    return f'data: {info.name}, images {info.storage}, {loader.decoding}'


def endless_batches(loader, epoch, start_step):
    """Batches of epoch `epoch` from step `start_step` on, then of further orders, without end: the
    architecture half of a search split may be shorter than the weights' half."""
    cycle, step = divmod(start_step, len(loader))
    while True:
        yield from loader.iterate(epoch + 1000 * cycle, step)
        cycle, step = cycle + 1, 0


def process_options(device, seed, channels_last, workers, distributed):
    """make_loader's keywords that all the loaders of one process (of `distributed`'s) share."""
    return dict(device=device, seed=seed, channels_last=channels_last, workers=workers, rank=distributed.rank,
                world_size=distributed.world_size)


def make_loader(split, info, batch_size, *, device, train, augmentation=None, seed=0, channels_last=False, workers=4,
                indices=None, rank=0, world_size=1, drop_last=False):
    """The loader a script needs: a training loader shuffles and augments (`augmentation`, an Augmentation),
    an evaluation loader keeps the order and does not augment. `workers` decode ImageNet; `drop_last` leaves
    out a last batch smaller than the others."""
    augmentation = augmentation if train and augmentation else Augmentation()
    options = dict(device=device, shuffle=train, augment=train, indices=indices, seed=seed, rank=rank,
                   drop_last=drop_last, world_size=world_size, channels_last=channels_last,
                   cutout_length=augmentation.cutout_length, cutmix_prob=augmentation.cutmix_prob,
                   cutmix_beta=augmentation.cutmix_beta)
    if isinstance(split, ImageData):
        return DeviceLoader(split, info, batch_size, **options)
    return FolderLoader(split, info, batch_size, workers=workers, **options)
