"""Where to cut a model into pipeline stages: named split points, or balanced by measured time."""
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .blocks import BlockGraph, State, sent_keys


@dataclass
class PartitionReport:
    """The measured cost of every block and what crosses each cut.

    Args:
        block_names (list[str]): block names in order.
        block_ms (list[float]): forward + backward milliseconds per block (one micro-batch).
        cut_bytes (list[int]): bytes crossing the boundary before block ``i`` (index 0 unused).
        cuts (list[int]): the chosen cut indices.
    """
    block_names: List[str]
    block_ms: List[float]
    cut_bytes: List[int]
    cuts: List[int]

    def stage_ms(self) -> List[float]:
        """list[float]: the summed block time of every stage."""
        bounds = [0] + list(self.cuts) + [len(self.block_ms)]
        return [sum(self.block_ms[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    def summary(self) -> str:
        """A human-readable table of stages, their time and the activation crossing each cut."""
        lines = []
        bounds = [0] + list(self.cuts) + [len(self.block_ms)]
        for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            crossing = f', sends {self.cut_bytes[b] / 1024:.1f} KiB/micro-batch' \
                if b < len(self.block_ms) else ''
            lines.append(f'stage {s}: {self.block_names[a]} .. {self.block_names[b - 1]} '
                         f'({b - a} blocks, {sum(self.block_ms[a:b]):.2f} ms fwd+bwd{crossing})')
        return '\n'.join(lines)


def resolve_split_points(graph: BlockGraph, num_stages: int,
                         split_points: Sequence[str]) -> List[int]:
    """Turn named split points into cut indices, checking them.

    Args:
        graph (BlockGraph): the model's blocks.
        num_stages (int): number of stages.
        split_points (Sequence[str]): names of the first block of stages 1..S-1.

    Returns:
        list[int]: strictly increasing cut indices.

    Raises:
        ValueError: wrong count, unknown name, or out of order, saying what to change.
    """
    if len(split_points) != num_stages - 1:
        raise ValueError(f'num_stages={num_stages} needs {num_stages - 1} split point(s), got '
                         f'{len(split_points)}: {list(split_points)} '
                         "(or use split_points='auto')")
    cuts = [graph.index(name) for name in split_points]
    if any(c == 0 for c in cuts):
        raise ValueError(f'split point {graph.names[0]!r} is the first block: stage 0 would be '
                         'empty')
    if any(b <= a for a, b in zip(cuts[:-1], cuts[1:])):
        raise ValueError(f'split_points {list(split_points)} must be in model order and distinct')
    return cuts


def balance(costs: Sequence[float], num_stages: int,
            tie_break: Optional[Sequence[float]] = None) -> List[int]:
    """Contiguous partition of ``costs`` into ``num_stages`` parts minimising the largest part.

    Args:
        costs (Sequence[float]): cost per block.
        num_stages (int): number of parts.
        tie_break (Sequence[float], optional): cost of cutting before block ``i`` (activation
            bytes); among partitions within 1% of the best bottleneck the cheapest cuts win.

    Returns:
        list[int]: the ``num_stages - 1`` cut indices.
    """
    n = len(costs)
    if num_stages > n:
        raise ValueError(f'cannot cut {n} blocks into {num_stages} stages')
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    tie = list(tie_break) if tie_break is not None else [0.0] * (n + 1)

    def solve(limit: Optional[float]) -> Tuple[float, float, List[int]]:
        # best[s][i]: (bottleneck, cut cost, cuts) for the first i blocks in s stages; without a
        # limit the smallest bottleneck wins, with one the cheapest cuts whose parts all fit it
        if limit is None:
            def key(c: tuple) -> tuple:
                return c[0], c[1]
        else:
            def key(c: tuple) -> tuple:
                return c[1], c[0]
        inf = (float('inf'), float('inf'), [])
        best = [[inf] * (n + 1) for _ in range(num_stages + 1)]
        best[0][0] = (0.0, 0.0, [])
        for s in range(1, num_stages + 1):
            for i in range(s, n + 1):
                for j in range(s - 1, i):
                    prev = best[s - 1][j]
                    neck = max(prev[0], prefix[i] - prefix[j])
                    if prev[0] == float('inf') or (limit is not None and neck > limit):
                        continue
                    cand = (neck, prev[1] + (tie[j] if j > 0 else 0.0),
                            prev[2] + ([j] if j > 0 else []))
                    if key(cand) < key(best[s][i]):
                        best[s][i] = cand
        return best[num_stages][n]

    optimum = solve(None)[0]
    return solve(optimum * 1.01)[2]


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def profile_blocks(graph: BlockGraph, inputs: Sequence[Tensor],
                   loss_fn: Callable[[State], Tensor], iters: int = 3,
                   warmup: int = 1) -> Tuple[List[float], List[int]]:
    """Measure forward + backward time of every block and the bytes crossing every cut.

    Each block runs on detached copies of its inputs, so that its backward can be timed alone
    (``torch.autograd.backward`` on its outputs with the gradients its readers produced). The
    model's buffers (BN statistics) are restored and parameter gradients cleared afterwards.

    Args:
        graph (BlockGraph): the model's blocks.
        inputs (Sequence[Tensor]): first-stage inputs of one micro-batch.
        loss_fn (Callable): total loss from the loss keys' state.
        iters (int): measured iterations (the median is kept).
        warmup (int): unmeasured iterations first.

    Returns:
        tuple: median milliseconds per block, and bytes alive before each block index
        (``len(blocks) + 1`` entries; entry 0 is the input).
    """
    modules = [m for b in graph.blocks for m in b.modules]
    buffers = [(buf, buf.detach().clone()) for m in modules for buf in m.buffers()]
    times: List[List[float]] = [[] for _ in graph.blocks]
    cut_bytes: List[int] = []
    try:
        for it in range(warmup + iters):
            ms, cut_bytes = _profile_once(graph, inputs, loss_fn)
            if it >= warmup:
                for t, m in zip(times, ms):
                    t.append(m)
    finally:
        with torch.no_grad():
            for buf, saved in buffers:
                buf.copy_(saved)
        for m in modules:
            for p in m.parameters():
                p.grad = None
    return [sorted(t)[len(t) // 2] for t in times], cut_bytes


def _sync(tensors: Sequence[Tensor]) -> None:
    if any(t.is_cuda for t in tensors):
        torch.cuda.synchronize()


def _profile_once(graph: BlockGraph, inputs: Sequence[Tensor],
                  loss_fn: Callable[[State], Tensor]) -> Tuple[List[float], List[int]]:
    # state: name -> (tensor, producer index or -1)
    state: Dict[str, Tuple[Tensor, int]] = {k: (v, -1) for k, v in zip(graph.input_keys, inputs)}
    leaves: List[List[Tuple[str, int, Tensor]]] = []  # per reader: (name, producer, leaf)
    outputs: List[Dict[str, Tensor]] = []
    fwd_ms: List[float] = []
    cut_bytes = [sum(_nbytes(t) for t in inputs)]
    for idx, block in enumerate(graph.blocks):
        if idx > 0:
            cut_bytes.append(sum(_nbytes(state[k][0]) for k in sent_keys(graph, idx)))
        reads = []
        for k in block.inputs:
            t, producer = state[k]
            leaf = t.detach().requires_grad_(t.requires_grad)
            reads.append((k, producer, leaf))
        _sync(inputs)
        start = time.perf_counter()
        out = block.fn({k: leaf for k, _, leaf in reads})
        _sync(inputs)
        fwd_ms.append((time.perf_counter() - start) * 1e3)
        leaves.append(reads)
        outputs.append(out)
        for k, v in out.items():
            state[k] = (v, idx)
    cut_bytes.append(sum(_nbytes(state[k][0]) for k in graph.loss_keys))
    loss_reads = [(k, state[k][1], state[k][0].detach().requires_grad_(state[k][0].requires_grad))
                  for k in graph.loss_keys]
    loss_fn({k: leaf for k, _, leaf in loss_reads}).backward()
    readers = leaves + [loss_reads]
    bwd_ms = [0.0] * len(graph.blocks)
    for idx in range(len(graph.blocks) - 1, -1, -1):
        outs, grads = [], []
        for k, v in outputs[idx].items():
            if not v.requires_grad:
                continue
            g = [leaf.grad for reads in readers for name, prod, leaf in reads
                 if name == k and prod == idx and leaf.grad is not None]
            if g:
                outs.append(v)
                grads.append(torch.stack(g).sum(0) if len(g) > 1 else g[0])
        if outs:
            _sync(inputs)
            start = time.perf_counter()
            torch.autograd.backward(outs, grads)
            _sync(inputs)
            bwd_ms[idx] = (time.perf_counter() - start) * 1e3
    return [f + b for f, b in zip(fwd_ms, bwd_ms)], cut_bytes


def choose_cuts(graph: BlockGraph, num_stages: int, split_points: Union[str, Sequence[str]],
                block_ms: Optional[Sequence[float]] = None,
                cut_bytes: Optional[Sequence[int]] = None) -> List[int]:
    """Cut indices for ``split_points`` (names) or ``'auto'`` (needs the measured costs).

    Args:
        graph (BlockGraph): the model's blocks.
        num_stages (int): number of stages.
        split_points (str | Sequence[str]): names, or ``'auto'``.
        block_ms (Sequence[float], optional): measured time per block (for ``'auto'``).
        cut_bytes (Sequence[int], optional): bytes crossing each cut (tie-break for ``'auto'``).

    Returns:
        list[int]: cut indices.
    """
    if isinstance(split_points, str):
        if split_points != 'auto':
            raise ValueError(f"split_points must be a list of block names or 'auto', got "
                             f'{split_points!r}')
        if block_ms is None:
            raise ValueError("split_points='auto' needs measured block times")
        tie = [float(b) for b in cut_bytes] if cut_bytes is not None else None
        return balance(block_ms, num_stages, tie)
    return resolve_split_points(graph, num_stages, split_points)
