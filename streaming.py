"""Images streamed from their files (ImageNet, large folders): what turns a file into a training input, done by
PIL in DataLoader workers or, batched, on the device.

A `Pipeline` names the steps: ImageNet's random resized crop and flip (and DARTS's colour jitter) for training,
its resize and centre crop for evaluation, or a folder's resize to a square, which `loaders` then crops and flips
as it does images held in memory. Either way a batch reaches the loader as uint8 images of one size, normalised
on the device. On the device path the workers only read file bytes; `decode` turns a batch of JPEG bytes into
images with `torchvision.io.decode_jpeg` on the device (nvJPEG on CUDA), other formats being decoded by the
workers, and `transform` crops, resizes, flips and jitters them there.
"""
import contextlib
import functools
import math
import warnings
from dataclasses import dataclass

import torch
import torchvision
from PIL import Image
from torchvision import transforms
from torchvision.io import ImageReadMode
from torchvision.transforms.v2 import functional as TF

from utils import UserError

DECODERS = ('auto', 'device', 'workers')
JITTER = (0.4, 0.4, 0.4, 0.2)  # DARTS's ImageNet brightness, contrast, saturation, hue
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # RandomResizedCrop's defaults
READ_MODES = {'L': ImageReadMode.GRAY, 'RGB': ImageReadMode.RGB, 'RGBA': ImageReadMode.RGB_ALPHA}
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)  # what PIL raises on bad files
JPEG_MAGIC = b'\xff\xd8\xff'


@dataclass(frozen=True)
class Pipeline:
    kind: str  # random_resized_crop, resize_centre_crop or square
    image_size: int
    colour_jitter: bool = False  # random_resized_crop only
    mode: str = 'RGB'  # PIL's name of the colour mode: L, RGB or RGBA

    def pil_transform(self):
        """The workers' steps, PIL image to uint8 tensor."""
        size = self.image_size
        steps = {
            'random_resized_crop': [transforms.RandomResizedCrop(size, SCALE, RATIO), transforms.RandomHorizontalFlip(),
                                    *([transforms.ColorJitter(*JITTER)] if self.colour_jitter else [])],
            'resize_centre_crop': [transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size)],
            'square': [transforms.Resize((size, size))],
        }[self.kind]
        return transforms.Compose([functools.partial(Image.Image.convert, mode=self.mode), *steps,
                                   transforms.PILToTensor()])


class StreamedFolder(torch.utils.data.Dataset):
    """Images read from their files, (path, label) `samples` of the class folders `classes` under `root`
    (ImageNet's train/ or val/, or a folder too large to hold), of `pipeline`, decoded where `decoder` says. An
    unreadable file gives the next readable image, with a warning: a folder of a million files is too large to
    check up front, and one bad file must not end an epoch."""

    def __init__(self, root, samples, classes, pipeline, decoder='auto'):
        self.root, self.samples, self.classes = root, samples, classes
        self.targets = [label for _, label in samples]
        self.pipeline, self.decoder = pipeline, decoder
        self.transform = pipeline.pil_transform()

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return first_readable(self.samples, index, self._read, UNREADABLE)

    def _read(self, path, label):
        with open(path, 'rb') as f:
            return self.transform(Image.open(f)), label


def first_readable(samples, index, read, errors):
    """read(path, label) of sample `index`, or of the next sample that `read` can read without raising `errors`,
    with a warning naming each file skipped."""
    for offset in range(len(samples)):
        path, label = samples[(index + offset) % len(samples)]
        try:
            return read(path, label)
        except errors:
            warnings.warn(f'skipped unreadable image file {path}', stacklevel=3)
    raise UserError(f'none of the {len(samples)} image files can be read, such as {samples[0][0]}')


def decodes_on_device(decoder, device):
    """Whether `decoder` (auto, device, workers) decodes on `device`: auto does on CUDA, where this torchvision
    still decodes (0.29 deprecated its decoders in favour of TorchCodec)."""
    if decoder not in DECODERS:
        raise UserError(f'--decode {decoder} is unknown; choose one of {", ".join(DECODERS)}')
    available = hasattr(torchvision.io, 'decode_jpeg')
    if decoder == 'device' and not available:
        raise UserError(f'torchvision {torchvision.__version__} no longer decodes JPEG on the device; give --decode '
                        'workers, or install a torchvision that has torchvision.io.decode_jpeg')
    return decoder == 'device' or (decoder == 'auto' and available and torch.device(device).type == 'cuda')


class EncodedFiles(torch.utils.data.Dataset):
    """What the workers do on the device path: (JPEG bytes or a decoded image of another format, label, whether
    JPEG, path) of each (path, label) sample; an unreadable file gives the next one, with a warning."""

    def __init__(self, samples, mode):
        self.samples, self.mode = samples, mode

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return first_readable(self.samples, index, self._read, (RuntimeError, OSError))

    def _read(self, path, label):
        # Bytes and arrays, not tensors: tensors would cross to the main process as shared-memory file
        # descriptors, one per image, which a batch of a thousand exhausts.
        with open(path, 'rb') as f:
            raw = f.read()
        if raw.startswith(JPEG_MAGIC):
            return raw, label, True, path
        image = torchvision.io.decode_image(torch.frombuffer(bytearray(raw), dtype=torch.uint8), READ_MODES[self.mode])
        return image.numpy(), label, False, path


def collate(items):
    """A batch of EncodedFiles items as lists: images differ in size."""
    return list(zip(*items))


_DECODING_STREAMS = {}  # a CUDA device's stream for decoding


@contextlib.contextmanager
def decoding_stream(device):
    """Decode on a CUDA stream of its own. torchvision's nvJPEG decoder allocates its outputs on the current stream
    but writes them from a stream of its own that does not wait for the current one (pytorch/vision#9606): with
    the training stream current it could be handed, and overwrite, a block that queued kernels still read. With
    this stream current, its outputs come from blocks only decoding has used, which `handed_over` keeps from
    reuse until the training stream is done with them."""
    device = torch.device(device)
    if device.type != 'cuda':
        yield
        return
    if device not in _DECODING_STREAMS:
        _DECODING_STREAMS[device] = torch.cuda.Stream(device)
    training, decoding = torch.cuda.current_stream(device), _DECODING_STREAMS[device]
    with torch.cuda.stream(decoding):
        yield
    training.wait_stream(decoding)


def handed_over(images, device):
    """`images` decoded on decoding_stream, for the current stream to use: each block is not reused before that
    stream has finished with it."""
    device = torch.device(device)
    if device.type == 'cuda':
        for image in images:
            if image is not None:
                image.record_stream(torch.cuda.current_stream(device))
    return images


def _decode_jpegs(raws, paths, mode, device):
    """Decoded images (None for a file that fails), batched on the device; one by one to name a failing file."""
    read_mode = ImageReadMode.RGB if mode == 'RGBA' else READ_MODES[mode]  # JPEG has no alpha channel
    with decoding_stream(device):
        try:
            images = torchvision.io.decode_jpeg(list(raws), mode=read_mode, device=device)
        except RuntimeError:
            images = []
            for raw, path in zip(raws, paths):
                try:
                    images.append(torchvision.io.decode_jpeg(raw, mode=read_mode, device=device))
                except RuntimeError:
                    warnings.warn(f'skipped unreadable image file {path}', stacklevel=2)
                    images.append(None)
    images = handed_over(images, device)
    if mode == 'RGBA':
        images = [None if image is None else torch.cat([image, torch.full_like(image[:1], 255)]) for image in images]
    return images


def decode(batch, mode, device):
    """(images on the device, each C x H x W uint8, labels) of a collated EncodedFiles batch; a JPEG that does not
    decode is replaced by another image of the batch and its label, so the batch keeps its size."""
    data, labels, is_jpeg, paths = batch
    jpegs = [index for index, flag in enumerate(is_jpeg) if flag]
    images = [None if flag else torch.from_numpy(image).to(device, non_blocking=True)
              for image, flag in zip(data, is_jpeg)]
    if jpegs:
        raws = [torch.frombuffer(bytearray(data[i]), dtype=torch.uint8) for i in jpegs]
        decoded = _decode_jpegs(raws, [paths[i] for i in jpegs], mode, device)
        for index, image in zip(jpegs, decoded):
            images[index] = image
    good = [index for index, image in enumerate(images) if image is not None]
    if not good:
        raise UserError(f'no image of a batch could be decoded, such as {paths[0]}')
    chosen = [index if images[index] is not None else good[index % len(good)] for index in range(len(images))]
    return [images[index] for index in chosen], torch.tensor([labels[index] for index in chosen])


# ----------------------------------------------------------------------------------------- on the device

def crop_box(height, width, generator):
    """(top, left, height, width) of RandomResizedCrop's algorithm: ten tries at a random area and aspect ratio,
    then the centre crop of the nearest allowed ratio; drawn from a CPU `generator`."""
    area = height * width
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        draws = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        target = area * (SCALE[0] + (SCALE[1] - SCALE[0]) * draws[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * draws[1])
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(draws[2] * (height - h + 1)), int(draws[3] * (width - w + 1)), h, w
    ratio = width / height
    if ratio < RATIO[0]:
        w, h = width, round(width / RATIO[0])
    elif ratio > RATIO[1]:
        h, w = height, round(height * RATIO[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def transform(images, pipeline, generator):
    """The pipeline's steps on decoded images (a list on the device): an N x C x S x S uint8 batch. Crops, flips
    and jitter factors are drawn from the CPU `generator`."""
    size = pipeline.image_size
    if pipeline.kind == 'square':
        return torch.stack([TF.resize(image, [size, size], antialias=True) for image in images])
    if pipeline.kind == 'resize_centre_crop':
        return torch.stack([TF.center_crop(TF.resize(image, round(size * 256 / 224), antialias=True), [size, size])
                            for image in images])
    batch = torch.stack([TF.resized_crop(image, *crop_box(*image.shape[1:], generator), [size, size], antialias=True)
                         for image in images])
    flips = torch.rand(len(batch), generator=generator) < 0.5
    batch = torch.where(flips.to(batch.device).view(-1, 1, 1, 1), batch.flip(3), batch)
    if pipeline.colour_jitter:
        batch = colour_jitter(batch.float() / 255, generator).mul_(255).round_().to(torch.uint8)
    return batch


# ----------------------------------------------------------------------------------------- colour jitter

def _grey(images):
    return (0.2989 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).unsqueeze(1)


def _blend(images, other, factor):
    return (factor * images + (1 - factor) * other).clamp_(0, 1)


def _shift_hue(images, shift):
    """Hue rotated by `shift` (a fraction of the circle) through HSV, as torchvision's adjust_hue."""
    r, g, b = images.unbind(1)
    top, bottom = images.max(1).values, images.min(1).values
    spread = top - bottom
    saturation = torch.where(top > 0, spread / top.clamp_min(1e-12), torch.zeros_like(top))
    safe = torch.where(spread > 0, spread, torch.ones_like(spread))
    hue = torch.where(top == r, (g - b) / safe, torch.where(top == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = torch.where(spread > 0, hue / 6 % 1, torch.zeros_like(hue))
    hue = (hue + shift.view(-1, 1, 1)) % 1
    sector = hue * 6
    index = sector.floor() % 6
    fraction = sector - sector.floor()
    p, q, t = top * (1 - saturation), top * (1 - saturation * fraction), top * (1 - saturation * (1 - fraction))
    choices = [(top, t, p), (q, top, p), (p, top, t), (p, q, top), (t, p, top), (top, p, q)]
    channels = [sum(torch.where(index == k, choice[c], torch.zeros_like(top)) for k, choice in enumerate(choices))
                for c in range(3)]
    return torch.stack(channels, 1)


def colour_jitter(images, generator):
    """ColorJitter(0.4, 0.4, 0.4, 0.2) of each image in [0, 1]: its own factors and its own order of the four.
    Each op runs on the images that take it at each position; the order is drawn on the CPU, so choosing them
    never waits for the device."""
    n, device = len(images), images.device
    low_high = [(1 - JITTER[0], 1 + JITTER[0]), (1 - JITTER[1], 1 + JITTER[1]), (1 - JITTER[2], 1 + JITTER[2]),
                (-JITTER[3], JITTER[3])]
    factors = [(low + (high - low) * torch.rand(n, generator=generator)).to(device).view(-1, 1, 1, 1)
               for low, high in low_high]
    order = torch.rand(n, 4, generator=generator).argsort(1)
    steps = [lambda x, f: (x * f).clamp_(0, 1),
             lambda x, f: _blend(x, _grey(x).mean((1, 2, 3), keepdim=True), f),
             lambda x, f: _blend(x, _grey(x), f),
             lambda x, f: _shift_hue(x, f)]
    images = images.clone()
    for position in range(4):
        for k, step in enumerate(steps):
            chosen = (order[:, position] == k).nonzero().flatten()
            if len(chosen):
                chosen = chosen.to(device, non_blocking=True)
                images[chosen] = step(images[chosen], factors[k][chosen])
    return images
