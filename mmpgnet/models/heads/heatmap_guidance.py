"""Heatmap guidance of PGS: auxiliary heads on intermediate CFFM levels (training only)."""
from typing import Dict, List, Optional, Sequence, Union

import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from mmpgnet.registry import register_model

TARGET_RESIZE_MODES = ('max', 'avg', 'bilinear')


def resize_heatmaps(heatmaps: Tensor, size: Sequence[int], mode: str = 'max') -> Tensor:
    """Resize ``(N, K, H, W)`` heatmaps to ``size`` (the stride of a guidance level).

    Args:
        heatmaps (Tensor): heatmaps of shape ``(N, K, H, W)``.
        size (Sequence[int]): target ``(H', W')``.
        mode (str): ``'max'`` (adaptive max pooling, keeps each peak at 1), ``'avg'`` (adaptive
            average pooling) or ``'bilinear'`` interpolation.

    Returns:
        Tensor: shape ``(N, K, H', W')``.
    """
    size = tuple(int(s) for s in size)
    if tuple(heatmaps.shape[-2:]) == size:
        return heatmaps
    if mode == 'max':
        return F.adaptive_max_pool2d(heatmaps, size)
    if mode == 'avg':
        return F.adaptive_avg_pool2d(heatmaps, size)
    if mode == 'bilinear':
        return F.interpolate(heatmaps, size=size, mode='bilinear', align_corners=False)
    raise ValueError(f'target_resize must be one of {TARGET_RESIZE_MODES}, got {mode!r}')


@register_model()
class HeatmapGuidance(BaseModule):
    """Auxiliary heatmap heads on intermediate fused levels, with deep -> shallow feedback.

    For each guidance level ``i`` a 1x1 conv predicts ``num_keypoints`` heatmaps at that level's
    stride. Two losses train them, each weighted and multiplied by the estimator's
    ``guidance_scale`` (set by :class:`~mmpgnet.engine.hooks.GuidanceScaleHook`):

    * guidance: the ground-truth heatmaps resized to the level's size (``target_resize``),
      weight ``weights[i]``, loss ``loss`` (keypoint-weighted MSE by default);
    * feedback: the deepest prediction of the network (the main head's heatmaps), *detached* and
      resized the same way, as a soft target, weight ``feedback_weight``. Detaching makes the
      feedback train the shallow heads only, never pull the main head towards them.

    The module runs in training only: the estimator never calls it in ``predict`` or ``tensor``
    mode, so inference costs nothing, and its ``guidance.*`` weights can be dropped from an
    inference checkpoint. :class:`~mmpgnet.models.PGNetPoseEstimator` builds it through the
    registry from its ``guidance_cfg`` (``type='HeatmapGuidance'`` by default), filling
    ``in_channels``, ``num_keypoints`` and ``loss`` (the main head's own ``loss_module``, unless
    ``guidance_cfg`` gives a loss config).

    Args:
        in_channels (int): channels of every guided level (CFFM's ``out_channels``).
        num_keypoints (int): heatmap channels (the main head's ``out_channels``).
        in_levels (Sequence[int]): indices of the guided levels.
        weights (Sequence[float]): guidance loss weight of each level.
        feedback_weight (float): weight of the deep -> shallow feedback loss of each level.
            Defaults to 0 (off).
        loss (nn.Module): loss ``loss(pred, target, keypoint_weights)``, e.g. the main head's
            ``loss_module`` (shared, not copied).
        target_resize (str): how targets reach a level's size, see :func:`resize_heatmaps`.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 num_keypoints: int,
                 in_levels: Sequence[int],
                 weights: Sequence[float],
                 loss: nn.Module,
                 feedback_weight: float = 0.0,
                 target_resize: str = 'max',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if len(in_levels) == 0:
            raise ValueError('guidance_cfg.in_levels is empty: name at least one level to guide')
        if len(weights) != len(in_levels):
            raise ValueError(f'guidance_cfg.weights has {len(weights)} entries but in_levels '
                             f'{list(in_levels)} has {len(in_levels)}: give one weight per level')
        if len(set(in_levels)) != len(in_levels):
            raise ValueError(f'guidance_cfg.in_levels {list(in_levels)} repeats a level')
        if target_resize not in TARGET_RESIZE_MODES:
            raise ValueError(f'guidance_cfg.target_resize must be one of {TARGET_RESIZE_MODES}, '
                             f'got {target_resize!r}')
        self.in_levels = [int(i) for i in in_levels]
        self.weights = [float(w) for w in weights]
        self.feedback_weight = float(feedback_weight)
        self.target_resize = target_resize
        self.loss_module = loss
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, num_keypoints, kernel_size=1) for _ in self.in_levels)

    def forward(self, levels: Sequence[Tensor]) -> List[Tensor]:
        """Predict heatmaps on the guided levels.

        Args:
            levels (Sequence[Tensor]): the guided levels, in the order of ``in_levels``.

        Returns:
            list[Tensor]: one ``(N, num_keypoints, H_i, W_i)`` prediction per level.
        """
        return [conv(x) for conv, x in zip(self.convs, levels)]

    def loss(self, preds: Sequence[Tensor], deep_pred: Tensor, gt_heatmaps: Tensor,
             keypoint_weights: Tensor, scale: Union[float, Tensor] = 1.0) -> Dict[str, Tensor]:
        """Guidance and feedback losses of every level.

        Args:
            preds (Sequence[Tensor]): the guidance predictions of :meth:`forward`.
            deep_pred (Tensor): the main head's heatmaps (detached here).
            gt_heatmaps (Tensor): ground truth ``(N, K, H, W)`` at the main head's stride.
            keypoint_weights (Tensor): ``(N, K)`` keypoint weights.
            scale (float | Tensor): multiplier of every weight (the guidance-weight schedule; a
                0-dim tensor on the predictions' device keeps the step free of host copies).

        Returns:
            dict[str, Tensor]: ``loss_guide_l{i}`` and, if ``feedback_weight > 0``,
            ``loss_fb_l{i}`` for each guided level ``i``.
        """
        losses: Dict[str, Tensor] = {}
        soft_target = deep_pred.detach()
        for level, weight, pred in zip(self.in_levels, self.weights, preds):
            size = pred.shape[-2:]
            target = resize_heatmaps(gt_heatmaps, size, self.target_resize)
            losses[f'loss_guide_l{level}'] = \
                self.loss_module(pred, target, keypoint_weights) * (weight * scale)
            if self.feedback_weight > 0:
                soft = resize_heatmaps(soft_target, size, self.target_resize)
                losses[f'loss_fb_l{level}'] = self.loss_module(pred, soft, keypoint_weights) * \
                    (self.feedback_weight * scale)
        return losses
