"""Every model component of the ``mmpgnet`` registry trains on ``meta`` tensors (a GPU stand-in).

Each registered name is built from its registry name, moved to the ``meta`` device and run
forward and backward there: a tensor made on the default device instead of the inputs' one, or a
host read of a value, raises on ``meta`` as it fails (or stalls) on CUDA. The test also fails when
a component is registered without a recipe here, so a new component cannot skip the check.
"""
from typing import Callable, Dict, Tuple

import pytest
import torch
from helpers.pose_models import tiny_batch, tiny_pose_cfg
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope
from torch import Tensor, nn

from mmpgnet.models.norms import link_cbn_layers
from mmpgnet.registry import MODELS

META = torch.device('meta')


def _boxes(n: int) -> Tensor:
    xy = torch.rand(n, 2) * 10
    return torch.cat([xy, xy + 1 + torch.rand(n, 2) * 5], 1)


def run_loss(name: str) -> Tuple[Tensor, ...]:
    loss = ROOT_MODELS.build(dict(type=f'mmpgnet.{name}', loss_weight=2.0)).to(META)
    pred = _boxes(16).to(META).requires_grad_(True)
    out = loss(pred, _boxes(16).to(META), torch.rand(16, 4).to(META), avg_factor=5.0)
    out.backward()
    return out, pred.grad


def run_cffm(name: str) -> Tuple[Tensor, ...]:
    results = []
    for mode in ('pyramid', 'single'):
        neck = ROOT_MODELS.build(dict(
            type=f'mmpgnet.{name}', in_channels=[8, 16, 32, 64], out_channels=16, num_cascades=2,
            out_mode=mode, num_outs=5 if mode == 'pyramid' else None, finest_level_cascades=1,
            channels_last=mode == 'single')).to(META)
        feats = [torch.randn(2, c, s, s, device=META, requires_grad=True)
                 for c, s in zip([8, 16, 32, 64], [32, 16, 8, 4])]
        outs = neck(feats)
        sum(o.sum() for o in outs).backward()
        results += list(outs) + [f.grad for f in feats]
    return tuple(results)


def run_cbn(name: str) -> Tuple[Tensor, ...]:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1),
                        ROOT_MODELS.build(dict(type=f'mmpgnet.{name}', num_features=8,
                                               buffer_num=2, burnin_iters=1)))
    net.to(META)
    report = link_cbn_layers(net, lambda: net(torch.randn(2, 3, 8, 8, device=META)))
    assert report.linked == {'1': '0'}
    for _ in range(4):  # past the burn-in, with a full window
        x = torch.randn(2, 3, 8, 8, device=META, requires_grad=True)
        out = net(x)
        out.sum().backward()
    return out, x.grad, net[0].weight.grad, net[1].weight.grad


def run_pose_estimator(name: str) -> Tuple[Tensor, ...]:
    DefaultScope.get_instance('registry-meta-pose', scope_name='mmpose')
    with DefaultScope.overwrite_default_scope('mmpose'):
        model = ROOT_MODELS.build(dict(tiny_pose_cfg(), type=f'mmpgnet.{name}'))
    data = model.data_preprocessor(tiny_batch(2), True)
    model.to(META)
    for sample in data['data_samples']:
        sample.gt_fields.heatmaps = sample.gt_fields.heatmaps.to(META)
        labels = sample.gt_instance_labels
        labels.keypoint_weights = labels.keypoint_weights.to(META)
    losses = model.loss(data['inputs'].to(META), data['data_samples'])
    sum(losses.values()).backward()
    return tuple(losses.values()) + tuple(p.grad for p in model.parameters())


def run_heatmap_guidance(name: str) -> Tuple[Tensor, ...]:
    heads = ROOT_MODELS.build(dict(
        type=f'mmpgnet.{name}', in_channels=8, num_keypoints=4, in_levels=[0, 1],
        weights=[0.5, 0.25], feedback_weight=0.1, loss=_WeightedMSE())).to(META)
    levels = [torch.randn(2, 8, s, s, device=META, requires_grad=True) for s in (16, 8)]
    preds = heads(levels)
    deep = torch.rand(2, 4, 32, 32, device=META, requires_grad=True)
    losses = heads.loss(preds, deep, torch.rand(2, 4, 32, 32, device=META),
                        torch.ones(2, 4, device=META), scale=torch.ones((), device=META))
    sum(losses.values()).backward()
    assert deep.grad is None  # the feedback target is detached
    return tuple(preds) + tuple(losses.values()) + tuple(x.grad for x in levels)


class _WeightedMSE(nn.Module):
    """Keypoint-weighted MSE (MMPose's ``KeypointMSELoss`` without mmpose)."""

    def forward(self, pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
        return ((pred - target)**2 * weights[..., None, None]).mean()


RECIPES: Dict[str, Callable[[str], Tuple[Tensor, ...]]] = {
    'GIoULoss': run_loss,
    'CDIoULoss': run_loss,
    'CFFM': run_cffm,
    'CBN': run_cbn,
    'PGNetPoseEstimator': run_pose_estimator,
    'HeatmapGuidance': run_heatmap_guidance,
}


def test_every_registered_model_has_a_recipe():
    package = {name for name, cls in MODELS.module_dict.items()
               if cls.__module__.startswith('mmpgnet.')}  # other tests register probes
    assert package == set(RECIPES), 'add a meta recipe for every registered component'


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_component_trains_on_meta(name):
    results = RECIPES[name](name)
    assert results and all(t is not None and t.device == META for t in results)
