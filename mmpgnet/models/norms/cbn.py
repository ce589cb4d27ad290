"""Cross-Iteration Batch Normalization (CBN, Yao et al., CVPR 2021).

CBN estimates the batch statistics of a layer from the current mini-batch *and* the last
``buffer_num`` mini-batches. Statistics of a past iteration ``t - tau`` were computed with the
weights ``theta_{t-tau}`` of the convolution that feeds the layer; they are moved to the current
weights ``theta_t`` by a first-order Taylor step::

    mu_{t-tau}(theta_t) ~ mu_{t-tau} + d mu_{t-tau} / d theta . (theta_t - theta_{t-tau})
    nu_{t-tau}(theta_t) ~ nu_{t-tau} + d nu_{t-tau} / d theta . (theta_t - theta_{t-tau})

with ``mu`` the per-channel mean and ``nu`` the per-channel second moment ``E[y^2]``. As in the
paper, only the gradient of channel ``c`` with respect to the ``c``-th filter ``W_c`` is used, and
it has a closed form for a convolution ``y_c = W_c . P + b_c`` (``P`` the input patch)::

    d mu_c / d W_c = E[P]            (the mean input patch, the same for every filter of a group)
    d nu_c / d W_c = 2 E[y_c P]      (a weight-gradient of the conv with ``grad_output = y``)

The first is computed exactly from sums of the input (no convolution). The second is a weight
gradient of the conv (one ``convolution_backward`` call, instead of the two ``autograd.grad``
passes of the authors' code) and the only costly part of CBN: as many multiply-adds as the conv's
forward; computed exactly, it makes an R50 256x192 iteration 1.32x as slow as BN's (batch 16,
CPU). By default (``grad_sample_stride=2``)
it is therefore estimated from every second output position in each direction, a 4x cheaper
weight gradient (a conv with twice the stride on the same input); the grid's offset cycles with
the iteration counter, so over ``stride**2`` iterations every position is used, and the estimate
is unbiased over that cycle. It only sets the direction of a small first-order correction (the
compensated statistics stay measurably closer to the true ones than the plain average; see the
tests); ``grad_sample_stride=1`` gives the exact gradient. With it, the same iteration costs
1.16x BN's time and 1.05x its peak memory (``tools/analysis/benchmark_norms.py``). A past entry
is stored as its statistics, these gradients and the dot products ``grad . theta_{t-tau}``, so
the weights need not be stored.

The compensated entries and the current one are averaged after clamping ``nu >= mu^2`` per entry
(Eq. 11 of the paper); the variance is ``mean(nu) - mean(mu)^2``. Gradients flow through the
current iteration's statistics only, as in the paper and the authors' code, although the
compensated past statistics depend on the current weights; ``differentiable_compensation=True``
adds that dependence (the stored statistics and derivatives stay constants), and
``eval_stats='window'`` makes the running statistics average the pooled statistics that training
normalised with. Both are beyond the paper; ``docs/cbn.md`` says why and what they measure.
Everything CBN needs to continue a run lives in buffers, so a checkpoint resumes exactly; the
link to the conv (see :func:`link_cbn_layers` and ``CBNHook``) is a weak reference that is
re-made when a run starts.

GPUs and ``torch.compile``: a training forward never reads a tensor on the host. The step
counter, the ring position and the valid slots are device buffers, and every decision that
depends on them (burn-in over? record this step? which past entries count? which slot?) is a
device-side mask or index, not a Python branch: ``int(counter)`` per layer would stall the CPU
until the GPU queue drains (about 250 times per ResNet-50 iteration), and a Python step counter
would make ``torch.compile`` recompile at every step (it guards on the value; seen: 8 graphs in 8
steps, then a fallback to eager). The one Python counter is the sampling grid's offset,
:attr:`CBN.grid_phase`, which cycles through ``grad_sample_stride**2`` values (``iter_count``
modulo that, re-read from the checkpoint on load): it selects views of the input, where a device
offset would need gathers that copied the whole input (measured: 1.43x BN's time instead of
1.19x), and costs ``torch.compile`` one graph per offset (4), never more. The price of the masks
is that a linked layer computes its statistic gradients during the burn-in too (the window is
only marked valid from ``burnin_iters - buffer_num`` on), so the burn-in costs what CBN costs
afterwards.
"""
import weakref
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmpgnet.registry import register_norm_layer

#: Window buffers whose shape depends on the linked conv (allocated at link or load time).
_CONV_SHAPED_BUFFERS = ('win_dmu', 'win_dnu')
#: What the running statistics average (see :class:`CBN`'s ``eval_stats``).
EVAL_STATS = ('batch', 'window')
#: Buffers that a checkpoint of a plain BN lacks; missing ones mean "fresh window".
_CBN_BUFFERS = ('iter_count', 'win_pos', 'win_valid', 'win_mu', 'win_nu', 'win_dmu_w',
                'win_dnu_w', 'win_bias') + _CONV_SHAPED_BUFFERS


def unsupported_conv_reason(conv: nn.Module) -> Optional[str]:
    """Say why a module cannot feed a compensated CBN, or ``None`` if it can.

    Supported: ``nn.Conv2d`` and mmcv's ``Conv2d`` wrapper with numeric padding (any padding mode,
    stride, dilation and groups). Convs that transform their weight in ``forward`` (weight
    standardisation), deformable and transposed convs are not.

    Args:
        conv (nn.Module): candidate module.

    Returns:
        str, optional: the reason, or ``None`` when supported.
    """
    if not isinstance(conv, nn.Conv2d):
        return f'it is fed by a {type(conv).__name__}, not a Conv2d'
    plain_forwards = [nn.Conv2d.forward]
    try:
        from mmcv.cnn.bricks.wrappers import Conv2d as MMCVConv2d
        plain_forwards.append(MMCVConv2d.forward)
    except ImportError:  # pragma: no cover - mmcv is a dependency
        pass
    if type(conv).forward not in plain_forwards or \
            type(conv)._conv_forward is not nn.Conv2d._conv_forward:
        return f'{type(conv).__name__} changes its weight in forward'
    if isinstance(conv.padding, str):
        return f'string padding {conv.padding!r} is not supported'
    return None


def _batch_stats(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of ``x`` (N, C, H, W), float32 or float64.

    Uses torch's fused training-mode batch-norm kernel (about 3x faster than ``var_mean`` on CPU)
    and recovers the variance from its inverse standard deviation.

    Args:
        x (Tensor): the input.

    Returns:
        tuple[Tensor, Tensor]: mean and variance, each (C,).
    """
    if x.dtype != torch.float64:
        x = x.float()
    eps = 1e-5
    _, mean, invstd = torch.native_batch_norm(x, None, None, None, None, True, 0.0, eps)
    return mean, (invstd.pow(-2) - eps).clamp_min(0)


class _CrossIterationBN(torch.autograd.Function):
    """Normalise with statistics pooled over the current batch and constant past ones.

    Forward: current mean/second moment, pooled with the past entries that ``past_valid`` marks
    (``nu >= mu^2`` per entry), then an inference-mode ``batch_norm`` with the pooled mean and
    variance. The number of pooled entries ``n`` is a device tensor (no host read). Backward: the
    pooled statistics depend on the current batch like a synchronised BN over ``n`` equally
    sized batches of which the others are constants, so torch's training-mode BN backward with
    the pooled ``mean``/``invstd`` and the weight divided by ``n`` gives every term except
    ``(1 - 1/n) * weight * invstd * grad_out``, which is added. Two fused passes instead of the
    half-dozen of the equivalent autograd graph. With no valid past entry (``n = 1``) this is
    exactly batch normalisation with the current batch's statistics.

    Statistics are float32 (float64 for float64 input) whatever the input's dtype, so the
    function is safe under autocast and with half-precision activations.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                past_mu: Tensor, past_nu: Tensor, past_valid: Tensor,
                eps: float) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        mu_t, var_t = _batch_stats(x.detach())
        valid = torch.cat([past_valid.new_ones(1), past_valid])[:, None]
        mus = torch.where(valid, torch.cat([mu_t[None], past_mu.to(mu_t.dtype)]), 0)
        raw_nus = torch.cat([(var_t + mu_t * mu_t)[None], past_nu.to(mu_t.dtype)])
        nus = torch.where(valid, torch.maximum(raw_nus, mus * mus), 0)
        n = valid.sum(0).to(mu_t.dtype)  # (1,): 1 + number of valid past entries
        mu = mus.sum(0) / n
        var = (nus.sum(0) / n - mu * mu).clamp_min(0)
        out = F.batch_norm(x, mu, var, _as(weight, mu), _as(bias, mu), False, 0.0, eps)
        # which past second moments were raised to mu^2 (their gradient goes to the mean)
        clamped = valid[1:] & (raw_nus[1:] < mus[1:] * mus[1:])
        ctx.save_for_backward(x, weight, mu, torch.rsqrt(var + eps), n, valid[1:], clamped,
                              mus[1:])
        ctx.eps = eps
        ctx.mark_non_differentiable(mu_t, var_t, mu, var)
        return out, mu_t, var_t, mu, var

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor, *_: Any) -> Tuple[Optional[Tensor], ...]:
        x, weight, mu, invstd, n, past_valid, clamped, past_mu = ctx.saved_tensors
        scale = torch.ones_like(mu) if weight is None else weight.to(mu.dtype)
        past_grads = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        mask = [ctx.needs_input_grad[0],
                (weight is not None and ctx.needs_input_grad[1]) or past_grads,
                ctx.needs_input_grad[2] or past_grads]
        grad_out = grad_out.contiguous()
        dx, dw, db = torch.ops.aten.native_batch_norm_backward(
            grad_out, x, scale / n, None, None, mu, invstd, True, ctx.eps, mask)
        d_past_mu = d_past_nu = None
        if past_grads:  # dw = sum(g * x_hat), db = sum(g), whatever the weight passed
            d_past_mu, d_past_nu = _past_stat_grads(dw, db, scale, mu, invstd, n, past_valid,
                                                    clamped, past_mu)
        if dx is not None:
            coef = (scale * invstd * (1 - 1 / n)).to(dx.dtype)
            dx = dx.addcmul_(grad_out.to(dx.dtype), coef.view(1, -1, 1, 1))
        dw = dw.to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        if db is not None and ctx.needs_input_grad[2]:
            db = db.to(weight.dtype if weight is not None else mu.dtype)
        else:
            db = None
        return dx, dw, db, d_past_mu, d_past_nu, None, None


def _past_stat_grads(sum_g_xhat: Tensor, sum_g: Tensor, scale: Tensor, mu: Tensor,
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
    d_past_mu = torch.where(past_valid, d_mu, zero) + torch.where(clamped, 2 * past_mu * d_var,
                                                                    zero)
    return d_past_mu, d_past_nu


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum(-1)``: a dot product that autocast leaves in the inputs' precision."""
    return (a * b).sum(-1)


def _as(param: Optional[Tensor], like: Tensor) -> Optional[Tensor]:
    """``param`` in the dtype of ``like`` (``None`` stays ``None``)."""
    return None if param is None else param.to(like.dtype)


@register_norm_layer()
class CBN(_BatchNorm):
    """Cross-Iteration Batch Normalization for 4D inputs (``norm_cfg=dict(type='CBN')``).

    Until it is linked to the conv that feeds it (``CBNHook`` does this before training), during
    the first ``burnin_iters`` training forwards and with ``buffer_num=0`` it is a plain
    ``BatchNorm2d``. In eval mode it uses the running statistics, which are updated with the
    current batch's statistics as in BN by default (``eval_stats='batch'``), or with the pooled
    window's (``eval_stats='window'``).

    Args:
        num_features (int): number of channels ``C``.
        eps (float): added to the variance. Defaults to 1e-5.
        momentum (float, optional): running-statistics momentum; ``None`` for a cumulative
            average. Defaults to 0.1.
        affine (bool): learnable scale and shift. Defaults to True.
        track_running_stats (bool): keep running statistics for eval. Defaults to True.
        buffer_num (int): number of past iterations ``k`` combined with the current one.
            Defaults to 3.
        burnin_iters (int): training forwards run as plain BN before compensation starts (the
            window is filled during the last ``buffer_num`` of them). Defaults to 0.
        grad_sample_stride (int): the second-moment gradient ``d nu / d W`` is estimated from
            every ``grad_sample_stride``-th output position in each direction (offset cycling
            with the iterations), ``grad_sample_stride**2`` times cheaper; 1 computes it
            exactly. Maps smaller than the stride in a direction use every position. Defaults
            to 2.
        differentiable_compensation (bool): let the loss's gradient flow through the
            compensation into the current conv weight and bias (the stored statistics and
            their derivatives stay constants). ``False`` is the paper's and the authors'
            backward, which treats the compensated past statistics as constants although
            they depend on the current weights (the compensated mean is exactly
            ``W_t . E[P_old]`` for a bias-free conv). See "Beyond the paper" in
            ``docs/cbn.md``. Defaults to False.
        eval_stats (str): what the running statistics (used in eval mode) average: ``'batch'``
            the current batch's statistics, as BN and the paper; ``'window'`` the pooled
            statistics that training normalised with (the current batch and the valid past
            entries), which at batch 2 estimate the population far better than an average
            of 2-image batch statistics. Defaults to ``'batch'``.
        device (torch.device, optional): device of parameters and buffers.
        dtype (torch.dtype, optional): dtype of parameters and running statistics.
    """

    _abbr_ = 'cbn'

    def __init__(self,
                 num_features: int,
                 eps: float = 1e-5,
                 momentum: Optional[float] = 0.1,
                 affine: bool = True,
                 track_running_stats: bool = True,
                 buffer_num: int = 3,
                 burnin_iters: int = 0,
                 grad_sample_stride: int = 2,
                 differentiable_compensation: bool = False,
                 eval_stats: str = 'batch',
                 device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        if not isinstance(buffer_num, int) or buffer_num < 0:
            raise ValueError(f'buffer_num must be an int >= 0, got {buffer_num!r}')
        if not isinstance(burnin_iters, int) or burnin_iters < 0:
            raise ValueError(f'burnin_iters must be an int >= 0, got {burnin_iters!r}')
        if not isinstance(grad_sample_stride, int) or grad_sample_stride < 1:
            raise ValueError(f'grad_sample_stride must be an int >= 1, got {grad_sample_stride!r}')
        if not isinstance(differentiable_compensation, bool):
            raise ValueError('differentiable_compensation must be a bool, got '
                             f'{differentiable_compensation!r}')
        if eval_stats not in EVAL_STATS:
            raise ValueError(f'eval_stats must be one of {EVAL_STATS}, got {eval_stats!r}')
        self.buffer_num = buffer_num
        self.differentiable_compensation = differentiable_compensation
        self.eval_stats = eval_stats
        self.burnin_iters = burnin_iters
        self.grad_sample_stride = grad_sample_stride
        k, c = buffer_num, num_features
        # window statistics in float32 (float64 for a float64 layer), never in half precision
        f32 = dict(device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        self.register_buffer('iter_count', torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer('win_pos', torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer('win_valid', torch.zeros(k, dtype=torch.bool, device=device))
        for name in ('win_mu', 'win_nu', 'win_dmu_w', 'win_dnu_w', 'win_bias'):
            self.register_buffer(name, torch.zeros(k, c, **f32))
        for name in _CONV_SHAPED_BUFFERS:
            self.register_buffer(name, torch.zeros(k, 0, 0, **f32))
        self._conv_ref: Optional[weakref.ReferenceType] = None
        self._hook_handle = None
        self._conv_io: Optional[Tuple[Tensor, Tensor]] = None
        #: offset index of the d nu / dW sampling grid, ``iter_count % grad_sample_stride**2``
        #: kept as a Python int (see the module docstring); set from the checkpoint on load
        self.grid_phase = 0
        # whether the last training forward used past iterations (a device flag: no host read)
        self.register_buffer('_compensating', torch.zeros((), dtype=torch.bool, device=device),
                             persistent=False)

    @property
    def compensating(self) -> Tensor:
        """Tensor: 0-dim bool, whether the last training forward used past iterations.

        A device tensor, so that the forward never waits for the host; ``bool()`` it (a sync) only
        where a host value is needed, e.g. for logging.
        """
        return self._compensating

    # ------------------------------------------------------------------ linking
    @property
    def conv(self) -> Optional[nn.Conv2d]:
        """nn.Conv2d, optional: the linked conv (weakly referenced), if any."""
        return None if self._conv_ref is None else self._conv_ref()

    def link_conv(self, conv: nn.Conv2d) -> None:
        """Link this layer to the conv whose output it normalises.

        The conv is held by a weak reference (it stays out of this layer's ``state_dict``), and
        a forward hook on it hands its input to this layer. Its weight is read at forward time,
        so ``model.to(device)`` and optimizer steps are seen.

        Args:
            conv (nn.Conv2d): the conv feeding this layer.

        Raises:
            ValueError: if the conv is unsupported or its channels do not match.
        """
        reason = unsupported_conv_reason(conv)
        if reason is not None:
            raise ValueError(f'cannot link CBN to {type(conv).__name__}: {reason}')
        if conv.out_channels != self.num_features:
            raise ValueError(f'conv has {conv.out_channels} output channels, CBN has '
                             f'{self.num_features} features')
        self.unlink_conv()
        self._conv_ref = weakref.ref(conv)
        self_ref = weakref.ref(self)

        def _capture(module: nn.Module, args: Tuple[Any, ...], output: Any) -> None:
            cbn = self_ref()
            if cbn is not None and cbn.training and cbn.conv is module:
                cbn._conv_io = (args[0], output)

        self._hook_handle = conv.register_forward_hook(_capture)
        groups = conv.groups
        dim = conv.weight[0].numel()
        k = self.buffer_num
        if tuple(self.win_dnu.shape) != (k, self.num_features, dim) or \
                tuple(self.win_dmu.shape) != (k, groups, dim):
            self.win_dnu = self.win_mu.new_zeros(k, self.num_features, dim)
            self.win_dmu = self.win_mu.new_zeros(k, groups, dim)
            self.reset_window()

    def unlink_conv(self) -> None:
        """Drop the link to the conv (the layer becomes a plain BN); keeps the window."""
        if self._hook_handle is not None:
            self._hook_handle.remove()
        self._hook_handle = None
        self._conv_ref = None
        self._conv_io = None

    def reset_window(self) -> None:
        """Forget the past iterations (the next forwards refill the window)."""
        self.win_valid.zero_()
        self.win_pos.zero_()

    def __getstate__(self) -> Dict[str, Any]:
        """Pickle/deepcopy without the (weak) link: a copy starts unlinked."""
        state = self.__dict__.copy()
        state.update(_conv_ref=None, _hook_handle=None, _conv_io=None)
        return state

    # ------------------------------------------------------------------ checkpoints
    def _load_from_state_dict(self, state_dict: Dict[str, Tensor], prefix: str,
                              local_metadata: Dict, strict: bool, missing_keys: List[str],
                              unexpected_keys: List[str], error_msgs: List[str]) -> None:
        """Load like BN; resize conv-shaped window buffers; a BN checkpoint gives a fresh window.

        Args:
            state_dict (dict): the (sub-)state dict.
            prefix (str): this module's key prefix.
            local_metadata (dict): metadata of this module.
            strict (bool): strict loading.
            missing_keys (list[str]): collects missing keys.
            unexpected_keys (list[str]): collects unexpected keys.
            error_msgs (list[str]): collects errors.
        """
        for name in _CONV_SHAPED_BUFFERS:
            value = state_dict.get(prefix + name)
            if value is not None and value.shape != getattr(self, name).shape:
                setattr(self, name, torch.zeros_like(value, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        absent = [prefix + name for name in _CBN_BUFFERS if prefix + name in missing_keys]
        if absent:
            for key in absent:
                missing_keys.remove(key)
            if prefix + 'iter_count' in absent:
                self.iter_count.zero_()
            self.reset_window()
        self.sync_grid_phase()

    def sync_grid_phase(self) -> None:
        """Set :attr:`grid_phase` from ``iter_count`` (after a checkpoint load; reads it once).

        The only host read of a counter, outside training steps; skipped on ``meta`` (no value).
        """
        if self.iter_count.device.type != 'meta':
            self.grid_phase = int(self.iter_count) % self.grad_sample_stride**2

    # ------------------------------------------------------------------ forward
    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f'CBN expects a 4D (N, C, H, W) input, got {input.dim()}D')

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, buffer_num={self.buffer_num}, '
                f'burnin_iters={self.burnin_iters}, grad_sample_stride={self.grad_sample_stride}, '
                f'differentiable_compensation={self.differentiable_compensation}, '
                f'eval_stats={self.eval_stats!r}')

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` (N, C, H, W).

        Args:
            x (Tensor): the output of the linked conv (any 4D tensor if unlinked).

        Returns:
            Tensor: the normalised tensor, same shape.
        """
        self._check_input_dim(x)
        conv_io, self._conv_io = self._conv_io, None
        self._compensating.zero_()  # (fill_(False) breaks torch.jit tracing: ONNX, FLOP counting)
        if not self.training:
            return super().forward(x)
        conv = self.conv
        # statically known (no tensor value involved): is there a window to use at all?
        linked = (self.buffer_num > 0 and conv is not None and conv_io is not None
                  and conv_io[1] is x)
        if not linked:
            self.iter_count.add_(1)
            self._advance_grid_phase()
            # torch's BN refuses one value per channel; the path below handles it (variance 0)
            if x.shape[0] * x.shape[2] * x.shape[3] > 1:
                return super().forward(x)
            return self._plain_forward(x)
        step = self.iter_count
        record = step >= self.burnin_iters - self.buffer_num
        valid = self.win_valid & (step >= self.burnin_iters)
        differentiable = self.differentiable_compensation and torch.is_grad_enabled()
        with torch.set_grad_enabled(differentiable):
            past_mu, past_nu = self._compensated_window(conv, detach=not differentiable)
        out, mu_t, var_t, mu, var = _CrossIterationBN.apply(
            x, self.weight, self.bias, past_mu, past_nu, valid, self.eps)
        self._compensating.copy_(valid.any())
        if self.eval_stats == 'window':  # the pooled statistics, over n batches' positions
            self._update_running_stats(mu, var, x, batches=1 + valid.sum())
        else:
            self._update_running_stats(mu_t, var_t, x)
        with torch.no_grad():
            self._record(conv, conv_io[0], x, mu_t, var_t + mu_t * mu_t, record)
        self.iter_count.add_(1)
        return out

    def _plain_forward(self, x: Tensor) -> Tensor:
        """Batch normalisation with the current statistics (also for one value per channel)."""
        var_t, mu_t = torch.var_mean(x if x.dtype == torch.float64 else x.float(),
                                     dim=(0, 2, 3), unbiased=False)
        out = self._normalize(x, mu_t, var_t)
        self._update_running_stats(mu_t.detach(), var_t.detach(), x)
        return out

    def _normalize(self, x: Tensor, mu: Tensor, var: Tensor) -> Tensor:
        """Apply ``(x - mu) / sqrt(var + eps) * weight + bias`` per channel."""
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mu * scale
        if self.bias is not None:
            shift = shift + self.bias
        return x * scale.to(x.dtype).view(1, -1, 1, 1) + shift.to(x.dtype).view(1, -1, 1, 1)

    def _update_running_stats(self, mu: Tensor, var: Tensor, x: Tensor,
                              batches: Optional[Tensor] = None) -> None:
        """Update running statistics as BN does (with the unbiased variance).

        Args:
            mu (Tensor): the mean to average in (C,).
            var (Tensor): the biased variance to average in (C,).
            x (Tensor): the current input (its size gives the number of values per channel).
            batches (Tensor, optional): how many batches of ``x``'s size ``mu``/``var`` pool
                (a device tensor); ``None`` for one.
        """
        if not self.track_running_stats:
            return
        m = x.shape[0] * x.shape[2] * x.shape[3]
        if batches is not None:
            m = batches.to(var.dtype) * m
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average, without reading the counter
                factor = self.num_batches_tracked.reciprocal().to(self.running_mean.dtype)
            else:
                factor = self.momentum
            if batches is not None:
                unbiased = var * (m / (m - 1).clamp_min(1))
            else:
                unbiased = var * (m / max(m - 1, 1))
            self.running_mean.lerp_(mu.to(self.running_mean.dtype), factor)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)

    def _conv_params(self, conv: nn.Conv2d, detach: bool = True) -> Tuple[Tensor, Tensor]:
        """Current weight (C, D) and bias (C,) of the conv in the window's dtype.

        Args:
            conv (nn.Conv2d): the linked conv.
            detach (bool): cut them from the autograd graph. Defaults to True.

        Returns:
            tuple[Tensor, Tensor]: the weight and the bias (zeros without one).
        """
        dtype = self.win_mu.dtype
        weight, bias = conv.weight, conv.bias
        if detach:
            weight = weight.detach()
            bias = None if bias is None else bias.detach()
        weight = weight.to(dtype).reshape(self.num_features, -1)
        return weight, (weight.new_zeros(self.num_features) if bias is None else bias.to(dtype))

    def _dot_mean_patch(self, dmu: Tensor, weight: Tensor) -> Tensor:
        """Per-channel ``dmu[group(c)] . W_c`` for ``dmu`` of shape (K, G, D) -> (K, C).

        Element-wise products and sums, not ``bmm``: autocast would run a ``bmm`` in half
        precision, and the compensation subtracts two such dot products of similar size.
        """
        k, groups, dim = dmu.shape
        w = weight.view(1, groups, self.num_features // groups, dim)
        return (w * dmu[:, :, None, :]).sum(-1).reshape(k, self.num_features)

    def _compensated_window(self, conv: nn.Conv2d, detach: bool = True) -> Tuple[Tensor, Tensor]:
        """Statistics of every window slot, moved to the conv's current weights.

        Slots not (yet) filled hold stale or zero values: ``win_valid`` says which ones count
        (the caller masks them; selecting them here would give a data-dependent shape).

        Args:
            conv (nn.Conv2d): the linked conv.
            detach (bool): constants (the paper); ``False`` keeps them differentiable in the
                conv's current weight and bias. Defaults to True.

        Returns:
            tuple[Tensor, Tensor]: compensated means and second moments, each (k, C).
        """
        weight, bias = self._conv_params(conv, detach)
        win_dmu, win_dnu, win_mu = self.win_dmu, self.win_dnu, self.win_mu
        if not detach:  # autograd keeps them for the backward; _record overwrites a slot
            win_dmu, win_dnu, win_mu = win_dmu.clone(), win_dnu.clone(), win_mu.clone()
        d_bias = bias[None] - self.win_bias
        mu = self.win_mu + self._dot_mean_patch(win_dmu, weight) - self.win_dmu_w + d_bias
        nu = self.win_nu + _dot(win_dnu, weight) - self.win_dnu_w + 2 * win_mu * d_bias
        return mu, nu

    def _stat_grads(self, conv: nn.Conv2d, conv_in: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
        """Exact ``d mu_c / d W_c`` (G, D) and ``d nu_c / d W_c`` (C, D) for this batch.

        Args:
            conv (nn.Conv2d): the linked conv.
            conv_in (Tensor): its input in this forward.
            y (Tensor): its output (this layer's input).

        Returns:
            tuple[Tensor, Tensor]: mean-patch per group and second-moment gradients.
        """
        padding = conv.padding
        if conv.padding_mode != 'zeros':
            conv_in = F.pad(conv_in, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
            padding = (0, 0)
        groups, c = conv.groups, self.num_features
        m = y.shape[0] * y.shape[2] * y.shape[3]
        if y.dtype == torch.float16:
            # sums over every position overflow float16 at realistic sizes (batch 48 at 64x48
            # gave inf); bfloat16 has float32's range and stays as the conv computed it
            y, conv_in = y.float(), conv_in.float()
        elif conv_in.dtype != y.dtype:  # autocast: the conv computed in y's dtype
            conv_in = conv_in.to(y.dtype)
        dmu = self._mean_patch_sum(conv, conv_in, padding, y.shape[2:])
        dnu, m_used = self._second_moment_grad_sum(conv, conv_in, padding, y.detach())
        dtype = self.win_mu.dtype
        return dmu.to(dtype).reshape(groups, -1) / m, dnu.to(dtype).reshape(c, -1) * (2.0 / m_used)

    def _sample_strides(self, out_hw: Sequence[int]) -> Tuple[int, int]:
        """Per direction, the stride of the sampling grid of output positions.

        Args:
            out_hw (Sequence[int]): the conv's output height and width.

        Returns:
            tuple[int, int]: ``grad_sample_stride``, or 1 in a direction smaller than it.
        """
        s = self.grad_sample_stride
        return (s if out_hw[0] >= s else 1), (s if out_hw[1] >= s else 1)

    def _sample_offsets(self, strides: Tuple[int, int]) -> Tuple[int, int]:
        """This iteration's grid offset (row, column), cycling with the training steps.

        Args:
            strides (tuple[int, int]): from :meth:`_sample_strides`.

        Returns:
            tuple[int, int]: the offsets, from the Python cycle ``grid_phase``.
        """
        sh, sw = strides
        phase = self.grid_phase % (sh * sw)
        return phase // sw, phase % sw

    def _second_moment_grad_sum(self, conv: nn.Conv2d, conv_in: Tensor, padding: Tuple[int, int],
                                y: Tensor) -> Tuple[Tensor, int]:
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

        Returns:
            tuple[Tensor, int]: the weight-shaped sum and the number of positions summed.
        """
        strides = self._sample_strides(y.shape[2:])
        if strides == (1, 1):
            grad = torch.nn.grad.conv2d_weight(conv_in, conv.weight.shape, y, conv.stride,
                                               padding, conv.dilation, conv.groups)
            return grad, y.shape[0] * y.shape[2] * y.shape[3]
        (sh, sw), (th, tw) = strides, conv.stride
        oh, ow = self._sample_offsets(strides)
        if padding[0] or padding[1]:
            conv_in = F.pad(conv_in, (padding[1], padding[1], padding[0], padding[0]))
        conv_in = conv_in[:, :, oh * th:, ow * tw:]
        y = y[:, :, oh::sh, ow::sw]
        grad = torch.nn.grad.conv2d_weight(conv_in, conv.weight.shape, y, (th * sh, tw * sw),
                                           (0, 0), conv.dilation, conv.groups)
        return grad, y.shape[0] * y.shape[2] * y.shape[3]

    @staticmethod
    def _mean_patch_sum(conv: nn.Conv2d, conv_in: Tensor, padding: Tuple[int, int],
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
        if padding[0] or padding[1]:
            summed = F.pad(summed, (padding[1], padding[1], padding[0], padding[0]))
        summed = summed.contiguous()
        (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
        ho, wo = out_hw
        c_stride, h_stride, w_stride = summed.stride()
        taps = summed.as_strided(
            (summed.shape[0], kh, kw, ho, wo),
            (c_stride, dh * h_stride, dw * w_stride, sh * h_stride, sw * w_stride))
        return taps.sum((3, 4))

    def _record(self, conv: nn.Conv2d, conv_in: Tensor, y: Tensor, mu: Tensor, nu: Tensor,
                record: Tensor) -> None:
        """Write this iteration's statistics and their gradients into the window ring.

        The slot is ``win_pos % buffer_num``, a device index. ``record`` (a 0-dim bool tensor)
        says whether the entry counts: it becomes the slot's ``win_valid`` flag, and the ring
        position only advances when it is true, so a step before the recording phase leaves the
        ring where it was.
        """
        slot = (self.win_pos % self.buffer_num).view(1)
        weight, bias = self._conv_params(conv)
        if conv.weight.requires_grad:
            dmu, dnu = self._stat_grads(conv, conv_in, y)
        else:  # frozen conv: the weights never change, the compensation term is zero
            dmu, dnu = self.win_dmu.new_zeros(self.win_dmu.shape[1:]), \
                self.win_dnu.new_zeros(self.win_dnu.shape[1:])
        entry = dict(
            win_dmu=dmu, win_dnu=dnu, win_mu=mu, win_nu=nu,
            win_dmu_w=self._dot_mean_patch(dmu[None], weight)[0],
            win_dnu_w=_dot(dnu, weight), win_bias=bias)
        for name, value in entry.items():
            buffer = getattr(self, name)
            buffer.index_copy_(0, slot, value.to(buffer.dtype)[None])
        self.win_valid.index_copy_(0, slot, record.view(1))
        self.win_pos.add_(record.to(self.win_pos.dtype))
        self._advance_grid_phase()

    def _advance_grid_phase(self) -> None:
        """Step :attr:`grid_phase` with ``iter_count`` (it stays ``iter_count % stride**2``)."""
        self.grid_phase = (self.grid_phase + 1) % self.grad_sample_stride**2
