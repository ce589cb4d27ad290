"""A ``PipelineStage`` that measures the time it spends computing."""
import time
from typing import Any

import torch
from torch.distributed.pipelining import PipelineStage


class TimedPipelineStage(PipelineStage):
    """``torch.distributed.pipelining.PipelineStage`` that sums its compute time.

    ``forward_one_chunk`` and ``backward_one_chunk`` are the stage's computation; the schedule
    posts and waits for the send/receive operations outside them, so the rest of a schedule
    step is communication and waiting (the bubble). On CUDA the device is synchronised around
    each chunk so that the times are real (costs some overlap; off with ``sync_cuda=False``).

    Args:
        *args: the arguments of ``PipelineStage``.
        sync_cuda (bool): synchronise CUDA around timed chunks. Defaults to True.
        **kwargs: the keyword arguments of ``PipelineStage``.
    """

    def __init__(self, *args: Any, sync_cuda: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.compute_s = 0.0
        self._sync = sync_cuda and torch.device(self.device).type == 'cuda'

    def _now(self) -> float:
        if self._sync:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def forward_one_chunk(self, *args: Any, **kwargs: Any) -> Any:
        """Forward one micro-batch, adding its time to ``compute_s``."""
        start = self._now()
        out = super().forward_one_chunk(*args, **kwargs)
        self.compute_s += self._now() - start
        return out

    def backward_one_chunk(self, *args: Any, **kwargs: Any) -> Any:
        """Backward one micro-batch, adding its time to ``compute_s``."""
        start = self._now()
        out = super().backward_one_chunk(*args, **kwargs)
        self.compute_s += self._now() - start
        return out
