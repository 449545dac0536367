"""Retrain a cell from scratch and test it: DARTS's train.py and train_imagenet.py in one script.

    python train.py --auxiliary --cutout --arch DARTS_V2                  # CIFAR-10, as in DARTS
    python train.py --dataset imagenet --data /imagenet --auxiliary --arch PC_DARTS_image
    python train.py --dataset synthetic --init_channels 8 --layers 5 --epochs 5   # offline demo
"""
import time

import torch
import torch.nn as nn

import checkpoints
import data
import genotypes
import loop
import model as model_lib
import parallel
import utils

# DARTS's train_imagenet.py defaults, used with --dataset imagenet unless a flag says otherwise.
IMAGENET_DEFAULTS = dict(init_channels=48, layers=14, batch_size=128, learning_rate=0.1, weight_decay=3e-5,
                         label_smooth=0.1, lr_scheduler='step', epochs=250)


def build_parser():
    parser = utils.ArgumentParser(description='Retrain a genotype from scratch and report test accuracy.')
    data.add_data_arguments(parser)
    data.add_augmentation_arguments(parser, cutmix=True)
    arch = parser.add_argument_group('architecture')
    arch.add_argument('--arch', default='DARTS', help='published genotype name (see genotypes.py)')
    arch.add_argument('--arch_path', help="genotype.json from a search (ours or Att-DARTS's)")
    arch.add_argument('--genotype', '-genotype', help='genotype text, e.g. the Genotype(...) line a search logs')
    arch.add_argument('--init_channels', type=utils.bounded(int, 2), default=36,
                      help='initial channels C (ImageNet: 48)')
    arch.add_argument('--layers', type=utils.bounded(int, 1), default=20, help='number of cells (ImageNet: 14)')
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
    opt.add_argument('--lr_scheduler', choices=['cosine', 'step'], default='cosine',
                     help='cosine to learning_rate_min, or multiply by --gamma every --decay_period epochs (ImageNet)')
    opt.add_argument('--gamma', type=utils.bounded(float, 0), default=0.97, help='step schedule: decay factor')
    opt.add_argument('--decay_period', type=utils.bounded(int, 1), default=1,
                     help='step schedule: epochs between decays')
    opt.add_argument('--momentum', type=utils.bounded(float, 0), default=0.9, help='SGD momentum')
    opt.add_argument('--weight_decay', type=utils.bounded(float, 0), default=3e-4, help='weight decay (ImageNet: 3e-5)')
    opt.add_argument('--label_smooth', type=utils.bounded(float, 0, 1), default=0.0,
                     help='label smoothing (ImageNet: 0.1)')
    opt.add_argument('--grad_clip', type=utils.bounded(float, 0), default=5, help='gradient norm clipping')
    opt.add_argument('--epochs', type=utils.bounded(int, 1), default=600, help='training epochs (ImageNet: 250)')
    opt.add_argument('--warmup_epochs', type=utils.bounded(int, 0), default=0,
                     help='linear learning-rate warm-up, for the large total batches of many processes')
    opt.add_argument('--sync_bn', action='store_true',
                     help='with torchrun on GPUs: BatchNorm statistics over the whole batch of all processes')
    loop.add_speed_arguments(parser, compile_option=True)
    loop.add_run_arguments(parser, default_seed=0)
    return parser


def resolve_arguments(parser, argv):
    """Command line over (resumed arguments or DARTS's ImageNet defaults) over parser defaults."""
    return checkpoints.resolve_arguments(parser, argv, 'train',
                                   lambda args: IMAGENET_DEFAULTS if args.dataset == 'imagenet' else {})


def train_step(net, forward, images, targets, criterion, optimizer, precision, args):
    """Forward (main and auxiliary loss), backward, clip, step; returns (loss, logits) as device tensors.
    `forward` is the network itself or its compiled form."""
    with precision.autocast():
        logits, logits_aux = forward(images)
    loss = criterion(logits.float(), targets)
    if logits_aux is not None:
        loss = loss + args.auxiliary_weight * criterion(logits_aux.float(), targets)
    optimizer.zero_grad(set_to_none=True)
    precision.step(loss, optimizer, net.parameters(), args.grad_clip)
    return loss, logits


def train_epoch(net, forward, loader, criterion, optimizer, precision, args, start_step, monitor):
    """One epoch from `start_step`; returns the step to resume from if a stop was requested, else None."""
    net.train()
    batches = monitor.track(loader.iterate(monitor.epoch, start_step), start_step)
    for step, (images, targets) in enumerate(batches, start=start_step):
        loss, logits = train_step(net, forward, images, targets, criterion, optimizer, precision, args)
        if monitor.after_step(step, loss, logits, targets):
            return step + 1
    monitor.end_epoch()
    return None


def build_scheduler(optimizer, args):
    """Cosine (CIFAR) or step decay (ImageNet), after a linear warm-up of --warmup_epochs for large batches."""
    epochs = args.epochs - args.warmup_epochs
    if args.lr_scheduler == 'cosine':
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(epochs, 1), eta_min=args.learning_rate_min)
    else:
        main = torch.optim.lr_scheduler.StepLR(optimizer, args.decay_period, gamma=args.gamma)
    if args.warmup_epochs == 0:
        return main
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, 1 / (args.warmup_epochs + 1), total_iters=args.warmup_epochs)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[args.warmup_epochs])


def main(argv=None):
    parser = build_parser()
    args, checkpoint = resolve_arguments(parser, argv)
    return parallel.run_distributed(train, args, args, checkpoint)


def train(args, checkpoint, device, distributed):
    if args.sync_bn and device.type != 'cuda':
        raise utils.UserError('--sync_bn needs CUDA devices; on the CPU each process keeps its own BatchNorm '
                              'statistics')
    utils.configure_device(device)
    precision = loop.Precision(args.amp, device, args.channels_last)
    args.channels_last = precision.channels_last
    genotype, genotype_source = genotypes.genotype_from_flags(args.genotype, args.arch_path, args.arch)
    train_split, test_split, info = data.load_dataset(args)
    shard = {'rank': distributed.rank, 'world_size': distributed.world_size}
    train_loader = data.make_loader(train_split, info, args.batch_size, device=device, train=True, args=args, **shard)
    test_loader = data.make_loader(test_split, info, args.batch_size, device=device, train=False, args=args, **shard)
    config = dict(kind=model_lib.network_kind(info.name, info.image_size), C=args.init_channels,
                  num_classes=info.num_classes, layers=args.layers, auxiliary=args.auxiliary,
                  in_channels=info.in_channels, image_size=info.image_size)
    utils.seed_everything(args.seed)  # the same initial weights on every rank
    net = model_lib.build_network(config, genotype).to(device, memory_format=precision.memory_format)
    utils.seed_everything(args.seed + distributed.rank)  # each rank its own drop-path stream
    forward = net
    if distributed.enabled:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(net) if args.sync_bn else net
        forward = nn.parallel.DistributedDataParallel(module, device_ids=[device] if device.type == 'cuda' else None)
    forward = torch.compile(forward) if args.compile else forward
    run = loop.Run('eval', args.save, args.exp_path, distributed)
    logger = run.logger
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smooth)
    optimizer = torch.optim.SGD(net.parameters(), args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = build_scheduler(optimizer, args)
    samples_per_step = args.batch_size * distributed.world_size

    meters = {'loss': utils.AverageMeter(), 'top1': utils.AverageMeter()}
    run_args = {**vars(args), 'num_classes': info.num_classes}
    epoch, start_step, history = run.begin(run_args, checkpoint, net, {'w': optimizer}, scheduler, precision, meters)
    logger.info('cell %s: %s', genotype_source, genotypes.genotype_repr(genotype))
    logger.info('%.6f M parameters (auxiliary head excluded); %d process(es) of batch %d; %d classes',
                utils.count_parameters_in_millions(net), distributed.world_size, args.batch_size, info.num_classes)
    logger.info('%d epoch(s) of %d steps, each epoch followed by a test pass of %d batches', args.epochs,
                len(train_loader), len(test_loader))

    def save(epoch, step):
        state = checkpoints.training_state(net, {'w': optimizer}, scheduler, precision, epoch, step * samples_per_step,
                                     meters, history, distributed)
        run.save({'kind': 'train', 'args': run_args, 'network': config,
                  'genotype': genotypes.genotype_to_dict(genotype), **state})

    clock = loop.RunClock(epoch, args.epochs)
    with loop.GracefulStop() as stop:
        while epoch < args.epochs:
            net.drop_path_prob = args.drop_path_prob * epoch / args.epochs
            lr = scheduler.get_last_lr()[0]
            started = time.time()
            utils.reset_peak_memory(device)
            monitor = loop.StepMonitor(epoch, args.epochs, len(train_loader), meters, stop, logger, args.report_freq,
                                        'train', distributed)
            resume_step = train_epoch(net, forward, train_loader, criterion, optimizer, precision, args, start_step,
                                      monitor)
            if resume_step is not None:
                save(epoch, resume_step)
                monitor.stop_run(resume_step, run.exp_dir)
            seconds = time.time() - started
            test = loop.evaluate(net, test_loader, criterion, forward, precision, distributed)
            scheduler.step()
            totals = parallel.reduce_meters(meters, distributed)
            row = {'epoch': epoch, 'lr': lr, 'drop_path_prob': net.drop_path_prob,
                   'train_loss': totals['loss'].avg, 'train_top1': totals['top1'].avg,
                   'test_loss': test['loss'], 'test_top1': test['top1'], 'test_top5': test['top5'],
                   'time_s': seconds, 'images_per_s': totals['loss'].count / max(seconds, 1e-9),
                   'peak_memory_mb': utils.peak_memory_mb(device)}
            history.append(row)
            run.append_metrics(row)
            epoch, start_step = epoch + 1, 0
            logger.info('epoch %d lr %.3e train_acc %.2f test_acc %.2f test_top5 %.2f (%.1fs, %.0f img/s; %s left '
                        'in the run)', row['epoch'], lr, row['train_top1'], row['test_top1'], row['test_top5'], seconds,
                        row['images_per_s'], clock.time_left(epoch))
            meters = {'loss': utils.AverageMeter(), 'top1': utils.AverageMeter()}
            run.save(net.state_dict(), 'weights.pt')
            save(epoch, 0)
    final = history[-1] if history else {}
    if final:
        logger.info('test_acc %.2f test_top5 %.2f', final['test_top1'], final['test_top5'])
    logger.info('wrote %s: weights.pt (the trained weights), checkpoint.pt, metrics.jsonl, args.json, log.txt; '
                'test it with: python test.py --model_path %s', run.exp_dir, run.path('weights.pt'))
    return final


if __name__ == '__main__':
    utils.run_cli(main)
