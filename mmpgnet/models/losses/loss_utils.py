# Copyright (c) mmpgnet contributors. All rights reserved.
"""Shared argument handling of the mmpgnet box losses (MMDetection semantics).

``weighted_loss`` is MMDetection's own decorator when mmdet imports. Where it does not (an
environment with only torch, MMEngine and mmcv-lite, e.g. a GPU box that runs the component
checks), :func:`_weighted_loss_fallback` gives the same semantics (tested against mmdet's).
"""
import functools
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor


def _weight_reduce_loss(loss: Tensor, weight: Optional[Tensor], reduction: str,
                        avg_factor: Optional[float]) -> Tensor:
    """MMDetection's ``weight_reduce_loss``: weight, then reduce or divide by ``avg_factor``."""
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        if reduction == 'mean':
            return loss.mean()
        return loss.sum() if reduction == 'sum' else loss
    if reduction == 'mean':
        # as mmdet: avoid a division by zero when avg_factor is 0
        return loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)
    if reduction != 'none':
        raise ValueError('avg_factor can not be used with reduction="sum"')
    return loss


def _weighted_loss_fallback(loss_func: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """MMDetection's ``weighted_loss`` decorator, for environments without mmdet.

    Args:
        loss_func (Callable): an element-wise loss ``loss_func(pred, target, **kwargs)``.

    Returns:
        Callable: ``f(pred, target, weight=None, reduction='mean', avg_factor=None, **kwargs)``.
    """

    @functools.wraps(loss_func)
    def wrapper(pred: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                reduction: str = 'mean', avg_factor: Optional[float] = None,
                **kwargs) -> Tensor:
        return _weight_reduce_loss(loss_func(pred, target, **kwargs), weight, reduction,
                                   avg_factor)

    return wrapper


try:  # MMDetection's decorator when it imports (it needs mmcv's compiled ops)
    from mmdet.models.losses.utils import weighted_loss
except ImportError:  # pragma: no cover - exercised by tests/test_lite_import.py
    weighted_loss = _weighted_loss_fallback

REDUCTIONS = ('none', 'mean', 'sum')


def check_reduction(reduction: Optional[str], name: str = 'reduction') -> None:
    """Raise ``ValueError`` unless ``reduction`` is ``'none'``, ``'mean'`` or ``'sum'``.

    Args:
        reduction (str, optional): the value to check (``None`` is allowed for overrides).
        name (str): argument name used in the message.
    """
    if reduction is not None and reduction not in REDUCTIONS:
        raise ValueError(f'{name} must be one of {REDUCTIONS}, got {reduction!r}')


def prepare_weight(pred: Tensor, weight: Optional[Tensor]) -> Optional[Tensor]:
    """Check ``weight`` and reduce an ``(n, 4)`` weight to ``(n,)`` as MMDetection does.

    Args:
        pred (Tensor): predictions, shape ``(n, 4)``.
        weight (Tensor, optional): per-box ``(n,)`` or per-coordinate ``(n, 4)`` weight.

    Returns:
        Tensor, optional: weight of shape ``(n,)`` (or ``None``).
    """
    if weight is None:
        return None
    if not isinstance(weight, Tensor):
        raise ValueError(f'weight must be a torch.Tensor, got {type(weight).__name__}')
    n = pred.size(0)
    if weight.shape == (n, 4):
        return weight.mean(-1)
    if weight.shape != (n, ):
        raise ValueError(f'weight must have shape ({n},) or ({n}, 4) to match pred, '
                         f'got {tuple(weight.shape)}')
    return weight


def masked(loss: Tensor, mask: Optional[Tensor]) -> Tensor:
    """``loss`` with the entries where ``mask`` is False set to 0 (no gradient reaches them).

    A ``torch.where``, not a product, so a non-finite loss of a masked pair does not leak in.

    Args:
        loss (Tensor): element-wise loss ``(n,)``.
        mask (Tensor, optional): ``(n,)`` bool, or None for no masking.

    Returns:
        Tensor: the masked loss.
    """
    if mask is None:
        return loss
    return torch.where(mask, loss, loss.new_zeros(()))


def zero_loss(pred: Tensor, weight: Optional[Tensor]) -> Tensor:
    """A zero loss that keeps ``pred`` in the graph (all-zero weight or no boxes).

    Args:
        pred (Tensor): predictions, shape ``(n, 4)``.
        weight (Tensor, optional): ``(n,)`` or ``(n, 4)`` weight.

    Returns:
        Tensor: scalar zero with a ``grad_fn`` when ``pred`` requires grad.
    """
    if weight is not None:
        if pred.dim() == weight.dim() + 1:
            weight = weight.unsqueeze(1)
        return (pred * weight).sum()
    return pred.sum() * 0.0


def resolve_reduction(default: str, override: Optional[str]) -> str:
    """Return ``override`` if given, else ``default``, after checking both.

    Args:
        default (str): the module's reduction.
        override (str, optional): ``reduction_override`` of a call.

    Returns:
        str: the reduction to apply.
    """
    check_reduction(override, 'reduction_override')
    return override if override else default


__all__: Tuple[str, ...] = ('REDUCTIONS', 'check_reduction', 'prepare_weight', 'masked',
                            'zero_loss', 'resolve_reduction', 'weighted_loss')
