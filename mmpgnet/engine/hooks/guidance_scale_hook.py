"""Hook that schedules the weight of PGS's guidance losses over training."""
import math
from typing import Any, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmpgnet.registry import register_hook

#: the shapes of the guidance-weight decay
GUIDANCE_DECAYS = ('constant', 'linear', 'cosine')


def guidance_scale_at(decay: str, progress: float, end_factor: float = 0.0) -> float:
    """Multiplier of the guidance weights at ``progress`` in [0, 1] of the decay.

    Args:
        decay (str): ``'constant'`` (1), ``'linear'`` or ``'cosine'`` decay from 1 to
            ``end_factor``.
        progress (float): fraction of the decay done (clipped to [0, 1]).
        end_factor (float): the factor at the end of the decay.

    Returns:
        float: the factor.
    """
    p = min(max(progress, 0.0), 1.0)
    if decay == 'constant':
        return 1.0
    if decay == 'linear':
        return 1.0 + (end_factor - 1.0) * p
    if decay == 'cosine':
        return end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f'guidance decay must be one of {GUIDANCE_DECAYS}, got {decay!r}')


@register_hook()
class GuidanceScaleHook(Hook):
    """Decay the weights of PGS's guidance losses over training.

    Before every training iteration it sets the model's ``guidance_scale`` (the multiplier of
    all guidance and feedback weights of :class:`~mmpgnet.models.PGNetPoseEstimator`) from the
    decay, and logs it as ``train/guidance_scale`` through the message hub. It works with any
    model wrapper (DDP, :class:`~mmpgnet.engine.model_wrappers.PipelineParallelWrapper`).

    Args:
        decay (str): ``'constant'``, ``'linear'`` or ``'cosine'``. Defaults to ``'constant'``.
        begin (int): iteration where the decay starts. Defaults to 0.
        end (int, optional): iteration where it ends; the run's last iteration by default.
        end_factor (float): factor reached at ``end``. Defaults to 0.

    Example:
        >>> custom_hooks = [dict(type='GuidanceScaleHook', decay='cosine', end_factor=0.1)]
    """

    priority = 'NORMAL'

    def __init__(self,
                 decay: str = 'constant',
                 begin: int = 0,
                 end: Optional[int] = None,
                 end_factor: float = 0.0) -> None:
        if decay not in GUIDANCE_DECAYS:
            raise ValueError(f'GuidanceScaleHook decay must be one of {GUIDANCE_DECAYS}, got '
                             f'{decay!r}')
        if end is not None and end <= begin:
            raise ValueError(f'GuidanceScaleHook needs end > begin, got begin={begin}, end={end}')
        if end_factor < 0:
            raise ValueError(f'GuidanceScaleHook end_factor must be >= 0, got {end_factor}')
        self.decay = decay
        self.begin = begin
        self.end = end
        self.end_factor = end_factor

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
        return guidance_scale_at(self.decay, (iteration - self.begin) / span, self.end_factor)

    def before_train(self, runner: Any) -> None:
        """Warn if the model has no guidance to schedule."""
        if not getattr(self._unwrap(runner.model), 'with_guidance', False):
            runner.logger.warning('GuidanceScaleHook: the model has no guidance heads; the '
                                  'guidance scale is only logged')

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
