"""Search a cell: DARTS (first or second order), PC-DARTS, and the other methods as flags or presets.

    python train_search.py                          # DARTS, first order, CIFAR-10
    python train_search.py --unrolled               # DARTS, second order
    python train_search.py --method pc_darts        # PC-DARTS
    python train_search.py --dataset synthetic --epochs 3 --layers 5 --init_channels 8   # offline demo
"""
import time

import torch
import torch.nn as nn

import architect as architect_lib
import checkpoints
import data
import genotypes
import loop
import model_search
import parallel
import utils

# The defaults each method's paper used; any flag typed on the command line still wins.
METHODS = {
    'darts': {},
    'pc_darts': dict(partial_channels=4, edge_norm=True, batch_size=256, learning_rate=0.1, learning_rate_min=0.0,
                     arch_learning_rate=6e-4, warmup_epochs=15),
    'att_darts': dict(location='after_every'),
    # alpha-DARTS's released search code: PC-DARTS-like, 80 epochs, the architecture frozen for 15.
    'alpha_darts': dict(alpha_attention=True, partial_channels=4, edge_norm=True, primitives='alpha_darts',
                        warmup_epochs=15, learning_rate_min=0.0, arch_learning_rate=6e-4, epochs=80),
    # The DADARTS seed's last command: all three of its techniques together.
    'dadarts': dict(dal_on_alphas=True, topk_on_alphas=True, linear_temperature_increase=True,
                    linear_temperature_max=200.0, hd_on_weights=True),
    'da2s': dict(da2s=True, edge_norm=False),
}


def build_parser():
    parser = utils.ArgumentParser(description='Search a cell with differentiable architecture search.')
    parser.add_argument('--method', choices=sorted(METHODS), help='preset of a paper: ' + ', '.join(sorted(METHODS)))
    data.add_data_arguments(parser)
    data.add_augmentation_arguments(parser, cutmix=False)
    parser.add_argument('--train_portion', type=float, default=0.5, help='share of the training set that trains w; '
                        'the rest trains the architecture')
    space = parser.add_argument_group('search space')
    space.add_argument('--init_channels', type=utils.bounded(int, 1), default=16, help='initial channels C')
    space.add_argument('--layers', type=utils.bounded(int, 1), default=8, help='number of cells')
    space.add_argument('--primitives', default='darts', help="'darts', 'alpha_darts' or a comma-separated op list")
    space.add_argument('--partial_channels', type=utils.bounded(int, 1), default=1,
                       help='PC-DARTS: search on 1/K of the channels')
    space.add_argument('--edge_norm', dest='edge_norm', action='store_const', const=True, default=None,
                       help='edge normalisation (default: on with partial channels)')
    space.add_argument('--no_edge_norm', dest='edge_norm', action='store_const', const=False,
                       help='no edge normalisation')
    space.add_argument('--max_skip', type=utils.bounded(int, 0),
                       help='derive at most this many skip_connect in the normal cell')
    space.add_argument('--location', choices=model_search.LOCATIONS, default='no_attention',
                       help='Att-DARTS: where attention is searched (after_every edge, at the cell end, both, '
                            'mixed_with_operation, double_mixed)')
    space.add_argument('--alpha_attention', action='store_true',
                       help='alpha-DARTS: channel attention, steered by the architecture, picks the searched channels')
    opt = parser.add_argument_group('optimisation')
    opt.add_argument('--batch_size', type=utils.bounded(int, 1), default=64, help='batch size')
    opt.add_argument('--learning_rate', type=utils.bounded(float, 0), default=0.025, help='initial learning rate of w')
    opt.add_argument('--learning_rate_min', type=utils.bounded(float, 0), default=0.001,
                     help='final learning rate of w (cosine)')
    opt.add_argument('--momentum', type=utils.bounded(float, 0), default=0.9, help='SGD momentum of w')
    opt.add_argument('--weight_decay', type=utils.bounded(float, 0), default=3e-4, help='weight decay of w')
    opt.add_argument('--grad_clip', type=utils.bounded(float, 0), default=5, help='gradient norm clipping of w')
    opt.add_argument('--epochs', type=utils.bounded(int, 1), default=50, help='search epochs')
    opt.add_argument('--unrolled', action='store_true', help='second-order architecture gradient')
    opt.add_argument('--arch_learning_rate', type=utils.bounded(float, 0), default=3e-4,
                     help='Adam learning rate of the architecture')
    opt.add_argument('--arch_weight_decay', type=utils.bounded(float, 0), default=1e-3,
                     help='Adam weight decay of the architecture')
    opt.add_argument('--warmup_epochs', type=utils.bounded(int, 0), default=0,
                     help='epochs with the architecture frozen')
    architect_lib.add_discretization_arguments(parser)
    loop.add_speed_arguments(parser)
    loop.add_run_arguments(parser, default_seed=2)
    return parser


def resolve_arguments(parser, argv):
    """(args, checkpoint or None, notes for the log): command line over (resumed arguments or the method
    preset) over parser defaults."""
    args, checkpoint = checkpoints.resolve_arguments(parser, argv, 'search', lambda args: METHODS.get(args.method, {}))
    if not 0 < args.train_portion < 1:
        raise utils.UserError('--train_portion must lie strictly between 0 and 1')
    if args.amp == 'fp16':
        # The architecture step takes gradients with autograd.grad, which a loss scaler does not cover.
        raise utils.UserError('--amp fp16 is for train.py and test.py; search with --amp bf16 or off')
    given = checkpoints.given_arguments(parser, argv)
    notes = [] if checkpoint else fit_warmup(args, given, parser.get_default('epochs'))
    return args, checkpoint, notes


def fit_warmup(args, given, default_epochs):
    """A preset's warm-up (PC-DARTS: 15 of 50 epochs) would freeze the architecture for the whole of a short
    run; unless --warmup_epochs was typed, it shrinks with the run, keeping the paper's proportion, and
    at least one epoch trains the architecture. Returns what to tell the user."""
    if args.warmup_epochs < args.epochs:
        return []
    if 'warmup_epochs' in given:
        return [f'warning: the architecture will not train, because --warmup_epochs {args.warmup_epochs} keeps it '
                f'frozen for all {args.epochs} epochs']
    preset = METHODS[args.method]
    paper_epochs = preset.get('epochs', default_epochs)
    warmup = min(round(args.epochs * args.warmup_epochs / paper_epochs), args.epochs - 1)
    note = (f'{args.method} freezes the architecture for {args.warmup_epochs} of its {paper_epochs} epochs; this run '
            f'of {args.epochs} keeps it frozen for {warmup} (the same share; --warmup_epochs sets it)')
    args.warmup_epochs = warmup
    return [note]


def build_model(args, info):
    return model_search.Network(
        args.init_channels, info.num_classes, args.layers, nn.CrossEntropyLoss(), primitives=args.primitives,
        partial_channels=args.partial_channels, edge_norm=args.edge_norm, max_skip=args.max_skip,
        location=args.location, alpha_attention=args.alpha_attention, da2s=args.da2s, in_channels=info.in_channels,
        image_size=info.image_size)


def alpha_batches(loader, epoch, start_step):
    """Batches of the architecture half for step `start_step` onwards, wrapping around if it is shorter."""
    cycle, step = divmod(start_step, len(loader))
    while True:
        yield from loader.iterate(epoch + 1000 * cycle, step)
        cycle, step = cycle + 1, 0


def search_step(model, objective, architect, batch, alpha_batch, w_optimizer, lr, args, update_architecture,
                gradient_sync=None):
    """The architecture step on a batch of the architecture half (unless warming up), then the weight step
    on a training batch. Returns (loss, logits, architecture loss or None) as device tensors."""
    (x, y), (x_alpha, y_alpha) = batch, alpha_batch
    alpha_loss = None
    if update_architecture:
        alpha_loss = architect.step(x, y, x_alpha, y_alpha, lr, w_optimizer, args.unrolled)
    loss, logits, _ = objective.loss(x, y, 'weights')
    w_optimizer.zero_grad(set_to_none=True)
    objective.precision.step(loss, w_optimizer, model.weights(), args.grad_clip, gradient_sync)
    return loss, logits, alpha_loss


def search_epoch(model, objective, architect, loaders, w_optimizer, lr, args, start_step, monitor):
    """One epoch from `start_step`; returns the step to resume from if a stop was requested, else None."""
    model.train()
    epoch = monitor.epoch
    train_loader, alpha_loader = loaders
    batches = zip(train_loader.iterate(epoch, start_step), alpha_batches(alpha_loader, epoch, start_step))
    batches = monitor.track(batches, start_step)
    for step, ((x, y), (x_alpha, y_alpha)) in enumerate(batches, start=start_step):
        loss, logits, alpha_loss = search_step(model, objective, architect, (x, y), (x_alpha, y_alpha), w_optimizer,
                                               lr, args, epoch >= args.warmup_epochs,
                                               monitor.distributed.average_gradients)
        if alpha_loss is not None:
            monitor.guard.update(alpha_loss, step)
        if monitor.after_step(step, loss, logits, y):
            return step + 1
    monitor.end_epoch()
    return None


def describe_architecture(model):
    """Softmaxed architecture weights of both cell types, as nested lists (for logs and metrics.jsonl)."""
    described = {}
    for cell, weights in model.arch_weights().items():
        described[cell] = {field: value.detach().float().cpu().tolist() for field, value in vars(weights).items()
                           if torch.is_tensor(value)}
    return described


def main(argv=None):
    parser = build_parser()
    args, checkpoint, notes = resolve_arguments(parser, argv)
    return parallel.run_distributed(search, args, args, checkpoint, notes)


def search(args, checkpoint, notes, device, distributed):
    utils.configure_device(device)
    precision = loop.Precision(args.amp, device, args.channels_last)
    args.channels_last = precision.channels_last
    train_split, _, info = data.load_dataset(args)
    utils.seed_everything(args.seed)
    model = build_model(args, info).to(device, memory_format=precision.memory_format)
    run = loop.Run('search', args.save, args.exp_path, distributed)
    logger = run.logger
    first, rest = data.split_indices(len(train_split), args.train_portion)

    def loader(indices, train):
        return data.make_loader(train_split, info, args.batch_size, device=device, train=train, args=args,
                                indices=indices, rank=distributed.rank, world_size=distributed.world_size)
    train_loader, alpha_loader, valid_loader = loader(first, True), loader(rest, True), loader(rest, False)
    objective = architect_lib.SearchObjective.from_args(model, args, precision)
    w_optimizer = torch.optim.SGD(model.weights(), args.learning_rate, momentum=args.momentum,
                                  weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(w_optimizer, args.epochs, eta_min=args.learning_rate_min)
    architect = architect_lib.Architect(model, objective, args.momentum, args.weight_decay, args.arch_learning_rate,
                                        args.arch_weight_decay, distributed.average)
    samples_per_step = args.batch_size * distributed.world_size

    meters = {'loss': utils.AverageMeter(), 'top1': utils.AverageMeter()}
    optimizers = {'w': w_optimizer, 'alpha': architect.optimizer}
    run_args = {**vars(args), 'num_classes': info.num_classes}
    epoch, start_step, history = run.begin(run_args, checkpoint, model, optimizers, scheduler, precision, meters)
    for note in notes:
        logger.info(note)
    logger.info('search space: %s; supernet of %.6f M parameters; %d process(es) of batch %d; %d classes',
                ', '.join(model.op_names), utils.count_parameters_in_millions(model), distributed.world_size,
                args.batch_size, info.num_classes)
    logger.info('%d epoch(s) of %d steps (each an architecture step, from epoch %d on, and a weight step), each '
                'epoch followed by a validation pass of %d batches', args.epochs, len(train_loader),
                args.warmup_epochs, len(valid_loader))

    def save(epoch, step):
        state = checkpoints.training_state(model, optimizers, scheduler, precision, epoch, step * samples_per_step,
                                           meters, history, distributed)
        run.save({'kind': 'search', 'args': run_args, **state})

    clock = loop.RunClock(epoch, args.epochs)
    with loop.GracefulStop() as stop:
        while epoch < args.epochs:
            lr = scheduler.get_last_lr()[0]
            objective.set_epoch(epoch, args.epochs)
            started = time.time()
            utils.reset_peak_memory(device)
            monitor = loop.StepMonitor(epoch, args.epochs, len(train_loader), meters, stop, logger, args.report_freq,
                                        'search', distributed)
            resume_step = search_epoch(model, objective, architect, (train_loader, alpha_loader), w_optimizer, lr,
                                       args, start_step, monitor)
            if resume_step is not None:
                save(epoch, resume_step)
                monitor.stop_run(resume_step, run.exp_dir)
            seconds = time.time() - started
            valid = loop.evaluate(model, valid_loader, nn.CrossEntropyLoss(),
                                   lambda x: model(x, objective.arch_weights('eval')), precision, distributed)
            scheduler.step()
            genotype = model.genotype()
            terms = objective.summary()
            totals = parallel.reduce_meters(meters, distributed)
            row = {'epoch': epoch, 'lr': lr, 'train_loss': totals['loss'].avg, 'train_top1': totals['top1'].avg,
                   'valid_loss': valid['loss'], 'valid_top1': valid['top1'],
                   'skip_connect': genotypes.count_ops(genotype, 'skip_connect', 'normal'),
                   'genotype': genotypes.genotype_to_dict(genotype), 'op_names': model.op_names,
                   'arch_weights': describe_architecture(model), **terms, 'time_s': seconds,
                   'images_per_s': totals['loss'].count / max(seconds, 1e-9),
                   'peak_memory_mb': utils.peak_memory_mb(device)}
            history.append(row)
            run.append_metrics(row)
            epoch, start_step = epoch + 1, 0
            logger.info('epoch %d lr %.3e train_acc %.2f valid_acc %.2f skip_connect %d (%.1fs, %.0f img/s; %s left in '
                        'the run)', row['epoch'], lr, row['train_top1'], row['valid_top1'], row['skip_connect'],
                        seconds, row['images_per_s'], clock.time_left(epoch))
            logger.info('genotype = %s', genotypes.genotype_repr(genotype))
            if terms:
                logger.info('temperature and loss terms: %s', ', '.join(f'{k} {v:.4g}' for k, v in terms.items()))
            for cell, fields in row['arch_weights'].items():
                for field, values in fields.items():
                    logger.info('%s %s (softmax): %s', cell, field, loop.summarize_weights(values))
            if distributed.is_main:
                genotypes.save_genotype(genotype, run.path('genotype.json'))
            meters = {'loss': utils.AverageMeter(), 'top1': utils.AverageMeter()}
            save(epoch, 0)
    logger.info('final genotype = %s', genotypes.genotype_repr(model.genotype()))
    logger.info('wrote %s: genotype.json (the cell), metrics.jsonl (with the architecture weights of every epoch), '
                'checkpoint.pt, args.json, log.txt; retrain the cell with: python train.py --arch_path %s',
                run.exp_dir, run.path('genotype.json'))
    return model.genotype()


if __name__ == '__main__':
    utils.run_cli(main)
