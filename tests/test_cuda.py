"""Every component on CUDA against its CPU result, and two models trained on CUDA with AMP.

Every test here is marked ``cuda`` and skipped where ``torch.cuda.is_available()`` is false, so
``make test`` on a CPU machine only collects them. On a GPU: ``make test-gpu`` (or
``python -m pytest -m cuda tests/test_cuda.py``); see README.md, "Running on a GPU".

Component part (needs torch, mmengine and mmcv's Python parts only, e.g. ``mmcv-lite``): the box
losses, CFFM (both modes, NCHW and channels-last), CBN linked to its convs over several SGD steps
with a full window, and the PGS guidance heads run on CUDA and on CPU from the same weights and
inputs. The error of a tensor is its relative L2 error ``||cuda - cpu|| / ||cpu||`` against the
CPU float32 result (for a gradient, the denominator is at least a tenth of the module's largest
gradient norm: a gradient that is zero in exact arithmetic, a conv bias before a BN, is rounding
noise on both sides). Bounds, for every output, gradient and buffer:

* float32 (TF32 off on the GPU): 1e-5.
* ``torch.autocast('cuda', float16)``: 1e-2, or 4x the error of the same computation under
  ``torch.autocast('cpu', float16)``, whichever is larger; bfloat16: 5e-2, or 4x the CPU
  autocast's error. The second bound is for ill-conditioned quantities: the gradient of a conv
  that feeds a BN, summed over a whole map, loses most of its digits in half precision on any
  device (about 20 % with float16, 60 % with bfloat16 for CFFM's depthwise convs on the CPU),
  so the GPU is held to the accuracy the CPU reaches with the same precision.
* One exception, measured on an H200 (torch 2.11, CUDA 13): the gradients of CFFM's fusion
  weights (2-3 scalars per node) under CUDA autocast are 5-33x less accurate than under CPU
  autocast: up to 15 % (float16) and 9 % (bfloat16) of a tenth of the module's largest
  gradient, where the CPU reaches 1.2 % / 1.6 %; the same with cuDNN off, so it is not cuDNN's
  convolutions. The direction is kept (cosine >= 0.86 to the float32 gradient, >= 0.94 in 23 of
  24 sets) and so is the
  exact scale invariance that the BN after each node gives them (no gradient along the weights).
  They are held to 25 % and to that invariance; the cause is an open finding (docs/gpu.md).
* The box losses compute in float32 from the rounded boxes: values within 1e-5 under autocast,
  gradients within one rounding to the boxes' dtype (2**-10 for float16, 2**-7 for bfloat16).

A last component test runs a CBN + box-loss training step under
``torch.cuda.set_sync_debug_mode('error')``: any host synchronisation in it fails the test.

Model part (skipped, with the reason, where mmpose / mmdet and mmcv's compiled CUDA ops do not
import): the PGNet demo config and the CFFM Faster R-CNN config train a few iterations with
``tools/train.py --amp`` (``AmpOptimWrapper``, float16) on the synthetic COCO set, with finite
losses.
"""
import glob
import json
import math
import os.path as osp
import re
from typing import Callable, Dict, List, Optional, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmpgnet.utils.optional_packages import package_unavailable_reason

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device'),
]

DEVICE = torch.device('cuda')
CPU = torch.device('cpu')
#: relative L2 error bounds against the CPU float32 result (see the module docstring)
TOL = dict(fp32=1e-5, fp16=1e-2, bf16=5e-2)
#: under autocast, a tensor may also be within this factor of the CPU autocast's own error
PEER_FACTOR = 4.0
#: relative error of one rounding of a float32 gradient to the input's dtype (with margin)
GRAD_ROUNDING = dict(fp32=1e-5, fp16=2.0**-10, bf16=2.0**-7)
DTYPES = dict(fp16=torch.float16, bf16=torch.bfloat16)
PRECISIONS = ('fp32', 'fp16', 'bf16')
Results = Dict[str, Tensor]


# --------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def exact_float32():
    """Turn TF32 off (on by default for cuDNN convs), so float32 means float32 on both sides."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` on ``device`` for ``'fp16'`` / ``'bf16'``; disabled for ``'fp32'``."""
    return torch.autocast(device.type, dtype=DTYPES.get(precision, torch.float16),
                          enabled=precision != 'fp32')


def rel_err(actual: Tensor, expected: Tensor, floor: float = 0.0) -> float:
    """Relative L2 error ``||actual - expected|| / max(||expected||, floor)`` (float64, CPU)."""
    a = actual.detach().to(CPU, torch.float64)
    e = expected.detach().to(CPU, torch.float64)
    norm = max(float(e.norm()), floor)
    diff = float((a - e).norm())
    return diff / norm if norm > 0 else diff


def assert_rel(actual: Tensor, expected: Tensor, tol: float, what: str,
               floor: float = 0.0) -> None:
    """Check device (the test device), shape, finiteness and the relative error bound."""
    assert actual.device.type == DEVICE.type, f'{what} is on {actual.device}, not {DEVICE}'
    assert actual.shape == expected.shape, f'{what}: shape {actual.shape} != {expected.shape}'
    assert bool(torch.isfinite(actual).all()), f'{what} has non-finite values'
    err = rel_err(actual, expected, floor)
    assert err <= tol, f'{what}: relative error {err:.3e} > {tol:.3e}'


def collect(module: nn.Module, outputs: Results) -> Results:
    """``outputs`` plus every parameter's gradient and every buffer of ``module`` (detached)."""
    results = {k: v.detach().clone() for k, v in outputs.items()}
    results.update({f'grad of {n}': p.grad.clone() for n, p in module.named_parameters()
                    if p.grad is not None})
    results.update({f'buffer {n}': b.clone() for n, b in module.named_buffers()})
    return results


def check_against_cpu(run: Callable[[torch.device, str], Results], precision: str,
                      what: str, autocast_tol: Optional[Dict[str, float]] = None) -> Results:
    """Run ``run`` on CUDA with ``precision`` and on the CPU in float32; compare everything.

    Under autocast, ``run`` also runs on the CPU with the same autocast precision (the peer
    whose error sets the second bound, see the module docstring).

    Args:
        run (Callable): ``run(device, precision)`` -> named results; builds everything from
            the same seeds on each call.
        precision (str): ``'fp32'``, ``'fp16'`` or ``'bf16'``.
        what (str): the name of the check in failure messages.
        autocast_tol (dict[str, float], optional): regular expression of result names ->
            a looser bound for them under autocast (see the module docstring).

    Returns:
        Results: the CUDA results.
    """
    ref = run(CPU, 'fp32')
    ours = run(DEVICE, precision)
    peer = run(CPU, precision) if precision != 'fp32' else None
    assert set(ours) == set(ref), f'{what}: results differ: {set(ours) ^ set(ref)}'
    grad_scale = max((float(v.double().norm()) for k, v in ref.items()
                      if k.startswith('grad of ')), default=0.0)
    for key, expected in ref.items():
        label = f'{what} ({precision}): {key}'
        if not expected.is_floating_point():
            assert torch.equal(ours[key].cpu(), expected), f'{label} differs'
            continue
        floor = 0.1 * grad_scale if key.startswith('grad of ') else 0.0
        tol = TOL[precision]
        if peer is not None:
            tol = max(tol, PEER_FACTOR * rel_err(peer[key], expected, floor))
            tol = max([tol] + [bound for pattern, bound in (autocast_tol or {}).items()
                               if re.fullmatch(pattern, key)])
        assert_rel(ours[key], expected, tol, label, floor)
    return ours


# --------------------------------------------------------------------------- box losses
LOSS_CFGS = dict(
    giou=dict(type='mmpgnet.GIoULoss'),
    cdiou_center=dict(type='mmpgnet.CDIoULoss'),
    cdiou_corner=dict(type='mmpgnet.CDIoULoss', distance='corner'))


def _box_pairs(n: int = 4096, seed: int = 0):
    """Aligned (pred, target) boxes: overlapping, disjoint, identical and edge-sharing pairs."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * 100
    wh = torch.rand(n, 2, generator=gen) * 40 + 1
    target = torch.cat([xy, xy + wh], 1)
    pred = target + torch.randn(n, 4, generator=gen) * 8
    pred[:, 2:] = torch.maximum(pred[:, 2:], pred[:, :2] + 0.5)
    q = n // 8
    pred[:q] = target[:q]  # identical boxes: ties everywhere
    pred[q:2 * q] = target[q:2 * q] + 200  # far apart: no overlap
    pred[2 * q:3 * q, 0] = target[2 * q:3 * q, 2]  # touching edges
    weight = torch.rand(n, generator=gen)
    return pred, target, weight, torch.randn(n, generator=gen)


@pytest.mark.parametrize('precision', PRECISIONS)
@pytest.mark.parametrize('kind', list(LOSS_CFGS))
def test_box_losses_match_cpu(kind, precision):
    from mmengine.registry import MODELS
    loss = MODELS.build(LOSS_CFGS[kind])
    pred, target, weight, grad_weight = _box_pairs()
    dtype = DTYPES.get(precision, torch.float32)
    pred = pred.to(dtype)  # what a head under autocast hands over; targets stay float32

    def run(device: torch.device, boxes: Tensor, ctx):
        # a leaf of its own on each device (float32 boxes are `pred` itself on the CPU)
        p = boxes.detach().to(device).requires_grad_()
        with ctx:
            each = loss(p, target.to(device), reduction_override='none')
            mean = loss(p, target.to(device), weight=weight.to(device), avg_factor=1234.5)
        ((each * grad_weight.to(device)).sum() + mean).backward()
        return each, mean, p.grad

    # the reference: the same rounded boxes in float32 on the CPU
    each_ref, mean_ref, grad_ref = run(CPU, pred.float(), autocast(CPU, 'fp32'))
    each, mean, grad = run(DEVICE, pred, autocast(DEVICE, precision))
    assert each.dtype == torch.float32 and mean.dtype == torch.float32
    assert grad.dtype == dtype
    assert_rel(each, each_ref, TOL['fp32'], f'{kind} per-pair loss ({precision})')
    assert_rel(mean, mean_ref, TOL['fp32'], f'{kind} weighted mean ({precision})')
    assert_rel(grad, grad_ref, GRAD_ROUNDING[precision], f'{kind} gradient ({precision})')


# --------------------------------------------------------------------------- CFFM
#: the gradients of the fusion nodes' weights, and their bound under CUDA autocast (docstring)
FUSION_WEIGHT_GRAD = r'grad of cascades\.\d+\.(top_down|bottom_up)\.\d+\.weight'
FUSION_WEIGHT_GRAD_TOL = 0.25


@pytest.mark.parametrize('precision', PRECISIONS)
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('out_mode', ['pyramid', 'single'])
def test_cffm_matches_cpu(out_mode, channels_last, precision):
    from mmengine.registry import MODELS
    cfg = dict(type='mmpgnet.CFFM', in_channels=[16, 32, 64, 128], out_channels=32,
               num_cascades=2, out_mode=out_mode, num_outs=5 if out_mode == 'pyramid' else None)
    torch.manual_seed(0)
    weights = MODELS.build(cfg).state_dict()
    gen = torch.Generator().manual_seed(1)
    shapes = ((16, 32, 24), (32, 16, 12), (64, 8, 6), (128, 4, 3))
    feats = [torch.randn(2, c, h, w, generator=gen) for c, h, w in shapes]

    def run(device: torch.device, prec: str) -> Results:
        # channels-last on the GPU only: the CPU reference is the plain NCHW module
        nhwc = channels_last and device.type != 'cpu'
        neck = MODELS.build(dict(cfg, channels_last=nhwc)).to(device).train()
        neck.load_state_dict(weights)
        fmt = torch.channels_last if nhwc else torch.contiguous_format
        with autocast(device, prec):
            outs = neck([f.to(device, memory_format=fmt) for f in feats])
        grads = torch.Generator().manual_seed(2)
        sum((o.float() * torch.randn(o.shape, generator=grads).to(device)).sum()
            for o in outs).backward()
        return collect(neck, {f'output {i}': o for i, o in enumerate(outs)})

    what = f'CFFM {out_mode}' + (' NHWC' if channels_last else '')
    ours = check_against_cpu(run, precision, what, {FUSION_WEIGHT_GRAD: FUSION_WEIGHT_GRAD_TOL})
    fusion = [k for k in ours if re.fullmatch(FUSION_WEIGHT_GRAD, k)]
    assert len(fusion) == 12, sorted(ours)  # 2 cascades x 6 nodes
    for key in fusion:  # BN after the node: the loss does not change along the weights
        grad = ours[key].to(CPU, torch.float64)
        unit = weights[key[len('grad of '):]].double()
        unit = unit / unit.norm()
        assert abs(float(grad @ unit)) <= 1e-3 * float(grad.norm()), f'{what}: {key} {grad}'


# --------------------------------------------------------------------------- CBN
def _cbn_model() -> nn.Module:
    """Two ConvModules with CBN (burn-in 2, window 3) built by name, as a config builds them."""
    from mmcv.cnn import ConvModule
    norm_cfg = dict(type='CBN', buffer_num=3, burnin_iters=2)
    return nn.Sequential(
        ConvModule(3, 16, 3, padding=1, norm_cfg=norm_cfg),
        ConvModule(16, 32, 3, stride=2, padding=1, norm_cfg=norm_cfg))


def _link(model: nn.Module, x: Tensor) -> None:
    from mmpgnet.models.norms import link_cbn_layers
    report = link_cbn_layers(model, lambda: model(x))
    assert len(report.linked) == 2, report.skipped


def _cbns(model: nn.Module) -> list:
    from mmpgnet.models.norms import named_cbn_layers
    return list(named_cbn_layers(model).values())


CBN_STEPS = 7


@pytest.mark.parametrize('step', range(CBN_STEPS))
@pytest.mark.parametrize('precision', PRECISIONS)
def test_cbn_linked_full_window_matches_cpu(precision, step):
    """SGD steps of two linked CBN layers; step >= 2 compensates, the window is full from 3 on."""
    torch.manual_seed(0)
    weights = _cbn_model().state_dict()
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 3, 20, 16, generator=gen) for _ in range(step + 1)]
    grads = [torch.randn(8, 32, 10, 8, generator=gen) for _ in range(step + 1)]

    def run(device: torch.device, prec: str) -> Results:
        model = _cbn_model().to(device).train()
        model.load_state_dict(weights)
        _link(model, batches[0].to(device))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        for i, (x, g) in enumerate(zip(batches, grads)):
            if i:
                optimizer.step()
            with autocast(device, prec):
                out = model(x.to(device))
            optimizer.zero_grad()
            (out.float() * g.to(device)).mean().backward()
        flags = [bool(m.compensating) for m in _cbns(model)]
        assert flags == [step >= 2] * 2, f'compensating {flags} at step {step} on {device}'
        return collect(model, dict(output=out))

    check_against_cpu(run, precision, f'CBN step {step}')


def test_cbn_window_stays_finite_under_float16_autocast():
    """A training-size batch under float16 autocast: the window and the loss stay finite.

    The second-moment gradient ``sum y_c P`` runs over every sampled output position (here
    48 x 32 x 24 of them): computed in float16 it exceeds float16's range (65504) and turns the
    window, then the outputs, into inf / NaN (seen on the CPU's float16 autocast).
    """
    from mmcv.cnn import ConvModule
    torch.manual_seed(0)
    norm_cfg = dict(type='CBN', buffer_num=2, burnin_iters=1)
    model = nn.Sequential(
        ConvModule(3, 16, 3, padding=1, norm_cfg=norm_cfg),
        ConvModule(16, 16, 3, padding=1, norm_cfg=norm_cfg)).to(DEVICE).train()
    x = torch.randn(48, 3, 64, 48, device=DEVICE) * 2 + 1
    _link(model, x)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(4):
        with autocast(DEVICE, 'fp16'):
            loss = model(x).float().square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert bool(torch.isfinite(loss)), f'loss is {float(loss)} at step {step}'
        for i, cbn in enumerate(_cbns(model)):
            for name in ('win_mu', 'win_nu', 'win_dmu', 'win_dnu'):
                assert bool(torch.isfinite(getattr(cbn, name)).all()), \
                    f'CBN {i} {name} is not finite at step {step}'
    assert all(bool(m.compensating) for m in _cbns(model))


# --------------------------------------------------------------------------- PGS guidance
class _KeypointMSE(nn.Module):
    """Keypoint-weighted MSE (as MMPose's ``KeypointMSELoss(use_target_weight=True)``)."""

    def forward(self, pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
        w = weights[:, :, None, None]
        return F.mse_loss(pred * w, target * w)


@pytest.mark.parametrize('precision', PRECISIONS)
@pytest.mark.parametrize('target_resize', ['max', 'avg', 'bilinear'])
def test_guidance_heads_match_cpu(target_resize, precision):
    from mmpgnet.models.heads import HeatmapGuidance
    torch.manual_seed(0)
    weights = HeatmapGuidance(16, 17, [1, 2], [0.1, 0.2], loss=_KeypointMSE()).state_dict()
    gen = torch.Generator().manual_seed(1)
    levels = [torch.randn(2, 16, 16, 12, generator=gen), torch.randn(2, 16, 8, 6, generator=gen)]
    deep = torch.rand(2, 17, 32, 24, generator=gen)
    gt = torch.rand(2, 17, 32, 24, generator=gen)
    kw = torch.rand(2, 17, generator=gen)

    def run(device: torch.device, prec: str) -> Results:
        heads = HeatmapGuidance(in_channels=16, num_keypoints=17, in_levels=[1, 2],
                                weights=[0.1, 0.2], loss=_KeypointMSE(), feedback_weight=0.5,
                                target_resize=target_resize).to(device)
        heads.load_state_dict(weights)
        deep_pred = deep.to(device).requires_grad_()
        with autocast(device, prec):
            preds = heads([x.to(device) for x in levels])
            losses = heads.loss(preds, deep_pred, gt.to(device), kw.to(device), scale=0.7)
        sum(losses.values()).backward()
        assert deep_pred.grad is None  # the feedback target is detached
        assert set(losses) == {'loss_guide_l1', 'loss_guide_l2', 'loss_fb_l1', 'loss_fb_l2'}
        return collect(heads, dict(losses, **{f'prediction {i}': p for i, p in enumerate(preds)}))

    check_against_cpu(run, precision, f'guidance heads ({target_resize})')


# --------------------------------------------------------------------------- host syncs
def test_cbn_and_loss_training_step_never_syncs_with_the_host():
    """A training step of CBN layers and both box losses runs without one host sync.

    ``torch.cuda.set_sync_debug_mode('error')`` raises on every synchronising call (``.item()``,
    ``bool(t)``, a device-to-host copy, ``nonzero``, boolean indexing, a blocking host-to-device
    copy). The batches are made on the device beforehand; the first steps (burn-in, window
    filling) run outside the check, the checked steps compensate with a full window.
    """
    from mmengine.registry import MODELS
    torch.manual_seed(0)
    body = _cbn_model().to(DEVICE).train()
    head = nn.Linear(32, 4).to(DEVICE)
    giou = MODELS.build(dict(type='mmpgnet.GIoULoss'))
    cdiou = MODELS.build(dict(type='mmpgnet.CDIoULoss', loss_weight=0.5))
    params = list(body.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    images = [torch.randn(8, 3, 20, 16, device=DEVICE, generator=gen) for _ in range(6)]
    target = torch.tensor([[10., 10., 40., 30.]], device=DEVICE).repeat(8, 1)
    weight = torch.rand(8, device=DEVICE, generator=gen) + 0.1
    _link(body, images[0])

    def step(x: Tensor) -> Tensor:
        feats = body(x)
        pred = target + head(feats.mean((2, 3)))
        loss = giou(pred, target, weight=weight, avg_factor=8.0) + cdiou(pred, target) + \
            feats.square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    losses = [step(x) for x in images[:3]]  # burn-in and window filling, unchecked
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        losses += [step(x) for x in images[3:]]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert all(bool(m.compensating) for m in _cbns(body))
    assert bool(torch.isfinite(torch.stack(losses)).all())


# --------------------------------------------------------------------------- models, AMP
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PGNET_DEMO = osp.join(REPO_ROOT, 'configs/pgnet/pgnet_res18_cffm_demo_synthetic-128x96.py')
CFFM_FASTER_RCNN = osp.join(REPO_ROOT, 'configs/cffm/faster-rcnn_r50_cffm_1x_coco.py')
PERSON = dict(metainfo=dict(classes=('person', )))
ONE_CLASS_DETECTOR = dict(
    model=dict(roi_head=dict(bbox_head=dict(num_classes=1)),
               test_cfg=dict(rcnn=dict(score_thr=0.0))),
    train_dataloader=dict(dataset=PERSON), val_dataloader=dict(dataset=PERSON),
    test_dataloader=dict(dataset=PERSON))


def _skip_unless(package: str):
    reason = package_unavailable_reason(package)
    return pytest.mark.skipif(reason is not None,
                              reason=f'skipped: {package} not importable ({reason})')


def _mmcv_cuda_ops_unavailable_reason() -> Optional[str]:
    """Why mmcv's compiled ops (``RoIAlign``, ``nms``) cannot run on CUDA here, or ``None``."""
    try:
        from mmcv.ops import get_compiling_cuda_version
    except ImportError as err:
        return f'`import mmcv.ops` failed: {type(err).__name__}: {err}'
    if get_compiling_cuda_version() == 'not available':
        return 'mmcv was built without its CUDA ops (a CPU-only build; README "Full stack")'
    return None


def _train_losses(work_dir: str) -> List[float]:
    """The ``loss`` of every logged training iteration (MMEngine's scalars.json)."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    assert files, f'no scalars.json log under {work_dir}'
    with open(files[-1]) as f:
        records = [json.loads(line) for line in f if line.strip()]
    assert any('memory' in r for r in records), 'no CUDA memory logged: did it run on the GPU?'
    return [r['loss'] for r in records if 'loss' in r]


def _train_with_amp(config: str, data_root: str, work_dir: str, extra: Optional[Dict],
                    **kwargs) -> Sequence[float]:
    """``tools/train.py CONFIG --amp`` on the synthetic set, shrunk by ``smoke_config``."""
    from helpers.configs import smoke_config
    from helpers.tool_runs import run_tool
    cfg = smoke_config(config, data_root, work_dir, extra=extra, **kwargs)
    run_tool(['train.py', cfg, '--amp'], timeout=300)
    with open(cfg) as f:  # the Runner dumps the config it ran over this file
        assert "type='AmpOptimWrapper'" in f.read(), 'the run did not use float16 AMP'
    losses = _train_losses(work_dir)
    assert losses and all(math.isfinite(v) for v in losses), losses
    print(f'{osp.basename(config)}: {len(losses)} iterations, loss {losses[0]:.4f} -> '
          f'{losses[-1]:.4f}')
    return losses


@pytest.mark.slow
@_skip_unless('mmpose')
def test_pgnet_demo_trains_with_amp(synthetic_coco, tmp_path):
    # the 6 training images hold 14 people: 7 iterations an epoch, 3 epochs, a val after each
    losses = _train_with_amp(PGNET_DEMO, synthetic_coco, str(tmp_path / 'pgnet'), extra=None,
                             max_epochs=3, batch_size=2)
    third = max(1, len(losses) // 3)
    assert sum(losses[-third:]) < sum(losses[:third]), f'the loss did not decrease: {losses}'


@pytest.mark.slow
@_skip_unless('mmdet')
@pytest.mark.skipif(_mmcv_cuda_ops_unavailable_reason() is not None,
                    reason=f'skipped: {_mmcv_cuda_ops_unavailable_reason()}')
def test_cffm_faster_rcnn_trains_with_amp(synthetic_coco, tmp_path):
    _train_with_amp(CFFM_FASTER_RCNN, synthetic_coco, str(tmp_path / 'frcnn'),
                    extra=ONE_CLASS_DETECTOR, max_epochs=2, batch_size=2, det_scale=(320, 256))
