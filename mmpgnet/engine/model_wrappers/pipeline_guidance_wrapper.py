"""PGS pipeline: run a model as S pipeline stages with ``torch.distributed.pipelining``."""
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.distributed.pipelining import Schedule1F1B, ScheduleGPipe

from mmpgnet.engine.pipeline.blocks import StageModule, stage_ranges
from mmpgnet.engine.pipeline.partition import PartitionReport, choose_cuts, profile_blocks
from mmpgnet.engine.pipeline.pose_adapter import TopdownHeatmapAdapter
from mmpgnet.engine.pipeline.process_groups import (PipelineLayout, build_groups,
                                                     check_layout)
from mmpgnet.engine.pipeline.timed_stage import TimedPipelineStage
from mmpgnet.registry import register_model_wrapper

SCHEDULES = {'GPipe': ScheduleGPipe, '1F1B': Schedule1F1B}


def ideal_bubble(num_stages: int, num_microbatches: int) -> float:
    """The bubble fraction of GPipe/1F1B with equal stages and free communication.

    Args:
        num_stages (int): S.
        num_microbatches (int): M.

    Returns:
        float: ``(S - 1) / (M + S - 1)``.
    """
    return (num_stages - 1) / (num_microbatches + num_stages - 1)


def _world() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


@register_model_wrapper()
class PipelineGuidanceWrapper(nn.Module):
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
    broadcast their stages, so ``val_step``/``test_step`` run the plain model, the checkpoint
    has the plain model's keys (it loads into a single-process model, and back), and the
    optimizer state of all stages is merged into it (:meth:`gather_optimizer_state`).

    Targets travel with the activations from the first stage; guidance predictions travel
    forward from the stage that computes them; the loss (main + guidance + feedback) is computed
    on the last stage and its parts are shared with every rank for logging.

    Args:
        module (nn.Module): an MMPose top-down heatmap model.
        num_stages (int): S. Defaults to 2.
        num_microbatches (int): M; the batch size must be a multiple. Defaults to 4.
        schedule (str): ``'GPipe'`` or ``'1F1B'``. Defaults to ``'GPipe'``.
        split_points (str | Sequence[str]): block names, or ``'auto'``. Defaults to ``'auto'``.
        profile_iters (int): measured iterations of ``'auto'``. Defaults to 3.
        timeout_s (float, optional): timeout of the process groups this wrapper creates (for
            S x D > S); the default group's timeout bounds the rest.
        sync_cuda_timing (bool): synchronise CUDA around timed chunks. Defaults to True.
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
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f'schedule must be one of {list(SCHEDULES)}, got {schedule!r}')
        if num_microbatches < 1:
            raise ValueError(f'num_microbatches must be >= 1, got {num_microbatches}')
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
        self.report: Optional[PartitionReport] = None
        self.cuts: Optional[List[int]] = None
        self.stage_modules: List[StageModule] = []
        self._stage: Optional[TimedPipelineStage] = None
        self._schedule = None
        self._synced_once = False
        self._dirty = False
        self._mb_losses: List[Dict[str, float]] = []
        self._loss_s = 0.0
        self.last_stats: Dict[str, Any] = {}
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
        print_log(f'PipelineGuidanceWrapper: {self.num_stages} stage(s) x '
                  f'{self.layout.num_replicas} replica(s), {self.num_microbatches} micro-batches, '
                  f'{self.schedule_name}, split_points={names}'
                  + (' (local: all stages in this process)' if self.local else ''), 'current')
        if self.local:
            return
        device = next(self.module.parameters()).device
        self._stage = TimedPipelineStage(
            self.stage_modules[self.stage], self.stage, self.num_stages, device,
            group=self.groups.pipeline, sync_cuda=self.sync_cuda_timing)
        self._schedule = SCHEDULES[self.schedule_name](
            self._stage, n_microbatches=self.num_microbatches, loss_fn=self._loss_fn)

    def _auto_partition(self, inputs: Sequence[Tensor]) -> None:
        """Profile the blocks on one micro-batch, agree across ranks, cut and build."""
        micro = [t[:max(1, t.shape[0] // self.num_microbatches)] for t in inputs]
        block_ms, cut_bytes = profile_blocks(
            self.graph, micro, self._total_loss_of_state, iters=self.profile_iters)
        if not self.local:
            times = torch.tensor(block_ms, dtype=torch.float64)
            dist.all_reduce(times)  # every rank must choose the same cuts: use the mean
            block_ms = (times / dist.get_world_size()).tolist()
        cuts = choose_cuts(self.graph, self.num_stages, 'auto', block_ms, cut_bytes)
        self.report = PartitionReport(self.graph.names, block_ms, cut_bytes, cuts)
        print_log('PipelineGuidanceWrapper split_points=\'auto\':\n' + self.report.summary(),
                  'current')
        self._build(cuts)

    # ------------------------------------------------------------------ training
    def _total_loss_of_state(self, state: Dict[str, Tensor]) -> Tensor:
        parts = self.adapter.losses(state)
        return sum(v for k, v in parts.items() if 'loss' in k)

    def _loss_fn(self, output: Union[Tensor, Tuple[Tensor, ...]], target: Any) -> Tensor:
        """Loss of one micro-batch on the last stage (called by the schedule)."""
        start = time.perf_counter()
        outs = output if isinstance(output, (tuple, list)) else (output, )
        state = dict(zip(self.stage_modules[-1].out_keys, outs))
        parts = self.adapter.losses(state)
        total = sum(v for k, v in parts.items() if 'loss' in k)
        self._mb_losses.append({k: float(v.detach()) for k, v in parts.items()})
        self._loss_s += time.perf_counter() - start
        return total

    def _check_batch(self, batch_size: int) -> None:
        if batch_size % self.num_microbatches:
            raise ValueError(f'a batch of {batch_size} samples cannot be split into '
                             f'num_microbatches={self.num_microbatches} equal micro-batches: '
                             'make train_dataloader.batch_size a multiple of num_microbatches '
                             '(and drop the last incomplete batch)')

    @staticmethod
    def _check_optim_wrapper(optim_wrapper: OptimWrapper) -> None:
        if not isinstance(optim_wrapper, OptimWrapper):
            raise TypeError('PipelineGuidanceWrapper needs one OptimWrapper, got '
                            f'{type(optim_wrapper).__name__}')
        if getattr(optim_wrapper, 'loss_scaler', None) is not None:
            raise ValueError('PipelineGuidanceWrapper runs backward inside the pipeline schedule '
                             'and cannot apply AmpOptimWrapper\'s loss scaling: use OptimWrapper '
                             '(or CPUAmpOptimWrapper for bfloat16)')
        if optim_wrapper._accumulative_counts != 1:
            raise ValueError('accumulative_counts must be 1 with PipelineGuidanceWrapper: the '
                             'micro-batches already accumulate gradients (raise num_microbatches)')

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, Tensor]:
        """One optimizer step over the micro-batches of ``data`` (MMEngine's contract).

        Args:
            data (dict): a batch from the dataloader (same batch on every rank of a replica).
            optim_wrapper (OptimWrapper): this rank's optimizer wrapper.

        Returns:
            dict[str, Tensor]: ``loss`` and its parts, averaged over micro-batches, the same on
            every rank of the replica.
        """
        self._check_optim_wrapper(optim_wrapper)
        batch_size = len(data['inputs'])
        self._check_batch(batch_size)
        first_call = self.stage_modules == []
        inputs: Tuple[Tensor, ...] = ()
        with optim_wrapper.optim_context(self.module):
            if self.local or self.stage == 0 or first_call:
                inputs = self.adapter.pack(self.module.data_preprocessor(data, True))
            if not self._synced_once:
                self._broadcast_model()
            if first_call:
                self._auto_partition(inputs)
            self._mb_losses, self._loss_s = [], 0.0
            start = time.perf_counter()
            if self.local:
                compute = self._local_step(inputs)
            else:
                compute = self._pipeline_step(inputs, batch_size, inputs[0].device
                                              if inputs else None)
            step_s = time.perf_counter() - start
        if self.layout.num_replicas > 1:
            self._average_stage_grads()
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        self._dirty = True
        return self._share_results(compute + self._loss_s, step_s)

    def _local_step(self, inputs: Sequence[Tensor]) -> float:
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
        return 0.0  # everything is compute: _share_results uses the step time

    def _pipeline_step(self, inputs: Sequence[Tensor], batch_size: int,
                       device: Optional[torch.device]) -> float:
        """This rank's stage under torch's schedule; returns its compute seconds."""
        device = device or next(self.module.parameters()).device
        self._stage.compute_s = 0.0
        kwargs: Dict[str, Any] = {}
        if self._stage.is_last:
            # the schedule wants a target per micro-batch on the last stage; the real targets
            # arrive with the activations, so this only carries the micro-batch index
            kwargs['target'] = torch.arange(batch_size, device=device, dtype=torch.float32)
        args = tuple(inputs) if self.stage == 0 else ()
        try:
            self._schedule.step(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 (re-raised with the stage named)
            raise RuntimeError(
                f'pipeline stage {self.stage} (rank {self.layout.rank}) failed: {exc}. If a peer '
                'rank died or stopped answering, the process-group timeout '
                '(env_cfg.dist_cfg.timeout) bounds the wait and the job ends here') from exc
        # the first step also runs torch's metadata inference, which calls the loss once more
        self._mb_losses = self._mb_losses[-self.num_microbatches:]
        return self._stage.compute_s

    def _average_stage_grads(self) -> None:
        """Average this stage's gradients over the data-parallel replicas."""
        grads = [p.grad for p in self.stage_modules[self.stage].parameters()
                 if p.grad is not None]
        if not grads:
            return
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat, group=self.groups.data_parallel)
        flat /= self.layout.num_replicas
        for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)

    def _share_results(self, compute_s: float, step_s: float) -> Dict[str, Tensor]:
        """Spread the last stage's losses and every stage's timing over the replica."""
        mine = dict(stage=self.stage, compute_s=compute_s if not self.local else step_s,
                    step_s=step_s, losses=self._mean_losses())
        if self.local:
            gathered = [mine]
        else:
            gathered = [None] * self.num_stages
            dist.all_gather_object(gathered, mine, group=self.groups.pipeline)
        gathered.sort(key=lambda g: g['stage'])
        losses = gathered[-1]['losses']
        compute = [g['compute_s'] for g in gathered]
        steps = [g['step_s'] for g in gathered]
        bubbles = [max(0.0, 1.0 - c / s) if s > 0 else 0.0 for c, s in zip(compute, steps)]
        self.last_stats = dict(
            local=self.local, num_stages=self.num_stages, num_microbatches=self.num_microbatches,
            stage_compute_s=compute, stage_wait_s=[max(0.0, s - c) for c, s in zip(compute, steps)],
            stage_step_s=steps, bubble=sum(bubbles) / len(bubbles), stage_bubble=bubbles,
            bubble_ideal=ideal_bubble(self.num_stages, self.num_microbatches))
        log_vars = {'loss': torch.tensor(sum(v for k, v in losses.items() if 'loss' in k))}
        log_vars.update({k: torch.tensor(v) for k, v in losses.items()})
        return log_vars

    def _mean_losses(self) -> Optional[Dict[str, float]]:
        if not self._mb_losses:
            return None
        keys = self._mb_losses[0].keys()
        return {k: sum(m[k] for m in self._mb_losses) / len(self._mb_losses) for k in keys}

    # ------------------------------------------------------------------ whole-model sync
    def _broadcast_model(self) -> None:
        """Start from the same weights on every rank (those of global rank 0)."""
        self._synced_once = True
        if self.local:
            return
        tensors = list(self.module.parameters()) + list(self.module.buffers())
        _broadcast_tensors(tensors, src=0, group=None)

    def sync_stages(self) -> None:
        """Give every rank the trained weights of every stage (before evaluation or saving).

        Each stage's owner in this replica broadcasts its parameters and buffers. Collective:
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
        resumes every stage, or a plain model.

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
        mine = {i: v for i, v in state.items() if owner.get(id(params[i])) == self.stage}
        gathered: List[Any] = [None] * self.num_stages
        dist.all_gather_object(gathered, mine, group=self.groups.pipeline)
        merged = {i: v for i, v in state.items() if id(params[i]) not in owner}
        for part in gathered:
            merged.update(part)
        return dict(sorted(merged.items()))

    def val_step(self, data: Union[dict, tuple, list]) -> list:
        """Predict with the whole (synced) model.

        Args:
            data (dict): a batch from the dataloader.

        Returns:
            list: the model's predictions.
        """
        self.sync_stages()
        return self.module.val_step(data)

    def test_step(self, data: Union[dict, tuple, list]) -> list:
        """Predict with the whole (synced) model.

        Args:
            data (dict): a batch from the dataloader.

        Returns:
            list: the model's predictions.
        """
        self.sync_stages()
        return self.module.test_step(data)


def _broadcast_tensors(tensors: List[Tensor], src: int,
                       group: Optional[dist.ProcessGroup]) -> None:
    """Broadcast tensors from ``src`` in place, one flat buffer per dtype."""
    by_dtype: Dict[torch.dtype, List[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group_tensors in by_dtype.values():
        with torch.no_grad():
            flat = _flatten_dense_tensors([t.detach() for t in group_tensors])
            dist.broadcast(flat, src=src, group=group)
            for t, synced in zip(group_tensors, _unflatten_dense_tensors(flat, group_tensors)):
                t.copy_(synced)
