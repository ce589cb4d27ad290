"""Closed-form statistic gradients of a conv's output, and CBN's Taylor compensation.

For a conv ``y_c = W_c . P + b_c`` (``P`` an input patch of ``D = C_in / groups * kh * kw``
values) the per-channel mean ``mu_c = E[y_c]`` and second moment ``nu_c = E[y_c^2]`` have, with
respect to the channel's own filter ``W_c``, the gradients::

    d mu_c / d W_c = E[P]          (the mean input patch, the same for every filter of a group)
    d nu_c / d W_c = 2 E[y_c P]    (a weight gradient of the conv with ``grad_output = y``)

:func:`statistic_grads` computes both for one batch: the first from sums of the input
(:func:`mean_patch_sum`, no convolution), the second with one weight-gradient convolution,
optionally on a sampling grid of the output positions (:func:`second_moment_grad_sum`).
:func:`compensate_window` uses them to move statistics recorded with older conv weights to the
current ones by a first-order Taylor step. These are pure functions of tensors and conv
hyper-parameters; the layer :class:`~mmpgnet.models.norms.CBN` holds the state.
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def values_per_channel(x: Tensor) -> int:
    """Number of values each channel of ``x`` (N, C, H, W) has: ``N * H * W``.

    Args:
        x (Tensor): a 4D tensor.

    Returns:
        int: ``N * H * W`` (a shape product, no tensor value is read).
    """
    return x.shape[0] * x.shape[2] * x.shape[3]


def dot(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum(-1)``: a dot product that autocast leaves in the inputs' precision.

    Args:
        a (Tensor): (..., D).
        b (Tensor): (..., D), broadcastable with ``a``.

    Returns:
        Tensor: (...) dot products.
    """
    return (a * b).sum(-1)


def dot_mean_patch(mean_patch: Tensor, weight: Tensor) -> Tensor:
    """Per channel ``c``, ``mean_patch[:, group(c)] . W_c``: (K, G, D) and (C, D) -> (K, C).

    Element-wise products and sums, not ``bmm``: autocast would run a ``bmm`` in half precision,
    and the compensation subtracts two such dot products of similar size.

    Args:
        mean_patch (Tensor): ``d mu / d W`` per conv group, (K, G, D).
        weight (Tensor): the conv weight as (C, D).

    Returns:
        Tensor: (K, C).
    """
    k, groups, dim = mean_patch.shape
    channels = weight.shape[0]
    w = weight.view(1, groups, channels // groups, dim)
    return (w * mean_patch[:, :, None, :]).sum(-1).reshape(k, channels)


def compensate_window(mu: Tensor, nu: Tensor, mean_patch: Tensor, dnu_dw: Tensor,
                      mean_patch_dot_w: Tensor, dnu_dot_w: Tensor, bias_then: Tensor,
                      weight: Tensor, bias: Tensor) -> Tuple[Tensor, Tensor]:
    """Move past statistics to the current conv weight and bias (first-order Taylor step).

    With ``W_old``, ``b_old`` the conv's weight and bias when an entry was recorded::

        mu(W, b) ~ mu + dmu/dW . W - dmu/dW . W_old + (b - b_old)
        nu(W, b) ~ nu + dnu/dW . W - dnu/dW . W_old + 2 mu (b - b_old)

    The dot products with ``W_old`` were stored at record time, so ``W_old`` is not needed.

    Args:
        mu (Tensor): the entries' means (K, C).
        nu (Tensor): their second moments (K, C).
        mean_patch (Tensor): their ``d mu / d W`` per conv group (K, G, D).
        dnu_dw (Tensor): their ``d nu_c / d W_c`` (K, C, D).
        mean_patch_dot_w (Tensor): ``d mu / d W . W_old`` (K, C).
        dnu_dot_w (Tensor): ``d nu / d W . W_old`` (K, C).
        bias_then (Tensor): ``b_old`` (K, C).
        weight (Tensor): the current conv weight as (C, D).
        bias (Tensor): the current conv bias (C,) (zeros for a conv without one).

    Returns:
        tuple[Tensor, Tensor]: compensated means and second moments, each (K, C).
    """
    d_bias = bias[None] - bias_then
    mu_now = mu + dot_mean_patch(mean_patch, weight) - mean_patch_dot_w + d_bias
    nu_now = nu + dot(dnu_dw, weight) - dnu_dot_w + 2 * mu * d_bias
    return mu_now, nu_now


def sample_strides(out_hw: Sequence[int], grad_sample_stride: int) -> Tuple[int, int]:
    """Per direction, the stride of the grid of output positions that estimates ``d nu / d W``.

    Args:
        out_hw (Sequence[int]): the conv's output height and width.
        grad_sample_stride (int): the requested stride (1: every position).

    Returns:
        tuple[int, int]: ``grad_sample_stride``, or 1 in a direction smaller than it (a map
        thinner than the stride would leave some grid offsets without any position).
    """
    s = grad_sample_stride
    return (s if out_hw[0] >= s else 1), (s if out_hw[1] >= s else 1)


def sample_offsets(strides: Tuple[int, int], grid_phase: int) -> Tuple[int, int]:
    """The grid's offset (row, column) for a phase of the cycle over all ``sh * sw`` offsets.

    Args:
        strides (tuple[int, int]): from :func:`sample_strides`.
        grid_phase (int): the layer's Python counter of the cycle.

    Returns:
        tuple[int, int]: the offsets.
    """
    sh, sw = strides
    phase = grid_phase % (sh * sw)
    return phase // sw, phase % sw


def mean_patch_sum(conv: nn.Conv2d, conv_in: Tensor, padding: Tuple[int, int],
                   out_hw: Tuple[int, int]) -> Tensor:
    """Sum over the batch and all output positions of the conv's input patches.

    Computed as one reduction over a strided view ``(C_in, kh, kw, H_out, W_out)`` of the
    batch-summed, zero-padded input (no convolution, no per-tap loop).

    Args:
        conv (nn.Conv2d): the conv (kernel size, stride, dilation).
        conv_in (Tensor): its input (N, C_in, H, W), already padded if not zero-padded.
        padding (tuple[int, int]): the zero padding still to apply.
        out_hw (tuple[int, int]): the conv's output height and width.

    Returns:
        Tensor: (C_in, kh, kw) patch sums.
    """
    summed = conv_in.sum(0)
    if padding[0] or padding[1]:  # F.pad copies: skip it when there is nothing to pad
        summed = F.pad(summed, (padding[1], padding[1], padding[0], padding[0]))
    summed = summed.contiguous()  # as_strided below addresses the storage directly
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    ho, wo = out_hw
    c_stride, h_stride, w_stride = summed.stride()
    taps = summed.as_strided(
        (summed.shape[0], kh, kw, ho, wo),
        (c_stride, dh * h_stride, dw * w_stride, sh * h_stride, sw * w_stride))
    return taps.sum((3, 4))


def second_moment_grad_sum(conv: nn.Conv2d, conv_in: Tensor, padding: Tuple[int, int], y: Tensor,
                           grad_sample_stride: int, grid_phase: int) -> Tuple[Tensor, int]:
    """``sum y_c P`` over (a grid of) the output positions, and how many positions that is.

    Output positions ``(oh + i * sh, ow + j * sw)`` of a conv with stride ``(th, tw)`` are the
    outputs of the same conv with stride ``(th * sh, tw * sw)`` on the zero-padded input
    cropped by ``(oh * th, ow * tw)``, so the grid's weight gradient is one smaller
    ``convolution_backward`` on views of the input and output (no copy).

    Args:
        conv (nn.Conv2d): the conv.
        conv_in (Tensor): its input, already padded if not zero-padded.
        padding (tuple[int, int]): the zero padding still to apply.
        y (Tensor): its output (N, C, H_out, W_out).
        grad_sample_stride (int): the grid's stride (see :func:`sample_strides`).
        grid_phase (int): which of the grid's offsets to use (see :func:`sample_offsets`).

    Returns:
        tuple[Tensor, int]: the weight-shaped sum and the number of positions summed.
    """
    strides = sample_strides(y.shape[2:], grad_sample_stride)
    if strides == (1, 1):  # every position: the conv's own weight gradient, no crop
        grad = torch.nn.grad.conv2d_weight(conv_in, conv.weight.shape, y, conv.stride, padding,
                                           conv.dilation, conv.groups)
        return grad, values_per_channel(y)
    (sh, sw), (th, tw) = strides, conv.stride
    oh, ow = sample_offsets(strides, grid_phase)
    if padding[0] or padding[1]:  # the crop below needs the padding materialised
        conv_in = F.pad(conv_in, (padding[1], padding[1], padding[0], padding[0]))
    conv_in = conv_in[:, :, oh * th:, ow * tw:]
    y = y[:, :, oh::sh, ow::sw]
    grad = torch.nn.grad.conv2d_weight(conv_in, conv.weight.shape, y, (th * sh, tw * sw), (0, 0),
                                       conv.dilation, conv.groups)
    return grad, values_per_channel(y)


def statistic_grads(conv: nn.Conv2d, conv_in: Tensor, y: Tensor, grad_sample_stride: int,
                    grid_phase: int, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """``d mu_c / d W_c`` per conv group (G, D) and ``d nu_c / d W_c`` (C, D) for one batch.

    Args:
        conv (nn.Conv2d): the conv feeding the CBN layer.
        conv_in (Tensor): its input in this forward.
        y (Tensor): its output (the CBN layer's input).
        grad_sample_stride (int): ``d nu / d W`` is estimated on a grid of this stride
            (1: exact; see :func:`second_moment_grad_sum`).
        grid_phase (int): the grid offset's phase.
        dtype (torch.dtype): the dtype of the results (the CBN window's).

    Returns:
        tuple[Tensor, Tensor]: the mean input patch per group and the second-moment gradients.
    """
    padding = conv.padding
    if conv.padding_mode != 'zeros':  # the weight-gradient conv only zero-pads: pad here
        conv_in = F.pad(conv_in, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = (0, 0)
    num_values = values_per_channel(y)
    if y.dtype == torch.float16:
        # sums over every position overflow float16 at realistic sizes (batch 48 at 64x48
        # gave inf); bfloat16 has float32's range and stays as the conv computed it
        y, conv_in = y.float(), conv_in.float()
    elif conv_in.dtype != y.dtype:  # autocast: the conv computed in y's dtype
        conv_in = conv_in.to(y.dtype)
    patch_sum = mean_patch_sum(conv, conv_in, padding, y.shape[2:])
    y_patch_sum, num_sampled = second_moment_grad_sum(conv, conv_in, padding, y.detach(),
                                                      grad_sample_stride, grid_phase)
    mean_patch = patch_sum.to(dtype).reshape(conv.groups, -1) / num_values
    dnu_dw = y_patch_sum.to(dtype).reshape(conv.out_channels, -1) * (2.0 / num_sampled)
    return mean_patch, dnu_dw
