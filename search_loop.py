"""A search's epochs: the shared epoch loop (loop.run_epochs) run stage by stage, where a stage is one
supernet with its optimisers (the one stage of DARTS, P-DARTS's stages, DARTS-PT's fine-tuning)."""
import torch.nn as nn

import architect as architect_lib
import benchmark
import checkpoints
import loaders
import loop
import search_log


class StageRunner:
    """What every stage of a search shares (run folder, loaders, precision, the metrics so far), and the
    shared epoch loop run for one stage."""

    def __init__(self, args, run, run_args, batches, amp_autocast, distributed, device):
        self.args, self.run, self.run_args, self.batches = args, run, run_args, batches
        self.amp_autocast, self.distributed, self.device = amp_autocast, distributed, device
        self.tables = benchmark.Benchmark(args.benchmark) if args.benchmark else None
        self.history = None

    def start(self, checkpoint, first_epoch, model, w_optimizer, scheduler, architect):
        """The first stage this process runs starts from the checkpoint, or from scratch; later ones at
        their first epoch."""
        if self.history is None:
            start = loop.begin_run(self.run, self.run_args, checkpoint, model,
                                   {'w': w_optimizer, 'alpha': architect.optimizer}, scheduler, None)
            self.history = start.history
            return start
        return loop.Start(first_epoch, 0, loop.new_meters(), self.history)

    def run_stage(self, name, span, model, w_optimizer, scheduler, architect, start, first_epoch, epochs, on_epoch):
        """Epochs first_epoch..first_epoch+epochs-1 of stage `name` (an index, or 'pt'), which make up `span`
        (for the time left). on_epoch(epoch of the stage) -> (whether the architecture trains, fields of the
        epoch's metrics row)."""
        args, run, distributed, objective = self.args, self.run, self.distributed, architect.objective
        train_loader, alpha_loader, valid_loader = self.batches
        optimizers = {'w': w_optimizer, 'alpha': architect.optimizer}
        epoch_state = {}

        def begin(epoch):
            objective.set_epoch(epoch - first_epoch, epochs)
            trains, fields = on_epoch(epoch - first_epoch)
            epoch_state.update(lr=scheduler.get_last_lr()[0], trains=trains, fields=fields)
            model.train()

        def batches(epoch, start_step):
            return zip(train_loader.iterate(epoch, start_step),
                       loaders.endless_batches(alpha_loader, epoch, start_step))

        def step(batch):
            loss, logits, alpha_loss = architect_lib.search_step(
                model, objective, architect, *batch, w_optimizer, epoch_state['lr'], args.grad_clip, args.unrolled,
                epoch_state['trains'], distributed.average_gradients)
            return logits, batch[0][1], (loss,) if alpha_loss is None else (loss, alpha_loss)

        def end(epoch, seconds):
            valid = loop.evaluate(model, valid_loader, nn.CrossEntropyLoss(),
                                  lambda x: model(x, objective.arch_weights('eval')), self.amp_autocast, distributed)
            terms = {**epoch_state['fields'], **objective.summary()}
            fields, words = search_log.report_architecture(run, model, terms, valid, self.tables)
            return {'stage': name, **fields}, words

        def state(epoch, step, meters, history):
            samples = step * args.batch_size * distributed.world_size
            return {'kind': 'search', 'args': self.run_args, 'stage': name,
                    **checkpoints.training_state(model, optimizers, scheduler, None, epoch, samples, meters, history,
                                                 distributed)}

        hooks = loop.EpochHooks('search', len(train_loader), begin, batches, step, end, state, span)
        self.history = loop.run_epochs(run, hooks, start, first_epoch + epochs, args.report_freq, scheduler,
                                       self.device, distributed)
