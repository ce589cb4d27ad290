"""Cut an MMPose top-down heatmap model into pipeline blocks, feed it and compute its loss.

Blocks of a ``TopdownPoseEstimator`` / :class:`~mmpgnet.models.PGNetPoseEstimator` with a
heatmap head::

    backbone.stem, backbone.layer{i}.{j} (every residual block of a ResNet-like backbone,
    else one 'backbone' block), neck.lateral, neck.cascade{k}, [guidance], neck.merge
    (a CFFM neck in single mode, else one 'neck' block), head

The first stage receives ``img`` (the data preprocessor's output) and the targets
``gt_heatmaps`` and ``keypoint_weights``, which travel forward with the activations to the last
stage, where :meth:`TopdownHeatmapAdapter.losses` computes the same losses as the model's
``loss()``. The guidance block sits right after the cascade it reads, on whichever stage holds
that cascade; its predictions ``guide{i}`` travel forward as extra tensors (they are small:
K channels at the level's stride) because the feedback loss compares them with the last
stage's prediction.
"""
from typing import Dict, List, Sequence, Tuple

import torch.nn as nn
from mmpose.models.pose_estimators import TopdownPoseEstimator
from torch import Tensor

from mmpgnet.models.necks.cffm import CFFM
from mmpgnet.models.pose_estimators import (PGNetPoseEstimator, heatmap_head_loss,
                                            pack_heatmap_targets)
from .blocks import BlockGraph, PipelineBlock, State

TARGET_KEYS = ('gt_heatmaps', 'keypoint_weights')


def _is_resnet_like(backbone: nn.Module) -> bool:
    return all(hasattr(backbone, a) for a in ('res_layers', 'out_indices', 'maxpool')) and \
        (getattr(backbone, 'deep_stem', False) or hasattr(backbone, 'conv1'))


def _resnet_blocks(backbone: nn.Module) -> Tuple[List[PipelineBlock], Tuple[str, ...]]:
    """Blocks of a ResNet-like backbone (stem, then every residual block)."""
    if backbone.deep_stem:
        stem_modules = [backbone.stem, backbone.maxpool]

        def stem(s: State) -> State:
            return dict(x=backbone.maxpool(backbone.stem(s['img'])))
    else:
        stem_modules = [backbone.conv1, backbone.norm1, backbone.relu, backbone.maxpool]

        def stem(s: State) -> State:
            x = backbone.relu(backbone.norm1(backbone.conv1(s['img'])))
            return dict(x=backbone.maxpool(x))

    blocks = [PipelineBlock('backbone.stem', stem, ('img', ), ('x', ), stem_modules)]
    feat_keys = []
    for i, layer_name in enumerate(backbone.res_layers):
        layer = getattr(backbone, layer_name)
        for j, res_block in enumerate(layer):
            outputs = ('x', )
            if i in backbone.out_indices and j == len(layer) - 1:
                outputs = ('x', f'c{i}')
                feat_keys.append(f'c{i}')

            def run(s: State, block=res_block, outputs=outputs) -> State:
                x = block(s['x'])
                return {k: x for k in outputs}

            aliases = {outputs[1]: 'x'} if len(outputs) == 2 else {}
            blocks.append(PipelineBlock(f'backbone.{layer_name}.{j}', run, ('x', ), outputs,
                                        [res_block], aliases))
    return blocks, tuple(feat_keys)


def _backbone_blocks(backbone: nn.Module) -> Tuple[List[PipelineBlock], Tuple[str, ...]]:
    if _is_resnet_like(backbone):
        return _resnet_blocks(backbone)
    raise ValueError(f'PipelineParallelWrapper cuts ResNet-like backbones (mmpose/mmdet ResNet, '
                     f'ResNetV1d) into blocks; got {type(backbone).__name__}')


def _cffm_blocks(neck: CFFM, feat_keys: Sequence[str], guidance: nn.Module,
                 guidance_cascade: int) -> Tuple[List[PipelineBlock], Tuple[str, ...],
                                                 Tuple[str, ...]]:
    """Blocks of a CFFM neck in single mode, with the guidance heads after their cascade."""
    levels = tuple(f'l{i}' for i in range(neck.num_levels))

    def lateral(s: State) -> State:
        feats = neck.prepare_inputs([s[k] for k in feat_keys])
        return dict(zip(levels, neck.project(feats)))

    blocks = [PipelineBlock('neck.lateral', lateral, tuple(feat_keys), levels,
                            [neck.lateral_convs])]
    guide_keys: Tuple[str, ...] = ()
    for k, nodes in enumerate(neck.cascades):

        def cascade(s: State, k=k) -> State:
            return dict(zip(levels, neck.run_cascade(k, [s[lv] for lv in levels])))

        blocks.append(PipelineBlock(f'neck.cascade{k}', cascade, levels, levels, [nodes]))
        if guidance is not None and k == guidance_cascade:
            guided = tuple(levels[i] for i in guidance.in_levels)
            guide_keys = tuple(f'guide{i}' for i in guidance.in_levels)

            def guide(s: State, guided=guided, guide_keys=guide_keys) -> State:
                return dict(zip(guide_keys, guidance([s[lv] for lv in guided])))

            blocks.append(PipelineBlock('guidance', guide, guided, guide_keys, [guidance]))

    def merge(s: State) -> State:
        return dict(feat0=neck.merge_levels([s[lv] for lv in levels]))

    blocks.append(PipelineBlock('neck.merge', merge, levels, ('feat0', ), [neck.merge_node]))
    return blocks, ('feat0', ), guide_keys


class TopdownHeatmapAdapter:
    """What the pipeline wrapper needs from an MMPose top-down heatmap model.

    Args:
        model (TopdownPoseEstimator): the model (a :class:`PGNetPoseEstimator` brings its
            guidance; the head must be a heatmap head with a ``loss_module``).

    Raises:
        ValueError: if the model is of another kind, naming what is supported.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, TopdownPoseEstimator):
            raise ValueError('PipelineParallelWrapper supports MMPose top-down heatmap models '
                             '(TopdownPoseEstimator, PGNetPoseEstimator); got '
                             f'{type(model).__name__}')
        if not hasattr(getattr(model, 'head', None), 'loss_module'):
            head = type(getattr(model, 'head', None)).__name__
            raise ValueError('PipelineParallelWrapper needs a heatmap head with a loss_module '
                             f'(e.g. HeatmapHead), got {head}')
        self.model = model

    @property
    def guidance(self) -> nn.Module:
        """The model's guidance module, or None."""
        return getattr(self.model, 'guidance', None)

    def build_graph(self) -> BlockGraph:
        """Cut the model into blocks.

        Returns:
            BlockGraph: blocks, first-stage inputs and loss inputs.
        """
        model = self.model
        blocks, feat_keys = _backbone_blocks(model.backbone)
        guide_keys: Tuple[str, ...] = ()
        neck = getattr(model, 'neck', None)
        if isinstance(neck, CFFM) and neck.out_mode == 'single':
            cascade = getattr(model, 'guidance_cascade', None)
            neck_blocks, feat_keys, guide_keys = _cffm_blocks(neck, feat_keys, self.guidance,
                                                              cascade)
            blocks += neck_blocks
        elif neck is not None:
            if self.guidance is not None:
                raise ValueError('guidance needs a CFFM neck in single mode')
            in_keys = feat_keys

            def run_neck(s: State) -> State:
                outs = neck(tuple(s[k] for k in in_keys))
                return dict(feat0=outs[-1] if isinstance(outs, (tuple, list)) else outs)

            # names must be known on every rank before any data: a generic neck is taken to
            # return one map (as heatmap heads read); multi-output necks need their own blocks
            blocks.append(PipelineBlock('neck', run_neck, in_keys, ('feat0', ), [neck]))
            feat_keys = ('feat0', )
        head_in = tuple(feat_keys)

        def head(s: State) -> State:
            return dict(heatmaps=model.head.forward(tuple(s[k] for k in head_in)))

        blocks.append(PipelineBlock('head', head, head_in, ('heatmaps', ), [model.head]))
        loss_keys = ('heatmaps', ) + guide_keys + TARGET_KEYS
        return BlockGraph(blocks, ('img', ) + TARGET_KEYS, loss_keys)

    @staticmethod
    def pack(data: dict) -> Tuple[Tensor, ...]:
        """First-stage inputs from a preprocessed batch.

        Args:
            data (dict): the data preprocessor's output (``inputs``, ``data_samples``).

        Returns:
            tuple[Tensor]: ``img``, ``gt_heatmaps``, ``keypoint_weights``.
        """
        gt_heatmaps, keypoint_weights = pack_heatmap_targets(data['data_samples'])
        return (data['inputs'], gt_heatmaps.to(data['inputs'].device),
                keypoint_weights.to(data['inputs'].device))

    def losses(self, state: State) -> Dict[str, Tensor]:
        """The model's losses from the last stage's tensors.

        Args:
            state (dict): the loss keys of :meth:`build_graph`.

        Returns:
            dict[str, Tensor]: the same entries as the model's ``loss()``.
        """
        model = self.model
        if isinstance(model, PGNetPoseEstimator):
            guide = [state[f'guide{i}'] for i in model.guidance.in_levels] \
                if model.with_guidance else []
            return model.loss_by_tensors(state['heatmaps'], guide, state['gt_heatmaps'],
                                         state['keypoint_weights'])
        return heatmap_head_loss(model.head, state['heatmaps'], state['gt_heatmaps'],
                                 state['keypoint_weights'], model.train_cfg)
