"""loop.py: mixed precision, the non-finite loss guard, progress lines, stop requests and the shared epoch loop."""
import contextlib
import re

import pytest
import torch
from torch import nn

import loop
import parallel
import utils

SINGLE = parallel.Distributed()  # the Distributed of a run without torchrun


def test_automatic_precision_scaler_and_memory_format():
    cpu = torch.device('cpu')
    assert loop.amp_dtype('auto', cpu) is None and loop.amp_dtype('bf16', cpu) == torch.bfloat16
    assert loop.autocast_factory(None, cpu) is contextlib.nullcontext
    with loop.autocast_factory(torch.bfloat16, cpu)():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    assert loop.grad_scaler(None, cpu) is None and loop.grad_scaler(torch.bfloat16, cpu) is None
    assert isinstance(loop.grad_scaler(torch.float16, cpu), torch.amp.GradScaler)
    assert not loop.use_channels_last(None, cpu) and loop.use_channels_last(True, cpu)
    cuda = torch.device('cuda')
    assert loop.use_channels_last(None, cuda) and not loop.use_channels_last(False, cuda)


def test_backward_step_clips_and_steps():
    layer = nn.Linear(2, 1, bias=False)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    synced = []
    loop.backward_step(1000 * layer(torch.ones(1, 2)).sum(), optimizer, layer.parameters(), grad_clip=1.0,
                       gradient_sync=synced.append)
    assert layer.weight.grad.norm().item() == pytest.approx(1.0) and len(synced) == 1


def test_finite_loss_guard_names_the_first_bad_step():
    guard = loop.FiniteLossGuard(2, SINGLE)
    guard.record(0, (torch.tensor(1.0),))
    guard.check()
    with pytest.raises(loop.NonFiniteLoss, match='epoch 2, step 5'):
        guard.record(5, (torch.tensor(0.5), torch.tensor(float('nan'))))  # on the CPU the flag is read at once
    with pytest.raises(loop.NonFiniteLoss, match='epoch 2, step 5'):
        guard.check()


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_progress_lines_come_at_the_first_step_every_report_freq_steps_and_every_30_seconds(monkeypatch, caplog):
    clock = FakeClock()
    monkeypatch.setattr(loop.time, 'monotonic', clock)
    logger = utils.get_logger()
    logger.propagate = True  # let caplog see the lines
    progress = loop.Progress(3, 10, 100, loop.new_meters(), logger, 50, 'train')
    logits, targets = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    scheduled = []
    with caplog.at_level('INFO', logger='darts'):
        for step in progress.track(range(100), 0):
            clock.now += 2.0 if step < 40 else 0.1  # slow steps first: 30 s pass before step 50
            if progress.update(step, torch.tensor(0.5), logits, targets):
                scheduled.append(step)
    lines = [record.getMessage() for record in caplog.records]
    assert [int(line.split(' step ')[1].split('/')[0]) for line in lines] == [1, 16, 31, 51]
    assert scheduled == [0, 50], 'only lines due by step count are the same on every rank'
    assert lines[0].startswith('train epoch 3/10 step 1/100 (1%) loss 0.5000 top1 100.00 | 2.00 s/step, 3:18 left')
    assert lines[1].startswith('train epoch 3/10 step 16/100 (16%)') and 'left in the epoch' in lines[1]


class Hooks:
    """A four-step epoch of a linear model, whose steps can request a stop or poison the loss."""

    def __init__(self, stop_at=None, bad_at=None):
        self.layer = nn.Linear(2, 2)
        self.optimizer = torch.optim.SGD(self.layer.parameters(), 0.1)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, 1, 0.5)
        self.stop_at, self.bad_at, self.steps_done, self.saved = stop_at, bad_at, 0, []
        self.stop = None

    def as_hooks(self):
        return loop.EpochHooks('train', 4, lambda epoch: None, self.batches, self.step, self.end, self.state)

    def batches(self, epoch, start_step):
        return [(torch.ones(3, 2), torch.zeros(3, dtype=torch.long))] * (4 - start_step)

    def step(self, batch):
        images, targets = batch
        logits = self.layer(images)
        loss = nn.functional.cross_entropy(logits, targets)
        self.optimizer.zero_grad()
        loop.backward_step(loss, self.optimizer, self.layer.parameters(), 5.0)
        self.steps_done += 1
        if self.steps_done == self.stop_at:
            self.stop.requested = 'SIGTERM'
        return logits, targets, (loss * float('nan') if self.steps_done == self.bad_at else loss,)

    def end(self, epoch, seconds):
        return {'test_top1': 50.0}, 'test_acc 50.00'

    def state(self, epoch, step, meters, history):
        self.saved.append((epoch, step, len(history)))
        return {'epoch': epoch, 'step': step}


def new_run():
    """A run folder `run` whose logger writes to the test's captured stdout."""
    return loop.Run('eval', 'EXP', 'run', SINGLE)


def test_the_epoch_loop_writes_metrics_lines_and_a_checkpoint_per_epoch(in_tmp, capsys):
    run = new_run()
    hooks = Hooks()
    history = loop.run_epochs(run, hooks.as_hooks(), loop.Start(0, 0, loop.new_meters(), []), 2, 50,
                              hooks.scheduler, torch.device('cpu'), SINGLE)
    assert [row['epoch'] for row in history] == [0, 1] and [row['lr'] for row in history] == [0.1, 0.05]
    assert history[0]['test_top1'] == 50.0 and history[1]['train_loss'] < history[0]['train_loss']
    assert utils.read_jsonl(run.path('metrics.jsonl')) == history
    assert hooks.saved == [(1, 0, 1), (2, 0, 2)] and hooks.steps_done == 8
    assert re.search(r'epoch 1 lr 5.000e-02 train_acc [\d.]+ test_acc 50.00 \(', capsys.readouterr().out)


def test_a_stop_request_saves_where_the_run_is_and_exits_with_the_signals_status(in_tmp, capsys, monkeypatch):
    run = new_run()
    hooks = Hooks(stop_at=6)
    real_stop = loop.GracefulStop

    def recording_stop(distributed):
        hooks.stop = real_stop(distributed)
        return hooks.stop
    monkeypatch.setattr(loop, 'GracefulStop', recording_stop)
    with pytest.raises(SystemExit) as exit_info:
        utils.run_cli(lambda: loop.run_epochs(run, hooks.as_hooks(), loop.Start(0, 0, loop.new_meters(), []), 3, 50,
                                              hooks.scheduler, torch.device('cpu'), SINGLE))
    assert exit_info.value.code == 143
    assert hooks.saved == [(1, 0, 1), (1, 2, 1)], 'a checkpoint after epoch 0, then at epoch 1, step 2'
    out = capsys.readouterr().out
    assert 'SIGTERM received: saved a checkpoint at epoch 1, step 2; continue with --resume run' in out


def test_a_non_finite_loss_stops_the_loop_at_its_step_without_saving(in_tmp):
    run = new_run()
    hooks = Hooks(bad_at=7)
    with pytest.raises(loop.NonFiniteLoss, match='epoch 1, step 2'):
        loop.run_epochs(run, hooks.as_hooks(), loop.Start(0, 0, loop.new_meters(), []), 3, 50, hooks.scheduler,
                        torch.device('cpu'), SINGLE)
    assert hooks.saved == [(1, 0, 1)] and hooks.steps_done == 7
