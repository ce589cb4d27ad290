"""The fusion node of :class:`~mmpgnet.models.necks.CFFM`."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, DepthwiseSeparableConvModule
from mmengine.model import BaseModule
from torch import Tensor

from mmpgnet.utils.torch_compat import is_compiling


def _is_plain_linear_conv(module: ConvModule) -> bool:
    """Whether ``module`` is a bare zero-padded ``nn.Conv2d`` without hooks, norm or activation.

    Only then can a scalar factor of its input be moved onto its kernel (``conv(s * x) =
    conv_{s * w}(x)`` for a linear conv); anything else (a custom ``conv_cfg``, explicit or
    non-zero padding, spectral norm, hooks) keeps the module's own forward.
    """
    conv = getattr(module, 'conv', None)
    return (isinstance(conv, nn.Conv2d) and conv.padding_mode == 'zeros' and not module.with_norm
            and not module.with_activation and not module.with_explicit_padding
            and not getattr(module, 'with_spectral_norm', False)
            and not (module._forward_hooks or module._forward_pre_hooks or conv._forward_hooks
                     or conv._forward_pre_hooks))


def _lerp(start: Tensor, end: Tensor, weight: Tensor, inplace: bool) -> Tensor:
    """``start + weight * (end - start)`` in one pass, in ``start``'s memory if ``inplace``.

    Args:
        start (Tensor): map the result starts from (overwritten when ``inplace``).
        end (Tensor): map of the same shape.
        weight (Tensor): 0-dim weight of ``end``.
        inplace (bool): write the result into ``start``.

    Returns:
        Tensor: the interpolated map, of the promoted dtype of ``start`` and ``end``.
    """
    dtype = torch.promote_types(start.dtype, end.dtype)
    start, end, weight = start.to(dtype), end.to(dtype), weight.to(dtype)
    if inplace:
        return start.lerp_(end, weight)
    return torch.lerp(start, end, weight)


def _is_conv_gn_module(module: ConvModule) -> bool:
    """Whether ``module`` is conv -> GroupNorm (-> act) with nothing else in its forward."""
    return (isinstance(module, ConvModule) and module.with_norm
            and isinstance(module.norm, nn.GroupNorm)
            and tuple(module.order) == ('conv', 'norm', 'act') and not module.with_explicit_padding
            and not (module._forward_hooks or module._forward_pre_hooks))


def _group_average(values: Tensor, num_groups: int) -> Tensor:
    """Average of ``(N, C)`` per-channel values over each channel's group, per channel.

    A reduction over the group broadcast to every channel of it, so that the result is
    materialised per channel (a per-group buffer would be gathered per element, unvectorised).
    """
    batch, channels = values.shape
    size = channels // num_groups
    grouped = values.reshape(batch, num_groups, 1, size)
    return grouped.expand(batch, num_groups, size, size).mean(-1).reshape(batch, channels)


def group_norm_by_channel_moments(x: Tensor, norm: nn.GroupNorm) -> Tensor:
    """``norm(x)`` computed from per-channel moments, a form that inductor vectorises.

    Inductor lowers ``F.group_norm`` on a channels-last map to one Welford reduction per group
    over 8-channel slices (masked vector loads at a stride of ``C``, each cache line read once
    per group), which on a CPU makes a stride-4 GroupNorm several times slower than eager's.
    Here the reductions run per channel (full vectors along the contiguous channels), from
    values shifted by one sample of each channel (so that ``E[d^2] - E[d]^2`` does not cancel),
    and the groups are combined exactly (mean of the channel means, mean of the channel
    variances plus the spread of the channel means) into per-channel values, so that the
    final scale and shift are per channel and the normalisation pass is a vectorised
    multiply-add that inductor fuses with the activation.

    Args:
        x (Tensor): map of shape ``(N, C, H, W)``, float32.
        norm (nn.GroupNorm): the norm layer (its groups, eps and affine parameters).

    Returns:
        Tensor: ``norm(x)`` up to float rounding.
    """
    batch, channels = x.shape[:2]
    pivot = x[:, :, :1, :1].detach()  # the result does not depend on it
    shifted = x - pivot
    # rows first, then the row means: a reduction that inductor parallelises over the rows
    m1 = shifted.mean(3).mean(2)
    m2 = shifted.square().mean(3).mean(2)
    mean_c = m1 + pivot.reshape(batch, channels)
    var_c = m2 - m1.square()
    mean = _group_average(mean_c, norm.num_groups)
    var = _group_average(var_c + (mean_c - mean).square(), norm.num_groups).clamp_min(0)
    scale = (var + norm.eps).rsqrt()
    if norm.affine:
        scale = scale * norm.weight
        shift = norm.bias - mean * scale
    else:
        shift = -mean * scale
    return x * scale.reshape(batch, channels, 1, 1) + shift.reshape(batch, channels, 1, 1)


def conv_module_forward(module: ConvModule, x: Tensor) -> Tensor:
    """``module(x)``, with its GroupNorm in :func:`group_norm_by_channel_moments` under compile.

    Eager runs keep ATen's GroupNorm kernel (fast in eager); only a graph traced by
    ``torch.compile`` takes the per-channel form, for float32 maps (under autocast the norm's
    own forward decides the dtypes).

    Args:
        module (ConvModule): a conv module.
        x (Tensor): its input.

    Returns:
        Tensor: ``module(x)`` up to float rounding.
    """
    if not (is_compiling() and _is_conv_gn_module(module)):
        return module(x)
    x = module.conv(x)
    if x.dtype == torch.float32:
        x = group_norm_by_channel_moments(x, module.norm)
    else:
        x = module.norm(x)
    return module.activate(x) if module.with_activation else x


class CFFMFusionNode(BaseModule):
    """Weighted fusion of same-shaped feature maps, then a separable 3x3 conv and a 1x1 conv.

    The node computes ``sum_i w_i * x_i`` with learnable weights made non-negative (ReLU) and
    normalised (divided by their sum plus ``eps``), the "fast normalised fusion" of EfficientDet's
    BiFPN: as stable as a softmax and cheaper. The sum then goes through a depthwise-separable 3x3
    conv and a 1x1 conv, the "depthwise and 1x1 convolutions" of the PGNet paper. The depthwise
    3x3 has no norm or activation of its own (norm and activation follow the pointwise conv), as
    in Xception and BiFPN: Xception found that better than a non-linearity between the two, and
    it saves a memory-bound norm + activation per node, which is what CPU latency pays for. Its
    inputs must already be resized to one shape; :class:`CFFM` does the resizing.

    How the sum is computed (same values, fewer passes over memory): with ``r = relu(weight)``
    and ``T = sum(r)``, ``sum_i w_i x_i = T / (T + eps) * sum_i (r_i / T) x_i``. The convex
    combination ``sum_i (r_i / T) x_i`` is a chain of ``torch.lerp`` (one pass per input after
    the first, no separate multiply), and the factor ``T / (T + eps)`` is moved onto the
    depthwise kernel (the depthwise conv is linear), so a 2-input node reads its inputs once.
    Without autograd (``torch.no_grad`` / ``inference_mode``), the chain runs in place in the
    inputs named by ``free`` (temporaries such as the resized maps CFFM makes), so it allocates
    no new map either: on a CPU, allocating a large map (page faults) costs more than a pass
    over it.

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

    def _chain_weights(self, order: List[int]) -> Tuple[Tensor, Tensor]:
        """Weights of the ``lerp`` chain over the inputs taken in ``order``, and the scale.

        Step ``k`` computes ``z_k = lerp(z_{k-1}, x_{order[k]}, r_k / (r_0 + ... + r_k))``
        (``r`` in ``order``), so that ``z`` is the convex combination ``sum_i (r_i / T) x_i``;
        the scale ``T / (T + eps)`` turns it into the normalised weighted sum. Partial sums are
        clamped away from 0 so that zero weights give finite steps (and a zero sum a zero scale).

        Returns:
            tuple[Tensor, Tensor]: the ``num_inputs`` step weights (the first unused) and the
            0-dim scale.
        """
        raw = F.relu(self.weight)
        if order != list(range(self.num_inputs)):
            # integer indices: a Python list as an index is copied to the GPU (a blocking copy)
            raw = torch.stack([raw[i] for i in order])
        partial = raw.cumsum(0)
        steps = raw / partial.clamp_min(torch.finfo(partial.dtype).tiny)
        total = partial[-1]
        return steps, total / (total + self.eps)

    def weighted_mean(self,
                      inputs: Sequence[Tensor],
                      free: Sequence[int] = ()) -> Tuple[Tensor, Tensor, bool]:
        """Convex combination of the inputs and the scale that makes it the weighted sum.

        ``scale * mean`` equals ``sum_i fusion_weights()[i] * inputs[i]``.

        Args:
            inputs (Sequence[Tensor]): ``num_inputs`` maps of one shape.
            free (Sequence[int]): indices of inputs that are temporaries which may be
                overwritten when autograd is off.

        Returns:
            tuple[Tensor, Tensor, bool]: ``mean``, ``scale`` (0-dim) and whether ``mean`` is a
            temporary of the node's own (which may be overwritten).
        """
        can_overwrite = not torch.is_grad_enabled()
        first = free[0] if len(free) > 0 else 0
        order = [first] + [i for i in range(self.num_inputs) if i != first]
        steps, scale = self._chain_weights(order)
        mean = inputs[first]
        owned = can_overwrite and len(free) > 0
        for k in range(1, self.num_inputs):
            mean = _lerp(mean, inputs[order[k]], steps[k], inplace=owned)
            owned = can_overwrite  # a lerp result is the node's own temporary
        return mean, scale, owned

    def _depthwise(self, x: Tensor, scale: Tensor, owned: bool) -> Tensor:
        """Depthwise conv of ``scale * x``, the scale folded into the kernel where it can be."""
        depthwise = self.sep_conv.depthwise_conv
        if _is_plain_linear_conv(depthwise):
            conv = depthwise.conv
            weight = conv.weight * scale.to(conv.weight.dtype)
            return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation,
                            conv.groups)
        x = x.mul_(scale) if owned else x * scale
        return depthwise(x)

    def forward(self, inputs: Sequence[Tensor], free: Sequence[int] = ()) -> Tensor:
        """Fuse the inputs.

        Args:
            inputs (Sequence[Tensor]): ``num_inputs`` maps, each of shape ``(N, C, H, W)``.
            free (Sequence[int]): indices of inputs that are temporaries of the caller, which
                the node may overwrite when autograd is off (no copy is then made). Defaults to
                ``()``: the inputs are left unchanged.

        Returns:
            Tensor: the fused map, shape ``(N, C, H, W)``.
        """
        if len(inputs) != self.num_inputs:
            raise ValueError(f'CFFMFusionNode expects {self.num_inputs} inputs, got {len(inputs)}')
        mean, scale, owned = self.weighted_mean(inputs, free)
        x = self._depthwise(mean, scale, owned)
        x = conv_module_forward(self.sep_conv.pointwise_conv, x)
        return conv_module_forward(self.pw_conv, x)
