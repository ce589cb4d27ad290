"""A ``PipelineStage`` that measures the time it spends computing, without a sync per chunk."""
import time
from typing import Any, Callable, List, Tuple, Union

import torch

from mmpgnet.utils.torch_compat import PIPELINING_FEATURE, PIPELINING_MIN_TORCH, require_torch

try:
    from torch.distributed.pipelining import PipelineStage
except ImportError:  # torch < 2.4: TimedPipelineStage refuses to be built (see its __init__)
    PipelineStage = object


class ChunkTimer:
    """Sums the time of timed chunks of work (forward, backward, loss of micro-batches).

    On CUDA (``cuda_events=True``) each chunk is bracketed by two CUDA timing events recorded
    on the current stream, so nothing waits for the device while the chunks run: the elapsed
    times are read by :meth:`collect`, which waits once for the last chunk's end. The time
    between the events is the chunk's own GPU work (a chunk's start event is queued after the
    stream waited for its received activations). Elsewhere, or with ``cuda_events=False``, the
    host clock times each chunk (on CUDA that is only the time to launch its kernels).

    Args:
        device (torch.device | str): where the chunks compute.
        cuda_events (bool): time CUDA chunks with events. Defaults to True.
    """

    def __init__(self, device: Union[torch.device, str], cuda_events: bool = True) -> None:
        self.use_events = cuda_events and torch.device(device).type == 'cuda'
        self._events: List[Tuple[Any, Any]] = []
        self._seconds = 0.0

    def reset(self) -> None:
        """Start a new sum (drops events not collected)."""
        self._events.clear()
        self._seconds = 0.0

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` as one timed chunk and return its result."""
        if self.use_events:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn(*args, **kwargs)
            end.record()
            self._events.append((start, end))
            return out
        start_s = time.perf_counter()
        out = fn(*args, **kwargs)
        self._seconds += time.perf_counter() - start_s
        return out

    def collect(self) -> float:
        """Seconds of the chunks since :meth:`reset` (on CUDA: waits once for the last chunk).

        Returns:
            float: the summed time.
        """
        if self._events:
            self._events[-1][1].synchronize()  # the stream's earlier events are done too
            self._seconds += sum(s.elapsed_time(e) for s, e in self._events) / 1e3
            self._events.clear()
        return self._seconds


class TimedPipelineStage(PipelineStage):
    """``torch.distributed.pipelining.PipelineStage`` that sums its compute time.

    ``forward_one_chunk`` and ``backward_one_chunk`` are the stage's computation; the schedule
    posts and waits for the send/receive operations outside them, so the rest of a schedule
    step is communication and waiting (the bubble). The chunks are timed by a
    :class:`ChunkTimer` (:attr:`timer`): on CUDA with timing events, read once per step by
    :attr:`compute_s`, so the chunks run without a host sync (``sync_cuda=False``: host clock
    only, no sync at all, and on CUDA only kernel-launch time).

    Args:
        *args: the arguments of ``PipelineStage``.
        sync_cuda (bool): measure CUDA compute time with events (one wait per step, in
            :attr:`compute_s`). Defaults to True.
        **kwargs: the keyword arguments of ``PipelineStage``.
    """

    def __init__(self, *args: Any, sync_cuda: bool = True, **kwargs: Any) -> None:
        require_torch(PIPELINING_FEATURE, PIPELINING_MIN_TORCH)
        super().__init__(*args, **kwargs)
        self.timer = ChunkTimer(self.device, cuda_events=sync_cuda)

    def reset_timing(self) -> None:
        """Start timing a new step."""
        self.timer.reset()

    @property
    def compute_s(self) -> float:
        """float: seconds computed since :meth:`reset_timing` (read once per step)."""
        return self.timer.collect()

    def forward_one_chunk(self, *args: Any, **kwargs: Any) -> Any:
        """Forward one micro-batch, timed."""
        return self.timer.run(super().forward_one_chunk, *args, **kwargs)

    def backward_one_chunk(self, *args: Any, **kwargs: Any) -> Any:
        """Backward one micro-batch, timed."""
        return self.timer.run(super().backward_one_chunk, *args, **kwargs)
