"""A search's epochs: the shared epoch loop (loop.run_epochs) run stage by stage, where a stage is one
supernet with its optimisers (the one stage of DARTS, P-DARTS's stages, DARTS-PT's fine-tuning)."""
import torch.nn as nn

import architect as architect_lib
import benchmark
import checkpoints
import loaders
import loop
import search_log
import selection


class StageRunner:
    """What every stage of a search shares (run folder, loaders, precision, the metrics so far), and the
    shared epoch loop run for one stage."""

    def __init__(self, run, run_args, batches, amp_autocast, distributed, device, grad_clip, unrolled, report_freq,
                 benchmark_path=None):
        """`run_args` are what checkpoints and args.json record; `batches` the loaders of the weights' half,
        the architecture's half and that half for validation; `benchmark_path` NAS-Bench-201's tables."""
        self.run, self.run_args, self.batches = run, run_args, batches
        self.amp_autocast, self.distributed, self.device = amp_autocast, distributed, device
        self.grad_clip, self.unrolled, self.report_freq = grad_clip, unrolled, report_freq
        self.tables = benchmark.Benchmark(benchmark_path) if benchmark_path else None
        self.history = None

    def start(self, checkpoint, first_epoch, model, w_optimizer, scheduler, architect):
        """The first stage this process runs starts from the checkpoint, or from scratch; later ones at
        their first epoch."""
        if self.history is None:
            start = loop.begin_run(self.run, self.run_args, checkpoint, model,
                                   {'w': w_optimizer, 'alpha': architect.optimizer}, scheduler, None)
            if checkpoint and 'method_rng' in checkpoint:
                architect.objective.generator.set_state(checkpoint['method_rng'])
            self.history = start.history
            return start
        return loop.Start(first_epoch, 0, loop.new_meters(), self.history)

    def run_stage(self, name, span, model, w_optimizer, scheduler, architect, start, first_epoch, epochs, on_epoch,
                  held_after=None):
        """Epochs first_epoch..first_epoch+epochs-1 of stage `name` (an index, or 'pt'), which make up `span`
        (for the time left). on_epoch(epoch of the stage) -> (whether the architecture trains, fields of the
        epoch's metrics row). `held_after`: the methods' schedules stay as a stage of that many epochs left
        them (DARTS-PT's fine-tuning), instead of running over this stage's epochs."""
        run, distributed, objective = self.run, self.distributed, architect.objective
        train_loader, alpha_loader, valid_loader = self.batches
        optimizers = {'w': w_optimizer, 'alpha': architect.optimizer}
        epoch_state = {}

        def begin(epoch):
            if held_after:
                objective.hold_at_end(held_after)
            else:
                objective.set_epoch(epoch - first_epoch, epochs)
            trains, fields = on_epoch(epoch - first_epoch)
            epoch_state.update(lr=scheduler.optimizer.param_groups[0]['lr'], trains=trains, fields=fields)
            model.train()

        def batches(epoch, start_step):
            return zip(train_loader.iterate(epoch, start_step),
                       loaders.endless_batches(alpha_loader, epoch, start_step))

        def step(batch):
            loss, logits, alpha_loss = architect_lib.search_step(
                model, objective, architect, *batch, w_optimizer, epoch_state['lr'], self.grad_clip, self.unrolled,
                epoch_state['trains'], distributed.average_gradients)
            return logits, batch[0][1], (loss,) if alpha_loss is None else (loss, alpha_loss)

        def end(epoch, seconds):
            valid = loop.evaluate(model, valid_loader, nn.CrossEntropyLoss(),
                                  lambda x: model(x, objective.arch_weights('eval')), self.amp_autocast, distributed)
            if not distributed.same_everywhere(list(model.parameters())):
                raise RuntimeError(f'the processes\' supernets differ after epoch {epoch}: their methods sampled '
                                   f'different architectures')
            terms = {**epoch_state['fields'], **objective.summary()}
            fields, words = search_log.report_architecture(run, model, terms, valid, self.tables)
            return {'stage': name, **fields}, words

        def state(epoch, step, meters, history):
            samples = step * self.run_args['batch_size'] * distributed.world_size
            return {'kind': 'search', 'args': self.run_args, 'stage': name,
                    'method_rng': objective.generator.get_state(),
                    **checkpoints.training_state(model, optimizers, scheduler, None, epoch, samples, meters, history,
                                                 distributed)}

        hooks = loop.EpochHooks('search', len(train_loader), begin, batches, step, end, state, span)
        self.history = loop.run_epochs(run, hooks, start, first_epoch + epochs, self.report_freq, scheduler,
                                       self.device, distributed)

    def select_cell(self, model, architect, checkpoint, first_epoch, learning_rate, momentum, weight_decay, interval,
                    max_batches, seed, stage_epochs):
        """DARTS-PT's selection after the search (or resumed within it): fine-tuning at a constant
        `learning_rate`, a decision every `interval` epochs measured on `max_batches` validation batches
        (0: all); `architect` carries on from the search, its methods' schedules held where a stage of
        `stage_epochs` left them, as DARTS-PT's code holds SDARTS's."""
        model.skip_dropout = 0.0
        w_optimizer, scheduler = selection.fine_tuning_optimizer(model, learning_rate, momentum, weight_decay)
        start = self.start(checkpoint, first_epoch, model, w_optimizer, scheduler, architect)
        accuracy_of = selection.measurer(model, self.batches[2], self.amp_autocast, self.distributed, max_batches)
        self.run.logger.info('DARTS-PT selection: %d rounds of decisions, %d epoch(s) of fine-tuning apart',
                             selection.rounds(model), interval)
        on_epoch = selection.decision_epochs(model, interval, seed, architect.objective, accuracy_of, self.run.logger)
        self.run_stage('pt', 'the DARTS-PT selection', model, w_optimizer, scheduler, architect, start, first_epoch,
                       selection.epochs(model, interval), on_epoch, held_after=stage_epochs)
