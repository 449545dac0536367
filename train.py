"""Retrain a cell from scratch and test it: DARTS's train.py and train_imagenet.py in one script.

    python train.py --auxiliary --cutout --arch DARTS_V2                  # CIFAR-10, as in DARTS
    python train.py --dataset imagenet --data /imagenet --auxiliary --arch PC_DARTS_image
    python train.py --dataset synthetic --init_channels 8 --layers 5 --epochs 5   # offline demo
"""
import functools

import torch
import torch.nn as nn

import checkpoints
import data
import genotypes
import loaders
import loop
import model as model_lib
import parallel
import precision
import utils

# DARTS's train_imagenet.py defaults, used with --dataset imagenet unless a flag says otherwise.
IMAGENET_DEFAULTS = dict(init_channels=48, layers=14, batch_size=128, learning_rate=0.1, weight_decay=3e-5,
                         label_smooth=0.1, lr_scheduler='step', epochs=250, drop_path_prob=0.0)
# ImageNet recipes of other papers over DARTS's: PC-DARTS's train_imagenet.py (yuhuixu1993/PC-DARTS b74702f) trains
# with batch 1024 on 8 GPUs at 0.5, its linear decay (adjust_lr) after 5 epochs of ramp.
RECIPES = {'darts': {}, 'pc_darts': dict(batch_size=1024, learning_rate=0.5, lr_scheduler='linear', lr_ramp_epochs=5)}
# NAS-Bench-201's training recipe, used with --search_space nas_bench_201 unless a flag says otherwise: C = 16,
# N = 5, 200 epochs of Nesterov SGD, learning rate 0.1 with cosine decay to 0, weight decay 5e-4, batch 256.
NB201_DEFAULTS = dict(init_channels=16, layers=5, batch_size=256, learning_rate=0.1, learning_rate_min=0.0,
                      weight_decay=5e-4, nesterov=True, epochs=200, drop_path_prob=0.0, grad_clip=0.0)


def build_parser():
    parser = utils.ArgumentParser(description='Retrain a genotype from scratch and report test accuracy.')
    data.add_data_arguments(parser)
    loaders.add_augmentation_arguments(parser, cutmix=True)
    arch = parser.add_argument_group('architecture')
    arch.add_argument('--search_space', choices=('darts', 'nas_bench_201'), default='darts',
                      help="the cell's space: darts, or nas_bench_201 (an architecture string, the benchmark's "
                           'network and training recipe)')
    arch.add_argument('--arch', default=None,
                      help='published genotype name (see genotypes.py; default DARTS) or NAS-Bench-201 string')
    arch.add_argument('--arch_path', help="genotype.json from a search (ours or Att-DARTS's)")
    arch.add_argument('--genotype', '-genotype', help='genotype text, e.g. the Genotype(...) line a search logs')
    arch.add_argument('--init_channels', type=utils.bounded(int, 2), default=36,
                      help='initial channels C (ImageNet: 48)')
    arch.add_argument('--layers', type=utils.bounded(int, 1), default=20,
                      help='number of cells (ImageNet: 14; nas_bench_201: N cells per stage, 5)')
    arch.add_argument('--auxiliary', action='store_true', help='use the auxiliary tower')
    arch.add_argument('--auxiliary_weight', type=utils.bounded(float, 0), default=0.4,
                      help='weight of the auxiliary loss')
    arch.add_argument('--drop_path_prob', type=utils.bounded(float, 0, 1), default=0.2,
                      help='final drop path probability')
    opt = parser.add_argument_group('optimisation')
    opt.add_argument('--batch_size', type=utils.bounded(int, 1), default=96, help='batch size (ImageNet: 128)')
    opt.add_argument('--learning_rate', type=utils.bounded(float, 0), default=0.025,
                     help='initial learning rate (ImageNet: 0.1)')
    opt.add_argument('--learning_rate_min', type=utils.bounded(float, 0), default=0.0,
                     help='final learning rate of the cosine schedule')
    opt.add_argument('--recipe', choices=tuple(RECIPES), default='darts',
                     help="ImageNet's training recipe: DARTS's train_imagenet.py, or PC-DARTS's (batch 1024, learning "
                          'rate 0.5, --lr_scheduler linear, --lr_ramp_epochs 5)')
    opt.add_argument('--lr_scheduler', choices=['cosine', 'step', 'linear'], default='cosine',
                     help='cosine to learning_rate_min; step: multiply by --gamma every --decay_period epochs '
                          "(DARTS's ImageNet); linear: to 0 over all but the last 5 epochs, which go on at a fifth "
                          "of the slope (PC-DARTS's ImageNet)")
    opt.add_argument('--lr_ramp_epochs', type=utils.bounded(int, 0), default=0,
                     help="epoch e < N trains at lr * (e + 1) / N, then the schedule goes on (PC-DARTS's ImageNet: 5)")
    opt.add_argument('--gamma', type=utils.bounded(float, 0), default=0.97, help='step schedule: decay factor')
    opt.add_argument('--decay_period', type=utils.bounded(int, 1), default=1,
                     help='step schedule: epochs between decays')
    opt.add_argument('--momentum', type=utils.bounded(float, 0), default=0.9, help='SGD momentum')
    opt.add_argument('--nesterov', action='store_true', help='Nesterov momentum (nas_bench_201: on)')
    opt.add_argument('--weight_decay', type=utils.bounded(float, 0), default=3e-4, help='weight decay (ImageNet: 3e-5)')
    opt.add_argument('--label_smooth', type=utils.bounded(float, 0, 1), default=0.0,
                     help='label smoothing (ImageNet: 0.1)')
    opt.add_argument('--grad_clip', type=utils.bounded(float, 0), default=5,
                     help='gradient norm clipping (0: none, as in nas_bench_201\'s recipe)')
    opt.add_argument('--epochs', type=utils.bounded(int, 1), default=600, help='training epochs (ImageNet: 250)')
    opt.add_argument('--valid_portion', type=utils.bounded(float, 0, 1), default=0.0,
                     help="train on the first 1 - P of the training set and validate on the rest after every epoch, as "
                          "DARTS's short retraining chooses its best cell (0: train on all of it)")
    opt.add_argument('--warmup_epochs', type=utils.bounded(int, 0), default=0,
                     help='linear learning-rate warm-up, for the large total batches of many processes')
    opt.add_argument('--sync_bn', action='store_true',
                     help='with torchrun on GPUs: BatchNorm statistics over the whole batch of all processes')
    precision.add_speed_arguments(parser, compile_option=True)
    loop.add_run_arguments(parser, default_seed=0)
    return parser


def resolve_arguments(parser, argv):
    """Command line over (resumed arguments, or the ImageNet recipe over DARTS's ImageNet defaults, and
    NAS-Bench-201's recipe) over parser defaults."""
    args, checkpoint = checkpoints.resolve_arguments(parser, argv, 'train', lambda args: {
        **(IMAGENET_DEFAULTS if args.dataset == 'imagenet' else {}), **RECIPES[args.recipe],
        **(NB201_DEFAULTS if args.search_space == 'nas_bench_201' else {})})
    if args.recipe != 'darts' and args.dataset != 'imagenet':
        raise utils.UserError(f'--recipe {args.recipe} is its ImageNet recipe (on CIFAR it retrains as DARTS does): '
                              'give --dataset imagenet')
    if args.lr_ramp_epochs and args.warmup_epochs:
        raise utils.UserError(f'--lr_ramp_epochs {args.lr_ramp_epochs} (--recipe pc_darts sets 5) and '
                              '--warmup_epochs both warm the learning rate up; give one of them (--lr_ramp_epochs 0 '
                              'turns the ramp off)')
    if args.lr_scheduler == 'linear' and args.epochs <= 5:
        raise utils.UserError('--lr_scheduler linear slows down for the last 5 epochs of the run; give --epochs over 5')
    return args, checkpoint


def train_step(net, forward, images, targets, criterion, optimizer, amp_autocast, scaler, auxiliary_weight,
               grad_clip):
    """Forward (main and auxiliary loss), backward, clip, step; returns (loss, logits) as device tensors.
    `forward` is the network itself or its compiled or DDP form."""
    with amp_autocast():
        logits, logits_aux = forward(images)
    loss = criterion(logits.float(), targets)
    if logits_aux is not None:
        loss = loss + auxiliary_weight * criterion(logits_aux.float(), targets)
    optimizer.zero_grad(set_to_none=True)
    loop.backward_step(loss, optimizer, net.parameters(), grad_clip, scaler)
    return loss, logits


def build_optimizer(args, parameters):
    """(SGD of `parameters`, its schedule)."""
    optimizer = torch.optim.SGD(parameters, args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay, nesterov=args.nesterov)
    return optimizer, build_scheduler(optimizer, args)


def build_scheduler(optimizer, args):
    """Cosine (CIFAR), step decay (DARTS's ImageNet) or linear decay (PC-DARTS's ImageNet), after a linear warm-up
    of --warmup_epochs for large batches, or with the first --lr_ramp_epochs replaced by a ramp (loop.ramped)."""
    if args.lr_scheduler == 'linear' or args.lr_ramp_epochs:
        factor = {'linear': functools.partial(pc_darts_linear_decay, args.epochs),
                  'step': lambda epoch: args.gamma ** (epoch // args.decay_period),
                  'cosine': loop.cosine_factor(args.learning_rate, args.learning_rate_min, args.epochs)}
        return loop.ramped(optimizer, factor[args.lr_scheduler], args.lr_ramp_epochs)
    epochs = args.epochs - args.warmup_epochs
    if args.lr_scheduler == 'cosine':
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(epochs, 1), eta_min=args.learning_rate_min)
    else:
        main = torch.optim.lr_scheduler.StepLR(optimizer, args.decay_period, gamma=args.gamma)
    if args.warmup_epochs == 0:
        return main
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, 1 / (args.warmup_epochs + 1), total_iters=args.warmup_epochs)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[args.warmup_epochs])


def pc_darts_linear_decay(epochs, epoch):
    """PC-DARTS's adjust_lr in train_imagenet.py, as a multiple of the initial rate: to 0 over epochs - 5 epochs,
    the last 5 at a fifth of that slope, because the rate 1/(epochs - 5) is still large there."""
    return (epochs - 5 - epoch) / (epochs - 5) if epochs - epoch > 5 else (epochs - epoch) / ((epochs - 5) * 5)


def prepare_network(args, info, genotype, device, distributed, channels_last):
    """(network, its forward: under DDP and compiled as the flags say, its config for checkpoints)."""
    config = dict(kind=model_lib.network_kind(info.name, info.image_size, genotype), C=args.init_channels,
                  num_classes=info.num_classes, layers=args.layers, auxiliary=args.auxiliary,
                  in_channels=info.in_channels, image_size=info.image_size)
    utils.seed_everything(args.seed)  # the same initial weights on every rank
    net = model_lib.build_network(config, genotype).to(device, memory_format=precision.memory_format(channels_last))
    utils.seed_everything(args.seed + distributed.rank)  # each rank its own drop-path stream
    forward = net
    if distributed.enabled:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(net) if args.sync_bn else net
        forward = nn.parallel.DistributedDataParallel(module, device_ids=[device] if device.type == 'cuda' else None)
    return net, torch.compile(forward) if args.compile else forward, config


def train(epoch_run, loader, net, forward, criterion, optimizer, amp_autocast, scaler, auxiliary_weight, grad_clip):
    """One epoch of training, DARTS's train(): on every batch a forward pass, the loss with the auxiliary
    head's, and a clipped SGD step."""
    net.train()
    for step, (images, targets) in epoch_run.steps(loader.iterate(epoch_run.epoch, epoch_run.start_step)):
        loss, logits = train_step(net, forward, images, targets, criterion, optimizer, amp_autocast, scaler,
                                  auxiliary_weight, grad_clip)
        epoch_run.record(step, (loss,), logits, targets)


def infer(loader, net, forward, criterion, amp_autocast, distributed, compiled, batch_size):
    """Loss and accuracy on the test set, DARTS's infer(). A compiled network runs the smaller last batch
    eagerly, so that evaluation stays one graph."""
    forward = loop.eager_smaller_batches(forward, net, batch_size) if compiled else forward
    return loop.evaluate(net, loader, criterion, forward, amp_autocast, distributed)


def main(argv=None):
    parser = build_parser()
    args, checkpoint = resolve_arguments(parser, argv)
    return parallel.run_distributed(functools.partial(retrain, args, checkpoint), args.device, args.gpu)


def build_loaders(args, train_split, test_split, info, device, distributed, channels_last):
    """Loaders of the training set (less --valid_portion), of that held-out part (False without one) and of
    the test set."""
    options = loaders.process_options(device, args.seed, channels_last, args.workers, distributed)
    train_part, valid_part = (data.first_and_rest(train_split, info.name, 1 - args.valid_portion,
                                                  f'--valid_portion {args.valid_portion}')
                              if args.valid_portion else (None, None))
    # A compiled network would compile again for a smaller last batch: compiled training leaves it out.
    train_loader = loaders.make_loader(train_split, info, args.batch_size, train=True, drop_last=args.compile,
                                       augmentation=loaders.Augmentation.from_flags(args), indices=train_part,
                                       **options)
    if len(train_loader) == 0:
        raise utils.UserError(f'--compile leaves out a last batch smaller than --batch_size {args.batch_size}, and '
                              f'this training set has no full batch; lower --batch_size')
    valid_loader = valid_part is not None and loaders.make_loader(train_split, info, args.batch_size, train=False,
                                                                  indices=valid_part, **options)
    return train_loader, valid_loader, loaders.make_loader(test_split, info, args.batch_size, train=False, **options)


def retrain(args, checkpoint, device, distributed):
    """The retraining of one process: `args.epochs` epochs of train() and infer(), each followed by its
    metrics row, weights.pt and a checkpoint."""
    if args.sync_bn and device.type != 'cuda':
        raise utils.UserError('--sync_bn needs CUDA devices; on the CPU each process keeps its own BatchNorm '
                              'statistics')
    utils.configure_device(device, args.deterministic)
    dtype = precision.amp_dtype(args.amp, device)
    amp_autocast, scaler = precision.autocast_factory(dtype, device), precision.grad_scaler(dtype, device)
    channels_last = precision.use_channels_last(args.channels_last, device)
    genotype, genotype_source = genotypes.genotype_from_flags(args.genotype, args.arch_path, args.arch,
                                                              space=args.search_space)
    train_split, test_split, info = data.load_dataset(data.DataConfig.from_flags(args), device)
    train_loader, valid_loader, test_loader = build_loaders(args, train_split, test_split, info, device, distributed,
                                                            channels_last)
    net, forward, config = prepare_network(args, info, genotype, device, distributed, channels_last)
    run = loop.Run('eval', args.save, args.exp_path, distributed, args.tensorboard)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smooth)
    optimizer, scheduler = build_optimizer(args, net.parameters())
    run_args = {**vars(args), 'num_classes': info.num_classes, 'channels_last': channels_last}

    def checkpoint_at(epoch, step, meters, history):
        samples = step * args.batch_size * distributed.world_size
        return {'kind': 'train', 'args': run_args, 'network': config, 'genotype': genotypes.genotype_to_dict(genotype),
                **checkpoints.training_state(net, {'w': optimizer}, scheduler, scaler, epoch, samples, meters, history,
                                             distributed)}

    with loop.Session(run, 'train', args.report_freq, device) as session:
        start = session.begin(run_args, checkpoint, net, {'w': optimizer}, scheduler, scaler)
        run.logger.info('cell %s: %s', genotype_source, genotypes.genotype_repr(genotype))
        run.logger.info('%.6f M parameters (auxiliary head excluded); %d process(es) of batch %d; %d classes',
                        utils.count_parameters_in_millions(net), distributed.world_size, args.batch_size,
                        info.num_classes)
        run.logger.info('%d epoch(s) of %d steps, each epoch followed by a test pass of %d batches', args.epochs,
                        len(train_loader), len(test_loader))
        run.logger.info(loaders.data_line(info, train_loader))
        clock = loop.RunClock(start.epoch, args.epochs)
        for epoch in session.epochs(0, args.epochs):
            net.drop_path_prob = args.drop_path_prob * epoch / args.epochs
            lr = optimizer.param_groups[0]['lr']
            epoch_run = session.epoch(epoch, args.epochs, len(train_loader))
            train(epoch_run, train_loader, net, forward, criterion, optimizer, amp_autocast, scaler,
                  args.auxiliary_weight, args.grad_clip)
            if epoch_run.stopped_at is not None:
                epoch_run.stop(checkpoint_at(epoch, epoch_run.stopped_at, epoch_run.meters, session.history))
            test = infer(test_loader, net, forward, criterion, amp_autocast, distributed, args.compile,
                         args.batch_size)
            valid = valid_loader and infer(valid_loader, net, forward, criterion, amp_autocast, distributed,
                                           args.compile, args.batch_size)
            run.save(net.state_dict(), 'weights.pt')
            scheduler.step()
            epoch_run.finish(lr, {'drop_path_prob': net.drop_path_prob, 'test_loss': test['loss'],
                                  'test_top1': test['top1'], 'test_top5': test['top5'],
                                  **({'valid_loss': valid['loss'], 'valid_top1': valid['top1']} if valid else {})},
                             f'test_acc {test["top1"]:.2f} test_top5 {test["top5"]:.2f}'
                             + (f' valid_acc {valid["top1"]:.2f}' if valid else ''), clock)
            run.save(checkpoint_at(epoch + 1, 0, loop.new_meters(), session.history))
    run.logger.info('wrote %s: weights.pt (the trained weights), checkpoint.pt, metrics.jsonl, args.json, log.txt; '
                    'test it with: python test.py --model_path %s', run.exp_dir, run.path('weights.pt'))
    return session.history[-1] if session.history else {}


if __name__ == '__main__':
    utils.run_cli(main)
