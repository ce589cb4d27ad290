# Copyright (c) mmpgnet contributors. All rights reserved.
"""GIoU loss of PGNet's main (backbone) branch: ``mmpgnet.GIoULoss``."""
from typing import Callable, Optional

from torch import Tensor

from mmpgnet.registry import register_model
from .box_loss_module import BoxLossModule
from .iou_loss_function import check_boxes, fused_iou_loss, value_checks_enabled
from .loss_utils import masked as _masked
from .loss_utils import weighted_loss


@weighted_loss
def giou_loss(pred: Tensor,
              target: Tensor,
              eps: float = 1e-7,
              mask: Optional[Tensor] = None,
              check_finite: Optional[bool] = None) -> Tensor:
    r"""GIoU loss `(Rezatofighi et al., CVPR 2019) <https://arxiv.org/abs/1902.09630>`_.

    ``L = 1 - IoU + |C \ (B ∪ Bgt)| / |C|``, C the smallest box enclosing both. Union and
    enclosing area are clamped at ``eps`` exactly as in MMDetection's
    ``bbox_overlaps(mode='giou')``, so the values equal ``mmdet.models.losses.giou_loss``; the
    computation is one fused autograd function (see :mod:`.iou_loss_function`). Decorated with
    MMDetection's ``weighted_loss``: it also takes ``weight``, ``reduction`` and ``avg_factor``.

    Args:
        pred (Tensor): predicted boxes ``(x1, y1, x2, y2)``, shape ``(n, 4)``.
        target (Tensor): target boxes, shape ``(n, 4)``.
        eps (float): lower bound of the union and of the enclosing area. Defaults to 1e-7.
        mask (Tensor, optional): ``(n,)`` bool; pairs where it is False get loss 0 and no
            gradient (whatever their boxes). Defaults to None.
        check_finite (bool, optional): reject NaN / Inf coordinates (reads the values on the
            host); None follows ``MMPGNET_CHECK_INPUTS`` (see
            :func:`~.iou_loss_function.value_checks_enabled`). Defaults to None.

    Returns:
        Tensor: loss of each pair, shape ``(n,)`` (float32 for fp16/bf16 input).

    Raises:
        ValueError: wrong shapes, or non-finite coordinates when checked.
    """
    check_boxes(pred, target, check_finite=value_checks_enabled(check_finite))
    return _masked(fused_iou_loss(pred, target, 'giou', eps), mask)


@register_model()
class GIoULoss(BoxLossModule):
    """GIoU loss module with MMDetection's loss interface.

    Registered names (see :mod:`mmpgnet.registry`): ``type='mmpgnet.GIoULoss'`` from any scope;
    bare ``type='GIoULoss'`` reaches this class in MMPose configs, while in MMDetection configs the
    bare name stays MMDetection's own ``GIoULoss`` (mmpgnet never replaces it).

    Behaviour equals ``mmdet.models.losses.GIoULoss``: a ``weight`` of shape ``(n,)`` or ``(n, 4)``
    (averaged over the 4 coordinates), ``avg_factor`` for the mean, ``reduction_override``; pairs
    with a zero weight add 0 and send no gradient (computed on the device, without mmdet's
    host-side early exit: see :class:`~.box_loss_module.BoxLossModule`). In addition, an empty
    input gives a zero loss (not NaN) that still backpropagates, wrong shapes raise
    ``ValueError`` (non-finite values too, with ``check_inputs``), and it may be called as
    ``loss(pred, target)`` (MMPose's ``YOLOXPoseHead`` and ``RTMOHead`` do so with
    ``reduction='sum'``).

    Args:
        eps (float): lower bound of the union and of the enclosing area. Defaults to 1e-6.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Defaults to ``'mean'``.
        loss_weight (float): factor on the loss. Defaults to 1.0.
        check_inputs (bool, optional): reject non-finite coordinates (a host read per call, for
            debugging); None follows ``MMPGNET_CHECK_INPUTS``. Defaults to None.
    """

    def loss_function(self) -> Callable[..., Tensor]:
        """:func:`giou_loss`."""
        return giou_loss
