"""Hook that drives PGS: the guidance-weight schedule and the pipeline's timing in the logs."""
import math
from typing import Any, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmpgnet.registry import register_hook

SCHEDULES = ('constant', 'linear', 'cosine')


def guidance_factor(schedule: str, progress: float, end_factor: float = 0.0) -> float:
    """Multiplier of the guidance weights at ``progress`` in [0, 1].

    Args:
        schedule (str): ``'constant'`` (1), ``'linear'`` or ``'cosine'`` decay from 1 to
            ``end_factor``.
        progress (float): fraction of the decay done (clipped to [0, 1]).
        end_factor (float): the factor at the end of the decay.

    Returns:
        float: the factor.
    """
    p = min(max(progress, 0.0), 1.0)
    if schedule == 'constant':
        return 1.0
    if schedule == 'linear':
        return 1.0 + (end_factor - 1.0) * p
    if schedule == 'cosine':
        return end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f'guidance schedule must be one of {SCHEDULES}, got {schedule!r}')


@register_hook()
class PipelineGuidanceHook(Hook):
    """Schedule the guidance weights and log the pipeline's compute, wait and bubble.

    Before every training iteration it sets the model's ``guidance_scale`` (the multiplier of
    all guidance and feedback weights of :class:`~mmpgnet.models.PGNetPoseEstimator`) from the
    schedule, and logs it as ``train/guidance_scale``. After every iteration, when the model is
    wrapped in :class:`~mmpgnet.engine.model_wrappers.PipelineGuidanceWrapper`, it logs per
    stage ``s`` the compute time ``train/pipe_s{s}_compute`` (seconds spent in the stage's
    forward/backward chunks and loss), the communication + wait time ``train/pipe_s{s}_wait``
    (the rest of the schedule step), the measured bubble ``train/pipe_bubble`` (mean over stages
    of wait / step time) and the ideal ``train/pipe_bubble_ideal`` = (S - 1) / (M + S - 1),
    all through the message hub, so they reach the text log and every vis backend. (In a local,
    one-process run everything is compute and only ``train/pipe_step`` is logged.)

    Args:
        schedule (str): ``'constant'``, ``'linear'`` or ``'cosine'``. Defaults to ``'constant'``.
        begin (int): iteration where the decay starts. Defaults to 0.
        end (int, optional): iteration where it ends; the run's last iteration by default.
        end_factor (float): factor reached at ``end``. Defaults to 0.
        log_timing (bool): log the pipeline timing. Defaults to True.
    """

    priority = 'NORMAL'

    def __init__(self,
                 schedule: str = 'constant',
                 begin: int = 0,
                 end: Optional[int] = None,
                 end_factor: float = 0.0,
                 log_timing: bool = True) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f'PipelineGuidanceHook schedule must be one of {SCHEDULES}, got '
                             f'{schedule!r}')
        if end is not None and end <= begin:
            raise ValueError(f'PipelineGuidanceHook needs end > begin, got begin={begin}, '
                             f'end={end}')
        if end_factor < 0:
            raise ValueError(f'end_factor must be >= 0, got {end_factor}')
        self.schedule = schedule
        self.begin = begin
        self.end = end
        self.end_factor = end_factor
        self.log_timing = log_timing

    @staticmethod
    def _unwrap(model: Any) -> Any:
        return model.module if is_model_wrapper(model) else model

    def factor_at(self, iteration: int, max_iters: int) -> float:
        """The guidance factor at an iteration.

        Args:
            iteration (int): the current iteration (0-based).
            max_iters (int): the run's number of iterations (the default ``end``).

        Returns:
            float: the factor.
        """
        end = self.end if self.end is not None else max_iters
        span = max(end - self.begin, 1)
        return guidance_factor(self.schedule, (iteration - self.begin) / span, self.end_factor)

    def before_train(self, runner: Any) -> None:
        """Warn if the model has no guidance to schedule."""
        model = self._unwrap(runner.model)
        if not getattr(model, 'with_guidance', False):
            runner.logger.warning('PipelineGuidanceHook: the model has no guidance heads; only '
                                  'the pipeline timing is logged')

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        """Set and log the guidance factor of this iteration.

        Args:
            runner (Runner): the runner.
            batch_idx (int): index of the batch in the epoch.
            data_batch (Any): the batch.
        """
        model = self._unwrap(runner.model)
        factor = self.factor_at(runner.iter, runner.max_iters)
        if hasattr(model, 'guidance_scale'):
            model.guidance_scale = factor
        runner.message_hub.update_scalar('train/guidance_scale', factor)

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        """Log the pipeline's per-stage compute and wait time and its bubble.

        Args:
            runner (Runner): the runner.
            batch_idx (int): index of the batch in the epoch.
            data_batch (Any): the batch.
            outputs (Any): the step's outputs.
        """
        stats = getattr(runner.model, 'last_stats', None)
        if not self.log_timing or not stats:
            return
        hub = runner.message_hub
        hub.update_scalar('train/pipe_step', max(stats['stage_step_s']))
        if stats['local']:
            return
        for s, (compute, wait) in enumerate(zip(stats['stage_compute_s'], stats['stage_wait_s'])):
            hub.update_scalar(f'train/pipe_s{s}_compute', compute)
            hub.update_scalar(f'train/pipe_s{s}_wait', wait)
        hub.update_scalar('train/pipe_bubble', stats['bubble'])
        hub.update_scalar('train/pipe_bubble_ideal', stats['bubble_ideal'])
