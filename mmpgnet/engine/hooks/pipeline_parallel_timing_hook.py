"""Hook that logs where the time of a pipeline-parallel training step goes."""
from typing import Any

from mmengine.hooks import Hook

from mmpgnet.registry import register_hook


@register_hook()
class PipelineParallelTimingHook(Hook):
    """Log the pipeline-parallel step's per-stage compute and wait time and its bubble.

    After every training iteration of a model wrapped in
    :class:`~mmpgnet.engine.model_wrappers.PipelineParallelWrapper` it logs, from the wrapper's
    :class:`~mmpgnet.engine.pipeline.PipelineStepStats`, the step time ``train/pipe_step`` (its
    slowest stage) and, when the stages run in separate processes, per stage ``s`` the compute
    time ``train/pipe_s{s}_compute`` (its forward/backward chunks and loss), the communication
    + wait time ``train/pipe_s{s}_wait`` (the rest of the schedule step), the measured bubble
    ``train/pipe_bubble`` (mean over stages of wait / step time) and the ideal
    ``train/pipe_bubble_ideal`` = (S - 1) / (M + S - 1), all through the message hub, so they
    reach the text log and every vis backend. Other models log nothing.

    Example:
        >>> custom_hooks = [dict(type='PipelineParallelTimingHook')]
    """

    priority = 'NORMAL'

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        """Log the last step's timing.

        Args:
            runner (Runner): the runner.
            batch_idx (int): index of the batch in the epoch.
            data_batch (Any): the batch.
            outputs (Any): the step's outputs.
        """
        stats = getattr(runner.model, 'last_stats', None)
        if stats is None:
            return
        hub = runner.message_hub
        hub.update_scalar('train/pipe_step', stats.step_s)
        if stats.local:
            return
        for s, (compute, wait) in enumerate(zip(stats.stage_compute_s, stats.stage_wait_s)):
            hub.update_scalar(f'train/pipe_s{s}_compute', compute)
            hub.update_scalar(f'train/pipe_s{s}_wait', wait)
        hub.update_scalar('train/pipe_bubble', stats.bubble)
        hub.update_scalar('train/pipe_bubble_ideal', stats.bubble_ideal)
