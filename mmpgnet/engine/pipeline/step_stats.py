"""The timing of one pipeline-parallel training step, per stage."""
from dataclasses import dataclass
from typing import List, Sequence


def ideal_bubble(num_stages: int, num_microbatches: int) -> float:
    """The bubble fraction of GPipe/1F1B with equal stages and free communication.

    Args:
        num_stages (int): S.
        num_microbatches (int): M.

    Returns:
        float: ``(S - 1) / (M + S - 1)``.
    """
    return (num_stages - 1) / (num_microbatches + num_stages - 1)


@dataclass(frozen=True)
class PipelineStepStats:
    """Where the time of one training step of :class:`PipelineParallelWrapper` went.

    Attributes:
        local (bool): all stages ran in one process (everything is compute, no bubble).
        num_stages (int): S.
        num_microbatches (int): M.
        stage_compute_s (list[float]): per stage, seconds in its forward, backward and loss
            chunks.
        stage_step_s (list[float]): per stage, seconds of the whole schedule step.
        stage_wait_s (list[float]): per stage, communication and waiting (step - compute).
        stage_bubble (list[float]): per stage, the measured bubble ``wait / step``.
        bubble (float): the mean of ``stage_bubble``.
        bubble_ideal (float): :func:`ideal_bubble` of S and M.
    """

    local: bool
    num_stages: int
    num_microbatches: int
    stage_compute_s: List[float]
    stage_step_s: List[float]
    stage_wait_s: List[float]
    stage_bubble: List[float]
    bubble: float
    bubble_ideal: float

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[float]], local: bool, num_stages: int,
                  num_microbatches: int) -> 'PipelineStepStats':
        """Build the statistics from per-stage ``[compute_s, step_s]`` rows.

        Args:
            rows (Sequence[Sequence[float]]): row ``s`` holds stage ``s``'s compute and step
                seconds.
            local (bool): all stages ran in one process.
            num_stages (int): S.
            num_microbatches (int): M.

        Returns:
            PipelineStepStats: the statistics.
        """
        compute = [float(r[0]) for r in rows]
        steps = [float(r[1]) for r in rows]
        # a step of 0 s (a clock too coarse for it) has no measurable bubble
        bubbles = [max(0.0, 1.0 - c / s) if s > 0 else 0.0 for c, s in zip(compute, steps)]
        return cls(
            local=local, num_stages=num_stages, num_microbatches=num_microbatches,
            stage_compute_s=compute, stage_step_s=steps,
            stage_wait_s=[max(0.0, s - c) for c, s in zip(compute, steps)],
            stage_bubble=bubbles, bubble=sum(bubbles) / len(bubbles),
            bubble_ideal=ideal_bubble(num_stages, num_microbatches))

    @property
    def step_s(self) -> float:
        """float: the step's time, that of its slowest stage."""
        return max(self.stage_step_s)
