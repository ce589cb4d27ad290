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

Code layout: this module holds the layer and its state; :mod:`.cbn_function` the autograd
function that pools and normalises; :mod:`.cbn_statistic_grads` the closed-form statistic
gradients and the Taylor compensation (pure functions); :mod:`.cbn_conv_support` which convs
can feed the layer; :mod:`.cbn_link` the tracing that links each layer to its conv.
"""
import weakref
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmpgnet.registry import register_norm_layer
from .cbn_conv_support import unsupported_conv_reason
from .cbn_function import CrossIterationBNFunction
from .cbn_statistic_grads import (compensate_window, dot, dot_mean_patch, statistic_grads,
                                  values_per_channel)

#: What the running statistics average (see :class:`CBN`'s ``eval_stats``).
EVAL_STATS = ('batch', 'window')
#: Window buffers whose shape depends on the linked conv (allocated at link or load time).
_CONV_SHAPED_BUFFERS = ('win_dmu', 'win_dnu')
#: Window buffers of shape (buffer_num, num_features).
_PER_CHANNEL_BUFFERS = ('win_mu', 'win_nu', 'win_dmu_dot_w', 'win_dnu_dot_w', 'win_bias')
#: Buffers that a checkpoint of a plain BN lacks; missing ones mean "fresh window".
_CBN_ONLY_BUFFERS = ('iter_count', 'win_pos', 'win_valid') + _PER_CHANNEL_BUFFERS + \
    _CONV_SHAPED_BUFFERS
#: Buffers renamed in version 3 of the layer: old checkpoint key -> new one.
_RENAMED_BUFFERS_V3 = {'win_dmu_w': 'win_dmu_dot_w', 'win_dnu_w': 'win_dnu_dot_w'}


def _upgrade_state_dict(state_dict: Dict[str, Tensor], prefix: str,
                        version: Optional[int]) -> None:
    """Rename the buffer keys of a checkpoint written before version 3, in place.

    Args:
        state_dict (dict): the (sub-)state dict being loaded (a copy owned by the loader).
        prefix (str): the layer's key prefix.
        version (int, optional): the layer version the checkpoint was written with; ``None``
            when the state dict carries no metadata.
    """
    if version is not None and version >= 3:
        return
    for old, new in _RENAMED_BUFFERS_V3.items():
        if prefix + old in state_dict and prefix + new not in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)


@register_norm_layer()
class CBN(_BatchNorm):
    """Cross-Iteration Batch Normalization for 4D inputs (``norm_cfg=dict(type='CBN')``).

    Until it is linked to the conv that feeds it (``CBNHook`` does this before training), during
    the first ``burnin_iters`` training forwards and with ``buffer_num=0`` it is a plain
    ``BatchNorm2d``. In eval mode it uses the running statistics, which are updated with the
    current batch's statistics as in BN by default (``eval_stats='batch'``), or with the pooled
    window's (``eval_stats='window'``).

    Besides BN's, the layer's buffers (all in its ``state_dict``, so a checkpoint resumes
    exactly) are, with ``k = buffer_num``, ``C`` channels and, for the linked conv, ``G`` groups
    and ``D`` values per filter (``C_in / G * kh * kw``):

    * ``iter_count`` (0-dim): training forwards so far (burn-in, sampling-grid phase).
    * ``win_pos`` (0-dim): the window's ring position; the next entry goes to slot
      ``win_pos % k``.
    * ``win_valid`` (k,): which slots hold a recorded entry.
    * ``win_mu``, ``win_nu`` (k, C): each entry's mean and second moment ``E[y^2]``.
    * ``win_dmu`` (k, G, D): each entry's ``d mu_c / d W_c``, the mean input patch per group.
    * ``win_dnu`` (k, C, D): each entry's ``d nu_c / d W_c``.
    * ``win_dmu_dot_w``, ``win_dnu_dot_w`` (k, C): those gradients dotted with the conv weight
      of the entry's own iteration (the Taylor step's expansion point; named ``win_dmu_w`` and
      ``win_dnu_w`` before version 3, which still load).
    * ``win_bias`` (k, C): the conv bias of the entry's iteration (zeros without one).

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
    # 2: torch's BN (``num_batches_tracked``); 3: ``win_dmu_w``/``win_dnu_w`` renamed
    _version = 3

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
        for name in _PER_CHANNEL_BUFFERS:
            self.register_buffer(name, torch.zeros(k, c, **f32))
        for name in _CONV_SHAPED_BUFFERS:  # sized when linked (or loaded), see link_conv
            self.register_buffer(name, torch.zeros(k, 0, 0, **f32))
        self._conv_ref: Optional[weakref.ReferenceType] = None
        self._hook_handle = None
        #: the linked conv's (input, output) captured by its forward hook, consumed by forward
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
        self_ref = weakref.ref(self)  # the hook must not keep this layer alive

        def _capture_conv_io(module: nn.Module, args: Tuple[Any, ...], output: Any) -> None:
            cbn = self_ref()
            # eval forwards use running statistics; a conv linked to another CBN since is ignored
            if cbn is not None and cbn.training and cbn.conv is module:
                cbn._conv_io = (args[0], output)

        self._hook_handle = conv.register_forward_hook(_capture_conv_io)
        groups = conv.groups
        dim = conv.weight[0].numel()
        k = self.buffer_num
        # another conv geometry than the window was made (or loaded) for: start a fresh window
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
        """Pickle/deepcopy without the (weak) link: a copy starts unlinked.

        Returns:
            dict: the instance state without the link.
        """
        state = self.__dict__.copy()
        state.update(_conv_ref=None, _hook_handle=None, _conv_io=None)
        return state

    # ------------------------------------------------------------------ checkpoints
    def _load_from_state_dict(self, state_dict: Dict[str, Tensor], prefix: str,
                              local_metadata: Dict, strict: bool, missing_keys: List[str],
                              unexpected_keys: List[str], error_msgs: List[str]) -> None:
        """Load like BN; resize conv-shaped window buffers; a BN checkpoint gives a fresh window.

        Checkpoints of versions before 3 have their renamed buffer keys mapped to the new names
        (``_RENAMED_BUFFERS_V3``).

        Args:
            state_dict (dict): the (sub-)state dict.
            prefix (str): this module's key prefix.
            local_metadata (dict): metadata of this module.
            strict (bool): strict loading.
            missing_keys (list[str]): collects missing keys.
            unexpected_keys (list[str]): collects unexpected keys.
            error_msgs (list[str]): collects errors.
        """
        _upgrade_state_dict(state_dict, prefix, local_metadata.get('version'))
        for name in _CONV_SHAPED_BUFFERS:
            value = state_dict.get(prefix + name)
            # the checkpoint's conv geometry wins: reallocate so that torch copies into it
            if value is not None and value.shape != getattr(self, name).shape:
                setattr(self, name, torch.zeros_like(value, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        absent = [prefix + name for name in _CBN_ONLY_BUFFERS if prefix + name in missing_keys]
        if absent:  # a plain BN's checkpoint (or an older layout): not an error, a fresh window
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
        """Raise unless ``input`` is 4D.

        Args:
            input (Tensor): the layer's input.

        Raises:
            ValueError: for a tensor that is not (N, C, H, W).
        """
        if input.dim() != 4:
            raise ValueError(f'CBN expects a 4D (N, C, H, W) input, got {input.dim()}D')

    def extra_repr(self) -> str:
        """str: BN's representation plus CBN's options."""
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
        conv_io, self._conv_io = self._conv_io, None  # consume this forward's capture
        self._compensating.zero_()  # (fill_(False) breaks torch.jit tracing: ONNX, FLOP counting)
        if not self.training:
            return super().forward(x)
        conv = self.conv
        # statically known (no tensor value read): there is a window, a linked conv, and x is
        # that conv's output of this forward (not a later op's result or an older capture)
        uses_window = (self.buffer_num > 0 and conv is not None and conv_io is not None
                       and conv_io[1] is x)
        if not uses_window:
            self.iter_count.add_(1)
            self._advance_grid_phase()
            # torch's training-mode BN raises on one value per channel (no variance to take);
            # _plain_forward normalises it with variance 0
            if values_per_channel(x) > 1:
                return super().forward(x)
            return self._plain_forward(x)
        step = self.iter_count
        # record from the last buffer_num burn-in steps on: the window is full when it is used
        record = step >= self.burnin_iters - self.buffer_num
        # past entries count only once the burn-in is over, and only in recorded slots
        valid = self.win_valid & (step >= self.burnin_iters)
        # no graph through the compensation without the option, nor under torch.no_grad
        differentiable = self.differentiable_compensation and torch.is_grad_enabled()
        with torch.set_grad_enabled(differentiable):
            past_mu, past_nu = self._compensated_window(conv, detach=not differentiable)
        out, mu_t, var_t, mu, var = CrossIterationBNFunction.apply(
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
        """Batch normalisation with the current statistics (also for one value per channel).

        Args:
            x (Tensor): the input (N, C, H, W).

        Returns:
            Tensor: the normalised input.
        """
        var_t, mu_t = torch.var_mean(x if x.dtype == torch.float64 else x.float(),
                                     dim=(0, 2, 3), unbiased=False)
        out = self._normalize(x, mu_t, var_t)
        self._update_running_stats(mu_t.detach(), var_t.detach(), x)
        return out

    def _normalize(self, x: Tensor, mu: Tensor, var: Tensor) -> Tensor:
        """Apply ``(x - mu) / sqrt(var + eps) * weight + bias`` per channel.

        Args:
            x (Tensor): the input (N, C, H, W).
            mu (Tensor): the mean (C,).
            var (Tensor): the variance (C,).

        Returns:
            Tensor: the normalised input, in its dtype.
        """
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
        num_values = values_per_channel(x)
        if batches is not None:
            num_values = batches.to(var.dtype) * num_values
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average, without reading the counter
                factor = self.num_batches_tracked.reciprocal().to(self.running_mean.dtype)
            else:
                factor = self.momentum
            # Bessel's correction m / (m - 1), left out for one value per channel (m = 1);
            # a device tensor when m counts pooled batches, a Python int otherwise
            if batches is not None:
                unbiased = var * (num_values / (num_values - 1).clamp_min(1))
            else:
                unbiased = var * (num_values / max(num_values - 1, 1))
            self.running_mean.lerp_(mu.to(self.running_mean.dtype), factor)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)

    # ------------------------------------------------------------------ window
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
        return compensate_window(win_mu, self.win_nu, win_dmu, win_dnu, self.win_dmu_dot_w,
                                 self.win_dnu_dot_w, self.win_bias, weight, bias)

    def _record(self, conv: nn.Conv2d, conv_in: Tensor, y: Tensor, mu: Tensor, nu: Tensor,
                record: Tensor) -> None:
        """Write this iteration's statistics and their gradients into the window ring.

        The slot is ``win_pos % buffer_num``, a device index. ``record`` (a 0-dim bool tensor)
        says whether the entry counts: it becomes the slot's ``win_valid`` flag, and the ring
        position only advances when it is true, so a step before the recording phase leaves the
        ring where it was.

        Args:
            conv (nn.Conv2d): the linked conv.
            conv_in (Tensor): its input in this forward.
            y (Tensor): its output (this layer's input).
            mu (Tensor): the batch's mean (C,).
            nu (Tensor): the batch's second moment (C,).
            record (Tensor): 0-dim bool, whether the entry counts.
        """
        slot = (self.win_pos % self.buffer_num).view(1)
        weight, bias = self._conv_params(conv)
        if conv.weight.requires_grad:
            mean_patch, dnu_dw = statistic_grads(conv, conv_in, y, self.grad_sample_stride,
                                                 self.grid_phase, self.win_mu.dtype)
        else:  # frozen conv: the weights never change, the compensation term is zero
            mean_patch = self.win_dmu.new_zeros(self.win_dmu.shape[1:])
            dnu_dw = self.win_dnu.new_zeros(self.win_dnu.shape[1:])
        entry = dict(
            win_dmu=mean_patch, win_dnu=dnu_dw, win_mu=mu, win_nu=nu,
            win_dmu_dot_w=dot_mean_patch(mean_patch[None], weight)[0],
            win_dnu_dot_w=dot(dnu_dw, weight), win_bias=bias)
        for name, value in entry.items():
            buffer = getattr(self, name)
            buffer.index_copy_(0, slot, value.to(buffer.dtype)[None])
        self.win_valid.index_copy_(0, slot, record.view(1))
        self.win_pos.add_(record.to(self.win_pos.dtype))
        self._advance_grid_phase()

    def _advance_grid_phase(self) -> None:
        """Step :attr:`grid_phase` with ``iter_count`` (it stays ``iter_count % stride**2``)."""
        self.grid_phase = (self.grid_phase + 1) % self.grad_sample_stride**2
