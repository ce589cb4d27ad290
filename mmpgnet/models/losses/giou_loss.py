# Copyright (c) mmpgnet contributors. All rights reserved.
"""GIoU loss of PGNet's main (backbone) branch: ``mmpgnet.GIoULoss``."""
from typing import Callable

from mmdet.models.losses.utils import weighted_loss
from torch import Tensor

from mmpgnet.registry import register_model
from .box_loss_module import BoxLossModule
from .iou_loss_function import check_boxes, fused_iou_loss


@weighted_loss
def giou_loss(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
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

    Returns:
        Tensor: loss of each pair, shape ``(n,)`` (float32 for fp16/bf16 input).

    Raises:
        ValueError: wrong shapes or non-finite coordinates.
    """
    check_boxes(pred, target)
    return fused_iou_loss(pred, target, 'giou', eps)


@register_model()
class GIoULoss(BoxLossModule):
    """GIoU loss module with MMDetection's loss interface.

    Registered names (see :mod:`mmpgnet.registry`): ``type='mmpgnet.GIoULoss'`` from any scope;
    bare ``type='GIoULoss'`` reaches this class in MMPose configs, while in MMDetection configs the
    bare name stays MMDetection's own ``GIoULoss`` (mmpgnet never replaces it).

    Behaviour equals ``mmdet.models.losses.GIoULoss``: a ``weight`` of shape ``(n,)`` or ``(n, 4)``
    (averaged over the 4 coordinates), ``avg_factor`` for the mean, ``reduction_override``, and a
    zero loss (keeping the graph) when every weight is zero. In addition, an empty input gives a
    zero loss (not NaN) that still backpropagates, wrong shapes or non-finite values raise
    ``ValueError``, and it may be called as ``loss(pred, target)`` (MMPose's ``YOLOXPoseHead`` and
    ``RTMOHead`` do so with ``reduction='sum'``).

    Args:
        eps (float): lower bound of the union and of the enclosing area. Defaults to 1e-6.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Defaults to ``'mean'``.
        loss_weight (float): factor on the loss. Defaults to 1.0.
    """

    def loss_function(self) -> Callable[..., Tensor]:
        """:func:`giou_loss`."""
        return giou_loss
