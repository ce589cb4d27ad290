# Copyright (c) mmpgnet contributors. All rights reserved.
"""Simulation experiment of the DIoU paper (Zheng et al., AAAI 2020, Sec. "Simulation").

Bounding-box regression by plain gradient descent from many anchors to a few targets, comparing
IoU, GIoU and DIoU (MMDetection's functional losses) with mmpgnet's GIoU, CDIoU and CDIoU-corner:

* 5,000 anchor centres uniform in the disc of radius 3 around (10, 10);
* 7 targets of area 1 centred at (10, 10), aspect ratios (w:h) 1:4, 1:3, 1:2, 1:1, 2:1, 3:1, 4:1;
* at each centre, anchors of 7 scales (0.5, 0.67, 0.75, 1, 1.33, 1.5, 2 x the target area) x the
  same 7 aspect ratios, paired with each of the 7 targets: 5,000 x 7 x 7 x 7 = 1,715,000 cases;
* the regressed variables are each anchor's (x, y, w, h); each iteration does
  ``v -= step * (2 - IoU) * dL/dv`` with ``dL/dv`` from autograd (``L`` summed over the cases, so
  each case gets its own gradient) and ``IoU`` not differentiated; ``step`` is 0.1 for
  iterations 1-160, 0.01 for 161-180 and 0.001 for 181-200;
* the error after iteration k is the sum over the cases of
  ``|x - x_t| + |y - y_t| + |w - w_t| + |h - h_t|``.

It prints a table (error before the first step, after iterations 1, 50, 160 and 200, and the first
iteration at which the error is at most 10 % of the starting error) and writes the curves
(``iou_loss_simulation.png``, log scale) and the numbers (``errors.json``) to ``--out``.

Example::

    python tools/analysis/iou_loss_simulation.py              # the full 1.715M cases
    python tools/analysis/iou_loss_simulation.py --points 50  # 17,150 cases, seconds
"""
import argparse
import json
import math
import os
import os.path as osp
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from mmdet.models.losses.iou_loss import diou_loss as mmdet_diou_loss  # noqa: E402
from mmdet.models.losses.iou_loss import giou_loss as mmdet_giou_loss  # noqa: E402
from mmdet.models.losses.iou_loss import iou_loss as mmdet_iou_loss  # noqa: E402
from mmengine.utils import ProgressBar  # noqa: E402

from mmpgnet.models.losses import cdiou_loss, giou_loss  # noqa: E402

ASPECT_RATIOS = (1 / 4, 1 / 3, 1 / 2, 1.0, 2.0, 3.0, 4.0)  # w / h
SCALES = (0.5, 0.67, 0.75, 1.0, 1.33, 1.5, 2.0)  # anchor area / target area
CENTRE = 10.0
RADIUS = 3.0
TARGET_AREA = 1.0
REPORT_ITERS = (1, 50, 160, 200)

LossFn = Callable[[Tensor, Tensor], Tensor]

#: name -> loss of (pred, target) boxes (x1, y1, x2, y2), summed over the cases.
LOSSES: Dict[str, LossFn] = {
    'IoU (mmdet)': lambda p, t: mmdet_iou_loss(p, t, mode='linear', reduction='sum'),
    'GIoU (mmdet)': lambda p, t: mmdet_giou_loss(p, t, reduction='sum'),
    'DIoU (mmdet)': lambda p, t: mmdet_diou_loss(p, t, reduction='sum'),
    'GIoU (mmpgnet)': lambda p, t: giou_loss(p, t, reduction='sum'),
    'CDIoU (mmpgnet)': lambda p, t: cdiou_loss(p, t, reduction='sum'),
    'CDIoU-corner (mmpgnet)': lambda p, t: cdiou_loss(p, t, reduction='sum', distance='corner'),
}


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--points', type=int, default=5000,
                        help='anchor centres (cases = points x 343); 5000 in the paper')
    parser.add_argument('--iters', type=int, default=200,
                        help='iterations (steps 0.1 / 0.01 / 0.001 switch at 80 %% / 90 %%)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the anchor centres')
    parser.add_argument('--losses', nargs='+', default=list(LOSSES), choices=list(LOSSES),
                        metavar='LOSS', help=f'subset of {list(LOSSES)}')
    parser.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
    parser.add_argument('--out', default='work_dirs/iou_loss_simulation',
                        help='folder of the PNG and the JSON')
    parser.add_argument('--no-plot', action='store_true', help='skip the PNG')
    return parser.parse_args()


def make_cases(points: int, seed: int) -> Tuple[Tensor, Tensor]:
    """Anchors and targets of every regression case, as (x, y, w, h).

    Args:
        points (int): number of anchor centres.
        seed (int): seed of the centres.

    Returns:
        tuple[Tensor, Tensor]: ``anchors`` and ``targets``, float32 ``(points * 343, 4)``;
        the case index runs over (centre, target ratio, anchor scale, anchor ratio).
    """
    gen = torch.Generator().manual_seed(seed)
    r = RADIUS * torch.rand(points, generator=gen, dtype=torch.float64).sqrt()
    theta = 2 * math.pi * torch.rand(points, generator=gen, dtype=torch.float64)
    cx, cy = CENTRE + r * torch.cos(theta), CENTRE + r * torch.sin(theta)
    ratios = torch.tensor(ASPECT_RATIOS, dtype=torch.float64)
    scales = torch.tensor(SCALES, dtype=torch.float64)
    k = len(ratios)
    # target (k,): w = sqrt(A r), h = sqrt(A / r)
    tw, th = (TARGET_AREA * ratios).sqrt(), (TARGET_AREA / ratios).sqrt()
    # anchor (scale, ratio): area S = scale * A
    area = (scales * TARGET_AREA)[:, None]
    aw, ah = (area * ratios).sqrt(), (area / ratios).sqrt()  # (k, k)
    shape = (points, k, k, k)
    anchors = torch.stack([
        cx[:, None, None, None].expand(shape),
        cy[:, None, None, None].expand(shape),
        aw[None, None].expand(shape),
        ah[None, None].expand(shape),
    ], dim=-1).reshape(-1, 4)
    targets = torch.stack([
        torch.full(shape, CENTRE, dtype=torch.float64),
        torch.full(shape, CENTRE, dtype=torch.float64),
        tw[None, :, None, None].expand(shape),
        th[None, :, None, None].expand(shape),
    ], dim=-1).reshape(-1, 4)
    return anchors.float().contiguous(), targets.float().contiguous()


#: (x, y, w, h) @ XYWH_TO_XYXY = (x - w/2, y - h/2, x + w/2, y + h/2): one matmul forward and one
#: backward, instead of the slices and concatenation of the usual conversion.
XYWH_TO_XYXY = torch.tensor([[1.0, 0.0, 1.0, 0.0],
                             [0.0, 1.0, 0.0, 1.0],
                             [-0.5, 0.0, 0.5, 0.0],
                             [0.0, -0.5, 0.0, 0.5]])


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(x, y, w, h) centre-size boxes to (x1, y1, x2, y2) (differentiable)."""
    return boxes @ XYWH_TO_XYXY.to(boxes.dtype)


def aligned_iou(pred: Tensor, target: Tensor, target_area: Tensor) -> Tensor:
    """IoU of aligned (x1, y1, x2, y2) boxes (no gradient needed, few temporaries).

    Equals ``mmdet.structures.bbox.bbox_overlaps(pred, target, is_aligned=True)`` for boxes of
    non-negative size (checked by ``tests/test_losses.py``).
    """
    wh = torch.minimum(pred[:, 2:], target[:, 2:]).sub_(torch.maximum(pred[:, :2], target[:, :2]))
    wh.clamp_(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = (pred[:, 2] - pred[:, 0]).mul_(pred[:, 3] - pred[:, 1]).add_(target_area).sub_(inter)
    return inter.div_(union.clamp_(min=1e-6))


def step_size(iteration: int, iters: int) -> float:
    """0.1, then 0.01 after 80 % and 0.001 after 90 % of the iterations (1-based iteration)."""
    if iteration <= round(0.8 * iters):
        return 0.1
    if iteration <= round(0.9 * iters):
        return 0.01
    return 0.001


def regression_error(boxes: Tensor, targets: Tensor) -> float:
    """Sum over the cases of |dx| + |dy| + |dw| + |dh| (torch's pairwise float32 summation)."""
    return float(torch.sub(boxes, targets).abs_().sum())


def simulate(loss_fn: LossFn, anchors: Tensor, targets: Tensor, iters: int,
             progress: Optional[ProgressBar] = None) -> List[float]:
    """Run the gradient-descent regression of every case with one loss.

    Args:
        loss_fn (Callable): loss of (pred, target) xyxy boxes, summed over the cases.
        anchors (Tensor): starting (x, y, w, h), ``(N, 4)``.
        targets (Tensor): target (x, y, w, h), ``(N, 4)``.
        iters (int): iterations.
        progress (ProgressBar, optional): updated once per iteration.

    Returns:
        list[float]: the error before the first step and after each iteration (``iters + 1``).
    """
    boxes = anchors.clone()
    target_xyxy = xywh_to_xyxy(targets)
    target_area = targets[:, 2] * targets[:, 3]
    errors = [regression_error(boxes, targets)]
    for it in range(1, iters + 1):
        boxes.requires_grad_(True)
        pred = xywh_to_xyxy(boxes)
        loss = loss_fn(pred, target_xyxy)
        grad, = torch.autograd.grad(loss, boxes)
        with torch.no_grad():
            iou = aligned_iou(pred.detach(), target_xyxy, target_area)
            factor = iou.neg_().add_(2.0).mul_(step_size(it, iters))  # step * (2 - IoU)
            boxes = boxes.detach().addcmul_(grad, factor[:, None], value=-1.0)
        errors.append(regression_error(boxes, targets))
        if progress is not None:
            progress.update()
    return errors


def first_below(errors: List[float], fraction: float) -> Optional[int]:
    """First iteration whose error is at most ``fraction`` of the starting error."""
    for it, err in enumerate(errors[1:], start=1):
        if err <= fraction * errors[0]:
            return it
    return None


def plot(curves: Dict[str, List[float]], cases: int, path: str) -> None:
    """Save the error curves (log-scale y) as a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, errors in curves.items():
        style = '--' if 'mmpgnet' in name else '-'
        ax.plot(range(len(errors)), [max(e, 1e-3) for e in errors], style, label=name)
    ax.set_yscale('log')
    ax.set_xlabel('iteration')
    ax.set_ylabel('total error  sum |dx|+|dy|+|dw|+|dh|')
    ax.set_title(f'IoU-loss regression simulation, {cases:,} cases')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fmt(x: float) -> str:
    """Error in scientific notation."""
    return f'{x:.3e}'


def main() -> None:
    """Run the simulation and report."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    anchors, targets = make_cases(args.points, args.seed)
    cases = anchors.size(0)
    print(f'{cases:,} regression cases ({args.points} centres x {len(ASPECT_RATIOS)} targets x '
          f'{len(SCALES)} scales x {len(ASPECT_RATIOS)} ratios), {args.iters} iterations, '
          f'{len(args.losses)} losses, {torch.get_num_threads()} threads, seed {args.seed}')
    progress = ProgressBar(args.iters * len(args.losses))
    curves: Dict[str, List[float]] = {}
    seconds: Dict[str, float] = {}
    start = time.perf_counter()
    for name in args.losses:
        t0 = time.perf_counter()
        curves[name] = simulate(LOSSES[name], anchors, targets, args.iters, progress)
        seconds[name] = time.perf_counter() - t0
    total = time.perf_counter() - start
    print()

    iters = [i for i in REPORT_ITERS if i <= args.iters]
    if args.iters not in iters:
        iters.append(args.iters)
    header = (f'| {"loss":<22} | {"start":>9} | ' + ' | '.join(f'{f"it {i}":>9}' for i in iters) +
              f' | {"<=10% at":>8} | {"time s":>6} |')
    print(header)
    print('|' + '|'.join('-' * (len(col)) for col in header.split('|')[1:-1]) + '|')
    for name, errors in curves.items():
        below = first_below(errors, 0.1)
        print(f'| {name:<22} | {fmt(errors[0]):>9} | ' +
              ' | '.join(f'{fmt(errors[i]):>9}' for i in iters) +
              f' | {str(below) if below else "never":>8} | {seconds[name]:>6.1f} |')
    print(f'total wall time {total:.1f} s')

    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, 'errors.json'), 'w') as f:
        json.dump(dict(cases=cases, points=args.points, iters=args.iters, seed=args.seed,
                       seconds=seconds, total_seconds=total, errors=curves), f)
    if not args.no_plot:
        png = osp.join(args.out, 'iou_loss_simulation.png')
        plot(curves, cases, png)
        print(f'curves saved to {png}')


if __name__ == '__main__':
    main()
