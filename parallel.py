"""Runs of several processes under torchrun: joining and leaving the job, and the collectives the loops use."""
import os

import torch

from utils import AverageMeter, get_device


class Distributed:
    """This process's place in a `torchrun` job (even one of a single process); without torchrun, rank 0 of 1
    and every call is a no-op. NCCL connects GPUs, gloo CPUs."""

    def __init__(self):
        self.world_size = int(os.environ.get('WORLD_SIZE', 1))
        self.rank = int(os.environ.get('RANK', 0))
        self.local_rank = int(os.environ.get('LOCAL_RANK', 0))
        self.enabled = 'RANK' in os.environ and 'MASTER_ADDR' in os.environ  # set by torchrun
        self.device = None

    @property
    def is_main(self):
        return self.rank == 0

    def start(self, device):
        self.device = device
        if self.enabled:
            import torch.distributed as dist
            dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo',
                                    device_id=device if device.type == 'cuda' else None)

    def stop(self):
        if self.enabled:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()

    def sum(self, values):
        """Element-wise sum over ranks of a list of numbers or tensors (one collective)."""
        if not self.enabled:
            return values
        import torch.distributed as dist
        packed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device).reshape(())
                              for v in values])
        dist.all_reduce(packed)
        return packed.tolist()

    def average(self, tensors, parameters):
        """Average gradients over ranks in place, in one flat collective. `tensors[i]` is the gradient of
        `parameters[i]` or None; the buffer has the same layout on every rank whatever their gradients (zeros
        for a None), so that ranks whose gradients differ in which exist can never all-reduce misaligned
        values or buffers of different lengths."""
        if not self.enabled or not parameters:
            return
        import torch.distributed as dist
        flat = torch.cat([(p.new_zeros(p.shape) if t is None else t).reshape(-1).float()
                          for t, p in zip(tensors, parameters)])
        dist.all_reduce(flat)
        flat /= self.world_size
        for t, part in zip(tensors, flat.split([p.numel() for p in parameters])):
            if t is not None:
                t.copy_(part.view_as(t))

    def average_gradients(self, parameters):
        parameters = list(parameters)
        self.average([p.grad for p in parameters], parameters)

    def same_everywhere(self, tensors):
        """Whether `tensors` hold the same values on every rank as on rank 0 (a broadcast and a collective)."""
        if not self.enabled:
            return True
        import torch.distributed as dist
        flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
        reference = flat.clone()
        dist.broadcast(reference, src=0)
        return not self.any(not torch.equal(flat, reference))

    def any(self, flag):
        """True on every rank if it is true on any."""
        return bool(self.sum([float(bool(flag))])[0]) if self.enabled else bool(flag)

    def broadcast(self, obj):
        """Rank 0's value of a picklable object, on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as dist
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def gather(self, obj):
        """Every rank's value, as a list on every rank."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered


def run_distributed(work, device='auto', gpu=0):
    """Join the torchrun job if there is one (one device per process: its LOCAL_RANK; else --device and
    --gpu choose), call `work(device, distributed)`, and leave the job however it ends."""
    distributed = Distributed()
    device = get_device(device, distributed.local_rank if distributed.enabled else gpu)
    distributed.start(device)
    try:
        return work(device, distributed)
    finally:
        distributed.stop()


def reduce_meters(meters, distributed):
    """The meters summed over ranks (new meters; the local ones keep counting)."""
    totals = distributed.sum([value for meter in meters.values() for value in (meter.sum, meter.count)])
    reduced = {}
    for i, name in enumerate(meters):
        reduced[name] = AverageMeter()
        reduced[name].sum, reduced[name].count = totals[2 * i], int(totals[2 * i + 1])
    return reduced
