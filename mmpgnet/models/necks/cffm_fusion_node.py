"""The fusion node of :class:`~mmpgnet.models.necks.CFFM`."""
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, DepthwiseSeparableConvModule
from mmengine.model import BaseModule
from torch import Tensor


class CFFMFusionNode(BaseModule):
    """Weighted fusion of same-shaped feature maps, then a separable 3x3 conv and a 1x1 conv.

    The node computes ``sum_i w_i * x_i`` with learnable weights made non-negative (ReLU) and
    normalised (divided by their sum plus ``eps``), the "fast normalised fusion" of EfficientDet's
    BiFPN: as stable as a softmax and cheaper. The sum then goes through a depthwise-separable 3x3
    conv and a 1x1 conv, the "depthwise and 1x1 convolutions" of the PGNet paper. The depthwise
    3x3 has no norm or activation of its own (norm and activation follow the pointwise conv), as
    in Xception and BiFPN: Xception found that better than a non-linearity between the two, and
    it saves a memory-bound norm + activation per node, which is what CPU latency pays for. Its inputs must already be resized to one
    shape; :class:`CFFM` does the resizing.

    Args:
        num_inputs (int): Number of feature maps fused by the node (>= 1).
        channels (int): Channels of every input and of the output.
        conv_cfg (dict, optional): Config of the conv layers. Defaults to None (``Conv2d``).
        norm_cfg (dict, optional): Config of the norm layers (e.g. ``dict(type='GN',
            num_groups=32)``, ``dict(type='SyncBN')``, ``dict(type='CBN')``). Defaults to
            ``dict(type='BN')``.
        act_cfg (dict, optional): Config of the activations. Defaults to ``dict(type='ReLU')``.
        eps (float): Added to the weight sum before normalising. Defaults to 1e-4.
        init_cfg (dict or list[dict], optional): Initialisation config. Defaults to None (mmcv's
            ``ConvModule`` initialises its own layers; fusion weights start at 1, a plain mean).

    Example:
        >>> import torch
        >>> node = CFFMFusionNode(num_inputs=2, channels=8).eval()
        >>> out = node([torch.rand(1, 8, 16, 12), torch.rand(1, 8, 16, 12)])
        >>> out.shape
        torch.Size([1, 8, 16, 12])
        >>> node.fusion_weights()
        tensor([0.5000, 0.5000], grad_fn=<DivBackward0>)
    """

    def __init__(self,
                 num_inputs: int,
                 channels: int,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 act_cfg: Optional[dict] = dict(type='ReLU'),
                 eps: float = 1e-4,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_inputs < 1:
            raise ValueError(f'CFFMFusionNode needs at least 1 input, got num_inputs={num_inputs}')
        self.num_inputs = num_inputs
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_inputs, dtype=torch.float32))
        self.sep_conv = DepthwiseSeparableConvModule(
            channels,
            channels,
            3,
            padding=1,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
            dw_norm_cfg=None,
            dw_act_cfg=None)
        self.pw_conv = ConvModule(
            channels, channels, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)

    def fusion_weights(self) -> Tensor:
        """Return the non-negative, normalised fusion weights.

        Returns:
            Tensor: shape ``(num_inputs,)``, every entry >= 0, summing to 1 (up to ``eps``).
        """
        weight = F.relu(self.weight)
        return weight / (weight.sum() + self.eps)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """Fuse the inputs.

        Args:
            inputs (Sequence[Tensor]): ``num_inputs`` maps, each of shape ``(N, C, H, W)``.

        Returns:
            Tensor: the fused map, shape ``(N, C, H, W)``.
        """
        if len(inputs) != self.num_inputs:
            raise ValueError(
                f'CFFMFusionNode expects {self.num_inputs} inputs, got {len(inputs)}')
        weights = self.fusion_weights()
        fused = inputs[0] * weights[0]
        for i in range(1, self.num_inputs):  # one fused multiply-add pass per further input
            fused = torch.addcmul(fused, inputs[i], weights[i])
        return self.pw_conv(self.sep_conv(fused))
