"""A Runner that builds pipeline-parallel wrappers in every run; each pipeline gets one batch."""
import logging
import math
from typing import Any, Dict, Optional, Union

from mmengine.device import get_device
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import DataLoader

from mmpgnet.engine.model_wrappers.pipeline_parallel_wrapper import (PipelineParallelWrapper,
                                                                     check_microbatch_split)
from mmpgnet.registry import register_runner
from mmpgnet.utils.torch_compat import PIPELINING_FEATURE, PIPELINING_MIN_TORCH, require_torch


def _is_pipeline_cfg(model_wrapper_cfg: Optional[dict]) -> bool:
    if not model_wrapper_cfg or 'type' not in model_wrapper_cfg:
        return False
    wrapper = model_wrapper_cfg['type']
    if isinstance(wrapper, str):
        wrapper = MODEL_WRAPPERS.get(wrapper)
    return isinstance(wrapper, type) and issubclass(wrapper, PipelineParallelWrapper)


@register_runner()
class PipelineParallelRunner(Runner):
    """MMEngine ``Runner`` for :class:`PipelineParallelWrapper`.

    Use it with ``runner_type='PipelineParallelRunner'`` (``'PipelineRunner'`` is its deprecated
    former name).

    It differs from ``Runner`` only when ``model_wrapper_cfg`` names a pipeline wrapper:

    * ``wrap_model`` builds the wrapper also in a one-process run (MMEngine's ignores
      ``model_wrapper_cfg`` there) and never hands it ``device_ids``;
    * the train dataloader is sharded over pipeline *replicas*, not ranks: the stages of one
      replica read the same batches (the first stage uses the images, the others only the
      batch size), and ``drop_last`` is set so that every batch splits into micro-batches;
      validation and test keep MMEngine's per-rank sharding (every rank predicts with the whole
      model);
    * before validation, testing and the hook points where a checkpoint may be saved (every
      ``after_train_epoch``; ``after_train_iter`` of an iteration-based CheckpointHook) the
      stages are broadcast to every rank of the replica (the one place that syncs them), and at
      the checkpoint points the optimizer state of all stages is gathered, because
      ``Runner.save_checkpoint`` runs on rank 0 only; the checkpoint is therefore the plain
      model's, with the optimizer state of every stage.

    Args:
        *args: the arguments of ``Runner``.
        **kwargs: the keyword arguments of ``Runner``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cfg = kwargs.get('cfg') or {}  # Runner reads model_wrapper_cfg from its cfg
        wrapper_cfg = cfg.get('model_wrapper_cfg')
        self._pipeline = _is_pipeline_cfg(wrapper_cfg)
        if self._pipeline:
            require_torch(PIPELINING_FEATURE, PIPELINING_MIN_TORCH)
        train_loader = kwargs.get('train_dataloader')
        if self._pipeline and isinstance(train_loader, dict):  # fail before building anything
            check_microbatch_split(int(train_loader.get('batch_size', 1)),
                                   int(wrapper_cfg.get('num_microbatches', 4)))
        super().__init__(*args, **kwargs)

    @property
    def pipeline(self) -> Optional[PipelineParallelWrapper]:
        """The pipeline-parallel wrapper, or None."""
        return self.model if isinstance(self.model, PipelineParallelWrapper) else None

    def wrap_model(self, model_wrapper_cfg: Optional[Dict], model: nn.Module) -> nn.Module:
        """Build the pipeline wrapper (in every run), or defer to ``Runner.wrap_model``.

        Args:
            model_wrapper_cfg (dict, optional): the wrapper config.
            model (nn.Module): the model.

        Returns:
            nn.Module: the wrapped model.
        """
        if not _is_pipeline_cfg(model_wrapper_cfg) or is_model_wrapper(model):
            return super().wrap_model(model_wrapper_cfg, model)
        model = model.to(get_device())
        return MODEL_WRAPPERS.build(model_wrapper_cfg, default_args=dict(module=model))

    def build_train_loop(self, loop: Union[Any, Dict]) -> Any:
        """``Runner.build_train_loop``, marking the dataloader it builds as the train loader."""
        self._building_train_loop = True
        try:
            return super().build_train_loop(loop)
        finally:
            self._building_train_loop = False

    def build_dataloader(self, dataloader: Union[DataLoader, Dict], seed: Optional[int] = None,
                         diff_rank_seed: bool = False) -> DataLoader:
        """``Runner.build_dataloader``; the train loader of a pipeline run is per replica.

        Args:
            dataloader (DataLoader | dict): the loader or its config.
            seed (int, optional): random seed.
            diff_rank_seed (bool): different seeds per rank.

        Returns:
            DataLoader: the loader.
        """
        is_train = self._pipeline and getattr(self, '_building_train_loop', False)
        if is_train and isinstance(dataloader, dict) and not dataloader.get('drop_last', False):
            dataloader = dict(dataloader, drop_last=True)
            print_log('PipelineParallelRunner: train_dataloader.drop_last=True, so that every '
                      'batch splits into equal micro-batches', 'current')
        loader = Runner.build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)
        if is_train:
            _shard_per_replica(loader, self.model.layout)
        return loader

    def _checkpoint_due(self, fn_name: str) -> bool:
        """Whether a CheckpointHook may save at this hook point (all ranks agree).

        ``Runner.save_checkpoint`` runs on rank 0 only, so the collectives that make the
        checkpoint plain (stage broadcast, optimizer-state gather) run before the hooks of the
        point where a checkpoint can be saved: every ``after_train_epoch``, and an
        ``after_train_iter`` where an iteration-based CheckpointHook saves.
        """
        if fn_name == 'after_train_epoch':
            return True
        if fn_name != 'after_train_iter':
            return False
        last = self.iter + 1 == self.max_iters
        for hook in self._hooks:
            if isinstance(hook, CheckpointHook) and not hook.by_epoch:
                if last or (hook.interval > 0 and hook.every_n_train_iters(self, hook.interval)):
                    return True
        return False

    def call_hook(self, fn_name: str, **kwargs: Any) -> None:
        """Sync stages before evaluation and checkpoints, plain optimizer state; then hooks.

        Args:
            fn_name (str): the hook point.
            **kwargs: its arguments.
        """
        pipeline = self.pipeline
        if pipeline is not None:
            checkpoint_due = self._checkpoint_due(fn_name)
            if checkpoint_due or fn_name in ('before_val_epoch', 'before_test_epoch'):
                pipeline.sync_stages()
            if checkpoint_due:
                self._optim_state = pipeline.gather_optimizer_state(self.optim_wrapper.optimizer)
            elif fn_name == 'before_train_iter':
                self._optim_state = None  # the next step makes it stale
            elif fn_name == 'before_save_checkpoint' and 'optimizer' in kwargs['checkpoint']:
                if getattr(self, '_optim_state', None) is not None:
                    kwargs['checkpoint']['optimizer']['state'] = self._optim_state
                elif not pipeline.local:
                    print_log('PipelineParallelRunner: a checkpoint saved outside an epoch end or '
                              'an iteration-based CheckpointHook interval holds only stage '
                              f'{pipeline.stage}\'s optimizer state', 'current', logging.WARNING)
        super().call_hook(fn_name, **kwargs)


def _shard_per_replica(loader: DataLoader, layout: Any) -> None:
    """Make the sampler give every rank of a pipeline replica the same indices.

    Args:
        loader (DataLoader): the train loader (MMEngine's DefaultSampler or InfiniteSampler).
        layout (PipelineLayout): the wrapper's rank layout.

    Raises:
        TypeError: for a sampler of another kind.
    """
    sampler = loader.sampler
    if getattr(sampler, 'world_size', None) == layout.num_replicas or layout.local:
        return
    if not hasattr(sampler, 'world_size'):
        raise TypeError('PipelineParallelRunner shards MMEngine DefaultSampler / InfiniteSampler '
                        f'per pipeline replica; got {type(sampler).__name__}')
    sampler.rank, sampler.world_size = layout.replica, layout.num_replicas
    if hasattr(sampler, 'total_size'):  # DefaultSampler
        if sampler.round_up:
            sampler.num_samples = math.ceil(len(sampler.dataset) / sampler.world_size)
            sampler.total_size = sampler.num_samples * sampler.world_size
        else:
            sampler.num_samples = math.ceil(
                (len(sampler.dataset) - sampler.rank) / sampler.world_size)
            sampler.total_size = len(sampler.dataset)
    elif hasattr(sampler, '_indices_of_rank'):  # InfiniteSampler
        sampler.indices = sampler._indices_of_rank()
