# Copyright (c) mmpgnet contributors. All rights reserved.
"""Shared argument handling of the mmpgnet box losses (MMDetection semantics)."""
from typing import Optional, Tuple

import torch
from torch import Tensor

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


def has_no_positive(weight: Optional[Tensor]) -> bool:
    """Whether ``weight`` is given and has no positive entry (MMDetection's early exit)."""
    return weight is not None and not bool(torch.any(weight > 0))


__all__: Tuple[str, ...] = ('REDUCTIONS', 'check_reduction', 'prepare_weight', 'zero_loss',
                            'resolve_reduction', 'has_no_positive')
