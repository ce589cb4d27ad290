"""PGS's pipeline parallelism: run a model as S stages on ``torch.distributed.pipelining``.

The guidance half of PGS is elsewhere (:class:`~mmpgnet.models.heads.HeatmapGuidance`, built by
:class:`~mmpgnet.models.PGNetPoseEstimator`); this wrapper runs any MMPose top-down heatmap model,
guided or not, as a pipeline.

Every collective of the wrapper takes its tensors on the device of its process group's backend
(:func:`~mmpgnet.engine.pipeline.collective_device`: the current CUDA device for NCCL, the CPU
for gloo), and its per-micro-batch path never reads a tensor on the host: loss parts stay on the
device, are averaged there and shared in one tensor collective per step.
"""
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.utils._pytree import tree_map

from mmpgnet.engine.pipeline.blocks import StageModule, stage_ranges
from mmpgnet.engine.pipeline.partition import PartitionReport, choose_cuts, profile_blocks
from mmpgnet.engine.pipeline.pose_adapter import TopdownHeatmapAdapter
from mmpgnet.engine.pipeline.process_groups import (PipelineLayout, build_groups, check_layout,
                                                    check_model_device, collective_device)
from mmpgnet.engine.pipeline.step_stats import PipelineStepStats
from mmpgnet.engine.pipeline.timed_stage import ChunkTimer, TimedPipelineStage
from mmpgnet.registry import register_model_wrapper
from mmpgnet.utils.torch_compat import PIPELINING_FEATURE, PIPELINING_MIN_TORCH, require_torch

try:
    from torch.distributed.pipelining import Schedule1F1B, ScheduleGPipe
except ImportError:  # torch < 2.4: the wrapper refuses to be built (require_torch in __init__)
    Schedule1F1B = ScheduleGPipe = None

#: the pipeline schedules of ``torch.distributed.pipelining`` the wrapper runs, by name
PIPELINE_SCHEDULES = {'GPipe': ScheduleGPipe, '1F1B': Schedule1F1B}


def total_loss(parts: Dict[str, Tensor]) -> Tensor:
    """The loss to backpropagate: the sum of the parts whose name contains ``'loss'``.

    MMEngine's ``BaseModel.parse_losses`` rule (``acc_pose`` and other logged values are left
    out), in the same order of additions.

    Args:
        parts (dict[str, Tensor]): the model's loss dict.

    Returns:
        Tensor: the total loss.
    """
    return sum(v for k, v in parts.items() if 'loss' in k)


def check_microbatch_split(batch_size: int, num_microbatches: int) -> None:
    """Raise a ``ValueError`` unless a batch splits into equal micro-batches.

    Args:
        batch_size (int): samples in the batch (or ``train_dataloader.batch_size``).
        num_microbatches (int): M.
    """
    if num_microbatches < 1:
        raise ValueError(f'num_microbatches must be >= 1, got {num_microbatches}')
    if batch_size % num_microbatches:
        raise ValueError(f'a batch of {batch_size} samples cannot be split into '
                         f'num_microbatches={num_microbatches} equal micro-batches: make '
                         'train_dataloader.batch_size a multiple of num_microbatches (and drop '
                         'the last incomplete batch)')


def _world() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


@register_model_wrapper()
class PipelineParallelWrapper(nn.Module):
    """Pipeline-parallel model wrapper (the *pipeline* of PGNet's PGS) on torch's pipelining.

    The model is cut into blocks (:mod:`mmpgnet.engine.pipeline.pose_adapter`) and the blocks
    into ``num_stages`` stages at ``split_points`` (names of the first block of stages 1..S-1)
    or, with ``'auto'``, where the measured forward + backward time is balanced. In a job of
    ``S x D`` processes rank ``r`` runs stage ``r % S`` of pipeline replica ``r // S`` with
    ``ScheduleGPipe`` or ``Schedule1F1B`` over ``num_microbatches`` micro-batches; replicas
    average their stage gradients (data parallelism). With one process it runs the same
    micro-batches through all stages in turn (gradient accumulation), no process group needed.

    Every rank holds the whole model but computes and updates only its stage (its optimizer
    skips parameters without gradients). Before evaluation and checkpointing the owners
    broadcast their stages (:meth:`sync_stages`, called at those points by
    :class:`~mmpgnet.engine.runner.PipelineParallelRunner`, the one place that decides when), so
    ``val_step``/``test_step`` run the plain model, the checkpoint has the plain model's keys
    (it loads into a single-process model, and back), and the optimizer state of all stages is
    merged into it (:meth:`gather_optimizer_state`).

    Targets travel with the activations from the first stage; guidance predictions travel
    forward from the stage that computes them; the loss (main + guidance + feedback) is computed
    on the last stage and its parts are shared with every rank for logging.

    Devices: with NCCL the model must sit on the process's current CUDA device (checked when
    the wrapper is built). Every collective uses the backend's device
    (:func:`~mmpgnet.engine.pipeline.collective_device`); a training step reads no tensor on
    the host (the loss parts and timing come back as device tensors; :attr:`last_stats` reads
    the timing when it is first looked at after the step).

    ``PipelineGuidanceWrapper`` is the deprecated former name of this class.

    Args:
        module (nn.Module): an MMPose top-down heatmap model.
        num_stages (int): S. Defaults to 2.
        num_microbatches (int): M; the batch size must be a multiple. Defaults to 4.
        schedule (str): ``'GPipe'`` or ``'1F1B'``. Defaults to ``'GPipe'``.
        split_points (str | Sequence[str]): block names, or ``'auto'``. Defaults to ``'auto'``.
        profile_iters (int): measured iterations of ``'auto'``. Defaults to 3.
        timeout_s (float, optional): timeout of the process groups this wrapper creates (for
            S x D > S); the default group's timeout bounds the rest.
        sync_cuda_timing (bool): on CUDA, time the stage's chunks and step with CUDA events
            (read once per step: one wait for the device at the end of the schedule). False:
            no wait at all, and the timing is only the host's (kernel launches). Defaults to
            True.
    """

    def __init__(self,
                 module: nn.Module,
                 num_stages: int = 2,
                 num_microbatches: int = 4,
                 schedule: str = 'GPipe',
                 split_points: Union[str, Sequence[str]] = 'auto',
                 profile_iters: int = 3,
                 timeout_s: Optional[float] = None,
                 sync_cuda_timing: bool = True) -> None:
        require_torch(PIPELINING_FEATURE, PIPELINING_MIN_TORCH)
        super().__init__()
        if schedule not in PIPELINE_SCHEDULES:
            raise ValueError(f'schedule must be one of {list(PIPELINE_SCHEDULES)}, got '
                             f'{schedule!r}')
        check_microbatch_split(num_microbatches, num_microbatches)
        self.module = module
        self.num_stages = int(num_stages)
        self.num_microbatches = int(num_microbatches)
        self.schedule_name = schedule
        self.split_points = split_points
        self.profile_iters = profile_iters
        self.sync_cuda_timing = sync_cuda_timing
        world_size, rank = _world()
        check_layout(self.num_stages, world_size)
        self.layout = PipelineLayout(self.num_stages, world_size, rank)
        self.adapter = TopdownHeatmapAdapter(module)
        self.graph = self.adapter.build_graph()
        if self.num_stages > len(self.graph.blocks):
            raise ValueError(f'num_stages={self.num_stages} is more than the model has blocks '
                             f'({len(self.graph.blocks)})')
        self.groups = build_groups(self.layout, timeout_s)
        if not self.local:
            check_model_device(next(module.parameters()).device, self.groups.pipeline)
        self.report: Optional[PartitionReport] = None
        self.cuts: Optional[List[int]] = None
        self.stage_modules: List[StageModule] = []
        self._stage: Optional[TimedPipelineStage] = None
        self._schedule = None
        self._synced_once = False
        self._dirty = False
        self._mb_losses: List[Dict[str, Tensor]] = []
        self._loss_keys: Optional[List[str]] = None
        self._timing: Optional[Union[Tensor, List[List[float]]]] = None
        self._stats: Optional[PipelineStepStats] = None
        if not isinstance(split_points, str):
            self._build(choose_cuts(self.graph, self.num_stages, split_points))

    # ------------------------------------------------------------------ properties
    @property
    def data_preprocessor(self) -> nn.Module:
        """The wrapped model's data preprocessor."""
        return self.module.data_preprocessor

    @property
    def stage(self) -> int:
        """int: this rank's stage."""
        return self.layout.stage

    @property
    def local(self) -> bool:
        """bool: all stages run in this process."""
        return self.layout.local

    @property
    def last_stats(self) -> Optional[PipelineStepStats]:
        """PipelineStepStats: timing of the last training step (None before the first).

        The step shares the timing as a device tensor; the first look at this property after a
        step reads it on the host (once), outside the step.
        """
        if self._stats is None and self._timing is not None:
            rows = self._timing.tolist() if isinstance(self._timing, Tensor) else self._timing
            self._stats = PipelineStepStats.from_rows(rows, self.local, self.num_stages,
                                                      self.num_microbatches)
        return self._stats

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped model."""
        return self.module(*args, **kwargs)

    # ------------------------------------------------------------------ building
    def _build(self, cuts: List[int]) -> None:
        """Make the stage modules (all of them on every rank) and this rank's schedule."""
        self.cuts = list(cuts)
        self.stage_modules = [
            StageModule(self.graph, a, b) for a, b in stage_ranges(len(self.graph.blocks), cuts)
        ]
        names = [m.block_names[0] for m in self.stage_modules[1:]]
        print_log(f'PipelineParallelWrapper: {self.num_stages} stage(s) x '
                  f'{self.layout.num_replicas} replica(s), {self.num_microbatches} micro-batches, '
                  f'{self.schedule_name}, split_points={names}'
                  + (' (local: all stages in this process)' if self.local else ''), 'current')
        if self.local:
            return
        device = next(self.module.parameters()).device
        self._stage = TimedPipelineStage(
            self.stage_modules[self.stage], self.stage, self.num_stages, device,
            group=self.groups.pipeline, sync_cuda=self.sync_cuda_timing)
        self._schedule = PIPELINE_SCHEDULES[self.schedule_name](
            self._stage, n_microbatches=self.num_microbatches, loss_fn=self._loss_fn)

    def _auto_partition(self, inputs: Sequence[Tensor]) -> None:
        """Profile the blocks on one micro-batch, agree across ranks, cut and build.

        The ranks agree on the mean block times with one ``all_reduce`` over the world group
        on its backend's device; the cuts are chosen on the host (once, before the first step).
        """
        micro = [t[:max(1, t.shape[0] // self.num_microbatches)] for t in inputs]
        block_ms, cut_bytes = profile_blocks(
            self.graph, micro, lambda state: total_loss(self.adapter.losses(state)),
            iters=self.profile_iters)
        if not self.local:
            # every rank must choose the same cuts: use the mean over all ranks
            times = torch.tensor(block_ms, dtype=torch.float64, device=collective_device())
            dist.all_reduce(times)
            block_ms = (times / dist.get_world_size()).tolist()
        cuts = choose_cuts(self.graph, self.num_stages, 'auto', block_ms, cut_bytes)
        self.report = PartitionReport(self.graph.names, block_ms, cut_bytes, cuts)
        print_log('PipelineParallelWrapper split_points=\'auto\':\n' + self.report.summary(),
                  'current')
        self._build(cuts)

    # ------------------------------------------------------------------ training
    def _loss_fn(self, output: Union[Tensor, Tuple[Tensor, ...]], target: Any) -> Tensor:
        """Loss of one micro-batch on the last stage (called by the schedule).

        The parts are kept as detached device tensors (no host read per micro-batch). In a
        pipeline the loss counts as the last stage's compute time.
        """
        if self._stage is not None:
            return self._stage.timer.run(self._micro_batch_loss, output)
        return self._micro_batch_loss(output)

    def _micro_batch_loss(self, output: Union[Tensor, Tuple[Tensor, ...]]) -> Tensor:
        outs = output if isinstance(output, (tuple, list)) else (output, )
        state = dict(zip(self.stage_modules[-1].out_keys, outs))
        parts = self.adapter.losses(state)
        self._mb_losses.append({k: v.detach() for k, v in parts.items()})
        return total_loss(parts)

    @staticmethod
    def _check_optim_wrapper(optim_wrapper: OptimWrapper) -> None:
        if not isinstance(optim_wrapper, OptimWrapper):
            raise TypeError('PipelineParallelWrapper needs one OptimWrapper, got '
                            f'{type(optim_wrapper).__name__}')
        if getattr(optim_wrapper, 'loss_scaler', None) is not None:
            raise ValueError('PipelineParallelWrapper runs backward inside the pipeline schedule '
                             'and cannot apply AmpOptimWrapper\'s loss scaling: use OptimWrapper '
                             '(or CPUAmpOptimWrapper for bfloat16)')
        if optim_wrapper._accumulative_counts != 1:
            raise ValueError('accumulative_counts must be 1 with PipelineParallelWrapper: the '
                             'micro-batches already accumulate gradients (raise num_microbatches)')

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, Tensor]:
        """One optimizer step over the micro-batches of ``data`` (MMEngine's contract).

        Args:
            data (dict): a batch from the dataloader (same batch on every rank of a replica).
            optim_wrapper (OptimWrapper): this rank's optimizer wrapper.

        Returns:
            dict[str, Tensor]: ``loss`` and its parts, averaged over micro-batches, the same on
            every rank of the replica: 0-dim float32 tensors on the device of the pipeline
            group's backend (the model's device in a one-process run), not read on the host.
        """
        self._check_optim_wrapper(optim_wrapper)
        batch_size = len(data['inputs'])
        check_microbatch_split(batch_size, self.num_microbatches)
        first_call = self.stage_modules == []
        inputs: Tuple[Tensor, ...] = ()
        with optim_wrapper.optim_context(self.module):
            if self.local or self.stage == 0 or first_call:
                inputs = self.adapter.pack(self.module.data_preprocessor(data, True))
            if not self._synced_once:
                self._broadcast_model()
            if first_call:
                self._auto_partition(inputs)
            self._mb_losses = []
            if self.local:
                start = time.perf_counter()
                self._local_step(inputs)
                compute_s = step_s = time.perf_counter() - start  # everything is compute
            else:
                compute_s, step_s = self._pipeline_step(
                    inputs, batch_size, inputs[0].device if inputs else None)
        if self.layout.num_replicas > 1:
            self._average_stage_grads()
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        self._dirty = True
        return self._share_results(compute_s, step_s)

    def _local_step(self, inputs: Sequence[Tensor]) -> None:
        """All stages in this process, micro-batch after micro-batch (gradient accumulation)."""
        chunks = [torch.tensor_split(t, self.num_microbatches) for t in inputs]
        for i in range(self.num_microbatches):
            out = tuple(c[i] for c in chunks)
            for stage in self.stage_modules:
                out = stage(*out)
            self._loss_fn(out, None).backward()
        # as torch's schedules (scale_grads=True): accumulate, then divide by M
        for stage in self.stage_modules:
            for p in stage.parameters():
                if p.grad is not None:
                    p.grad.div_(self.num_microbatches)

    def _pipeline_step(self, inputs: Sequence[Tensor], batch_size: int,
                       device: Optional[torch.device]) -> Tuple[float, float]:
        """This rank's stage under torch's schedule.

        Returns:
            tuple[float, float]: the stage's compute seconds (its forward, backward and loss
            chunks) and the schedule step's seconds, both measured with CUDA events on CUDA
            (see :class:`ChunkTimer`; read here, once per step).
        """
        device = device or next(self.module.parameters()).device
        self._stage.reset_timing()
        step_timer = ChunkTimer(device, cuda_events=self.sync_cuda_timing)
        kwargs: Dict[str, Any] = {}
        if self._stage.is_last:
            # the schedule wants a target per micro-batch on the last stage; the real targets
            # arrive with the activations, so this only carries the micro-batch index
            kwargs['target'] = torch.arange(batch_size, device=device, dtype=torch.float32)
        args = tuple(inputs) if self.stage == 0 else ()
        try:
            step_timer.run(self._schedule.step, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 (re-raised with the stage named)
            raise RuntimeError(
                f'pipeline stage {self.stage} (rank {self.layout.rank}) failed: {exc}. If a peer '
                'rank died or stopped answering, the process-group timeout '
                '(env_cfg.dist_cfg.timeout) bounds the wait and the job ends here') from exc
        # the first step also runs torch's metadata inference, which calls the loss once more
        self._mb_losses = self._mb_losses[-self.num_microbatches:]
        return self._stage.compute_s, step_timer.collect()

    def _average_stage_grads(self) -> None:
        """Average this stage's gradients over the data-parallel replicas.

        One ``all_reduce`` (sum, then divided by D) of a flat buffer on the data-parallel
        group's backend device (the gradients' own device when they are already there).
        """
        grads = [p.grad for p in self.stage_modules[self.stage].parameters()
                 if p.grad is not None]
        if not grads:
            return
        flat = _flatten_dense_tensors(grads).to(collective_device(self.groups.data_parallel))
        dist.all_reduce(flat, group=self.groups.data_parallel)
        flat.div_(self.layout.num_replicas)
        for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)

    def _share_results(self, compute_s: float, step_s: float) -> Dict[str, Tensor]:
        """Spread the last stage's losses and every stage's timing over the replica.

        Each rank contributes one float64 row ``[compute_s, step_s, *mean loss parts]`` (loss
        parts zero except on the last stage) to one ``all_gather`` over the pipeline group, on
        its backend's device; row ``s`` is stage ``s``. Nothing is read on the host: the loss
        parts are returned as device tensors, and the timing is kept for :attr:`last_stats`.
        The names of the loss parts are sent once, on the first step
        (:meth:`_agree_loss_keys`).
        """
        self._stats = None
        if self.local:
            self._timing = [[step_s, step_s]]  # everything is compute
            keys = list(self._mb_losses[0]) if self._mb_losses else []
            return self._log_vars(keys, self._mean_losses(keys))
        self._agree_loss_keys()
        keys, group = self._loss_keys, self.groups.pipeline
        row = torch.zeros(2 + len(keys), dtype=torch.float64, device=collective_device(group))
        row[0].fill_(compute_s)  # a scalar fill, not a blocking host-to-device copy
        row[1].fill_(step_s)
        mean = self._mean_losses(keys)
        if mean is not None:
            row[2:].copy_(mean)
        rows = [torch.empty_like(row) for _ in range(self.num_stages)]
        dist.all_gather(rows, row, group=group)
        table = torch.stack(rows)
        self._timing = table[:, :2]
        return self._log_vars(keys, table[-1, 2:])

    def _agree_loss_keys(self) -> None:
        """Give every rank of the replica the names of the last stage's loss parts (once).

        One ``broadcast_object_list`` from the last stage over the pipeline group, on the first
        step only (torch serialises the object on the backend's device); later steps check
        that the last stage's names have not changed.
        """
        keys = list(self._mb_losses[0]) if self._mb_losses else None
        if self._loss_keys is not None:
            if keys is not None and keys != self._loss_keys:
                raise RuntimeError(f'the loss parts changed from {self._loss_keys} to {keys} '
                                   'during training; the pipeline shares a fixed set of parts')
            return
        group = self.groups.pipeline
        box = [keys]
        dist.broadcast_object_list(box, src=self.layout.pipeline_ranks()[-1], group=group,
                                   device=collective_device(group))
        if box[0] is None:
            raise RuntimeError('the last pipeline stage computed no loss in its first step')
        self._loss_keys = box[0]

    def _mean_losses(self, keys: Sequence[str]) -> Optional[Tensor]:
        """This step's loss parts ``keys`` averaged over micro-batches (float64, on device)."""
        if not self._mb_losses:
            return None
        parts = [torch.stack([m[k].reshape(()).to(torch.float64) for k in keys])
                 for m in self._mb_losses]
        return torch.stack(parts).mean(0)

    @staticmethod
    def _log_vars(keys: Sequence[str], values: Optional[Tensor]) -> Dict[str, Tensor]:
        """``loss`` (sum of the parts named ``*loss*``) and every part, as 0-dim float32."""
        if not keys or values is None:
            return {}
        values = values.float()
        parts = {k: values[i] for i, k in enumerate(keys)}  # views: no copy, no host read
        loss = total_loss(parts)
        return dict(loss=loss if isinstance(loss, Tensor) else values.new_zeros(()), **parts)

    # ------------------------------------------------------------------ whole-model sync
    def _broadcast_model(self) -> None:
        """Start from the same weights on every rank (those of global rank 0).

        Broadcasts over the world group, on its backend's device
        (see :func:`_broadcast_tensors`).
        """
        self._synced_once = True
        if self.local:
            return
        tensors = list(self.module.parameters()) + list(self.module.buffers())
        _broadcast_tensors(tensors, src=0, group=None)

    def sync_stages(self) -> None:
        """Give every rank the trained weights of every stage (before evaluation or saving).

        :class:`~mmpgnet.engine.runner.PipelineParallelRunner` calls it (before validation and
        testing, and where a checkpoint may be saved); ``val_step``/``test_step`` refuse to run
        on stale stages.

        Each stage's owner in this replica broadcasts its parameters and buffers over the
        pipeline group, on its backend's device (see :func:`_broadcast_tensors`). Collective:
        every rank must call it; it does nothing when no step ran since the last sync.
        """
        if self.local or not self._dirty or not self.stage_modules:
            self._dirty = False
            return
        ranks = self.layout.pipeline_ranks()
        for s, stage in enumerate(self.stage_modules):
            tensors = list(stage.parameters()) + list(stage.buffers())
            _broadcast_tensors(tensors, src=ranks[s], group=self.groups.pipeline)
        self._dirty = False

    def gather_optimizer_state(self, optimizer: torch.optim.Optimizer) -> Dict[int, Any]:
        """Every stage's optimizer state, keyed as in ``optimizer.state_dict()['state']``.

        Each rank's optimizer has state only for its stage's parameters; the owners' entries
        are gathered (collective: every rank of the replica must call it) so that a checkpoint
        resumes every stage, or a plain model. Checkpoint time only, so it is an object
        collective (``all_gather_object`` over the pipeline group: torch serialises on the
        backend's device, the current CUDA device for NCCL, which the wrapper checked to be the
        model's). The entries travel, and are returned, as CPU tensors: a pickled CUDA tensor
        would be rebuilt on the sender's GPU in the receiving process.

        Args:
            optimizer (Optimizer): this rank's optimizer.

        Returns:
            dict: the merged ``state`` entry of the optimizer's state dict.
        """
        state = optimizer.state_dict()['state']
        if self.local or not self.stage_modules:
            return state
        params = [p for group in optimizer.param_groups for p in group['params']]
        owner = {}
        for s, stage in enumerate(self.stage_modules):
            owner.update({id(p): s for p in stage.parameters()})
        mine = {i: tree_map(_to_cpu, v) for i, v in state.items()
                if owner.get(id(params[i])) == self.stage}
        gathered: List[Any] = [None] * self.num_stages
        dist.all_gather_object(gathered, mine, group=self.groups.pipeline)
        merged = {i: v for i, v in state.items() if id(params[i]) not in owner}
        for part in gathered:
            merged.update(part)
        return dict(sorted(merged.items()))

    def _check_stages_synced(self) -> None:
        """Refuse to predict with stages that other ranks trained since the last sync."""
        if self._dirty and not self.local:
            raise RuntimeError(
                'PipelineParallelWrapper: the stages were trained since the last sync_stages(), '
                'so this rank does not hold the whole model; run with runner_type='
                "'PipelineParallelRunner' (it syncs before evaluation and checkpoints) or call "
                'sync_stages() on every rank first')

    def val_step(self, data: Union[dict, tuple, list]) -> list:
        """The wrapped model's ``val_step``, once the stages are synced (see above)."""
        self._check_stages_synced()
        return self.module.val_step(data)

    def test_step(self, data: Union[dict, tuple, list]) -> list:
        """The wrapped model's ``test_step``, once the stages are synced (see above)."""
        self._check_stages_synced()
        return self.module.test_step(data)


def _to_cpu(x: Any) -> Any:
    return x.detach().cpu() if isinstance(x, Tensor) else x


def _broadcast_tensors(tensors: List[Tensor], src: int,
                       group: Optional[dist.ProcessGroup]) -> None:
    """Broadcast tensors from global rank ``src`` in place, one flat buffer per dtype.

    The flat buffer lives on ``group``'s backend device (:func:`collective_device`): built
    there when the tensors already are (the model on the current CUDA device with NCCL, on the
    CPU with gloo), copied there and back otherwise.
    """
    device = collective_device(group)
    by_dtype: Dict[torch.dtype, List[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group_tensors in by_dtype.values():
        with torch.no_grad():
            flat = _flatten_dense_tensors([t.detach() for t in group_tensors]).to(device)
            dist.broadcast(flat, src=src, group=group)
            for t, synced in zip(group_tensors, _unflatten_dense_tensors(flat, group_tensors)):
                t.copy_(synced)
