# Copyright (c) mmpgnet contributors. All rights reserved.
"""Fused GIoU / CDIoU loss kernels with a hand-derived backward.

MMDetection builds its IoU-family losses from many small autograd operations (every slice, min,
max, clamp and product is a node that saves its inputs). Here each loss is one
:class:`torch.autograd.Function`: the forward works on ``(2, n)`` planes (x and y at once), saves a
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
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

#: Loss kinds understood by :func:`fused_iou_loss`.
LOSS_KINDS = ('giou', 'cdiou_center', 'cdiou_corner')

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_boxes(pred: Tensor, target: Tensor) -> None:
    """Validate a pair of aligned box tensors, raising ``ValueError`` that names the problem.

    Args:
        pred (Tensor): predicted boxes ``(x1, y1, x2, y2)``, shape ``(n, 4)``.
        target (Tensor): target boxes, same shape as ``pred``.

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
    for name, boxes in (('pred', pred), ('target', target)):
        if boxes.numel() and not bool(torch.isfinite(boxes).all()):
            bad = int((~torch.isfinite(boxes)).any(dim=-1).sum())
            raise ValueError(f'{name} contains non-finite values (nan or inf) in {bad} of '
                             f'{boxes.size(0)} boxes')


def _compute_dtype(pred: Tensor, target: Tensor) -> torch.dtype:
    """Common dtype of the computation: float32 at least (fp16/bf16 overflow and lose digits)."""
    dtype = torch.promote_types(pred.dtype, target.dtype)
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _tie_mask(a: Tensor, b: Tensor) -> Tensor:
    """``1`` where ``a < b``, ``0.5`` where equal, ``0`` elsewhere (the d min(a, b) / da)."""
    return torch.sign(b - a).add_(1.0).mul_(0.5)


class _FusedIoULoss(torch.autograd.Function):
    """Element-wise GIoU / CDIoU loss of aligned boxes with an analytic backward."""

    @staticmethod
    def forward(ctx, pred: Tensor, target: Tensor, kind: str, eps: float) -> Tensor:
        dtype = _compute_dtype(pred, target)
        ctx.dtypes = (pred.dtype, target.dtype)
        # (4, n) planes: rows x1, y1, x2, y2, each contiguous.
        p = pred.detach().to(dtype).t().contiguous()
        t = target.detach().to(dtype).t().contiguous()
        p_lt, p_rb, t_lt, t_rb = p[:2], p[2:], t[:2], t[2:]

        i_raw = torch.minimum(p_rb, t_rb).sub_(torch.maximum(p_lt, t_lt))
        i_wh = i_raw.clamp(min=0)
        inter = i_wh[0] * i_wh[1]
        p_wh = p_rb - p_lt
        t_wh = t_rb - t_lt
        union_raw = p_wh[0] * p_wh[1]
        union_raw.addcmul_(t_wh[0], t_wh[1]).sub_(inter)
        e_raw = torch.maximum(p_rb, t_rb).sub_(torch.minimum(p_lt, t_lt))
        e_wh = e_raw.clamp(min=0)

        if kind == 'giou':
            union = union_raw.clamp(min=eps)
            enclose = (e_wh[0] * e_wh[1]).clamp_(min=eps)
            iou = inter / union
            # 1 - IoU + (C - U) / C = 2 - IoU - U / C
            loss = (2.0 - iou).sub_(union / enclose)
            ctx.save_for_backward(p, t, i_raw, e_raw, inter, union_raw, union, enclose)
        else:
            union = union_raw.add_(eps)
            iou = inter / union
            c2 = e_wh.square().sum(0).add_(eps)
            if kind == 'cdiou_center':
                delta = (t_lt + t_rb).sub_(p_lt).sub_(p_rb)  # 2 x (centre_t - centre_p)
                rho2 = delta.square().sum(0).mul_(0.25)
            else:
                delta = p - t  # corner offsets, rows dx1, dy1, dx2, dy2
                rho2 = delta.square().sum(0).mul_(0.5)
            loss = (1.0 - iou).add_(rho2 / c2)
            ctx.save_for_backward(p, t, i_raw, e_raw, inter, union, iou, c2, rho2, delta)
        ctx.kind = kind
        ctx.eps = eps
        out_dtype = pred.dtype if pred.dtype not in _LOW_PRECISION else dtype
        return loss.to(out_dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        kind = ctx.kind
        saved = ctx.saved_tensors
        p, t, i_raw, e_raw = saved[:4]
        g = grad_out.to(p.dtype)
        p_lt, p_rb, t_lt, t_rb = p[:2], p[2:], t[:2], t[2:]
        i_wh = i_raw.clamp(min=0)
        e_wh = e_raw.clamp(min=0)

        if kind == 'giou':
            inter, union_raw, union, enclose = saved[4:]
            # L = 2 - I / U - U / C, U = max(U_raw, eps), C = max(ew * eh, eps)
            r = union.reciprocal()
            g_union = (inter * r * r - enclose.reciprocal())
            if ctx.eps > 0:
                g_union.mul_(_tie_mask(torch.full_like(union_raw, ctx.eps), union_raw))
            g_union.mul_(g)
            g_inter = (r * g).neg_().sub_(g_union)
            g_area = g_union
            g_enclose = union / enclose.square() * g
            if ctx.eps > 0:
                g_enclose.mul_(_tie_mask(torch.full_like(enclose, ctx.eps),
                                         e_wh[0] * e_wh[1]))
            g_ewh = e_wh.flip(0).mul_(g_enclose)  # dC/dew = eh, dC/deh = ew
            g_rho_p_lt = g_rho_p_rb = None
        else:
            inter, union, iou, c2, rho2, delta = saved[4:]
            r = union.reciprocal()
            # L = 1 - I / U + rho2 / c2, U = area_p + area_t - I + eps
            g_inter = (1.0 + iou).mul_(r).mul_(g).neg_()
            g_area = (iou * r).mul_(g)
            g_c2 = (rho2 / c2.square()).mul_(g).neg_()
            g_ewh = (2.0 * e_wh).mul_(g_c2)
            g_rho = g / c2
            if kind == 'cdiou_center':
                # rho2 = |delta|^2 / 4, delta = (t_lt + t_rb) - (p_lt + p_rb)
                g_rho_p_lt = delta.mul(-0.5).mul_(g_rho)
                g_rho_p_rb = g_rho_p_lt
            else:
                # rho2 = |delta|^2 / 2, delta = p - t
                g_delta = delta * g_rho
                g_rho_p_lt, g_rho_p_rb = g_delta[:2], g_delta[2:]
        g_ewh.mul_((e_raw > 0).to(g_ewh.dtype))
        g_iwh = i_wh.flip(0).mul_(g_inter).mul_((i_raw > 0).to(g_inter.dtype))

        # min(p_rb, t_rb) and max(p_lt, t_lt) build the intersection, max(p_rb, t_rb) and
        # min(p_lt, t_lt) the enclosing box: the same two tie masks route both.
        m_rb = _tie_mask(p_rb, t_rb)  # d min(p_rb, t_rb) / d p_rb
        m_lt = _tie_mask(t_lt, p_lt)  # d max(p_lt, t_lt) / d p_lt
        # p_rb receives g_iwh * m_rb + g_ewh * (1 - m_rb) = g_ewh + (g_iwh - g_ewh) * m_rb and
        # t_rb the rest, g_iwh - (g_iwh - g_ewh) * m_rb; likewise (negated) for the lt planes.
        diff = g_iwh - g_ewh
        route_rb = diff * m_rb
        route_lt = diff.mul_(m_lt)

        grad_pred = grad_target = None
        needs_p, needs_t = ctx.needs_input_grad[:2]
        if needs_p:
            p_wh = p_rb - p_lt
            g_pwh = p_wh.flip(0).mul_(g_area)
            gp = torch.empty_like(p)
            torch.add(g_ewh, route_rb, out=gp[2:]).add_(g_pwh)
            torch.add(g_ewh, route_lt, out=gp[:2]).add_(g_pwh).neg_()
            if g_rho_p_lt is not None:
                gp[:2].add_(g_rho_p_lt)
                gp[2:].add_(g_rho_p_rb)
            grad_pred = gp.t().to(ctx.dtypes[0])
        if needs_t:
            t_wh = t_rb - t_lt
            g_twh = t_wh.flip(0).mul_(g_area)
            gt = torch.empty_like(t)
            torch.sub(g_iwh, route_rb, out=gt[2:]).add_(g_twh)
            torch.sub(g_iwh, route_lt, out=gt[:2]).add_(g_twh).neg_()
            if g_rho_p_lt is not None:
                gt[:2].sub_(g_rho_p_lt)
                gt[2:].sub_(g_rho_p_rb)
            grad_target = gt.t().to(ctx.dtypes[1])
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
