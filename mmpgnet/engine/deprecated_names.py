"""The former names of the pipeline-parallel and guidance parts, kept for old configs.

Until mmpgnet 0.1 one name, "pipeline guidance", covered both halves of PGS. They now say what
they are: the parallelism is :class:`PipelineParallelWrapper` / :class:`PipelineParallelRunner`
(+ :class:`PipelineParallelTimingHook`), the guidance weight's decay :class:`GuidanceScaleHook`.
The old wrapper and runner names still build the new classes, with a ``DeprecationWarning``; the
old hook, which did both jobs, stops with a message that names its two replacements.
Loaded only where ``mmpose.models`` imports (as the wrapper and runner).
"""
import warnings
from typing import Any

from mmpgnet.registry import register_hook, register_model_wrapper, register_runner
from .model_wrappers.pipeline_parallel_wrapper import PipelineParallelWrapper
from .runner.pipeline_parallel_runner import PipelineParallelRunner


def _warn_renamed(old: str, new: str) -> None:
    warnings.warn(f'{old} is deprecated and will be removed: use {new} (same arguments)',
                  DeprecationWarning, stacklevel=3)


@register_model_wrapper()
class PipelineGuidanceWrapper(PipelineParallelWrapper):
    """Deprecated name of :class:`PipelineParallelWrapper`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _warn_renamed('PipelineGuidanceWrapper', 'PipelineParallelWrapper')
        super().__init__(*args, **kwargs)


@register_runner()
class PipelineRunner(PipelineParallelRunner):
    """Deprecated name of :class:`PipelineParallelRunner`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _warn_renamed('PipelineRunner', 'PipelineParallelRunner')
        super().__init__(*args, **kwargs)


@register_hook()
def PipelineGuidanceHook(**kwargs: Any) -> None:  # noqa: N802 (the registered former class name)
    """Refuse the former hook, naming the two hooks that replace it.

    Args:
        **kwargs: the former hook's arguments (``schedule``, ``begin``, ``end``,
            ``end_factor``, ``log_timing``).

    Raises:
        ValueError: always.
    """
    raise ValueError(
        'PipelineGuidanceHook was split in two: dict(type=\'GuidanceScaleHook\', decay=<its '
        'schedule>, begin=..., end=..., end_factor=...) for the guidance-weight decay and '
        'dict(type=\'PipelineParallelTimingHook\') for the pipeline timing; got '
        f'PipelineGuidanceHook({", ".join(f"{k}={v!r}" for k, v in kwargs.items())})')
