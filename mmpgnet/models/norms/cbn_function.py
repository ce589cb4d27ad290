"""The autograd function of CBN: batch normalisation with statistics pooled across iterations.

The current batch's mean and second moment are pooled with ``k`` past ones (computed elsewhere
and possibly compensated for the conv's weight change, see :mod:`.cbn_statistic_grads`); the
backward is torch's fused batch-norm backward plus one correction term.
"""
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def _batch_stats(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of ``x`` (N, C, H, W), float32 or float64.

    Uses torch's fused training-mode batch-norm kernel (about 3x faster than ``var_mean`` on CPU)
    and recovers the variance from its inverse standard deviation.

    Args:
        x (Tensor): the input.

    Returns:
        tuple[Tensor, Tensor]: mean and variance, each (C,).
    """
    if x.dtype != torch.float64:  # statistics in float32 at least (half inputs, autocast)
        x = x.float()
    eps = 1e-5
    _, mean, invstd = torch.native_batch_norm(x, None, None, None, None, True, 0.0, eps)
    return mean, (invstd.pow(-2) - eps).clamp_min(0)


def _in_dtype_of(param: Optional[Tensor], like: Tensor) -> Optional[Tensor]:
    """``param`` in the dtype of ``like`` (``None`` stays ``None``).

    Args:
        param (Tensor, optional): an affine parameter.
        like (Tensor): a tensor of the wanted dtype.

    Returns:
        Tensor, optional: the converted parameter.
    """
    return None if param is None else param.to(like.dtype)


def _past_statistics_grads(sum_g_xhat: Tensor, sum_g: Tensor, scale: Tensor, mu: Tensor,
                           invstd: Tensor, n: Tensor, past_valid: Tensor, clamped: Tensor,
                           past_mu: Tensor) -> Tuple[Tensor, Tensor]:
    """Gradients of the loss with respect to the past means and second moments (k, C).

    With ``out = (x - mu) * invstd * w + b``, ``mu`` the mean of the ``n`` pooled means and
    ``var`` the mean of the pooled second moments minus ``mu**2``::

        dL/dvar = -w * invstd**2 * sum(g * x_hat) / 2,   dL/dmu = -w * invstd * sum(g)
        dL/dmu_i = (dL/dmu - 2 mu dL/dvar) / n,          dL/dnu_i = dL/dvar / n

    for a valid past entry ``i``; an entry whose second moment was raised to ``mu_i**2`` sends
    ``2 mu_i dL/dvar / n`` to its mean instead.

    Args:
        sum_g_xhat (Tensor): ``sum(g * x_hat)`` per channel (C,).
        sum_g (Tensor): ``sum(g)`` per channel (C,).
        scale (Tensor): the affine weight (ones without one), (C,).
        mu (Tensor): the pooled mean (C,).
        invstd (Tensor): ``1 / sqrt(var + eps)`` of the pooled variance (C,).
        n (Tensor): number of pooled entries, (1,).
        past_valid (Tensor): which past entries were pooled, (k, 1).
        clamped (Tensor): which of them had ``nu_i < mu_i**2``, (k, C).
        past_mu (Tensor): their means (k, C).

    Returns:
        tuple[Tensor, Tensor]: gradients for the past means and second moments.
    """
    d_var = -0.5 * scale * invstd * invstd * sum_g_xhat.to(mu.dtype) / n
    d_mu = (-scale * invstd * sum_g.to(mu.dtype)) / n - 2 * mu * d_var
    zero = d_var.new_zeros(())
    d_past_nu = torch.where(past_valid & ~clamped, d_var, zero)
    # a clamped entry's nu_i was replaced by mu_i**2: its var gradient flows to mu_i instead
    d_past_mu = torch.where(past_valid, d_mu, zero) + \
        torch.where(clamped, 2 * past_mu * d_var, zero)
    return d_past_mu, d_past_nu


class CrossIterationBNFunction(torch.autograd.Function):
    """Normalise with statistics pooled over the current batch and past ones.

    Forward: current mean/second moment, pooled with the past entries that ``past_valid`` marks
    (``nu >= mu^2`` per entry), then an inference-mode ``batch_norm`` with the pooled mean and
    variance. The number of pooled entries ``n`` is a device tensor (no host read). Backward: the
    pooled statistics depend on the current batch like a synchronised BN over ``n`` equally
    sized batches of which the others are constants, so torch's training-mode BN backward with
    the pooled ``mean``/``invstd`` and the weight divided by ``n`` gives every term except
    ``(1 - 1/n) * weight * invstd * grad_out``, which is added. Two fused passes instead of the
    half-dozen of the equivalent autograd graph. With no valid past entry (``n = 1``) this is
    exactly batch normalisation with the current batch's statistics. When ``past_mu`` or
    ``past_nu`` require gradients (CBN's ``differentiable_compensation``), their gradients are
    returned too (see :func:`_past_statistics_grads`).

    Statistics are float32 (float64 for float64 input) whatever the input's dtype, so the
    function is safe under autocast and with half-precision activations.

    Use it as ``CrossIterationBNFunction.apply(x, weight, bias, past_mu, past_nu, past_valid,
    eps)``, see :meth:`forward`.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                past_mu: Tensor, past_nu: Tensor, past_valid: Tensor,
                eps: float) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Normalise ``x`` with the pooled statistics.

        Args:
            ctx (Any): the autograd context.
            x (Tensor): the input (N, C, H, W).
            weight (Tensor, optional): the affine scale (C,).
            bias (Tensor, optional): the affine shift (C,).
            past_mu (Tensor): the past entries' means (k, C).
            past_nu (Tensor): their second moments (k, C).
            past_valid (Tensor): bool (k,), which past entries to pool.
            eps (float): added to the variance.

        Returns:
            tuple[Tensor, ...]: the output, the current batch's mean and biased variance, and
            the pooled mean and variance (the four statistics are not differentiable).
        """
        mu_t, var_t = _batch_stats(x.detach())
        # entry 0 is the current batch (always pooled), entries 1..k the past ones
        valid = torch.cat([past_valid.new_ones(1), past_valid])[:, None]
        entry_mu = torch.where(valid, torch.cat([mu_t[None], past_mu.to(mu_t.dtype)]), 0)
        entry_nu_raw = torch.cat([(var_t + mu_t * mu_t)[None], past_nu.to(mu_t.dtype)])
        # Eq. 11 of the paper: each entry's second moment is at least its mean squared (a
        # compensated entry can fall below, which would give it a negative variance)
        entry_nu = torch.where(valid, torch.maximum(entry_nu_raw, entry_mu * entry_mu), 0)
        n = valid.sum(0).to(mu_t.dtype)  # (1,): 1 + number of valid past entries
        mu = entry_mu.sum(0) / n
        var = (entry_nu.sum(0) / n - mu * mu).clamp_min(0)
        out = F.batch_norm(x, mu, var, _in_dtype_of(weight, mu), _in_dtype_of(bias, mu), False,
                           0.0, eps)
        # which past second moments were raised to mu^2 (their gradient goes to the mean)
        clamped = valid[1:] & (entry_nu_raw[1:] < entry_mu[1:] * entry_mu[1:])
        ctx.save_for_backward(x, weight, mu, torch.rsqrt(var + eps), n, valid[1:], clamped,
                              entry_mu[1:])
        ctx.eps = eps
        ctx.mark_non_differentiable(mu_t, var_t, mu, var)
        return out, mu_t, var_t, mu, var

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor, *_: Any) -> Tuple[Optional[Tensor], ...]:
        """Gradients for ``x``, ``weight``, ``bias``, ``past_mu`` and ``past_nu``.

        Args:
            ctx (Any): the autograd context.
            grad_out (Tensor): the gradient of the output.
            *_ (Any): gradients of the statistics (not differentiable, ignored).

        Returns:
            tuple[Tensor | None, ...]: one gradient per input of :meth:`forward`.
        """
        x, weight, mu, invstd, n, past_valid, clamped, past_mu = ctx.saved_tensors
        scale = torch.ones_like(mu) if weight is None else weight.to(mu.dtype)
        needs_past_grads = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        # the kernel's weight and bias gradients are sum(g * x_hat) and sum(g): the past
        # statistics' gradients need them even when the affine parameters need none
        output_mask = [ctx.needs_input_grad[0],
                       (weight is not None and ctx.needs_input_grad[1]) or needs_past_grads,
                       ctx.needs_input_grad[2] or needs_past_grads]
        grad_out = grad_out.contiguous()
        grad_x, sum_g_xhat, sum_g = torch.ops.aten.native_batch_norm_backward(
            grad_out, x, scale / n, None, None, mu, invstd, True, ctx.eps, output_mask)
        grad_past_mu = grad_past_nu = None
        if needs_past_grads:  # sum_g_xhat and sum_g whatever the weight passed to the kernel
            grad_past_mu, grad_past_nu = _past_statistics_grads(
                sum_g_xhat, sum_g, scale, mu, invstd, n, past_valid, clamped, past_mu)
        if grad_x is not None:  # the term the 1/n-scaled BN backward lacks
            coef = (scale * invstd * (1 - 1 / n)).to(grad_x.dtype)
            grad_x = grad_x.addcmul_(grad_out.to(grad_x.dtype), coef.view(1, -1, 1, 1))
        grad_weight = grad_bias = None
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = sum_g_xhat.to(weight.dtype)
        if sum_g is not None and ctx.needs_input_grad[2]:
            grad_bias = sum_g.to(weight.dtype if weight is not None else mu.dtype)
        return grad_x, grad_weight, grad_bias, grad_past_mu, grad_past_nu, None, None
