"""Test trained or released weights on a test set: DARTS's test.py and test_imagenet.py in one script.

    python test.py --model_path eval-EXP-.../checkpoint.pt             # everything read from the checkpoint
    python test.py --model_path cifar10_model.pt --auxiliary --arch DARTS_V2   # DARTS's released weights
    python test.py --model_path eval-EXP-.../checkpoint.pt --export darts.onnx   # ONNX, checked with onnxruntime
"""
import argparse
import functools
import json
import os

import torch
import torch.nn as nn

import checkpoints
import nas_bench_201
import data
import export
import genotypes
import loaders
import loop
import model as model_lib
import parallel
import precision
import utils

# Defaults for a bare state_dict, as DARTS's test.py and test_imagenet.py had them.
CIFAR_SIZES = dict(init_channels=36, layers=20)
IMAGENET_SIZES = dict(init_channels=48, layers=14)
NB201_SIZES = dict(init_channels=16, layers=5)


def build_parser():
    parser = utils.ArgumentParser(description='Evaluate weights on a test set: top-1, top-5, loss, size.')
    parser.add_argument('--model_path',
                        help="our checkpoint.pt (needs nothing else) or a bare state_dict such as weights.pt or "
                             "the weights DARTS, PC-DARTS and alpha-DARTS released")
    parser.add_argument('--benchmark', metavar='PATH',
                        help="nas_bench_201: also print the cell's tabulated accuracies, from this NATS-Bench "
                             "topology folder or file or NAS-Bench-201 .pth file (without --model_path: only them)")
    data.add_data_arguments(parser)
    arch = parser.add_argument_group('architecture of a bare state_dict')
    arch.add_argument('--search_space', choices=('darts', 'nas_bench_201'),
                      help="the cell's space (default: read from the run folder or the weights, else darts)")
    arch.add_argument('--arch', help='published genotype name (default DARTS) or NAS-Bench-201 architecture string')
    arch.add_argument('--arch_path', help='genotype.json')
    arch.add_argument('--genotype', '-genotype', help='genotype text')
    arch.add_argument('--init_channels', type=utils.bounded(int, 2), help='initial channels (default 36; ImageNet 48)')
    arch.add_argument('--layers', type=utils.bounded(int, 1), help='number of cells (default 20; ImageNet 14)')
    arch.add_argument('--auxiliary', action='store_true',
                      help='the weights include an auxiliary head (detected automatically)')
    run = parser.add_argument_group('run')
    run.add_argument('--batch_size', type=utils.bounded(int, 1), default=96, help='batch size')
    run.add_argument('--device', default='auto', help='cpu, cuda, cuda:N, or auto')
    run.add_argument('--gpu', type=utils.bounded(int, 0), default=0, help='CUDA device index, as in DARTS')
    run.add_argument('--output', help='where to write the results as JSON (default: test.json beside the weights)')
    run.add_argument('--export', metavar='FILE',
                     help='instead of testing, export the evaluation network to FILE.onnx (ONNX), FILE.pt '
                          '(TorchScript) or FILE.pt2 (torch.export) and check it on a test batch')
    precision.add_speed_arguments(parser, compile_option=True)
    return parser


def describe_model(args, given, source):
    """(network config, genotype, data flags, what to tell of the network and of the cell's source) for the
    weights: from our checkpoint, from the run folder that holds a bare weights.pt, or from the flags; sizes
    no flag gives are read from the weights' shapes."""
    if isinstance(source, dict) and source.get('kind') == 'train':
        saved_args = source['args']
        return (source['network'], genotypes.parse_genotype(json.dumps(source['genotype'])), saved_args,
                'the cell and sizes stored in the checkpoint', 'stored in the checkpoint')
    run_args_path = os.path.join(os.path.dirname(os.path.abspath(args.model_path)), 'args.json')
    saved_args = {}
    if os.path.isfile(run_args_path):
        with open(run_args_path) as f:
            saved_args = json.load(f)
    merged = argparse.Namespace(**{**vars(args), **{k: v for k, v in saved_args.items() if k not in given}})
    shapes = model_lib.sizes_from_weights(checkpoints.normalise_keys(checkpoints.extract_state_dict(source)))
    known = {'init_channels': shapes['C'], 'layers': shapes['layers'], 'num_classes': shapes['num_classes'],
             'in_channels': shapes['in_channels']}
    data_keys = ('num_classes', 'in_channels')  # flags of the synthetic dataset; the others' data fix them
    read = [key for key, value in known.items() if value and key not in given and key not in saved_args
            and (key not in data_keys or merged.dataset == 'synthetic')]
    for key in read:
        setattr(merged, key, known[key])
    if merged.search_space is None:
        merged.search_space = 'nas_bench_201' if shapes['kind'] == 'nb201' else 'darts'
    sizes = NB201_SIZES if merged.search_space == 'nas_bench_201' else IMAGENET_SIZES if merged.dataset == 'imagenet' \
        else CIFAR_SIZES
    for key, value in sizes.items():
        if getattr(merged, key) is None:
            setattr(merged, key, value)
    genotype, genotype_source = genotypes.genotype_from_flags(merged.genotype, merged.arch_path, merged.arch,
                                                              space=merged.search_space)
    auxiliary = merged.auxiliary or shapes['auxiliary']
    config = dict(C=merged.init_channels, layers=merged.layers, auxiliary=auxiliary)
    cells = f'N = {merged.layers} cells a stage' if merged.search_space == 'nas_bench_201' else f'{merged.layers} cells'
    told = f'C {merged.init_channels}, {cells}{", auxiliary head" if auxiliary else ""}'
    told += f', with {", ".join("--" + key for key in read)} read from the weights\' shapes' if read else ''
    if not (merged.genotype or merged.arch_path or merged.arch):
        told += '; the cell is DARTS, the default, unless --arch, --arch_path or --genotype gives another'
    return config, genotype, vars(merged), told, genotype_source

def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model_path is None and args.benchmark is None:
        raise utils.UserError('give --model_path (weights to test), or --benchmark with a NAS-Bench-201 cell in '
                              '--arch to look it up')
    if args.output:
        utils.check_output_folder(args.output, '--output')
    if args.export:
        export.export_format(args.export)
        utils.check_output_folder(args.export, '--export')
    if args.model_path is None:
        return look_up(args)
    given = checkpoints.given_arguments(parser, argv)
    result = parallel.run_distributed(functools.partial(evaluate_weights, args, given), args.device, args.gpu)
    if args.benchmark:
        result.update(look_up(args, genotypes.parse_genotype(json.dumps(result['genotype']))))
    return result


def look_up(args, cell=None):
    """The tabulated accuracies of the cell of the flags (or `cell`), printed and, with --output, written."""
    if cell is None:
        cell, _ = genotypes.genotype_from_flags(args.genotype, args.arch_path, args.arch, space='nas_bench_201')
    if not isinstance(cell, genotypes.CellNB201):
        raise utils.UserError('--benchmark looks NAS-Bench-201 cells up; these weights hold a DARTS cell')
    results = nas_bench_201.Benchmark(args.benchmark).lookup(cell)
    print(f'{cell}: {nas_bench_201.describe(results)}')
    results = {'benchmark_cell': str(cell), **(results or {})}
    if args.output and args.model_path is None:
        utils.write_json(args.output, results)
        print(f'wrote {args.output}')
    return results


def evaluate_weights(args, given, device, distributed):
    utils.configure_device(device, args.deterministic)
    amp_autocast = precision.autocast_factory(precision.amp_dtype(args.amp, device), device)
    channels_last = precision.use_channels_last(args.channels_last, device)
    logger = utils.get_logger(enabled=distributed.is_main)
    source = checkpoints.load_checkpoint(args.model_path)
    config, genotype, saved_args, told, genotype_source = describe_model(args, given, source)

    # The data flags the weights were trained with, unless the command line says otherwise.
    data_flags = {**vars(args), **{k: v for k, v in saved_args.items() if k not in given and k in vars(args)}}
    _, test_split, info = data.load_dataset(data.DataConfig.from_flags(argparse.Namespace(**data_flags)), device)
    config = {**config, 'num_classes': info.num_classes, 'in_channels': info.in_channels,
              'image_size': info.image_size, 'kind': model_lib.network_kind(info.name, info.image_size, genotype)}
    net = model_lib.build_network(config, genotype)
    checkpoints.load_weights(net, source, origin=args.model_path,
                             hint=f'it was built with {told}; give the flags the weights were trained with')
    net.to(device, memory_format=precision.memory_format(channels_last))
    loader = loaders.make_loader(test_split, info, args.batch_size, device=device, train=False,
                                 channels_last=channels_last, workers=data_flags['workers'], rank=distributed.rank,
                                 world_size=distributed.world_size)

    logger.info('network: %s', told)
    logger.info(loaders.data_line(info, loader))
    logger.info('cell %s: %s', genotype_source, genotypes.genotype_repr(genotype))
    if args.export:
        return export_network(net, args.export, loader, logger) if distributed.is_main else {}
    forward = loop.eager_smaller_batches(torch.compile(net), net, args.batch_size) if args.compile else net
    result = loop.evaluate(net, loader, nn.CrossEntropyLoss(), forward, amp_autocast, distributed)
    flops = utils.count_flops(net, (1, info.in_channels, info.image_size, info.image_size))
    result.update(params_M=utils.count_parameters_in_millions(net), flops=flops, multiply_adds=flops // 2,
                  dataset=info.name, model_path=args.model_path, genotype=genotypes.genotype_to_dict(genotype))
    logger.info('test_acc %.4f top5 %.4f loss %.4f | %d images, %.6f M parameters, %.1f M multiply-adds',
                result['top1'], result['top5'], result['loss'], result['images'], result['params_M'],
                result['multiply_adds'] / 1e6)
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.model_path)), 'test.json')
    if distributed.is_main:
        try:
            utils.write_json(output, result)
        except OSError as error:
            raise utils.UserError(f'cannot write the results to {output} ({error.strerror}); use --output') from None
        logger.info('wrote %s', output)
    return result


def export_network(net, path, loader, logger):
    """Export the network on the CPU and compare the exported file's logits with PyTorch's on a test batch."""
    images = next(iter(loader.iterate(0)))[0].float().cpu().contiguous()
    net = net.float().cpu().eval()
    fmt = export.export(net, path, images)
    difference = export.check(net, path, images)
    logger.info('wrote %s (%s); on a test batch of %d its logits differ from PyTorch\'s by at most %.2e', path,
                fmt, len(images), difference)
    return {'export': path, 'format': fmt, 'max_abs_difference': difference}


if __name__ == '__main__':
    utils.run_cli(main)
