"""Rank layout of S pipeline stages x D data-parallel replicas, its process groups, and the
device their collectives take tensors on."""
from dataclasses import dataclass
from datetime import timedelta
from typing import List, Optional

import torch
import torch.distributed as dist


@dataclass
class PipelineLayout:
    """Where this rank sits: ``rank = replica * num_stages + stage``.

    Args:
        num_stages (int): S.
        world_size (int): S x D processes (1 for a local run).
        rank (int): this process.
    """
    num_stages: int
    world_size: int
    rank: int

    @property
    def local(self) -> bool:
        """bool: one process runs every stage (no process group needed)."""
        return self.world_size == 1

    @property
    def stage(self) -> int:
        """int: the stage this rank runs (0 in a local run, which runs them all)."""
        return 0 if self.local else self.rank % self.num_stages

    @property
    def replica(self) -> int:
        """int: this rank's pipeline replica (data-parallel index)."""
        return 0 if self.local else self.rank // self.num_stages

    @property
    def num_replicas(self) -> int:
        """int: D, the number of data-parallel pipeline replicas."""
        return 1 if self.local else self.world_size // self.num_stages

    def pipeline_ranks(self, replica: Optional[int] = None) -> List[int]:
        """Global ranks of the stages of a replica (this rank's by default)."""
        d = self.replica if replica is None else replica
        return [d * self.num_stages + s for s in range(self.num_stages)]

    def stage_ranks(self, stage: Optional[int] = None) -> List[int]:
        """Global ranks that hold one stage across replicas (this rank's stage by default)."""
        s = self.stage if stage is None else stage
        return [d * self.num_stages + s for d in range(self.num_replicas)]


def check_layout(num_stages: int, world_size: int) -> None:
    """Fail early, saying what to change, if the processes cannot hold the stages.

    Args:
        num_stages (int): S.
        world_size (int): processes of the job.

    Raises:
        ValueError: if ``world_size > 1`` and it is not a multiple of S (fewer processes than
            stages included).
    """
    if num_stages < 1:
        raise ValueError(f'num_stages must be >= 1, got {num_stages}')
    if world_size == 1:
        return
    if world_size < num_stages:
        raise ValueError(f'model_wrapper_cfg.num_stages={num_stages} but the job has only '
                         f'{world_size} processes: launch {num_stages} (x D replicas) processes, '
                         f'e.g. `bash tools/dist_train.sh CONFIG {num_stages}`, '
                         'or lower num_stages')
    if world_size % num_stages:
        raise ValueError(f'{world_size} processes cannot hold whole pipelines of num_stages='
                         f'{num_stages}: launch a multiple of {num_stages} processes '
                         '(S stages x D data-parallel replicas)')


@dataclass
class PipelineGroups:
    """Process groups of a layout: the replica's pipeline and the stage's data-parallel peers.

    ``None`` stands for the default (world) group, used when there is a single replica.
    """
    pipeline: Optional[dist.ProcessGroup]
    data_parallel: Optional[dist.ProcessGroup]


def build_groups(layout: PipelineLayout, timeout_s: Optional[float] = None) -> PipelineGroups:
    """Create the groups (every rank must call this, in the same order).

    Args:
        layout (PipelineLayout): the layout.
        timeout_s (float, optional): timeout of the new groups; the default group's otherwise.

    Returns:
        PipelineGroups: this rank's groups.
    """
    if layout.local or layout.num_replicas == 1:
        return PipelineGroups(pipeline=None, data_parallel=None)
    kwargs = dict(timeout=timedelta(seconds=timeout_s)) if timeout_s else {}
    pipeline = data_parallel = None
    for d in range(layout.num_replicas):
        group = dist.new_group(layout.pipeline_ranks(d), **kwargs)
        if d == layout.replica:
            pipeline = group
    for s in range(layout.num_stages):
        group = dist.new_group(layout.stage_ranks(s), **kwargs)
        if s == layout.stage:
            data_parallel = group
    return PipelineGroups(pipeline=pipeline, data_parallel=data_parallel)


def _backend_device_types(backend: str) -> List[str]:
    """Device types a backend string takes tensors of, accelerators first.

    ``'nccl'`` -> ``['cuda']``; ``'gloo'`` -> ``['cpu']`` (gloo also takes some CUDA
    collectives, through the host: CPU tensors are its native kind); a multi-device string
    ``'cpu:gloo,cuda:nccl'`` -> ``['cuda', 'cpu']`` (each device has a backend of its own).
    """
    parts = [p.strip() for p in backend.lower().split(',') if p.strip()]
    if len(parts) == 1 and ':' not in parts[0]:
        caps = dist.Backend.backend_capability.get(parts[0], ['cpu'])
        return ['cpu'] if 'cpu' in caps else list(caps)
    types = [p.split(':')[0] for p in parts]
    return sorted(types, key=lambda t: t == 'cpu')


def collective_device(group: Optional[dist.ProcessGroup] = None) -> torch.device:
    """The device whose tensors the collectives of ``group`` take.

    NCCL takes CUDA tensors only, on the process's current CUDA device (the one set with
    ``torch.cuda.set_device``, as MMEngine's launcher does for the local rank): that device.
    gloo (and other backends that take CPU tensors) without an accelerator backend of its own:
    the CPU. With a backend per device (``'cpu:gloo,cuda:nccl'``) the accelerator. Without a
    process group: the CPU.

    Args:
        group (ProcessGroup, optional): the group; the default (world) group if None.

    Returns:
        torch.device: e.g. ``cuda:0`` for NCCL, ``cpu`` for gloo.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return torch.device('cpu')
    device_type = _backend_device_types(str(dist.get_backend(group)))[0]
    if device_type == 'cpu':
        return torch.device('cpu')
    module = getattr(torch, device_type, None)
    index = module.current_device() if hasattr(module, 'current_device') else 0
    return torch.device(device_type, index)


def check_model_device(model_device: torch.device, group: Optional[dist.ProcessGroup] = None
                       ) -> None:
    """Fail early, saying what to change, if the model sits where the backend cannot reach it.

    Args:
        model_device (torch.device): where the model's parameters are.
        group (ProcessGroup, optional): the group its collectives will use.

    Raises:
        ValueError: the backend takes no tensors of the model's device type (NCCL and a CPU
            model), or the model is on another accelerator than the current one.
    """
    device = collective_device(group)
    if device.type == 'cpu' or model_device == device:
        return
    backend = dist.get_backend(group)
    if model_device.type != device.type:
        if model_device.type in _backend_device_types(str(backend)):
            return  # e.g. 'cpu:gloo,cuda:nccl' and a CPU model: slower, but it works
        raise ValueError(f'the process group\'s backend {backend!r} takes {device.type} tensors '
                         f'but the model is on {model_device}: move it to {device} '
                         '(PipelineParallelRunner does) or launch with a CPU backend (gloo)')
    raise ValueError(f'the model is on {model_device} but this process\'s current '
                     f'{device.type} device is {device}: call torch.{device.type}.set_device('
                     'local_rank) before building the model (MMEngine\'s launcher does) so that '
                     'the model and the collectives use the same device')
