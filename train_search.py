"""Search a cell: DARTS (first or second order), PC-DARTS, and the other methods as flags or presets.

The algorithm is in search_step, train and infer below, and in search(), the loop over stages and epochs;
what each method changes in a step is in methods.py and successors.py.

    python train_search.py                          # DARTS, first order, CIFAR-10
    python train_search.py --unrolled               # DARTS, second order
    python train_search.py --method pc_darts        # PC-DARTS
    python train_search.py --dataset synthetic --epochs 3 --layers 5 --init_channels 8   # offline demo
"""
import argparse
import functools
import itertools
from dataclasses import dataclass

import torch
import torch.nn as nn

import architect as architect_lib
import architecture
import nas_bench_201
import curvature
import early_stopping
import cost  # noqa: F401  (registers the cost penalty with methods.py)
import checkpoints
import data
import loaders
import loop
import methods
import model as model_lib
import model_search
import model_search_nb201
import parallel
import precision
import progressive
import search_log
import search_split
import selection
import spaces
import successors  # noqa: F401  (registers the successor methods with methods.py)
import utils

SEARCH_SPACES = ('darts', 'nas_bench_201', *spaces.SPACES)
# A search space's own defaults, below a method preset's (methods.presets of that space) and any flag typed.
# NAS-Bench-201's: the benchmark's DARTS settings (D-X-Y/AutoDL-Projects f46486e, configs/nas-benchmark/algos/
# DARTS.config: weight decay 5e-4, Nesterov momentum; exps/NAS-Bench-201-algos/DARTS-V1.py takes the weight step
# first, DARTS-V2.py, second order, the architecture step first).
SPACE_DEFAULTS = {'darts': {}, 'nas_bench_201': dict(layers=5, weight_decay=5e-4, nesterov=True),
                  **{space: {} for space in spaces.SPACES}}  # RobustDARTS searches S1-S4 with DARTS's settings
STEP_ORDERS = ('architecture_first', 'weights_first')


@dataclass
class StageState:
    """A stage's supernet and what trains it: SGD of the weights, its schedule, and the Architect (with Adam
    of the architecture and the search objective)."""
    model: nn.Module
    w_optimizer: torch.optim.Optimizer
    scheduler: object
    architect: architect_lib.Architect

    @property
    def arch(self):
        """The architecture.Architecture searched: the supernet's architecture and its methods."""
        return self.architect.objective.arch


@dataclass
class SearchRun:
    """What every stage of a search shares: the run folder and arguments, the loaders (the weights' half, the
    architecture's, that again for validation), precision, processes, NAS-Bench-201's tables, DARTS-ES's rule and
    the eigenvalue's period (0: never) and batches."""
    run: loop.Run
    run_args: dict
    train_queue: object
    alpha_queue: object
    valid_queue: object
    amp_autocast: object
    distributed: parallel.Distributed
    grad_clip: float
    unrolled: bool
    tables: object = None
    hessian_every: int = 0
    hessian_batches: tuple = ()
    early_stop: object = None  # early_stopping.Rule, or None


def search_step(architect, batch, alpha_batch, w_optimizer, lr, grad_clip, unrolled, update_architecture,
                gradient_sync=None):
    """One step of DARTS's search: the architecture step on a batch of the architecture's half (unless warming
    up), then the weight step on a training batch, or the other way round (--step_order weights_first).
    Returns (loss, logits, architecture loss or None) as device tensors."""
    objective = architect.objective
    (x, y), (x_alpha, y_alpha) = batch, alpha_batch
    alpha_loss = None
    if update_architecture and not objective.weight_step_first:
        alpha_loss = architect.step(x, y, x_alpha, y_alpha, lr, w_optimizer, unrolled)
    loss, logits, _ = objective.loss(x, y, 'weights')
    w_optimizer.zero_grad(set_to_none=True)
    loop.backward_step(loss, w_optimizer, objective.model.network_weights(), grad_clip, gradient_sync=gradient_sync)
    if update_architecture and objective.weight_step_first:
        alpha_loss = architect.step(x, y, x_alpha, y_alpha, lr, w_optimizer, unrolled)
    return loss, logits, alpha_loss


def train(epoch_run, batches, state, lr, update_architecture, grad_clip, unrolled, gradient_sync):
    """One epoch of the search, DARTS's train(): a search_step per training batch and batch of the architecture's."""
    state.model.train()
    for step, (batch, alpha_batch) in epoch_run.steps(batches):
        loss, logits, alpha_loss = search_step(state.architect, batch, alpha_batch, state.w_optimizer, lr, grad_clip,
                                               unrolled, update_architecture, gradient_sync)
        epoch_run.record(step, (loss,) if alpha_loss is None else (loss, alpha_loss), logits, batch[1])


def infer(model, objective, valid_queue, amp_autocast, distributed):
    """Loss and accuracy on the architecture's half, with the weights the methods evaluate with (DARTS's infer())."""
    return loop.evaluate(model, valid_queue, nn.CrossEntropyLoss(),
                         lambda x: model(x, objective.arch_weights('eval')), amp_autocast, distributed)


def build_parser():
    parser = utils.ArgumentParser(description='Search a cell with differentiable architecture search.')
    presets = sorted(methods.presets())
    parser.add_argument('--method', choices=presets, help="a paper's settings: " + ', '.join(presets))
    data.add_data_arguments(parser)
    loaders.add_augmentation_arguments(parser, cutmix=False)
    search_split.add_arguments(parser)
    add_space_arguments(parser)
    add_optimisation_arguments(parser)
    methods.add_arguments(parser)
    progressive.add_arguments(parser)
    curvature.add_arguments(parser)
    early_stopping.add_arguments(parser)
    selection.add_arguments(parser)
    precision.add_speed_arguments(parser)
    loop.add_run_arguments(parser, default_seed=2)
    return parser


def add_space_arguments(parser):
    """The supernet: its space, size and the options that shape its cells."""
    space = parser.add_argument_group('search space')
    space.add_argument('--search_space', choices=SEARCH_SPACES, default='darts',
                       help="darts: DARTS's cell; nas_bench_201: NAS-Bench-201's, whose 15,625 cells are tabulated; "
                            "s1..s4: RobustDARTS's reduced DARTS spaces, each edge with its own candidate ops")
    space.add_argument('--benchmark', metavar='PATH',
                       help='nas_bench_201: log the tabulated accuracies of the derived cell every epoch, from this '
                            'NATS-Bench topology folder or file or NAS-Bench-201 .pth file')
    space.add_argument('--init_channels', type=utils.bounded(int, 1), default=16, help='initial channels C')
    space.add_argument('--layers', type=utils.bounded(int, 1), default=8,
                       help='number of cells (nas_bench_201: N, the cells of each of its three stages, default 5)')
    space.add_argument('--primitives', default='darts', help='darts, darts_without_none, alpha_darts or op1,op2,...')
    space.add_argument('--partial_channels', type=utils.bounded(int, 1), default=1,
                       help='PC-DARTS: search on 1/K of the channels')
    space.add_argument('--max_skip', type=utils.bounded(int, 0),
                       help='derive at most this many skip_connect in the normal cell')
    space.add_argument('--location', choices=model_search.LOCATIONS, default='no_attention',
                       help='Att-DARTS: where attention is searched (after_every edge, at the cell end, both, '
                            'mixed_with_operation, double_mixed)')
    space.add_argument('--no_pool_bn', dest='pool_bn', action='store_false',
                       help="pooling candidates without the BatchNorm DARTS puts after them (DrNAS's supernet)")
    space.add_argument('--alpha_attention', action='store_true',
                       help='alpha-DARTS: channel attention, steered by the architecture, picks the searched channels')


def add_optimisation_arguments(parser):
    """DARTS's two optimisers: SGD with a cosine schedule for the weights, Adam for the architecture."""
    opt = parser.add_argument_group('optimisation')
    opt.add_argument('--batch_size', type=utils.bounded(int, 1), default=64, help='batch size')
    opt.add_argument('--learning_rate', type=utils.bounded(float, 0), default=0.025, help='initial learning rate of w')
    opt.add_argument('--learning_rate_min', type=utils.bounded(float, 0), default=0.001,
                     help='final learning rate of w (cosine)')
    opt.add_argument('--lr_ramp_epochs', type=utils.bounded(int, 0), default=0,
                     help="epoch e < N trains w at lr * (e + 1) / N, then the cosine goes on (PC-DARTS's ImageNet "
                          "search, batches over 256: 5)")
    opt.add_argument('--momentum', type=utils.bounded(float, 0), default=0.9, help='SGD momentum of w')
    opt.add_argument('--weight_decay', type=utils.bounded(float, 0), default=3e-4, help='weight decay of w')
    opt.add_argument('--nesterov', action='store_true',
                     help="Nesterov momentum for w (default: off, as DARTS; on in nas_bench_201, as its DARTS config)")
    opt.add_argument('--no_nesterov', dest='nesterov', action='store_false', help='plain momentum for w')
    opt.add_argument('--grad_clip', type=utils.bounded(float, 0), default=5, help='gradient norm clipping of w')
    opt.add_argument('--epochs', type=utils.bounded(int, 1), default=50, help='search epochs')
    opt.add_argument('--unrolled', action='store_true', help='second-order architecture gradient')
    opt.add_argument('--step_order', choices=STEP_ORDERS,
                     help="which step of a search step comes first (default: the architecture's, as DARTS; on "
                          "nas_bench_201 without --unrolled the weights', as the benchmark's DARTS-V1 code; GDAS: "
                          "the weights')")
    opt.add_argument('--arch_learning_rate', type=utils.bounded(float, 0), default=3e-4,
                     help='Adam learning rate of the architecture')
    opt.add_argument('--arch_weight_decay', type=utils.bounded(float, 0), default=1e-3,
                     help='Adam weight decay of the architecture')
    opt.add_argument('--arch_beta1', type=utils.bounded(float, 0, 1), default=0.5,
                     help="Adam's beta1 of the architecture (DARTS: 0.5; FairDARTS: 0.9)")
    opt.add_argument('--arch_grad_clip', type=utils.bounded(float, 0), default=0.0,
                     help='clip the architecture gradient to this norm (0: not clipped, as DARTS; P-DARTS: 5)')
    opt.add_argument('--warmup_epochs', type=utils.bounded(int, 0), default=0,
                     help='epochs with the architecture frozen')


def resolve_arguments(parser, argv):
    """(args, checkpoint or None, notes for the log): command line over (resumed arguments or the method
    preset) over parser defaults, with a preset's warm-up fitted to a short run."""
    args, checkpoint = checkpoints.resolve_arguments(parser, argv, 'search', lambda args: {
        **SPACE_DEFAULTS[args.search_space], **selection.search_defaults(args.selection, args.search_space),
        **methods.presets(args.search_space).get(args.method, {})})
    if args.step_order is None:
        first_order_nb201 = args.search_space == 'nas_bench_201' and not args.unrolled
        args.step_order = 'weights_first' if first_order_nb201 else 'architecture_first'
    search_split.check_arguments(args.train_portion, args.split_file, args.train_subset, args.arch_subset,
                                 args.subset_file)
    if args.amp == 'fp16':
        # The architecture step takes gradients with autograd.grad, which a loss scaler does not cover.
        raise utils.UserError('--amp fp16 is for train.py and test.py; search with --amp bf16 or off')
    selection.check_arguments(args.selection, args.fix_alpha)
    if checkpoint:
        if checkpoints.selecting(checkpoint) and args.selection != 'pt':
            raise utils.UserError('this run is in its DARTS-PT selection; resume it with --selection pt')
        if args.epochs != checkpoint['args']['epochs'] and (args.stage_layers or args.selection == 'pt'):
            raise utils.UserError('--epochs cannot change when a search in stages or with --selection pt resumes')
        return args, checkpoint, []
    given = checkpoints.given_arguments(parser, argv)
    for flag, staged in (('layers', 'stage_layers'), ('partial_channels', 'stage_partial_channels')):
        if getattr(args, staged) and flag in given:
            raise utils.UserError(f'--{flag} and --{staged} both set the supernet\'s {flag}; give one of them')
    if args.search_space == 'nas_bench_201':
        model_search_nb201.check_nb201_options(args.location, args.max_skip, given,
                                               methods.presets(args.search_space).get(args.method, {}), args.method)
    elif args.benchmark:
        raise utils.UserError('--benchmark looks cells up in NAS-Bench-201; give --search_space nas_bench_201')
    args.primitives, notes = spaces.primitives_in(args.search_space, args.primitives, 'primitives' in given,
                                                  parser.get_default('primitives'), args.method)
    search_stages(args)
    warmup, warmup_notes = methods.fit_warmup(args.method, args.epochs, args.warmup_epochs, 'warmup_epochs' in given,
                                              parser.get_default('epochs'), args.search_space, args.fix_alpha)
    return argparse.Namespace(**{**vars(args), 'warmup_epochs': warmup}), None, notes + warmup_notes


def search_stages(args):
    """The search's stages (progressive.Stage), from the --stage_* flags and --skip_dropout."""
    return progressive.plan_stages(args.stage_layers, args.stage_keep, args.skip_dropout, args.stage_partial_channels,
                                   args.layers, args.partial_channels,
                                   spaces.ops_per_edge(args.search_space, args.primitives), args.init_channels,
                                   args.stage_continue)


def build_architecture(args, info, layers, partial_channels, max_skip):
    """The architecture searched (architecture.Architecture): the supernet of the flags at a stage's depth and
    partial channels, with the search methods they switch on."""
    if args.search_space == 'nas_bench_201':
        net = model_search_nb201.SearchNetworkNB201(
            args.init_channels, layers, info.num_classes, nn.CrossEntropyLoss(),
            partial_channels=partial_channels, alpha_attention=args.alpha_attention,
            in_channels=info.in_channels, image_size=info.image_size)
    else:
        net = model_search.Network(
            args.init_channels, info.num_classes, layers, nn.CrossEntropyLoss(), primitives=args.primitives,
            partial_channels=partial_channels, max_skip=max_skip, location=args.location,
            alpha_attention=args.alpha_attention, in_channels=info.in_channels, image_size=info.image_size,
            pool_bn=args.pool_bn, edge_candidates=spaces.edge_candidates(args.search_space),
            imagenet_stem=model_lib.network_kind(info.name, info.image_size) == 'imagenet')
    return architecture.Architecture(net, methods.build(vars(args)))


def build_search_run(args, run, train_split, info, device, distributed, channels_last, amp_autocast, rule,
                     resuming):
    """The SearchRun of the flags, with DARTS-ES's `rule`."""
    subsets = args.train_subset and dict(
        train_share=args.train_subset, arch_share=args.arch_subset, seed=args.seed, resuming=resuming,
        run_file=run.path(search_split.FILE_NAME), subset_file=args.subset_file, write_file=distributed.is_main)
    first, rest = search_split.indices(train_split, info.name, args.train_portion, args.split_file, subsets)
    options = dict(loaders.process_options(device, args.seed, channels_last, args.workers, distributed),
                   augmentation=loaders.Augmentation.from_flags(args))
    train_queue, alpha_queue, valid_queue = (
        loaders.make_loader(train_split, info, args.batch_size, train=train, indices=indices, **options)
        for indices, train in ((first, True), (rest, True), (rest, False)))
    hessian_batches = args.hessian_batches if args.hessian_eigenvalue else 0
    return SearchRun(run, {**vars(args), 'num_classes': info.num_classes, 'channels_last': channels_last},
                     train_queue, alpha_queue, valid_queue, amp_autocast, distributed, args.grad_clip, args.unrolled,
                     nas_bench_201.Benchmark(args.benchmark) if args.benchmark else None, args.hessian_eigenvalue,
                     tuple(itertools.islice(valid_queue.iterate(0), hessian_batches)), rule)


def build_optimizers(args, arch, distributed, amp_autocast, schedule_epochs, generator=None):
    """(SGD of the supernet's weights, its cosine schedule over `schedule_epochs`, the Architect with Adam of the
    architecture), as in DARTS; `generator` is where the methods draw (see SearchObjective)."""
    w_optimizer = torch.optim.SGD(arch.net.network_weights(), args.learning_rate, momentum=args.momentum,
                                  weight_decay=args.weight_decay, nesterov=args.nesterov)
    scheduler = loop.search_schedule(w_optimizer, schedule_epochs, args.learning_rate_min, args.lr_ramp_epochs)
    objective = architect_lib.SearchObjective(arch, amp_autocast, generator,
                                              weight_step_first=args.step_order == 'weights_first')
    architect = architect_lib.Architect(objective, args.momentum, args.weight_decay, args.arch_learning_rate,
                                        args.arch_weight_decay, distributed.average, args.arch_beta1,
                                        args.arch_grad_clip)
    return w_optimizer, scheduler, architect


def search_epochs(search_run, session, stage, span, state, first_epoch, epochs, begin_epoch, held_after=None):
    """Epochs first_epoch..first_epoch+epochs-1 of stage index `stage`, which make up `span` (for the time
    left): train(), infer(), the log of the architecture, the schedule's step and a checkpoint each (DARTS-ES
    may stop, DARTS-ADA go back). begin_epoch(epoch of the stage) -> (whether the architecture trains, fields of
    the epoch's metrics row). The methods' schedules run over the stage's epochs; with `held_after` the epochs are
    DARTS-PT's selection, its schedules held where a stage of that many epochs left them (rows say `stage: pt`)."""
    selecting = held_after is not None
    run, distributed, objective = search_run.run, search_run.distributed, state.architect.objective
    optimizers = {'w': state.w_optimizer, 'alpha': state.architect.optimizer}

    def checkpoint_at(epoch, step=0, meters=None):
        samples = step * search_run.run_args['batch_size'] * distributed.world_size
        return {'kind': 'search', 'args': search_run.run_args, 'stage': stage, 'selecting': selecting,
                'method_rng': objective.generator.get_state(),
                **checkpoints.training_state(state.model, optimizers, state.scheduler, None, epoch, samples,
                                             meters or loop.new_meters(), session.history, distributed)}

    epoch, end_epoch = max(first_epoch, session.start.epoch), first_epoch + epochs
    clock = loop.RunClock(epoch, end_epoch)
    while epoch < end_epoch:  # DARTS-ADA may go back
        if selecting:
            objective.hold_at_end(held_after)
        else:
            objective.set_epoch(epoch - first_epoch, epochs)
        update_architecture, fields = begin_epoch(epoch - first_epoch)
        lr = state.w_optimizer.param_groups[0]['lr']
        epoch_run = session.epoch(epoch, end_epoch, len(search_run.train_queue))
        batches = zip(search_run.train_queue.iterate(epoch, epoch_run.start_step),
                      loaders.endless_batches(search_run.alpha_queue, epoch, epoch_run.start_step))
        train(epoch_run, batches, state, lr, update_architecture, search_run.grad_clip, search_run.unrolled,
              distributed.average_gradients)
        if epoch_run.stopped_at is not None:
            epoch_run.stop(checkpoint_at(epoch, epoch_run.stopped_at, epoch_run.meters))
        valid = infer(state.model, objective, search_run.valid_queue, search_run.amp_autocast, distributed)
        if not selecting and curvature.due(epoch - first_epoch, epochs, search_run.hessian_every):
            fields = {**fields, 'hessian_eigenvalue': curvature.hessian_eigenvalue(
                objective, search_run.hessian_batches, state.architect.optimizer.defaults['weight_decay'])}
        if not distributed.same_everywhere(list(state.model.parameters())):
            raise RuntimeError(f'the processes\' supernets differ after epoch {epoch}: their methods sampled '
                               f'different architectures')
        stop = early_stopping.decide(session.history, epoch, fields, end_epoch, search_run.hessian_every,
                                     search_run.early_stop)
        fields, words = search_log.report_architecture(run, state.arch, {**fields, **objective.summary()}, valid,
                                                       search_run.tables)
        state.scheduler.step()
        epoch_run.finish(lr, {'stage': 'pt' if selecting else stage, **fields, **early_stopping.row_fields(
            stop, search_run.early_stop, state.w_optimizer)}, words, clock, span)
        epoch = early_stopping.after_epoch(search_run.early_stop, stop, epoch, end_epoch, run, state.w_optimizer,
                                           search_run.hessian_every, session.history, checkpoint_at,
                                           lambda snapshot: begin(session, search_run, snapshot, state))


def begin(session, search_run, checkpoint, state):
    """The session starts with the first stage this process runs: from `checkpoint` (weights, optimisers,
    schedule, the methods' generator), or from scratch."""
    session.begin(search_run.run_args, checkpoint, state.model,
                  {'w': state.w_optimizer, 'alpha': state.architect.optimizer}, state.scheduler, None)
    if checkpoint and 'method_rng' in checkpoint:
        state.architect.objective.generator.set_state(checkpoint['method_rng'])


def select_cell(search_run, session, state, stage, first_epoch, args, checkpoint):
    """DARTS-PT's selection after the search (or resumed within it): the supernet fine-tunes at a tenth of the
    search's learning rate, held constant, and decides every --pt_interval epochs on --pt_batches validation
    batches (0: all); the Architect carries on from the search, its methods' schedules held where the search
    left them, as DARTS-PT's code holds SDARTS's."""
    model = state.model
    model.skip_dropout = 0.0
    w_optimizer, scheduler = selection.fine_tuning_optimizer(model, args.learning_rate / 10, args.momentum,
                                                             args.weight_decay)
    state = StageState(model, w_optimizer, scheduler, state.architect)
    if session.start is None:  # the run resumes within the selection
        begin(session, search_run, checkpoint, state)
    accuracy_of = selection.measurer(model, search_run.valid_queue, search_run.amp_autocast, search_run.distributed,
                                     args.pt_batches)
    search_run.run.logger.info('DARTS-PT selection: %d rounds of decisions, %d epoch(s) of fine-tuning apart',
                               selection.rounds(model), args.pt_interval)
    begin_epoch = selection.decision_epochs(model, args.pt_interval, args.seed, state.architect.objective,
                                            accuracy_of, search_run.run.logger, train_architecture=not args.fix_alpha)
    search_epochs(search_run, session, stage, 'the DARTS-PT selection', state, first_epoch,
                  selection.epochs(model, args.pt_interval), begin_epoch, held_after=args.epochs)


def main(argv=None):
    parser = build_parser()
    args, checkpoint, notes = resolve_arguments(parser, argv)
    return parallel.run_distributed(functools.partial(search, args, checkpoint, notes), args.device, args.gpu)


def search(args, checkpoint, notes, device, distributed):
    """The search's stages (one, or P-DARTS's), each on a fresh supernet that keeps the candidates the previous one
    ranked highest, then DARTS-PT's selection if asked. Epochs count across stages; a checkpoint names its stage."""
    utils.configure_device(device, args.deterministic)
    dtype = precision.amp_dtype(args.amp, device)
    amp_autocast = precision.autocast_factory(dtype, device)
    channels_last = precision.use_channels_last(args.channels_last, device)
    train_split, _, info = data.load_dataset(data.DataConfig.from_flags(args, colour_jitter=False), device)
    utils.seed_everything(args.seed)
    # The methods' draws (GDAS's and DrNAS's samples, SDARTS's noise) come from one generator, seeded alike on
    # every rank and saved in checkpoints, so all ranks sample the same architecture, before and after a resume.
    generator = torch.Generator(device).manual_seed(args.seed)
    stages = search_stages(args)
    rule = early_stopping.rule_of(args.early_stop, args.es_window, args.es_factor, args.es_start_epoch, args.es_delta,
                                  args.ada_factor, args.ada_max_weight_decay, args.ada_rollback_epochs,
                                  args.hessian_eigenvalue, len(stages), args.selection)
    # Where the run starts: a stage's index, and whether its search is over and DARTS-PT's selection under way.
    first, selecting = (checkpoints.search_stage(checkpoint, len(stages)) if checkpoint else (0, False))

    def architecture_of(stage):
        arch = build_architecture(args, info, stage.layers, stage.partial_channels, args.max_skip)
        arch.net.to(device, memory_format=precision.memory_format(channels_last))
        return arch

    schedule_epochs = args.epochs * (len(stages) if args.stage_continue else 1)
    arch = architecture_of(stages[first])  # built first: bad options leave no run folder
    state = None
    run = loop.Run('search', args.save, args.exp_path, distributed, args.tensorboard)
    search_run = build_search_run(args, run, train_split, info, device, distributed, channels_last, amp_autocast,
                                  rule, checkpoint is not None)
    with loop.Session(run, 'search', args.report_freq, device) as session:
        for stage in stages[first:] if not selecting else ():
            if stage.index != first:
                masks = progressive.keep_strongest(arch, stages[stage.index - 1].keep)
                previous, arch = state, architecture_of(stage)
            model = arch.net
            state = StageState(model, *build_optimizers(args, arch, distributed, amp_autocast, schedule_epochs,
                                                        generator))
            if stage.index != first:
                progressive.enter_stage(previous, state, masks, args.stage_continue,
                                        args.seed * 1009 + stage.index, restart_lr=args.stage_lr == 'restart')
            else:
                begin(session, search_run, checkpoint, state)
                search_log.log_plan(run.logger, [*notes, loaders.data_line(info, search_run.train_queue)], arch,
                                    info.num_classes, args.batch_size, distributed.world_size, len(stages), args.epochs,
                                    len(search_run.train_queue), args.warmup_epochs, len(search_run.valid_queue))
                search_log.log_precision(run.logger, dtype, args.unrolled)
            if len(stages) > 1:
                search_log.log_stage(run.logger, stage, stages, model)
            begin_epoch = progressive.stage_epochs(stage, model, args.warmup_epochs, args.epochs,
                                                   bool(args.skip_dropout))
            search_epochs(search_run, session, stage.index, f'stage {stage.index + 1}' if len(stages) > 1 else
                          'the run', state, stage.index * args.epochs, args.epochs, begin_epoch)
        if args.selection == 'pt':
            state = state or StageState(arch.net, *build_optimizers(args, arch, distributed, amp_autocast,
                                                                    schedule_epochs, generator))
            select_cell(search_run, session, state, stages[-1].index, len(stages) * args.epochs, args, checkpoint)
    genotype = early_stopping.kept_genotype(session.history) or arch.genotype()
    search_log.log_result(run, genotype)
    return genotype


if __name__ == '__main__':
    utils.run_cli(main)
