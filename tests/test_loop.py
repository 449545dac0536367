"""loop.py and precision.py: mixed precision, the loss guard, progress lines, stop requests, the epoch helpers."""
import contextlib
import re

import pytest
import torch
from torch import nn

import loop
import parallel
import precision
import utils

SINGLE = parallel.Distributed()  # the Distributed of a run without torchrun


def test_automatic_precision_scaler_and_memory_format():
    cpu = torch.device('cpu')
    assert precision.amp_dtype('auto', cpu) is None and precision.amp_dtype('bf16', cpu) == torch.bfloat16
    assert precision.autocast_factory(None, cpu) is contextlib.nullcontext
    with precision.autocast_factory(torch.bfloat16, cpu)():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    assert precision.grad_scaler(None, cpu) is None and precision.grad_scaler(torch.bfloat16, cpu) is None
    assert isinstance(precision.grad_scaler(torch.float16, cpu), torch.amp.GradScaler)
    assert not precision.use_channels_last(None, cpu) and precision.use_channels_last(True, cpu)
    cuda = torch.device('cuda')
    assert precision.use_channels_last(None, cuda) and not precision.use_channels_last(False, cuda)


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


class TinyScript:
    """train.py in small: a linear model trained by a plain loop over a Session's epochs of four steps, whose
    steps can request a stop or poison the loss."""

    def __init__(self, stop_at=None, bad_at=None):
        self.layer = nn.Linear(2, 2)
        self.optimizer = torch.optim.SGD(self.layer.parameters(), 0.1)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, 1, 0.5)
        self.stop_at, self.bad_at, self.steps_done, self.saved = stop_at, bad_at, 0, []

    def state(self, epoch, step, history):
        self.saved.append((epoch, step, len(history)))
        return {'epoch': epoch, 'step': step}

    def run(self, run, epochs):
        with loop.Session(run, 'train', 50, torch.device('cpu')) as session:
            start = session.begin({'epochs': epochs}, None, self.layer, {'w': self.optimizer}, self.scheduler, None)
            clock = loop.RunClock(start.epoch, epochs)
            for epoch in session.epochs(0, epochs):
                lr = self.optimizer.param_groups[0]['lr']
                epoch_run = session.epoch(epoch, epochs, 4)
                batches = [(torch.ones(3, 2), torch.zeros(3, dtype=torch.long))] * (4 - epoch_run.start_step)
                for step, (images, targets) in epoch_run.steps(batches):
                    logits = self.layer(images)
                    loss = nn.functional.cross_entropy(logits, targets)
                    self.optimizer.zero_grad()
                    loop.backward_step(loss, self.optimizer, self.layer.parameters(), 5.0)
                    self.steps_done += 1
                    if self.steps_done == self.stop_at:
                        session.stop.requested = 'SIGTERM'
                    epoch_run.record(step, (loss * float('nan') if self.steps_done == self.bad_at else loss,), logits,
                                     targets)
                if epoch_run.stopped_at is not None:
                    epoch_run.stop(self.state(epoch, epoch_run.stopped_at, session.history))
                self.scheduler.step()
                epoch_run.finish(lr, {'test_top1': 50.0}, 'test_acc 50.00', clock)
                run.save(self.state(epoch + 1, 0, session.history))
        return session.history


def new_run():
    """A run folder `run` whose logger writes to the test's captured stdout."""
    return loop.Run('eval', 'EXP', 'run', SINGLE)


def test_the_epoch_helpers_write_metrics_lines_and_the_scripts_checkpoints(in_tmp, capsys):
    run = new_run()
    script = TinyScript()
    history = script.run(run, 2)
    assert [row['epoch'] for row in history] == [0, 1] and [row['lr'] for row in history] == [0.1, 0.05]
    assert history[0]['test_top1'] == 50.0 and history[1]['train_loss'] < history[0]['train_loss']
    assert utils.read_jsonl(run.path('metrics.jsonl')) == history
    assert script.saved == [(1, 0, 1), (2, 0, 2)] and script.steps_done == 8
    assert re.search(r'epoch 1 lr 5.000e-02 train_acc [\d.]+ test_acc 50.00 \(.*left in the run\)',
                     capsys.readouterr().out)


def test_a_stop_request_saves_where_the_run_is_and_exits_with_the_signals_status(in_tmp, capsys):
    run = new_run()
    script = TinyScript(stop_at=6)
    with pytest.raises(SystemExit) as exit_info:
        utils.run_cli(lambda: script.run(run, 3))
    assert exit_info.value.code == 143
    assert script.saved == [(1, 0, 1), (1, 2, 1)], 'a checkpoint after epoch 0, then at epoch 1, step 2'
    out = capsys.readouterr().out
    assert 'SIGTERM received: saved a checkpoint at epoch 1, step 2; continue with --resume run' in out


def test_a_non_finite_loss_stops_the_loop_at_its_step_without_saving(in_tmp):
    run = new_run()
    script = TinyScript(bad_at=7)
    with pytest.raises(loop.NonFiniteLoss, match='epoch 1, step 2'):
        script.run(run, 3)
    assert script.saved == [(1, 0, 1)] and script.steps_done == 7
