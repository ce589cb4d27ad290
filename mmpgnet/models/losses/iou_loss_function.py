# Copyright (c) mmpgnet contributors. All rights reserved.
"""Fused GIoU / CDIoU loss kernels with a hand-derived backward.

MMDetection builds its IoU-family losses from many small autograd operations (every slice, min,
max, clamp and product is a node that saves its inputs). Here each loss is one
:class:`torch.autograd.Function`: the forward works on ``(n, 2)`` planes (x and y at once), saves a
handful of tensors, and the backward evaluates the analytic gradient directly. Sub-gradients at
kinks follow PyTorch's own conventions, so the result equals autograd through MMDetection's
formulation even on degenerate boxes: ``torch.minimum`` / ``torch.maximum`` split a tie half and
half, ``clamp(min=0)`` passes no gradient at exactly zero.

The three losses, for boxes ``(x1, y1, x2, y2)``:

* ``giou``: ``1 - IoU + (C - U) / C`` with ``U = max(area_p + area_t - I, eps)`` and
  ``C = max(enclosing area, eps)`` (exactly MMDetection's ``bbox_overlaps(mode='giou')``).
* ``cdiou`` with ``distance='center'``: ``1 - I / (U + eps) + rho^2 / (D^2 + eps)``, ``rho`` the
  distance of the box centres and ``D`` the diagonal of the enclosing box (MMDetection's
  ``diou_loss`` conventions).
* ``cdiou`` with ``distance='corner'``: as above with ``rho^2`` the mean of the squared distances
  of the top-left corners and of the bottom-right corners.
"""
import math
import os
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

#: Loss kinds understood by :func:`fused_iou_loss`.
LOSS_KINDS = ('giou', 'cdiou_center', 'cdiou_corner')

_LOW_PRECISION = (torch.float16, torch.bfloat16)

#: Environment variable that turns on value checks (non-finite boxes) wherever they are optional.
CHECK_INPUTS_ENV = 'MMPGNET_CHECK_INPUTS'


def value_checks_enabled(check: Optional[bool] = None) -> bool:
    """Whether to validate box *values* (a host read of the data, so off in training by default).

    Shape and dtype checks cost nothing and always run. Looking for NaN / Inf needs the values on
    the host: on a GPU that stalls the CPU until the queue drains, every call. It runs when asked
    for (``check=True``) or, with ``check=None``, when the environment variable
    ``MMPGNET_CHECK_INPUTS`` is set to ``1`` (a debug switch for a whole run).

    Args:
        check (bool, optional): an explicit choice; ``None`` defers to the environment.

    Returns:
        bool: whether to check values.
    """
    if check is not None:
        return bool(check)
    return _environment_asks_for_value_checks()


@torch.compiler.assume_constant_result
def _environment_asks_for_value_checks() -> bool:
    """Whether ``MMPGNET_CHECK_INPUTS`` asks for value checks.

    A constant to ``torch.compile`` (read once per trace): dynamo in torch 2.1 cannot trace
    ``os.environ``, and the switch is meant for a whole run anyway.
    """
    return os.environ.get(CHECK_INPUTS_ENV, '0').strip().lower() in ('1', 'true', 'yes', 'on')


def check_boxes(pred: Tensor, target: Tensor, check_finite: bool = False) -> None:
    """Validate a pair of aligned box tensors, raising ``ValueError`` that names the problem.

    Args:
        pred (Tensor): predicted boxes ``(x1, y1, x2, y2)``, shape ``(n, 4)``.
        target (Tensor): target boxes, same shape as ``pred``.
        check_finite (bool): also reject NaN / Inf coordinates. This reads the values on the
            host (a GPU sync), see :func:`value_checks_enabled`. Defaults to False.

    Raises:
        ValueError: a wrong type, shape or dtype, or a non-finite coordinate.
    """
    for name, boxes in (('pred', pred), ('target', target)):
        if not isinstance(boxes, Tensor):
            raise ValueError(f'{name} must be a torch.Tensor, got {type(boxes).__name__}')
        if boxes.dim() != 2 or boxes.size(-1) != 4:
            raise ValueError(f'{name} must have shape (n, 4), got {tuple(boxes.shape)}')
        if not boxes.is_floating_point():
            raise ValueError(f'{name} must be a floating point tensor, got {boxes.dtype}')
    if pred.shape != target.shape:
        raise ValueError(f'target must have the same shape as pred {tuple(pred.shape)}, '
                         f'got {tuple(target.shape)}')
    if not check_finite:
        return
    for name, boxes in (('pred', pred), ('target', target)):
        # One reduction instead of isfinite(): a NaN or Inf makes the sum non-finite. A finite
        # sum proves every entry finite; a non-finite one is confirmed entry by entry (it may be
        # an overflow of finite values).
        if boxes.numel() and not math.isfinite(float(boxes.detach().sum(dtype=torch.float64))):
            bad = int((~torch.isfinite(boxes)).any(dim=-1).sum())
            if bad:
                raise ValueError(f'{name} contains non-finite values (nan or inf) in {bad} of '
                                 f'{boxes.size(0)} boxes')


def _compute_dtype(pred: Tensor, target: Tensor) -> torch.dtype:
    """Common dtype of the computation: float32 at least (fp16/bf16 overflow and lose digits)."""
    dtype = torch.promote_types(pred.dtype, target.dtype)
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _step(x: Tensor, threshold: float) -> Tensor:
    """``1`` where ``x > threshold``, ``0.5`` where equal, ``0`` below: d max(x, threshold) / dx."""
    return torch.sign(x - threshold).add_(1.0).mul_(0.5)


class _FusedIoULoss(torch.autograd.Function):
    """Element-wise GIoU / CDIoU loss of aligned boxes with an analytic backward.

    Notation: ``p``, ``t`` are the ``(n, 4)`` boxes, ``lo = min(p, t)``, ``hi = max(p, t)``
    (element-wise), the intersection is ``i_wh = clamp(lo[:, 2:] - hi[:, :2], 0)`` and the
    enclosing box ``e_wh = clamp(hi[:, 2:] - lo[:, :2], 0)``. With ``s = sign(t - p)``, the
    gradient that ``i_wh`` (``g_i``) and ``e_wh`` (``g_e``) send to the corners is, per axis,
    ``p_rb: (g_i + g_e) / 2 + s_rb (g_i - g_e) / 2``,
    ``p_lt: -(g_i + g_e) / 2 + s_lt (g_i - g_e) / 2``,
    ``t_rb: (g_i + g_e) / 2 - s_rb (g_i - g_e) / 2``,
    ``t_lt: -(g_i + g_e) / 2 - s_lt (g_i - g_e) / 2``
    (``s = 0`` on a tie gives PyTorch's half-and-half split of ``minimum`` / ``maximum``).
    """

    @staticmethod
    def forward(ctx, pred: Tensor, target: Tensor, kind: str, eps: float) -> Tensor:
        dtype = _compute_dtype(pred, target)
        ctx.dtypes = (pred.dtype, target.dtype)
        ctx.kind = kind
        ctx.eps = eps
        p = pred.detach().to(dtype)
        t = target.detach().to(dtype)
        lo = torch.minimum(p, t)
        hi = torch.maximum(p, t)
        i_wh = torch.sub(lo[:, 2:], hi[:, :2]).clamp_(min=0)
        e_wh = torch.sub(hi[:, 2:], lo[:, :2]).clamp_(min=0)
        del lo, hi
        inter = i_wh[:, 0] * i_wh[:, 1]
        p_wh = p[:, 2:] - p[:, :2]
        t_wh = t[:, 2:] - t[:, :2]
        union = p_wh[:, 0] * p_wh[:, 1]
        union.addcmul_(t_wh[:, 0], t_wh[:, 1]).sub_(inter)

        if kind == 'giou':
            union_raw = union
            union = union_raw.clamp(min=eps)
            enclose_raw = e_wh[:, 0] * e_wh[:, 1]
            enclose = enclose_raw.clamp(min=eps)
            # 1 - IoU + (C - U) / C = 2 - IoU - U / C
            loss = torch.div(inter, union).neg_().add_(2.0).sub_(union / enclose)
            ctx.save_for_backward(p, t, i_wh, e_wh, p_wh, t_wh, inter, union_raw, union,
                                  enclose_raw, enclose)
        else:
            union.add_(eps)
            iou = inter / union
            c2 = torch.mul(e_wh[:, 0], e_wh[:, 0]).addcmul_(e_wh[:, 1], e_wh[:, 1]).add_(eps)
            if kind == 'cdiou_center':
                # 2 x (centre_t - centre_p); rho^2 = |delta|^2 / 4
                delta = torch.add(t[:, :2], t[:, 2:]).sub_(p[:, :2]).sub_(p[:, 2:])
                ctx.scale = 0.25
            else:
                # corner offsets (dx1, dy1, dx2, dy2); rho^2 = |delta|^2 / 2
                delta = p - t
                ctx.scale = 0.5
            rho2 = delta.square().sum(-1)
            loss = torch.rsub(iou, 1.0).addcdiv_(rho2, c2, value=ctx.scale)
            ctx.save_for_backward(p, t, i_wh, e_wh, p_wh, t_wh, union, iou, c2, rho2, delta)
        out_dtype = pred.dtype if pred.dtype not in _LOW_PRECISION else dtype
        return loss.to(out_dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        kind = ctx.kind
        saved = ctx.saved_tensors
        p, t, i_wh, e_wh, p_wh, t_wh = saved[:6]
        g = grad_out.to(p.dtype)
        # pairs whose loss gets no gradient (zero weight) send none back, even where the pair
        # is degenerate and a factor below is not finite (0 * inf would be NaN)
        no_grad = (g == 0)[:, None]
        g_rho = None
        # Per-pair factors (shape (n,)); the ones for i_wh and e_wh are halved (see class doc).
        if kind == 'giou':
            inter, union_raw, union, enclose_raw, enclose = saved[6:]
            # L = 2 - I / U - U / C, U = max(U_raw, eps), C = max(C_raw, eps)
            g_u = g / union
            g_c = g / enclose
            g_area = torch.mul(inter, g_u).div_(union).sub_(g_c).mul_(_step(union_raw, ctx.eps))
            g_inter = torch.add(g_u, g_area).mul_(-0.5)
            g_enc = torch.mul(union, g_c).div_(enclose).mul_(_step(enclose_raw, ctx.eps))
            # dC/dew = eh, dC/deh = ew; clamp(min=0) passes no gradient at e_wh == 0
            g_ewh = e_wh.flip(-1).mul_(g_enc.mul_(0.5)[:, None]).mul_(torch.sign(e_wh))
        else:
            union, iou, c2, rho2, delta = saved[6:]
            scale = ctx.scale
            # L = 1 - I / U + scale * |delta|^2 / c2, U = area_p + area_t - I + eps
            g_u = g / union
            g_area = iou * g_u
            g_inter = torch.add(g_u, g_area).mul_(-0.5)
            g_r = g / c2
            # dL/dc2 * dc2/de_wh = -scale * rho2 / c2^2 * 2 e_wh (zero where e_wh == 0)
            g_ewh = e_wh * torch.mul(rho2, g_r).div_(c2).mul_(-scale)[:, None]
            g_r.mul_(2.0 * scale)
            if kind == 'cdiou_center':
                g_rho = delta * g_r.neg_()[:, None]  # for p_lt and p_rb alike
            else:
                g_rho = delta * g_r[:, None]  # (n, 4), for p; minus it for t
        g_iwh = i_wh.flip(-1).mul_(g_inter[:, None]).mul_(torch.sign(i_wh))
        half_sum = g_iwh + g_ewh
        half_diff = g_iwh.sub_(g_ewh)
        sign = torch.sign(t - p)

        grad_pred = grad_target = None
        needs_p, needs_t = ctx.needs_input_grad[:2]
        for needed, wh, side in ((needs_p, p_wh, 1.0), (needs_t, t_wh, -1.0)):
            if not needed:
                continue
            base = wh.flip(-1).mul_(g_area[:, None]).add_(half_sum)  # d(area)/d(wh) + (g_i+g_e)/2
            if g_rho is None:
                grad_lt, grad_rb = -base, base
            elif kind == 'cdiou_center':
                grad_lt, grad_rb = g_rho * side - base, g_rho * side + base
            else:
                grad_lt, grad_rb = g_rho[:, :2] * side - base, g_rho[:, 2:] * side + base
            grad_lt = grad_lt.addcmul_(half_diff, sign[:, :2], value=side)
            grad_rb = grad_rb.addcmul_(half_diff, sign[:, 2:], value=side)
            # one concatenation instead of writes into column slices (out= views, which
            # torch.compile cannot trace)
            grad = torch.cat([grad_lt, grad_rb], dim=1).masked_fill_(no_grad, 0.0)
            if side > 0:
                grad_pred = grad.to(ctx.dtypes[0])
            else:
                grad_target = grad.to(ctx.dtypes[1])
        return grad_pred, grad_target, None, None


def fused_iou_loss(pred: Tensor, target: Tensor, kind: str, eps: float) -> Tensor:
    """Element-wise GIoU or CDIoU loss of aligned boxes (no reduction, no validation).

    Args:
        pred (Tensor): predicted boxes ``(x1, y1, x2, y2)``, shape ``(n, 4)``.
        target (Tensor): target boxes, shape ``(n, 4)``.
        kind (str): one of :data:`LOSS_KINDS`.
        eps (float): the stabiliser described in the module docstring.

    Returns:
        Tensor: loss of each pair, shape ``(n,)``; float32 for fp16/bf16 input.
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f'kind must be one of {LOSS_KINDS}, got {kind!r}')
    return _FusedIoULoss.apply(pred, target, kind, float(eps))
