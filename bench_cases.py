"""The steps bench.py times: a search step of any preset, DARTS_V2's training and inference steps, the
loader, and the inference of an exported network. Each builder returns the step, ready to run again and
again; they reuse the scripts' own step functions, so a timing is of exactly what a run executes."""
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch
from torch import nn

import data
import export
import genotypes
import loaders
import loop
import methods as methods_lib
import model as model_lib
import parallel
from train import train_step
from train_search import build_model, build_optimizers, plan_stages, resolve_arguments, search_step
from train_search import build_parser as build_search_parser


def random_batch(batch_size, channels, size, classes, speed):
    images = torch.randn(batch_size, channels, size, size, device=speed.device)
    return images.contiguous(memory_format=speed.memory_format), torch.randint(0, classes, (batch_size,),
                                                                               device=speed.device)


@dataclass(frozen=True)
class Speed:
    """The speed settings of a benchmark run: autocast dtype (None: float32), memory format, compilation."""
    dtype: Optional[torch.dtype]
    channels_last: bool
    compile: bool
    device: torch.device

    def autocast(self):
        return loop.autocast_factory(self.dtype, self.device)()

    @property
    def memory_format(self):
        return loop.memory_format(self.channels_last)


class SearchCase(NamedTuple):
    batch_size: int
    step: Callable  # () -> the search step's (loss, logits, architecture loss)
    model: torch.nn.Module  # the supernet
    validate: Callable  # () -> logits of the validation pass on one batch


def search_case(method, extra, sizes, tiny, speed):
    # A preset of its own size (DrNAS, P-DARTS: their first stage) keeps it, but for its depth in a smoke run.
    preset, layers = methods_lib.presets()[method], str(sizes['search_layers'])
    stages = len(preset.get('stage_layers', ()))
    depth = ['--stage_layers', ','.join([layers] * stages)] if stages else ['--layers', layers]
    sized = ([] if 'init_channels' in preset else ['--init_channels', str(sizes['search_channels'])]) + (
        depth if tiny or not (stages or 'layers' in preset) else []) + ['--batch_size', '8'] * tiny
    # The precision goes through train_search.py's own checks, so that a setting it refuses is refused here.
    amp = {None: 'off', torch.bfloat16: 'bf16', torch.float16: 'fp16'}[speed.dtype]
    flags = ['--method', method, '--dataset', 'synthetic', '--amp', amp, *sized, *extra]
    search_args, _, _ = resolve_arguments(build_search_parser(), flags)
    info = data.DatasetInfo('synthetic', 10, 3, sizes['image_size'], (0.5,) * 3, (0.25,) * 3)
    stage = plan_stages(search_args)[0]
    model = build_model(search_args, info, stage.layers, stage.partial_channels, search_args.max_skip).to(
        speed.device, memory_format=speed.memory_format)
    model.skip_dropout = stage.skip_dropout
    w_optimizer, _, architect = build_optimizers(search_args, model, parallel.Distributed(), speed.autocast, 1)
    objective = architect.objective
    objective.set_epoch(search_args.epochs // 2, search_args.epochs)
    batch, alpha_batch = (random_batch(search_args.batch_size, 3, sizes['image_size'], 10, speed) for _ in range(2))
    model.train()

    def step():
        return search_step(architect, batch, alpha_batch, w_optimizer, 0.025, search_args.grad_clip,
                           search_args.unrolled, update_architecture=True)

    def validate():
        model.eval()
        with torch.no_grad(), speed.autocast():
            logits = model(alpha_batch[0], objective.arch_weights('eval'))
        model.train()
        return logits
    return SearchCase(search_args.batch_size, step, model, validate)


def train_case(batch_size, sizes, speed, inference):
    config = dict(kind='cifar', C=sizes['train_channels'], num_classes=10, layers=sizes['train_layers'],
                  auxiliary=True, in_channels=3, image_size=sizes['image_size'])
    net = model_lib.build_network(config, genotypes.DARTS_V2).to(speed.device, memory_format=speed.memory_format)
    net.drop_path_prob = 0.1
    forward = torch.compile(net) if speed.compile else net
    images, targets = random_batch(batch_size, 3, sizes['image_size'], 10, speed)
    if inference:
        net.eval()

        def step():
            with torch.no_grad(), speed.autocast():
                forward(images)
        return step
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    criterion = nn.CrossEntropyLoss()
    scaler = loop.grad_scaler(speed.dtype, speed.device)
    return lambda: train_step(net, forward, images, targets, criterion, optimizer, speed.autocast, scaler, 0.4, 5.0)


def loader_case(batch_size, sizes, speed):
    count = batch_size * 8
    split = data.ImageData(torch.randint(0, 256, (count, 3, sizes['image_size'], sizes['image_size']),
                                         dtype=torch.uint8), torch.randint(0, 10, (count,)))
    info = data.DatasetInfo('synthetic', 10, 3, sizes['image_size'], (0.5,) * 3, (0.25,) * 3)
    loader = loaders.DeviceLoader(split, info, batch_size, device=speed.device, shuffle=True, augment=True,
                                  cutout_length=16, channels_last=speed.channels_last)
    batches = iter(())

    def step():
        nonlocal batches
        if next(batches, None) is None:
            batches = loader.iterate(0)
            next(batches)
    return step


def latency_case(source, batch_size, sizes, speed):
    """(one inference of a batch, what runs it): of an exported file (export.load), or for 'eager' of
    DARTS_V2's evaluation network in PyTorch."""
    if source == 'eager':
        return train_case(batch_size, sizes, speed, inference=True), f'PyTorch on {speed.device}'
    run, shape, runtime = export.load(source, speed.device)
    images = torch.randn(batch_size, *shape, device=speed.device)
    return (lambda: run(images)), runtime
