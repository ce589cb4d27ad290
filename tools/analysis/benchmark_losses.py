# Copyright (c) mmpgnet contributors. All rights reserved.
"""Benchmark mmpgnet's GIoU / CDIoU losses against MMDetection's GIoULoss and DIoULoss.

For each number of box pairs it measures, in the same process and run:

* **time**: forward + backward of ``loss(pred, target)`` (``reduction='mean'``), the median of
  ``--repeats`` runs after ``--warmup`` runs. The losses are run round-robin (one run of each,
  then the next round), so a load change on the machine affects all of them alike.
* **saved**: bytes the autograd graph keeps between forward and backward (every tensor packed by
  ``torch.autograd.graph.saved_tensors_hooks``, counted once per storage, so views of one tensor
  are not double-counted), plus the output.
* **peak**: increase of the process' peak resident memory (``VmHWM`` of ``/proc/self/status``)
  over one forward + backward, after returning free heap memory to the OS (``malloc_trim``) and
  resetting the peak (``/proc/self/clear_refs``). It includes every temporary of the forward and
  the backward and the gradient; it is only available on Linux (``n/a`` elsewhere).

Ratios are ours / MMDetection's ``DIoULoss`` (for CDIoU) and ours / MMDetection's ``GIoULoss``
(for GIoU).

Example::

    python tools/analysis/benchmark_losses.py --sizes 10000 100000 1000000
"""
import argparse
import ctypes
import functools
import gc
import os.path as osp
import sys
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import analysis_utils  # noqa: E402

# ours first so that `import mmpgnet` registers them; mmdet's are imported directly.
# isort: off
from mmpgnet.models.losses import CDIoULoss, GIoULoss  # noqa: E402
from mmdet.models.losses import DIoULoss as MMDetDIoULoss  # noqa: E402
from mmdet.models.losses import GIoULoss as MMDetGIoULoss  # noqa: E402
# isort: on

#: (label, factory, reference label for the ratio)
LOSSES: List[Tuple[str, Callable[[], nn.Module], Optional[str]]] = [
    ('mmdet.GIoULoss', MMDetGIoULoss, None),
    ('mmdet.DIoULoss', MMDetDIoULoss, None),
    ('mmpgnet.GIoULoss', GIoULoss, 'mmdet.GIoULoss'),
    ('mmpgnet.CDIoULoss', CDIoULoss, 'mmdet.DIoULoss'),
    ('mmpgnet.CDIoULoss(corner)', lambda: CDIoULoss(distance='corner'), 'mmdet.DIoULoss'),
]


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[10_000, 100_000, 1_000_000],
                        help='numbers of box pairs')
    parser.add_argument('--repeats', type=int, default=11, help='timed runs per loss and size')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs per loss and size')
    parser.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
    parser.add_argument('--dtype', choices=['float32', 'float64'], default='float32')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def random_boxes(n: int, generator: torch.Generator, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """Pairs of overlapping-or-not boxes in a 1000 x 1000 image.

    Args:
        n (int): number of pairs.
        generator (torch.Generator): random source.
        dtype (torch.dtype): box dtype.

    Returns:
        tuple[Tensor, Tensor]: ``pred`` and ``target``, each ``(n, 4)``.
    """
    def boxes(xy_jitter: Optional[Tensor] = None) -> Tensor:
        xy = torch.rand(n, 2, generator=generator, dtype=dtype) * 900
        if xy_jitter is not None:
            xy = xy_jitter + (torch.rand(n, 2, generator=generator, dtype=dtype) - 0.5) * 60
        wh = torch.rand(n, 2, generator=generator, dtype=dtype) * 100 + 1
        return torch.cat([xy, xy + wh], dim=1)

    target = boxes()
    return boxes(target[:, :2]), target


def forward_backward(loss: nn.Module, pred: Tensor, target: Tensor) -> None:
    """One forward + backward of ``loss`` from a fresh leaf copy of ``pred``."""
    loss(pred.detach().requires_grad_(True), target).backward()


def saved_bytes(loss: nn.Module, pred: Tensor, target: Tensor) -> int:
    """Bytes held by the autograd graph between forward and backward (plus the output)."""
    storages: Dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    leaf = pred.detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = loss(leaf, target)
    storages.pop(leaf.untyped_storage().data_ptr(), None)  # the input itself is not extra
    storages.pop(target.untyped_storage().data_ptr(), None)
    out.backward()
    return sum(storages.values()) + out.nbytes


def _status_kib(field: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_bytes(loss: nn.Module, pred: Tensor, target: Tensor) -> Optional[int]:
    """Increase of the peak resident set over one forward + backward (Linux only)."""
    gc.collect()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset VmHWM to the current RSS
    except OSError:
        return None
    base = _status_kib('VmRSS')
    leaf = pred.detach().requires_grad_(True)
    loss(leaf, target).backward()
    peak = _status_kib('VmHWM')
    del leaf
    if base is None or peak is None:
        return None
    return (peak - base) * 1024


def fmt_bytes(n: Optional[int]) -> str:
    """Human-readable MiB."""
    return 'n/a' if n is None else f'{n / 2**20:.1f} MiB'


def main() -> None:
    """Run the benchmark and print the table."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    generator = torch.Generator().manual_seed(args.seed)
    losses = {label: factory() for label, factory, _ in LOSSES}
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, '
          f'median of {args.repeats} runs after {args.warmup} warm-up runs')
    header = (f'{"pairs":>9} | {"loss":<27} | {"fwd+bwd ms":>10} | {"ratio":>6} | '
              f'{"saved":>10} | {"ratio":>6} | {"peak RSS":>10} | {"ratio":>6}')
    print(header)
    print('-' * len(header))
    for n in args.sizes:
        pred, target = random_boxes(n, generator, dtype)
        timings = analysis_utils.time_round_robin(
            [functools.partial(forward_backward, loss, pred, target) for loss in losses.values()],
            args.repeats, args.warmup)
        results = {}
        for (label, loss), timing in zip(losses.items(), timings):
            results[label] = (timing.median_ms, saved_bytes(loss, pred, target),
                              peak_rss_bytes(loss, pred, target))
        for label, _, ref in LOSSES:
            ms, saved, peak = results[label]

            def ratio(i: int) -> str:
                if ref is None or results[ref][i] in (None, 0) or results[label][i] is None:
                    return ''
                return f'{results[label][i] / results[ref][i]:.2f}'

            print(f'{n:>9} | {label:<27} | {ms:>10.2f} | {ratio(0):>6} | {fmt_bytes(saved):>10} | '
                  f'{ratio(1):>6} | {fmt_bytes(peak):>10} | {ratio(2):>6}')
        print('-' * len(header))


if __name__ == '__main__':
    main()
