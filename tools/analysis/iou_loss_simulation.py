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

``--gradients authors`` replaces autograd by the hand-derived gradients of the authors' MATLAB code
(github Zzh-tju/DIoU, folder ``simulation experiment/``, commit be00841) for the IoU, GIoU and DIoU
rows, reimplemented here in vectorised PyTorch (see ``authors_ascent``); every deviation of those
formulas from the exact gradient is a "quirk" that ``--fix-quirks`` can switch off one at a time.
mmpgnet's losses have no MATLAB counterpart: in that mode they are skipped unless named in
``--losses``, and then run with autograd (their rows say so). ``--dtype float64`` matches MATLAB's
double precision; everything else (cases, x/y/w/h variables, update rule, steps, error) is the
same as the authors' ``test_1715k.m``.

It prints a table (error before the first step, after iterations 1, 50, 160 and 200, and the first
iteration at which the error is at most 10 % of the starting error) and writes the curves
(``iou_loss_simulation.png``, log scale) and the numbers (``errors.json``) to ``--out``.

Example::

    python tools/analysis/iou_loss_simulation.py              # the full 1.715M cases
    python tools/analysis/iou_loss_simulation.py --points 50  # 17,150 cases, seconds
    python tools/analysis/iou_loss_simulation.py --gradients authors  # the published figure
"""
import argparse
import json
import math
import os
import os.path as osp
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import analysis_utils  # noqa: E402
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
    parser.add_argument('--losses', nargs='+', default=None, choices=list(LOSSES),
                        metavar='LOSS', help=f'subset of {list(LOSSES)} (default: all with '
                        'autograd, the three mmdet rows with --gradients authors)')
    parser.add_argument('--gradients', choices=('autograd', 'authors'), default='autograd',
                        help='exact gradients (autograd), or the hand-derived ones of the '
                        "authors' MATLAB code for the IoU / GIoU / DIoU rows (mmpgnet rows "
                        'keep autograd)')
    parser.add_argument('--fix-quirks', nargs='*', default=[], choices=QUIRKS, metavar='QUIRK',
                        help=f'with --gradients authors, use the exact formula for these of '
                        f'{list(QUIRKS)}')
    parser.add_argument('--dtype', choices=('float32', 'float64'), default='float32',
                        help='float64 as the MATLAB code (doubles); float32 by default')
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


#: Deviations of the MATLAB gradients from the exact ones (see ``authors_ascent``); the
#: ``authors`` mode has them all unless ``--fix-quirks`` names some.
QUIRKS = ('wh-double', 'giou-unclamped', 'diou-copy', 'diou-wh-sign', 'diou-xy-sign')

#: rows that have a MATLAB counterpart -> the MATLAB function it follows
AUTHORS_KINDS = {'IoU (mmdet)': 'iou', 'GIoU (mmdet)': 'giou', 'DIoU (mmdet)': 'diou'}

GradFn = Callable[[Tensor, Tensor], Tensor]


def authors_ascent(boxes: Tensor, targets: Tensor, kind: str,
                   quirks: Sequence[str] = QUIRKS) -> Tensor:
    """Ascent direction on (x, y, w, h) as the authors' MATLAB code computes it.

    The MATLAB code (github Zzh-tju/DIoU, ``simulation experiment/``, commit be00841) updates
    ``v += step * (2 - IoU) * s`` with ``s`` the hand-derived derivative of IoU, GIoU or of
    ``IoU - rho^2 / c^2`` (``test_1715k.m``), i.e. ``s = -dL/dv`` for the losses ``1 - IoU``,
    ``1 - GIoU``, ``1 - DIoU`` if the formulas were exact. This is the same math in vectorised
    form, both axes at once on ``(N, 2)`` planes (column 0: x / left / right, column 1:
    y / top / bottom). The ``quirks`` reproduce where the formulas differ from the exact
    gradient; without any quirk the result equals ``-dL/dv`` of autograd for boxes of positive
    size away from ties (checked by ``tests/test_losses.py``):

    * ``'wh-double'`` (``to_xywh.m``, lines 4-5): ``dw = dr - dl`` and ``dh = db - dt``; the chain
      rule through ``l = x - w/2``, ``r = x + w/2`` gives half of that. Applies to the IoU part of
      every loss (the distance part of ``dDIOU.m`` is derived in x, y, w, h directly).
    * ``'giou-unclamped'`` (``dGIOU.m`` lines 3-5 and 21-26, with ``In.m``, ``dIbox.m``,
      ``dUbox.m``): for boxes that do not overlap, the union ``U = X + G - I`` and ``dU`` still use
      the unclamped intersection ``I = (b - t)(r - l)`` of ``In.m``; exact: ``I = 0``, ``dU = dX``.
    * ``'diou-copy'`` (``dDIOU.m`` lines 57-64): the derivatives of the enclosing height ``Ch``
      are those of the enclosing width ``Cw`` (and vice versa): both carry ``d/dx``, ``d/dw`` of
      the width and ``d/dy``, ``d/dh`` of the height, so ``dc^2/dx = 2 (Cw + Ch) dCw/dx`` instead
      of ``2 Cw dCw/dx`` (likewise y, w, h).
    * ``'diou-wh-sign'`` (``dDIOU.m`` lines 65-70): when the anchor encloses the target
      horizontally (``l < l_t`` and ``r > r_t``), ``Cw.dw = -1`` where ``Cw = w`` gives ``+1``;
      likewise ``Ch.dh`` vertically.
    * ``'diou-xy-sign'`` (``dDIOU.m`` lines 73-74):
      ``s.dx = (2 (x_t - x) c^2 - dc^2/dx rho^2) / c^4``; the derivative of ``-rho^2 / c^2`` is
      ``(2 (x_t - x) c^2 + dc^2/dx rho^2) / c^4`` (the quotient rule with
      ``-d(rho^2)/dx = 2 (x_t - x)``): the enclosing-box term of the centre derivative has the
      wrong sign (lines 75-76, the w / h derivatives, have the right one).

    Kept in every case (not a quirk): the IoU derivative is 0 unless the boxes overlap and
    ``U > 0`` (``dIOU.m`` line 11), and for a box of non-positive width the left derivative is
    replaced by the right one (``dIOU.m`` lines 22-35; likewise top by bottom); ties of min/max
    go to the target (strict comparisons of ``dIbox.m``, ``dCbox.m``, ``dDIOU.m``).

    Args:
        boxes (Tensor): (x, y, w, h), ``(N, 4)``.
        targets (Tensor): target (x, y, w, h), ``(N, 4)``.
        kind (str): ``'iou'`` (``dIOU.m``), ``'giou'`` (``dGIOU.m``) or ``'diou'`` (``dDIOU.m``).
        quirks (Sequence[str]): subset of :data:`QUIRKS` to reproduce.

    Returns:
        Tensor: ``(N, 4)``, the step direction of (x, y, w, h) before ``step * (2 - IoU)``.
    """
    unknown = set(quirks) - set(QUIRKS)
    if unknown or kind not in ('iou', 'giou', 'diou'):
        raise ValueError(f'unknown kind {kind!r} or quirks {sorted(unknown)}')
    centre, size = boxes[:, :2], boxes[:, 2:]
    t_centre, t_size = targets[:, :2], targets[:, 2:]
    p0, p1 = centre - size / 2, centre + size / 2  # (l, t), (r, b): to_tblr.m
    g0, g1 = t_centre - t_size / 2, t_centre + t_size / 2

    # In.m, dIbox.m: intersection extents (not clamped) and their derivatives in p0 / p1
    inter = torch.minimum(p1, g1) - torch.maximum(p0, g0)
    inter_o = inter.flip(1)  # extent along the other axis
    d_inter0 = torch.where(p0 > g0, -inter_o, 0.0)  # dI/dl (dI/dt)
    d_inter1 = torch.where(p1 < g1, inter_o, 0.0)  # dI/dr (dI/db)
    inter_area = inter[:, 0] * inter[:, 1]
    overlap = (inter > 0).all(dim=1)  # Ibox.t < Ibox.b && Ibox.l < Ibox.r
    size_o = size.flip(1)
    pred_area = size[:, 0] * size[:, 1]
    union = pred_area + t_size[:, 0] * t_size[:, 1] - inter_area  # with the unclamped I
    du0, du1 = -size_o - d_inter0, size_o - d_inter1  # dUbox.m = dXbox.m - dIbox.m

    # dIOU.m: d(I / U) where the boxes overlap and U > 0, else 0
    ok = overlap & (union > 0)
    u = torch.where(ok, union, 1.0)[:, None]
    i = inter_area[:, None]
    s0 = torch.where(ok[:, None], (u * d_inter0 - i * du0) / u**2, 0.0)
    s1 = torch.where(ok[:, None], (u * d_inter1 - i * du1) / u**2, 0.0)
    s0 = torch.where(p0 < p1, s0, s1)  # dIOU.m lines 22-35: degenerate box, both take d/dr

    if kind == 'giou':
        # cover.m, dCbox.m: enclosing box C and its derivatives
        cover = torch.maximum(p1, g1) - torch.minimum(p0, g0)
        cover_o = cover.flip(1)
        dc0 = torch.where(p0 < g0, -cover_o, 0.0)
        dc1 = torch.where(p1 > g1, cover_o, 0.0)
        c_area = (cover[:, 0] * cover[:, 1])[:, None]
        c_safe = torch.where(c_area > 0, c_area, 1.0)
        if 'giou-unclamped' not in quirks:  # exact: I = 0 and dI = 0 where they do not overlap
            keep = overlap[:, None]
            union = torch.where(overlap, union, pred_area + t_size[:, 0] * t_size[:, 1])
            du0 = torch.where(keep, du0, -size_o)
            du1 = torch.where(keep, du1, size_o)
        un = union[:, None]
        # dGIOU.m lines 9-26: d(U / C) added to d(IoU) (the latter 0 without overlap)
        pen0 = torch.where(c_area > 0, (c_area * du0 - un * dc0) / c_safe**2, 0.0)
        pen1 = torch.where(c_area > 0, (c_area * du1 - un * dc1) / c_safe**2, 0.0)
        s0, s1 = s0 + pen0, s1 + pen1

    # to_xywh.m: (l, r) -> (x, w)
    wh_factor = 1.0 if 'wh-double' in quirks else 0.5
    ascent = torch.cat([s0 + s1, (s1 - s0) * wh_factor], dim=1)

    if kind == 'diou':
        # dDIOU.m: derivative of -rho^2 / c^2 in (x, y, w, h) directly
        cover = torch.maximum(p1, g1) - torch.minimum(p0, g0)  # (Cw, Ch)
        lo_out, hi_out = p0 < g0, p1 > g1  # Cl/Ct and Cr/Cb follow the anchor
        dcov_dc = hi_out.to(cover.dtype) - lo_out.to(cover.dtype)  # dCw/dx, dCh/dy
        dcov_ds = 0.5 * (hi_out.to(cover.dtype) + lo_out.to(cover.dtype))  # dCw/dw, dCh/dh
        own_ds = dcov_ds
        if 'diou-wh-sign' in quirks:  # lines 65-70: -1 when the anchor encloses on that axis
            own_ds = torch.where(lo_out & hi_out, -1.0, dcov_ds)
        cover_o = cover.flip(1)
        ddiag_dc = 2 * cover * dcov_dc
        ddiag_ds = 2 * cover * own_ds
        if 'diou-copy' in quirks:  # lines 57-64: the other side's extent has the same derivatives
            ddiag_dc = ddiag_dc + 2 * cover_o * dcov_dc
            ddiag_ds = ddiag_ds + 2 * cover_o * dcov_ds
        diag = (cover**2).sum(dim=1, keepdim=True)  # c^2
        offset = t_centre - centre
        rho2 = (offset**2).sum(dim=1, keepdim=True)  # d
        xy_sign = -1.0 if 'diou-xy-sign' in quirks else 1.0  # lines 73-74
        d_centre = (2 * offset * diag + xy_sign * ddiag_dc * rho2) / diag**2
        d_size = ddiag_ds * rho2 / diag**2
        ascent = ascent + torch.cat([d_centre, d_size], dim=1)  # lines 73-85
    return ascent


def authors_gradient(kind: str, quirks: Sequence[str] = QUIRKS) -> GradFn:
    """``dL/dv`` of the MATLAB code for one loss (minus :func:`authors_ascent`)."""
    return lambda boxes, targets: authors_ascent(boxes, targets, kind, quirks).neg_()


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
             progress: Optional[ProgressBar] = None,
             grad_fn: Optional[GradFn] = None) -> List[float]:
    """Run the gradient-descent regression of every case with one loss.

    Args:
        loss_fn (Callable): loss of (pred, target) xyxy boxes, summed over the cases.
        anchors (Tensor): starting (x, y, w, h), ``(N, 4)``.
        targets (Tensor): target (x, y, w, h), ``(N, 4)``.
        iters (int): iterations.
        progress (ProgressBar, optional): updated once per iteration.
        grad_fn (Callable, optional): ``dL/dv`` of ((x, y, w, h) boxes, targets), used instead
            of autograd through ``loss_fn`` (e.g. :func:`authors_gradient`).

    Returns:
        list[float]: the error before the first step and after each iteration (``iters + 1``).
    """
    boxes = anchors.clone()
    target_xyxy = xywh_to_xyxy(targets)
    target_area = targets[:, 2] * targets[:, 3]
    errors = [regression_error(boxes, targets)]
    for it in range(1, iters + 1):
        if grad_fn is None:
            boxes.requires_grad_(True)
            pred = xywh_to_xyxy(boxes)
            loss = loss_fn(pred, target_xyxy)
            grad, = torch.autograd.grad(loss, boxes)
        else:
            pred = xywh_to_xyxy(boxes)
            grad = grad_fn(boxes, targets)
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


def plot(curves: Dict[str, List[float]], cases: int, path: str, note: str = '') -> None:
    """Save the error curves (log-scale y) as a PNG."""
    plt = analysis_utils.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, errors in curves.items():
        style = '--' if 'mmpgnet' in name else '-'
        ax.plot(range(len(errors)), [max(e, 1e-3) for e in errors], style, label=name)
    ax.set_yscale('log')
    ax.set_xlabel('iteration')
    ax.set_ylabel('total error  sum |dx|+|dy|+|dw|+|dh|')
    ax.set_title(f'IoU-loss regression simulation, {cases:,} cases{note}')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend()
    analysis_utils.save_figure(fig, path, dpi=120)


def fmt(x: float) -> str:
    """Error in scientific notation."""
    return f'{x:.3e}'


def main() -> None:
    """Run the simulation and report."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    authors = args.gradients == 'authors'
    if args.losses is None:
        args.losses = list(AUTHORS_KINDS) if authors else list(LOSSES)
    quirks = [q for q in QUIRKS if q not in args.fix_quirks]
    anchors, targets = make_cases(args.points, args.seed)
    dtype = getattr(torch, args.dtype)
    anchors, targets = anchors.to(dtype), targets.to(dtype)
    cases = anchors.size(0)
    print(f'{cases:,} regression cases ({args.points} centres x {len(ASPECT_RATIOS)} targets x '
          f'{len(SCALES)} scales x {len(ASPECT_RATIOS)} ratios), {args.iters} iterations, '
          f'{len(args.losses)} losses, {torch.get_num_threads()} threads, seed {args.seed}, '
          f'{args.dtype}')
    # which gradient each row uses
    grads = {name: 'authors' if authors and name in AUTHORS_KINDS else 'autograd'
             for name in args.losses}
    if authors:
        print(f"gradients: the authors' MATLAB formulas (quirks: {', '.join(quirks) or 'none'}) "
              'for ' + ', '.join(n for n in args.losses if grads[n] == 'authors'))
        others = [n for n in args.losses if grads[n] == 'autograd']
        if others:
            print(f'           autograd for {", ".join(others)} (no MATLAB counterpart)')
    else:
        print('gradients: autograd (exact)')
    progress = ProgressBar(args.iters * len(args.losses))
    curves: Dict[str, List[float]] = {}
    seconds: Dict[str, float] = {}
    start = time.perf_counter()
    for name in args.losses:
        t0 = time.perf_counter()
        grad_fn = authors_gradient(AUTHORS_KINDS[name], quirks) \
            if grads[name] == 'authors' else None
        curves[name] = simulate(LOSSES[name], anchors, targets, args.iters, progress, grad_fn)
        seconds[name] = time.perf_counter() - t0
    total = time.perf_counter() - start
    print()

    iters = [i for i in REPORT_ITERS if i <= args.iters]
    if args.iters not in iters:
        iters.append(args.iters)
    header = [f'{"loss":<22}', f'{"gradient":<8}', f'{"start":>9}',
              *(f'{f"it {i}":>9}' for i in iters), f'{"<=10% at":>8}', f'{"time s":>6}']
    rows = []
    for name, errors in curves.items():
        below = first_below(errors, 0.1)
        rows.append([f'{name:<22}', f'{grads[name]:<8}', f'{fmt(errors[0]):>9}',
                     *(f'{fmt(errors[i]):>9}' for i in iters),
                     f'{str(below) if below else "never":>8}', f'{seconds[name]:>6.1f}'])
    print(analysis_utils.format_markdown_table(header, rows, padded=True))
    print(f'total wall time {total:.1f} s')

    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, 'errors.json'), 'w') as f:
        json.dump(dict(cases=cases, points=args.points, iters=args.iters, seed=args.seed,
                       dtype=args.dtype, gradients=grads,
                       quirks=quirks if authors else [], seconds=seconds,
                       total_seconds=total, errors=curves), f)
    if not args.no_plot:
        png = osp.join(args.out, 'iou_loss_simulation.png')
        plot(curves, cases, png, ", authors' gradients" if authors else '')
        print(f'curves saved to {png}')


if __name__ == '__main__':
    main()
