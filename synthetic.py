"""The synthetic dataset: a learnable image classification set drawn on the fly, deterministic for a seed.

Each class is a visual pattern at a random position, in random colours, with noise; any size, channels and
number of classes. It serves demos, tests and benchmarks without a download."""
import math
from types import SimpleNamespace

import numpy as np

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
    """(uint8 images N x C x H x W, int64 labels): `count` images of balanced random classes, each class a
    visual pattern at a random position, with random colours and noise. Deterministic for `seed` (an int or
    a sequence of ints)."""
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
    return images, labels.astype(np.int64)
