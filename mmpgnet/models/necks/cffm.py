"""CFFM: the Cascaded Fusion Feature Model neck of PGNet."""
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, DepthwiseSeparableConvModule
from mmengine.model import BaseModule
from torch import Tensor

from mmpgnet.registry import register_model
from .cffm_fusion_node import CFFMFusionNode, conv_module_forward

OUT_MODES = ('pyramid', 'single')
EXTRA_CONV_SOURCES = ('on_input', 'on_lateral', 'on_output')


def resize_to(x: Tensor, size: Tuple[int, int], upsample_cfg: dict) -> Tensor:
    """Resize a feature map to ``size`` for fusion.

    Upsampling uses ``F.interpolate(x, size=size, **upsample_cfg)``. Downsampling uses max pooling:
    a 2x2/stride-2 pool (ceil mode) where that gives ``size`` exactly (the usual 2x step between
    backbone stages, with ResNet's ceil rounding), an adaptive max pool otherwise (other ratios).

    Args:
        x (Tensor): map of shape ``(N, C, H, W)``.
        size (tuple[int, int]): target ``(H', W')``.
        upsample_cfg (dict): keyword arguments of ``F.interpolate`` except ``size``.

    Returns:
        Tensor: shape ``(N, C, H', W')``.
    """
    height, width = x.shape[-2:]
    if (height, width) == tuple(size):
        return x
    if height <= size[0] and width <= size[1]:
        return F.interpolate(x, size=size, **upsample_cfg)
    if ((height + 1) // 2, (width + 1) // 2) == tuple(size):
        return F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
    return F.adaptive_max_pool2d(x, size)


@register_model()
class CFFM(BaseModule):
    r"""Cascaded Fusion Feature Model (the neck of PGNet).

    Every input level is projected to ``out_channels`` by a 1x1 conv. Then ``num_cascades``
    cascades each run a top-down pass (deep to shallow) and a bottom-up pass (shallow to deep)::

        top-down   t[L-1] = x[L-1];  t[i] = node([x[i], up(t[i+1])])               i = L-2 .. 0
        bottom-up  b[0]   = t[0];    b[i] = node([x[i], t[i], down(b[i-1])])         i = 1 .. L-2
                                     b[L-1] = node([x[L-1], down(b[L-2])])

    and ``b`` becomes the ``x`` of the next cascade. A node (:class:`CFFMFusionNode`) sums its
    inputs with learnable non-negative normalised weights, then applies a depthwise-separable 3x3
    conv and a 1x1 conv (``norm_cfg``/``act_cfg`` reach all of them). After the top-down pass
    ``t[0]`` depends on every level, and the bottom-up pass carries it to every level, so every
    output depends on every input level (one cascade is enough for that; more cascades add depth).

    ``out_mode='pyramid'`` returns the levels like :class:`mmdet.models.necks.FPN`, with extra
    levels (max pool or stride-2 separable convs) up to ``num_outs``. ``out_mode='single'`` adds a
    last node that fuses all levels resized to level ``single_level`` (the finest used level by
    default, stride 4 for ResNet) and returns that one map, for heatmap heads.

    Design choices where the paper is vague: the nodes follow BiFPN's fast normalised fusion; the
    bottom-up pass keeps a skip from the pass input ``x[i]`` (more paths for the gradient at no
    conv cost); upsampling is ``F.interpolate`` (``upsample_cfg``), downsampling max pooling, both
    free of parameters; the single map is a weighted fusion of all levels (not a concatenation),
    which costs one node at the target stride.

    Args:
        in_channels (list[int]): Channels of each input level, shallow (high resolution) first,
            e.g. ``[256, 512, 1024, 2048]`` for ResNet-50 C2..C5.
        out_channels (int): Channels of every fused level and output. Defaults to 256.
        num_cascades (int): Number of top-down + bottom-up cascades. Defaults to 1.
        out_mode (str): ``'pyramid'`` or ``'single'``. Defaults to ``'pyramid'``.
        num_outs (int, optional): Number of outputs in pyramid mode (levels beyond the used input
            levels are extra levels). Defaults to None: one per used level. Must be None or 1 in
            single mode.
        start_level (int): First input level used. Defaults to 0.
        end_level (int): Last input level used (inclusive), -1 for the last one. No extra level is
            allowed when it is not the last one. Defaults to -1.
        add_extra_convs (bool | str): Extra pyramid levels from stride-2 depthwise-separable 3x3
            convs on ``'on_input'`` (last used backbone map), ``'on_lateral'`` (its 1x1
            projection) or ``'on_output'`` (last fused level); ``True`` means ``'on_input'``;
            ``False`` uses max pooling of the last output, as FPN. Defaults to False.
        relu_before_extra_convs (bool): Apply ReLU before the second and later extra convs.
            Defaults to False.
        single_level (int, optional): Input level index whose resolution the single map has.
            Defaults to None: ``start_level`` (the finest used level).
        conv_cfg (dict, optional): Config of conv layers. Defaults to None.
        norm_cfg (dict, optional): Config of norm layers of all convs. Defaults to
            ``dict(type='BN')``.
        act_cfg (dict, optional): Config of activations of all convs. Defaults to
            ``dict(type='ReLU')``.
        upsample_cfg (dict): Keyword arguments of ``F.interpolate`` (the target size is always
            the finer level's size). Defaults to ``dict(mode='nearest')``.
        finest_level_cascades (int, optional): How many of the cascades (the first ones) fuse
            the finest used level; the later ones fuse the coarser levels only and pass the
            finest map through (every output still depends on every input through the first
            cascade). The paper remarks that the shallow layers cost much computation for little
            gain; at stride 4 a cascade's finest node costs as much as all its other nodes
            together, so ``1`` with 2 cascades cuts the neck's time by about a third. Defaults to
            None (all cascades).
        channels_last (bool): Run the fusion in the channels-last (NHWC) memory format whatever
            the layout of the inputs (values are the same). oneDNN's and cuDNN's depthwise convs
            are several times faster on NHWC maps, so this makes CFFM on an NCHW model about as
            fast as in an all-NHWC one; the outputs are then NHWC tensors too (PyTorch ops take
            either layout; custom ops that need NCHW memory call ``.contiguous()``). Defaults to
            False.
        fusion_eps (float): ``eps`` of the weight normalisation. Defaults to 1e-4.
        init_cfg (dict or list[dict], optional): Initialisation config. Defaults to None: mmcv's
            ``ConvModule`` initialisation (Kaiming), fusion weights 1.

    Inputs:
        A tuple/list of ``len(in_channels)`` tensors, level ``i`` of shape
        ``(N, in_channels[i], H_i, W_i)``, each level at most the size of the one before.

    Returns:
        tuple[Tensor]: pyramid mode: ``num_outs`` tensors ``(N, out_channels, H_i, W_i)`` for the
        used levels, then extra levels each halving the previous size (rounded up); single mode:
        one tensor ``(N, out_channels, H_s, W_s)`` with ``s = single_level``.

    Example:
        >>> import torch
        >>> in_channels = [8, 16, 32, 64]
        >>> inputs = [torch.rand(1, c, s, s) for c, s in zip(in_channels, [64, 32, 16, 8])]
        >>> neck = CFFM(in_channels, out_channels=16, num_outs=5).eval()
        >>> [tuple(out.shape) for out in neck(inputs)]
        [(1, 16, 64, 64), (1, 16, 32, 32), (1, 16, 16, 16), (1, 16, 8, 8), (1, 16, 4, 4)]
        >>> neck = CFFM(in_channels, out_channels=16, out_mode='single').eval()
        >>> [tuple(out.shape) for out in neck(inputs)]
        [(1, 16, 64, 64)]
        >>> neck = CFFM(in_channels, out_channels=16, out_mode='single', single_level=1).eval()
        >>> [tuple(out.shape) for out in neck(inputs)]
        [(1, 16, 32, 32)]
    """

    def __init__(self,
                 in_channels: List[int],
                 out_channels: int = 256,
                 num_cascades: int = 1,
                 out_mode: str = 'pyramid',
                 num_outs: Optional[int] = None,
                 start_level: int = 0,
                 end_level: int = -1,
                 add_extra_convs: Union[bool, str] = False,
                 relu_before_extra_convs: bool = False,
                 single_level: Optional[int] = None,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 act_cfg: Optional[dict] = dict(type='ReLU'),
                 upsample_cfg: dict = dict(mode='nearest'),
                 fusion_eps: float = 1e-4,
                 finest_level_cascades: Optional[int] = None,
                 channels_last: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_cascades = num_cascades
        self.out_mode = out_mode
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_cfg = {k: v for k, v in upsample_cfg.items() if k != 'scale_factor'}
        self._check_args(start_level, end_level, out_mode, num_cascades)
        self.start_level = start_level
        self.backbone_end_level = len(self.in_channels) if end_level == -1 else end_level + 1
        self.num_levels = self.backbone_end_level - start_level
        self.num_outs = self._resolve_num_outs(num_outs, end_level)
        self.add_extra_convs = self._resolve_extra_convs(add_extra_convs)
        self.single_level = self._resolve_single_level(single_level)
        self.finest_level_cascades = self._resolve_finest_level_cascades(finest_level_cascades)
        if not isinstance(channels_last, bool):
            raise ValueError(f'CFFM channels_last must be a bool, got {channels_last!r}')
        self.channels_last = channels_last
        conv_kwargs = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        node_kwargs = dict(conv_kwargs, eps=fusion_eps)

        self.lateral_convs = nn.ModuleList(
            ConvModule(self.in_channels[i], out_channels, 1, **conv_kwargs)
            for i in range(start_level, self.backbone_end_level))
        self.cascades = nn.ModuleList(
            self._make_cascade(node_kwargs, self._cascade_levels(i)) for i in range(num_cascades))
        self.merge_node = (
            CFFMFusionNode(self.num_levels, out_channels, **node_kwargs)
            if out_mode == 'single' else None)
        self.extra_convs = self._make_extra_convs(conv_kwargs)

    # ------------------------------------------------------------------ construction helpers
    def _check_args(self, start_level: int, end_level: int, out_mode: str,
                    num_cascades: int) -> None:
        """Validate the arguments that do not depend on others."""
        num_ins = len(self.in_channels)
        if out_mode not in OUT_MODES:
            raise ValueError(f'CFFM out_mode must be one of {OUT_MODES}, got {out_mode!r}')
        if num_cascades < 1:
            raise ValueError(f'CFFM needs num_cascades >= 1, got {num_cascades}')
        if not 0 <= start_level < num_ins:
            raise ValueError(f'CFFM start_level={start_level} is out of range for '
                             f'{num_ins} input levels (in_channels={self.in_channels})')
        last = num_ins - 1 if end_level == -1 else end_level
        if not start_level <= last < num_ins:
            raise ValueError(f'CFFM end_level={end_level} must be -1 or in [{start_level}, '
                             f'{num_ins - 1}] (in_channels={self.in_channels})')
        if last - start_level + 1 < 2:
            raise ValueError('CFFM fuses across scales and needs at least 2 used input levels, '
                             f'got start_level={start_level}, end_level={end_level} with '
                             f'in_channels={self.in_channels}')

    def _resolve_num_outs(self, num_outs: Optional[int], end_level: int) -> int:
        """Return the number of outputs, checking it against the mode and the used levels."""
        if self.out_mode == 'single':
            if num_outs not in (None, 1):
                raise ValueError(f"CFFM out_mode='single' returns 1 map, got num_outs={num_outs}")
            return 1
        if num_outs is None:
            return self.num_levels
        if num_outs < self.num_levels:
            raise ValueError(f'CFFM num_outs={num_outs} is fewer than the {self.num_levels} '
                             'used input levels')
        if num_outs > self.num_levels and self.backbone_end_level != len(self.in_channels):
            raise ValueError(f'CFFM cannot add extra levels (num_outs={num_outs}) when '
                             f'end_level={end_level} is not the last input level')
        return num_outs

    def _resolve_extra_convs(self, add_extra_convs: Union[bool, str]) -> Union[bool, str]:
        """Normalise ``add_extra_convs`` to False or one of :data:`EXTRA_CONV_SOURCES`."""
        if add_extra_convs is True:
            return 'on_input'
        if add_extra_convs is False:
            return False
        if add_extra_convs not in EXTRA_CONV_SOURCES:
            raise ValueError(f'CFFM add_extra_convs must be a bool or one of '
                             f'{EXTRA_CONV_SOURCES}, got {add_extra_convs!r}')
        return add_extra_convs

    def _resolve_single_level(self, single_level: Optional[int]) -> Optional[int]:
        """Return the input level of the single map (None in pyramid mode)."""
        if self.out_mode != 'single':
            return None
        if single_level is None:
            return self.start_level
        if not self.start_level <= single_level < self.backbone_end_level:
            raise ValueError(f'CFFM single_level={single_level} must be a used input level, in '
                             f'[{self.start_level}, {self.backbone_end_level - 1}]')
        return single_level

    def _resolve_finest_level_cascades(self, value: Optional[int]) -> int:
        """Return how many (first) cascades include the finest used level."""
        if value is None:
            return self.num_cascades
        if not isinstance(value, int) or not 1 <= value <= self.num_cascades:
            raise ValueError(f'CFFM finest_level_cascades must be an int in [1, num_cascades='
                             f'{self.num_cascades}] or None, got {value!r}')
        if value < self.num_cascades and self.num_levels < 3:
            raise ValueError('CFFM finest_level_cascades < num_cascades leaves later cascades '
                             f'with {self.num_levels - 1} level; it needs >= 3 used levels')
        return value

    def _cascade_levels(self, index: int) -> int:
        """Number of levels that cascade ``index`` fuses."""
        return self.num_levels if index < self.finest_level_cascades else self.num_levels - 1

    def _make_cascade(self, node_kwargs: dict, num_levels: int) -> nn.ModuleDict:
        """Build the nodes of one cascade over its ``num_levels`` coarsest used levels.

        ``top_down[i]`` fuses level ``i`` (``i = 0 .. L-2``); ``bottom_up[i]`` fuses level
        ``i + 1``, with 2 inputs for the top level and 3 for the others.
        """
        top_down = nn.ModuleList(
            CFFMFusionNode(2, self.out_channels, **node_kwargs) for _ in range(num_levels - 1))
        bottom_up = nn.ModuleList(
            CFFMFusionNode(2 if level == num_levels - 1 else 3, self.out_channels, **node_kwargs)
            for level in range(1, num_levels))
        return nn.ModuleDict(dict(top_down=top_down, bottom_up=bottom_up))

    def _make_extra_convs(self, conv_kwargs: dict) -> nn.ModuleList:
        """Build the stride-2 separable convs of the extra pyramid levels (if any)."""
        extra_convs = nn.ModuleList()
        num_extra = self.num_outs - self.num_levels
        if self.out_mode != 'pyramid' or not self.add_extra_convs:
            return extra_convs
        for i in range(num_extra):
            in_channels = self.out_channels
            if i == 0 and self.add_extra_convs == 'on_input':
                in_channels = self.in_channels[self.backbone_end_level - 1]
            extra_convs.append(
                DepthwiseSeparableConvModule(
                    in_channels, self.out_channels, 3, stride=2, padding=1, **conv_kwargs))
        return extra_convs

    # ------------------------------------------------------------------ forward helpers
    def _check_inputs(self, inputs: Sequence[Tensor]) -> None:
        """Raise a ``ValueError`` naming the mismatch if inputs do not fit ``in_channels``."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'CFFM expects {len(self.in_channels)} input levels '
                             f'(in_channels={self.in_channels}), got {len(inputs)}')
        for i, (x, channels) in enumerate(zip(inputs, self.in_channels)):
            if x.dim() != 4 or x.shape[1] != channels:
                raise ValueError(f'CFFM input level {i} must have shape (N, {channels}, H, W) '
                                 f'(in_channels={self.in_channels}), got {tuple(x.shape)}')

    def _run_cascade_nodes(self, cascade: nn.ModuleDict, feats: List[Tensor]) -> List[Tensor]:
        """Run the nodes of one top-down + bottom-up cascade.

        Args:
            cascade (nn.ModuleDict): nodes from :meth:`_make_cascade`.
            feats (list[Tensor]): ``L`` maps of ``out_channels``, finest first.

        Returns:
            list[Tensor]: the ``L`` fused maps, same shapes as ``feats``.
        """
        num_levels = len(feats)
        top_down = [None] * num_levels
        top_down[-1] = feats[-1]
        for i in range(num_levels - 2, -1, -1):
            up, fresh = self._resize(top_down[i + 1], feats[i])
            top_down[i] = cascade['top_down'][i]([feats[i], up], free=(1, ) if fresh else ())
        outs = [top_down[0]]
        for i in range(1, num_levels):
            down, fresh = self._resize(outs[-1], feats[i])
            node_inputs = [feats[i], down] if i == num_levels - 1 else [feats[i], top_down[i], down]
            free = (len(node_inputs) - 1, ) if fresh else ()
            outs.append(cascade['bottom_up'][i - 1](node_inputs, free=free))
        return outs

    def _resize(self, x: Tensor, like: Tensor) -> Tuple[Tensor, bool]:
        """Resize ``x`` to the size of ``like``; also say whether the result is a new tensor.

        A new tensor is a temporary that the node it feeds may overwrite (see
        :meth:`CFFMFusionNode.forward`); ``x`` itself (same size) must be left unchanged.
        """
        size = like.shape[-2:]
        return resize_to(x, size, self.upsample_cfg), tuple(x.shape[-2:]) != tuple(size)

    def prepare_inputs(self, inputs: Sequence[Tensor]) -> List[Tensor]:
        """Check the backbone features and put them in the neck's memory format.

        Args:
            inputs (Sequence[Tensor]): ``len(in_channels)`` maps, finest first.

        Returns:
            list[Tensor]: the same maps (channels-last copies if ``channels_last``).
        """
        self._check_inputs(inputs)
        if self.channels_last:
            return [x.contiguous(memory_format=torch.channels_last) for x in inputs]
        return list(inputs)

    def project(self, inputs: Sequence[Tensor]) -> List[Tensor]:
        """Project the used input levels to ``out_channels`` (the lateral 1x1 convs).

        Args:
            inputs (Sequence[Tensor]): maps from :meth:`prepare_inputs`.

        Returns:
            list[Tensor]: ``num_levels`` maps of ``out_channels``, finest first.
        """
        return [
            conv_module_forward(conv, inputs[self.start_level + i])
            for i, conv in enumerate(self.lateral_convs)
        ]

    def run_cascade(self, index: int, feats: List[Tensor]) -> List[Tensor]:
        """Run cascade ``index`` on all ``num_levels`` maps.

        A cascade past ``finest_level_cascades`` passes the finest map through and fuses the
        others. One of the steps of :meth:`forward` (see there), public for the pipeline-parallel
        split, which runs each cascade as a block of its own.

        Args:
            index (int): cascade index, ``0 .. num_cascades - 1``.
            feats (list[Tensor]): ``num_levels`` maps of ``out_channels``, finest first.

        Returns:
            list[Tensor]: the ``num_levels`` fused maps, same shapes.
        """
        cascade = self.cascades[index]
        if index < self.finest_level_cascades:
            return self._run_cascade_nodes(cascade, feats)
        return [feats[0]] + self._run_cascade_nodes(cascade, feats[1:])

    def merge_levels(self, feats: List[Tensor]) -> Tensor:
        """Fuse all levels at the resolution of ``single_level`` (single mode's last step).

        Args:
            feats (list[Tensor]): the ``num_levels`` maps of the last cascade, finest first.

        Returns:
            Tensor: the single output map.
        """
        target = feats[self.single_level - self.start_level]
        resized = [self._resize(x, target) for x in feats]
        free = tuple(i for i, (_, fresh) in enumerate(resized) if fresh)
        return self.merge_node([x for x, _ in resized], free=free)

    def add_extra_levels(self, outs: List[Tensor], inputs: Sequence[Tensor],
                         laterals: List[Tensor]) -> List[Tensor]:
        """Append extra pyramid levels up to ``num_outs`` (as mmdet's FPN; pyramid mode).

        Args:
            outs (list[Tensor]): the ``num_levels`` maps of the last cascade (appended to).
            inputs (Sequence[Tensor]): the maps of :meth:`prepare_inputs`.
            laterals (list[Tensor]): the maps of :meth:`project`.

        Returns:
            list[Tensor]: ``outs`` with ``num_outs`` maps.
        """
        num_extra = self.num_outs - len(outs)
        if num_extra <= 0:
            return outs
        if not self.add_extra_convs:
            for _ in range(num_extra):
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            return outs
        sources = dict(
            on_input=inputs[self.backbone_end_level - 1], on_lateral=laterals[-1],
            on_output=outs[-1])
        outs.append(self.extra_convs[0](sources[self.add_extra_convs]))
        for conv in self.extra_convs[1:]:
            source = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
            outs.append(conv(source))
        return outs

    def forward(self,
                inputs: Sequence[Tensor],
                on_cascade: Optional[Callable[[int, List[Tensor]], None]] = None
                ) -> Tuple[Tensor, ...]:
        """Fuse the backbone features.

        The steps, in order: :meth:`prepare_inputs`, :meth:`project`, :meth:`run_cascade` for
        each cascade, then :meth:`merge_levels` (single mode) or :meth:`add_extra_levels`
        (pyramid mode). This is the only place that sequences them; the pipeline-parallel split
        (:mod:`mmpgnet.engine.pipeline.pose_adapter`) runs the same public steps as blocks.

        Args:
            inputs (Sequence[Tensor]): ``len(in_channels)`` maps, level ``i`` of shape
                ``(N, in_channels[i], H_i, W_i)``, finest first.
            on_cascade (Callable, optional): a tap on the intermediate cascades, called as
                ``on_cascade(index, levels)`` right after cascade ``index`` with its
                ``num_levels`` fused maps (finest first). PGS guidance reads its levels here,
                so that its heads run where the pipeline runs them too. Defaults to None.

        Returns:
            tuple[Tensor]: ``num_outs`` maps of ``out_channels`` (pyramid mode) or one map at
            the resolution of ``single_level`` (single mode).
        """
        inputs = self.prepare_inputs(inputs)
        laterals = self.project(inputs)
        feats = laterals
        for index in range(self.num_cascades):
            feats = self.run_cascade(index, feats)
            if on_cascade is not None:
                on_cascade(index, feats)
        if self.out_mode == 'single':
            return (self.merge_levels(feats), )
        return tuple(self.add_extra_levels(list(feats), inputs, laterals))
