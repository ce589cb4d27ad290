"""CFFM neck tests: shapes, gradients, errors, cross-scale fusion, stock configs, training."""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
from helpers.torch_features import needs_fake_cuda, needs_modern_dynamo
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.registry import DefaultScope

import mmpgnet  # noqa: F401  (registers CFFM)
from mmpgnet.models.necks import CFFM, CFFMFusionNode

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
R50_CHANNELS = [256, 512, 1024, 2048]
POSE_CONFIG = 'configs/pgnet/pgnet_res50_cffm_8xb64-210e_coco-256x192.py'


def _rand_levels(channels, sizes, batch=2, seed=0):
    """Random feature maps, level i of shape (batch, channels[i], *sizes[i])."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, c, *s, generator=gen) for c, s in zip(channels, sizes)]


def _check_grads(neck, inputs, outs):
    """Backward from all outputs; every neck parameter and every input must get a gradient."""
    sum(out.float().square().mean() for out in outs).backward()
    for name, param in neck.named_parameters():
        assert param.grad is not None, f'no gradient for {name}'
        assert torch.isfinite(param.grad).all(), f'non-finite gradient for {name}'
    for i, x in enumerate(inputs):
        assert x.grad is not None and x.grad.abs().sum() > 0, f'no gradient reaches input {i}'


# ---------------------------------------------------------------------------------------------
# backbones
# ---------------------------------------------------------------------------------------------
def _backbone_features(kind, img_hw):
    """Features of a real backbone (no pretrained weights) on a small image."""
    if kind == 'resnet50':
        from mmdet.models.backbones import ResNet
        backbone = ResNet(depth=50, out_indices=(0, 1, 2, 3), norm_eval=False)
    elif kind == 'hrnet_w32':
        from mmpose.registry import MODELS
        cfg = get_config('mmpose::body_2d_keypoint/topdown_heatmap/coco/'
                         'td-hm_hrnet-w32_8xb64-210e_coco-256x192.py').model.backbone
        cfg.init_cfg = None
        cfg.extra.stage4.multiscale_output = True  # all four branches, strides 4..32
        with DefaultScope.overwrite_default_scope('mmpose'):
            backbone = MODELS.build(cfg)
    elif kind == 'cspnext':
        from mmpose.registry import MODELS
        cfg = get_config('mmpose::body_2d_keypoint/rtmpose/coco/'
                         'rtmpose-m_8xb256-420e_coco-256x192.py').model.backbone
        cfg.init_cfg = None
        cfg.norm_cfg = dict(type='BN')
        cfg.out_indices = (2, 3, 4)  # strides 8, 16, 32
        with DefaultScope.overwrite_default_scope('mmdet'):
            backbone = MODELS.build(cfg)
    else:
        raise ValueError(kind)
    backbone.eval()
    with torch.no_grad():
        feats = backbone(torch.rand(2, 3, *img_hw))
    return [f.detach().clone().requires_grad_(True) for f in feats]


@pytest.fixture(scope='module', params=['resnet50', 'hrnet_w32', 'cspnext'])
def backbone_feats(request):
    """(name, features) of each backbone on a 96x64 image."""
    return request.param, _backbone_features(request.param, (96, 64))


@pytest.mark.parametrize('out_mode', ['pyramid', 'single'])
def test_backbone_outputs_shapes_and_grads(backbone_feats, out_mode):
    name, feats = backbone_feats
    feats = [f.detach().clone().requires_grad_(True) for f in feats]
    channels = [f.shape[1] for f in feats]
    extra = dict(num_outs=len(feats) + 1) if out_mode == 'pyramid' else {}
    neck = CFFM(channels, out_channels=32, num_cascades=2, out_mode=out_mode, **extra)
    neck.train()
    outs = neck(feats)
    assert isinstance(outs, tuple)
    if out_mode == 'pyramid':
        assert len(outs) == len(feats) + 1
        for out, feat in zip(outs, feats):
            assert out.shape == (2, 32, *feat.shape[-2:]), name
        last_h, last_w = feats[-1].shape[-2:]
        assert outs[-1].shape == (2, 32, (last_h + 1) // 2, (last_w + 1) // 2)
    else:
        assert len(outs) == 1
        assert outs[0].shape == (2, 32, *feats[0].shape[-2:]), name
    _check_grads(neck, feats, outs)


def test_resnet50_shapes_match_expected_strides():
    feats = _backbone_features('resnet50', (256, 192))
    assert [tuple(f.shape[-2:]) for f in feats] == [(64, 48), (32, 24), (16, 12), (8, 6)]
    neck = CFFM(R50_CHANNELS, 64, out_mode='single').eval()
    assert neck(feats)[0].shape == (2, 64, 64, 48)  # stride 4
    neck = CFFM(R50_CHANNELS, 64, out_mode='single', single_level=1).eval()
    assert neck(feats)[0].shape == (2, 64, 32, 24)  # stride 8


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_wrong_number_of_levels_raises():
    neck = CFFM(R50_CHANNELS, 16)
    feats = _rand_levels(R50_CHANNELS[:3], [(16, 16), (8, 8), (4, 4)])
    with pytest.raises(ValueError,
                       match=r'CFFM expects 4 input levels \(in_channels=\[256, 512, 1024, '
                       r'2048\]\), got 3'):
        neck(feats)


def test_wrong_channels_raises():
    neck = CFFM(R50_CHANNELS, 16)
    feats = _rand_levels([256, 512, 512, 2048], [(16, 16), (8, 8), (4, 4), (2, 2)])
    with pytest.raises(ValueError, match=r'input level 2 must have shape \(N, 1024, H, W\).*'
                       r'got \(2, 512, 4, 4\)'):
        neck(feats)


@pytest.mark.parametrize('kwargs, message', [
    (dict(out_mode='dense'), "out_mode must be one of .*got 'dense'"),
    (dict(num_cascades=0), 'num_cascades >= 1, got 0'),
    (dict(num_outs=3), 'num_outs=3 is fewer than the 4 used input levels'),
    (dict(out_mode='single', num_outs=2), 'returns 1 map, got num_outs=2'),
    (dict(out_mode='single', single_level=4), r'single_level=4 must be a used input level'),
    (dict(add_extra_convs='on_top'), "add_extra_convs must be .*got 'on_top'"),
    (dict(start_level=3), 'needs at least 2 used input levels'),
    (dict(end_level=2, num_outs=5), 'cannot add extra levels'),
    (dict(num_cascades=2, finest_level_cascades=3), r'finest_level_cascades must be an int in'),
    (dict(num_cascades=2, finest_level_cascades=0), r'finest_level_cascades must be an int in'),
    (dict(num_cascades=2, finest_level_cascades=1, start_level=2),
     'needs >= 3 used levels'),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CFFM(R50_CHANNELS, 16, **kwargs)


# ---------------------------------------------------------------------------------------------
# cross-scale fusion and fusion weights
# ---------------------------------------------------------------------------------------------
SIZES = [(32, 24), (16, 12), (8, 6), (4, 3)]


def _changed_outputs(neck, channels, level):
    """Which outputs change when only input ``level`` is perturbed (eval mode: BN is frozen)."""
    neck.eval()
    feats = _rand_levels(channels, SIZES, batch=1)
    perturbed = [f.clone() for f in feats]
    perturbed[level] = perturbed[level] + torch.randn_like(perturbed[level])
    with torch.no_grad():
        base, new = neck(feats), neck(perturbed)
    return [not torch.allclose(a, b, atol=1e-7, rtol=0) for a, b in zip(base, new)]


@pytest.mark.parametrize('num_cascades', [1, 2])
@pytest.mark.parametrize('level', range(4))
def test_every_output_depends_on_every_input(num_cascades, level):
    channels = [8, 16, 24, 32]
    pyramid = CFFM(channels, 16, num_cascades=num_cascades, num_outs=5, add_extra_convs='on_output')
    assert all(_changed_outputs(pyramid, channels, level)), f'pyramid, perturbed level {level}'
    single = CFFM(channels, 16, num_cascades=num_cascades, out_mode='single')
    assert all(_changed_outputs(single, channels, level)), f'single, perturbed level {level}'


@pytest.mark.parametrize('level', range(4))
def test_later_cascades_without_finest_level_still_fuse_every_level(level):
    channels = [8, 16, 24, 32]
    for out_mode in ('pyramid', 'single'):
        neck = CFFM(channels, 16, num_cascades=2, finest_level_cascades=1, out_mode=out_mode)
        assert all(_changed_outputs(neck, channels, level)), (out_mode, level)


def test_finest_level_cascades_skips_the_finest_nodes_of_later_cascades():
    full = CFFM(R50_CHANNELS, 16, num_cascades=3, out_mode='single')
    light = CFFM(R50_CHANNELS, 16, num_cascades=3, out_mode='single', finest_level_cascades=1)
    count = lambda neck: sum(isinstance(m, CFFMFusionNode) for m in neck.modules())  # noqa: E731
    assert count(full) == 3 * 6 + 1 and count(light) == 6 + 2 * 4 + 1
    # the finest map leaves the first cascade unchanged by the later ones
    feats = _rand_levels(R50_CHANNELS, SIZES, batch=2)
    light.eval()
    with torch.no_grad():
        laterals = [conv(f) for conv, f in zip(light.lateral_convs, feats)]
        first = light.run_cascade(0, laterals)
        calls = []
        handle = light.cascades[1]['top_down'][0].register_forward_hook(
            lambda m, a, o: calls.append(a[0][0].shape))
        light(feats)
        handle.remove()
    assert first[0].shape[-2:] == SIZES[0]
    assert calls == [torch.Size([2, 16, *SIZES[1]])]  # cascade 2's finest node is at stride 8
    out, = light(feats)
    out.sum().backward()
    assert all(p.grad is not None for p in light.parameters() if p.requires_grad)


@pytest.mark.parametrize('out_mode', ['pyramid', 'single'])
def test_channels_last_fusion_gives_the_same_maps_and_grads(out_mode):
    torch.manual_seed(0)
    kwargs = dict(num_cascades=2, out_mode=out_mode, finest_level_cascades=1)
    nchw = CFFM(R50_CHANNELS, 16, **kwargs)
    nhwc = CFFM(R50_CHANNELS, 16, channels_last=True, **kwargs)
    nhwc.load_state_dict(nchw.state_dict())
    feats = [f.requires_grad_() for f in _rand_levels(R50_CHANNELS, SIZES, batch=2)]
    feats_b = [f.detach().clone().requires_grad_() for f in feats]
    outs_a, outs_b = nchw(feats), nhwc(feats_b)
    for a, b in zip(outs_a, outs_b):
        assert b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous()
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    sum(o.square().sum() for o in outs_a).backward()
    sum(o.square().sum() for o in outs_b).backward()
    for a, b in zip(feats, feats_b):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-4 * a.grad.abs().max())
    # one tolerance for all: a conv bias right before BN has a true gradient of ~0 (BN cancels
    # it), so its rounding noise is only small against the other gradients
    scale = max(float(p.grad.abs().max()) for p in nchw.parameters())
    for (name, p_a), p_b in zip(nchw.named_parameters(), nhwc.parameters()):
        torch.testing.assert_close(p_a.grad, p_b.grad, rtol=1e-3, atol=1e-4 * scale, msg=name)
    with pytest.raises(ValueError, match='channels_last must be a bool'):
        CFFM(R50_CHANNELS, 16, channels_last='yes')


def test_dependency_check_detects_one_way_fusion():
    """The check above can fail: mmdet's FPN is top-down only, so P5 ignores C2."""
    from mmdet.models.necks import FPN
    channels = [8, 16, 24, 32]
    changed = _changed_outputs(FPN(channels, 16, 4), channels, level=0)
    assert changed == [True, False, False, False]


def test_fusion_weights_non_negative_and_normalised():
    neck = CFFM(R50_CHANNELS, 16, num_cascades=2, out_mode='single')
    nodes = [m for m in neck.modules() if isinstance(m, CFFMFusionNode)]
    # 2 cascades x (3 top-down + 3 bottom-up) + the single-map merge node
    assert len(nodes) == 13
    with torch.no_grad():
        for i, node in enumerate(nodes):
            gen = torch.Generator().manual_seed(i)
            node.weight.copy_(torch.randn(node.num_inputs, generator=gen))
            node.weight[0] = 0.5  # keep at least one positive weight
            node.weight[-1] = -2.0  # and one negative raw weight
    for node in nodes:
        weights = node.fusion_weights()
        assert (weights >= 0).all()
        assert weights[-1] == 0
        assert weights.sum().item() == pytest.approx(1.0, abs=1e-3)
    # the weights are learnable: they receive gradients through the neck
    feats = _rand_levels(R50_CHANNELS, SIZES)
    neck(feats)[0].mean().backward()
    assert all(node.weight.grad is not None for node in nodes)


def _identity_convs(node):
    """Make every conv of a node (built without norm and act) the identity."""
    with torch.no_grad():
        for conv in (node.sep_conv.depthwise_conv.conv, node.sep_conv.pointwise_conv.conv,
                     node.pw_conv.conv):
            conv.weight.zero_()
            conv.bias.zero_()
            center = conv.weight.shape[-1] // 2
            for c in range(conv.weight.shape[0]):
                conv.weight[c, c if conv.groups == 1 else 0, center, center] = 1.0


def test_fusion_node_is_weighted_sum_before_convs():
    node = CFFMFusionNode(2, 4, norm_cfg=None, act_cfg=None)
    _identity_convs(node)  # isolate the weighted sum
    with torch.no_grad():
        node.weight.copy_(torch.tensor([3.0, 1.0]))
    a, b = torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    assert torch.allclose(node([a, b]), torch.full_like(a, 3.0 / (4.0 + node.eps)))


def _reference_node(node, inputs):
    """The node as defined: separable conv and 1x1 conv of ``sum_i w_i x_i``."""
    weights = node.fusion_weights()
    fused = sum(w * x for w, x in zip(weights, inputs))
    return node.pw_conv(node.sep_conv(fused))


@pytest.mark.parametrize('raw_weights', [
    [1.0, 1.0, 1.0], [0.3, 2.0, 0.7], [0.0, 1.5, -1.0], [-1.0, 0.0, 0.8], [-1.0, -2.0, 0.0]])
@pytest.mark.parametrize('free', [(), (2, ), (0, 2)])
def test_fusion_node_fast_sum_equals_weighted_sum(raw_weights, free):
    """The lerp chain + kernel-folded scale (in place or not) gives the defined node."""
    torch.manual_seed(0)
    node = CFFMFusionNode(3, 8, norm_cfg=dict(type='GN', num_groups=2))
    with torch.no_grad():
        node.weight.copy_(torch.tensor(raw_weights))
    inputs = [torch.randn(2, 8, 6, 5) for _ in range(3)]
    ref = _reference_node(node, inputs)
    with torch.no_grad():
        copies = [x.clone() for x in inputs]
        out = node(copies, free=free)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for i, (x, copy_) in enumerate(zip(inputs, copies)):  # only free inputs may be overwritten
        assert i in free or torch.equal(x, copy_), i
    # with autograd: nothing is overwritten, same values, same gradients as the definition
    leaves = [x.clone().requires_grad_() for x in inputs]
    out = node(leaves, free=free)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), [*leaves, *node.parameters()])
    ref_leaves = [x.clone().requires_grad_() for x in inputs]
    ref_grads = torch.autograd.grad(_reference_node(node, ref_leaves).square().sum(),
                                    [*ref_leaves, *node.parameters()])
    scale = max(float(g.abs().max()) for g in ref_grads)  # GN makes some true gradients ~0
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, rtol=1e-3, atol=1e-5 * scale)


def test_fusion_node_keeps_custom_depthwise_forward():
    """A depthwise conv with hooks is not folded: its forward (and hooks) still run."""
    node = CFFMFusionNode(2, 4, norm_cfg=None, act_cfg=None).eval()
    calls = []
    node.sep_conv.depthwise_conv.register_forward_hook(lambda m, a, o: calls.append(a[0]))
    inputs = [torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)]
    out = node(inputs)
    assert len(calls) == 1
    torch.testing.assert_close(calls[0], sum(w * x for w, x in zip(node.fusion_weights(), inputs)))
    torch.testing.assert_close(out, _reference_node(node, inputs))


def test_norm_and_act_cfg_reach_every_conv():
    from mmcv.cnn import ConvModule
    neck = CFFM(R50_CHANNELS, 32, norm_cfg=dict(type='GN', num_groups=8),
                act_cfg=dict(type='SiLU'), num_outs=5, add_extra_convs='on_input')
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in neck.modules())
    node_depthwise = {id(node.sep_conv.depthwise_conv) for node in neck.modules()
                      if isinstance(node, CFFMFusionNode)}
    conv_modules = [m for m in neck.modules() if isinstance(m, ConvModule)]
    assert len(node_depthwise) == 6 and len(conv_modules) > len(node_depthwise)
    for module in conv_modules:
        if id(module) in node_depthwise:
            # a node's depthwise 3x3 is linear: norm + act follow its pointwise conv
            assert module.conv.groups == module.conv.in_channels > 1
            assert not module.with_norm and not module.with_activation
        else:
            assert isinstance(module.norm, torch.nn.GroupNorm), module
            assert isinstance(module.activate, torch.nn.SiLU), module


def test_pyramid_extra_levels_like_fpn():
    feats = _rand_levels(R50_CHANNELS, [(50, 84), (25, 42), (13, 21), (7, 11)], batch=1)
    retina = CFFM(R50_CHANNELS, 16, start_level=1, add_extra_convs='on_input', num_outs=5).eval()
    shapes = [tuple(o.shape[-2:]) for o in retina(feats)]
    assert shapes == [(25, 42), (13, 21), (7, 11), (4, 6), (2, 3)]
    assert len(retina.lateral_convs) == 3 and len(retina.extra_convs) == 2
    faster = CFFM(R50_CHANNELS, 16, num_outs=5).eval()
    outs = faster(feats)
    assert len(faster.extra_convs) == 0
    assert torch.equal(outs[-1], outs[-2][..., ::2, ::2])  # max-pool(1, stride 2) as FPN


def test_registered_for_mmdet_and_mmpose():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmpose.registry import MODELS as MMPOSE_MODELS
    for scope, registry in (('mmdet', MMDET_MODELS), ('mmpose', MMPOSE_MODELS)):
        with DefaultScope.overwrite_default_scope(scope):
            neck = registry.build(dict(type='CFFM', in_channels=[4, 8], out_channels=8))
            assert isinstance(neck, CFFM)
            assert isinstance(
                registry.build(dict(type='mmpgnet.CFFM', in_channels=[4, 8], out_channels=8)),
                CFFM)


# ---------------------------------------------------------------------------------------------
# torch.compile, meta and fake CUDA tensors (GPU readiness without a GPU)
# ---------------------------------------------------------------------------------------------
TINY_CHANNELS = [4, 8, 8, 16]
TINY_SIZES = [[(16, 12), (8, 6), (4, 3), (2, 2)], [(20, 15), (10, 8), (5, 4), (3, 2)]]


def _tiny_neck(out_mode, **kwargs):
    """A 2-cascade CFFM with 8 channels, NHWC fusion, the second cascade without level 0."""
    torch.manual_seed(0)
    extra = dict(num_outs=5) if out_mode == 'pyramid' else {}
    cfg = dict(out_channels=8, num_cascades=2, finest_level_cascades=1, channels_last=True,
               out_mode=out_mode, norm_cfg=dict(type='GN', num_groups=2), **extra)
    cfg.update(kwargs)
    return CFFM(TINY_CHANNELS, **cfg)


def _tiny_feats(sizes, batch=2, seed=0, device='cpu'):
    return [f.to(device) for f in _rand_levels(TINY_CHANNELS, sizes, batch=batch, seed=seed)]


@needs_modern_dynamo
@pytest.mark.parametrize('norm', ['GN', 'BN'])
@pytest.mark.parametrize('grad', [False, True])
@pytest.mark.parametrize('out_mode', ['pyramid', 'single'])
def test_compiles_without_graph_breaks(out_mode, grad, norm):
    norm_cfg = dict(type='GN', num_groups=2) if norm == 'GN' else dict(type='BN')
    neck = _tiny_neck(out_mode, norm_cfg=norm_cfg).train(grad)
    feats = _tiny_feats(TINY_SIZES[0])
    torch._dynamo.reset()
    with torch.set_grad_enabled(grad):
        explanation = torch._dynamo.explain(neck)(feats)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@needs_modern_dynamo
@pytest.mark.parametrize('out_mode', ['pyramid', 'single'])
def test_compiled_matches_eager(out_mode):
    """AOTAutograd (functionalised in-place fusion) gives eager's maps and gradients.

    Training with autograd on one size, inference without autograd (the in-place path) on
    another; inductor's kernels are checked by the slow test below.
    """
    neck = _tiny_neck(out_mode, add_extra_convs='on_output' if out_mode == 'pyramid' else False)
    torch._dynamo.reset()
    compiled = torch.compile(neck, backend='aot_eager', fullgraph=True, dynamic=False)
    feats = _tiny_feats(TINY_SIZES[0])
    leaves = [f.clone().requires_grad_() for f in feats]
    ref_leaves = [f.clone().requires_grad_() for f in feats]
    outs, refs = compiled(leaves), neck(ref_leaves)
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    params = list(neck.parameters())
    grads = torch.autograd.grad(sum(o.square().sum() for o in outs), leaves + params)
    ref_grads = torch.autograd.grad(sum(o.square().sum() for o in refs), ref_leaves + params)
    scale = max(float(g.abs().max()) for g in ref_grads)
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, rtol=1e-3, atol=1e-5 * scale)
    neck.eval()
    feats = _tiny_feats(TINY_SIZES[1], seed=1)
    with torch.no_grad():
        for out, ref in zip(compiled(feats), neck(feats)):
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('out_mode', ['pyramid', 'single'])
def test_inductor_matches_eager(out_mode):
    """Inductor's generated kernels (fused sums, norms) give eager's maps (no grad, 2 sizes)."""
    neck = _tiny_neck(out_mode).eval()
    torch._dynamo.reset()
    compiled = torch.compile(neck, fullgraph=True)
    with torch.no_grad():
        for sizes in TINY_SIZES:
            feats = _tiny_feats(sizes)
            for out, ref in zip(compiled(feats), neck(feats)):
                torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('out_mode', ['pyramid', 'single'])
def test_meta_forward_backward(out_mode, channels_last):
    """No tensor made on the CPU and no host read, with and without autograd."""
    neck = _tiny_neck(out_mode, channels_last=channels_last).to('meta')
    feats = [f.requires_grad_() for f in _tiny_feats(TINY_SIZES[1], device='meta')]
    outs = neck(feats)
    sum(o.square().sum() for o in outs).backward()
    expected = TINY_SIZES[1] + [(2, 1)] if out_mode == 'pyramid' else TINY_SIZES[1][:1]
    assert [tuple(o.shape) for o in outs] == [(2, 8, *s) for s in expected]
    assert all(o.device.type == 'meta' for o in outs)
    for name, param in neck.named_parameters():
        assert param.grad is not None and param.grad.device.type == 'meta', name
    assert all(f.grad is not None and f.grad.shape == f.shape for f in feats)
    with torch.inference_mode():  # the in-place fusion path
        assert [tuple(o.shape) for o in neck(feats)] == [tuple(o.shape) for o in outs]


@needs_fake_cuda
@pytest.mark.parametrize('grad', [False, True])
@pytest.mark.parametrize('out_mode', ['pyramid', 'single'])
def test_fake_cuda_forward(out_mode, grad):
    """Every tensor on the inputs' device: FakeTensorMode raises on a CPU tensor in the mix."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode(), torch.device('cuda'):
        neck = _tiny_neck(out_mode).train(grad)
        feats = [torch.empty(2, c, *s) for c, s in zip(TINY_CHANNELS, TINY_SIZES[0])]
        with torch.set_grad_enabled(grad):
            outs = neck(feats)
    assert len(outs) == (5 if out_mode == 'pyramid' else 1)
    assert all(o.device.type == 'cuda' and o.shape[:2] == (2, 8) for o in outs)


@pytest.mark.parametrize('out_mode', ['pyramid', 'single'])
def test_fast_inference_path_matches_autograd_path(out_mode):
    """Without autograd the fusion runs in place: same maps as with autograd, inputs intact."""
    neck = _tiny_neck(out_mode, channels_last=False).eval()
    feats = _tiny_feats(TINY_SIZES[1])
    copies = [f.clone() for f in feats]
    with torch.inference_mode():
        fast = neck(feats)
    for out, ref in zip(fast, neck(feats)):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(f, c) for f, c in zip(feats, copies))


# ---------------------------------------------------------------------------------------------
# stock MMPose / MMDetection configs with CFFM as their neck: build, forward + backward
# ---------------------------------------------------------------------------------------------
def _no_pretrained(cfg):
    """Drop every ``init_cfg`` that loads a checkpoint (nothing may be downloaded)."""
    if isinstance(cfg, dict):
        init_cfg = cfg.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            cfg['init_cfg'] = None
        if 'pretrained' in cfg:
            cfg['pretrained'] = None
        for value in cfg.values():
            _no_pretrained(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _no_pretrained(value)


def _td_hm_res50(model):
    """SimpleBaseline: C2..C5 -> CFFM single map at stride 32 -> the stock 3-deconv head."""
    model.backbone.out_indices = (0, 1, 2, 3)
    model.neck = dict(type='CFFM', in_channels=R50_CHANNELS, out_channels=64, out_mode='single',
                      single_level=3)
    model.head.in_channels = 64


def _td_hm_hrnet(model):
    """HRNet-W32: all four branches -> CFFM single map at stride 4 -> the stock 1x1 head."""
    model.backbone.extra.stage4.multiscale_output = True
    model.neck = dict(type='CFFM', in_channels=[32, 64, 128, 256], out_channels=32,
                      out_mode='single')


def _rtmpose_m(model):
    """RTMPose-m: CSPNeXt strides 8..32 -> CFFM single map at stride 32 -> RTMCCHead."""
    model.backbone.out_indices = (2, 3, 4)
    model.backbone.norm_cfg = dict(type='BN')  # SyncBN needs a process group
    model.neck = dict(type='CFFM', in_channels=[192, 384, 768], out_channels=128,
                      out_mode='single', single_level=2, act_cfg=dict(type='SiLU'))
    model.head.in_channels = 128


def _yoloxpose_s(model):
    """YOLOX-Pose-s: YOLOXPAFPN replaced by a 3-level CFFM pyramid."""
    model.data_preprocessor.batch_augments = None
    model.neck = dict(type='CFFM', in_channels=[128, 256, 512], out_channels=128, num_outs=3,
                      act_cfg=dict(type='SiLU'))


def _det_pyramid(model):
    """Faster / Mask R-CNN: FPN replaced by CFFM (P2..P6)."""
    model.neck = dict(type='CFFM', in_channels=R50_CHANNELS, out_channels=256, num_outs=5,
                      norm_cfg=dict(type='GN', num_groups=32))


def _retinanet(model):
    """RetinaNet: FPN (C3..C5, P6/P7 on C5) replaced by CFFM with the same layout."""
    model.neck = dict(type='CFFM', in_channels=R50_CHANNELS, out_channels=256, start_level=1,
                      add_extra_convs='on_input', num_outs=5,
                      norm_cfg=dict(type='GN', num_groups=32))


def _pose_topdown_batch(height=256, width=192):
    """Two top-down crops with heatmap (stride 4) and SimCC targets."""
    from mmpose.testing import get_packed_inputs
    return get_packed_inputs(batch_size=2, img_shape=(height, width), input_size=(width, height),
                             heatmap_size=(width // 4, height // 4), simcc_split_ratio=2.0)


def _small_topdown_batch():
    """128x96 crops: heatmap heads do not depend on the input size (RTMCCHead does)."""
    return _pose_topdown_batch(128, 96)


def _pose_bottomup_batch():
    """Two 160x160 images with 2 people each, gt as YOLOX-Pose's pipeline packs it."""
    from mmpose.testing import get_packed_inputs
    batch = get_packed_inputs(batch_size=2, num_instances=2, img_shape=(160, 160),
                              input_size=(160, 160), with_heatmap=False, with_simcc_label=False)
    for sample in batch['data_samples']:
        gt, labels = sample.gt_instances, sample.gt_instance_labels  # YOLOXPoseHead reads labels
        bboxes = torch.as_tensor(gt.bboxes, dtype=torch.float32)
        labels.bboxes = bboxes
        labels.labels = torch.zeros(len(bboxes), dtype=torch.long)
        labels.areas = (bboxes[:, 2] - bboxes[:, 0]) * (bboxes[:, 3] - bboxes[:, 1])
        labels.keypoints = torch.as_tensor(gt.keypoints, dtype=torch.float32)
        labels.keypoints_visible = torch.as_tensor(gt.keypoints_visible, dtype=torch.float32)
        sample.set_metainfo(dict(img_shape=(160, 160), input_size=(160, 160)))
    return batch


def _det_batch(with_mask=False):
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(batch_size=2, image_shapes=[(3, 128, 160)] * 2, num_items=[3, 2],
                          num_classes=80, with_mask=with_mask)


STOCK_CASES = {
    'td-hm_res50': ('mmpose', 'body_2d_keypoint/topdown_heatmap/coco/'
                    'td-hm_res50_8xb64-210e_coco-256x192.py', _td_hm_res50, _small_topdown_batch),
    'td-hm_hrnet-w32': ('mmpose', 'body_2d_keypoint/topdown_heatmap/coco/'
                        'td-hm_hrnet-w32_8xb64-210e_coco-256x192.py', _td_hm_hrnet,
                        _small_topdown_batch),
    'rtmpose-m': ('mmpose', 'body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py',
                  _rtmpose_m, _pose_topdown_batch),
    'yoloxpose-s': ('mmpose', 'body_2d_keypoint/yoloxpose/coco/yoloxpose_s_8xb32-300e_coco-640.py',
                    _yoloxpose_s, _pose_bottomup_batch),
    'faster-rcnn': ('mmdet', 'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', _det_pyramid,
                    _det_batch),
    'retinanet': ('mmdet', 'retinanet/retinanet_r50_fpn_1x_coco.py', _retinanet, _det_batch),
    'mask-rcnn': ('mmdet', 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', _det_pyramid,
                  lambda: _det_batch(with_mask=True)),
}


@pytest.mark.parametrize('case', list(STOCK_CASES))
def test_stock_config_with_cffm_neck_trains(case):
    scope, config, replace_neck, make_batch = STOCK_CASES[case]
    model_cfg = copy.deepcopy(get_config(f'{scope}::{config}').model)
    _no_pretrained(model_cfg)
    replace_neck(model_cfg)
    if scope == 'mmpose':
        from mmpose.registry import MODELS
    else:
        from mmdet.registry import MODELS
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(model_cfg)
        model.init_weights()
        model.train()
        data = model.data_preprocessor(make_batch(), training=True)
        losses = model(**data, mode='loss')
    assert isinstance(model.neck, CFFM)
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss), losses
    loss.backward()
    neck_grads = [p.grad for p in model.neck.parameters()]
    assert all(g is not None for g in neck_grads), 'a CFFM parameter got no gradient'
    assert sum(g.abs().sum() for g in neck_grads) > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


# ---------------------------------------------------------------------------------------------
# the CFFM configs train through tools/train.py on generated data
# ---------------------------------------------------------------------------------------------
TRAIN_CONFIGS = [
    POSE_CONFIG,
    'configs/cffm/faster-rcnn_r50_cffm_1x_coco.py',
    'configs/cffm/retinanet_r50_cffm_1x_coco.py',
]


@pytest.mark.slow
@pytest.mark.parametrize('config', TRAIN_CONFIGS)
def test_cffm_config_trains_with_train_tool(config, synthetic_coco, tmp_path):
    from helpers.configs import smoke_config
    from helpers.tool_runs import run_tool
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    assert cfg.model.neck.type == 'CFFM'
    assert cfg.custom_imports == dict(imports=['mmpgnet'], allow_failed_imports=False)
    work_dir = str(tmp_path / 'work')
    # detection images are resized to 256x192; pose batches of 8 crops (2-3 iterations)
    smoke = smoke_config(osp.join(REPO_ROOT, config), synthetic_coco, work_dir, max_epochs=1,
                         batch_size=8 if 'pgnet' in config else 2)
    out = run_tool(['train.py', smoke, '--work-dir', work_dir])
    iters = [line for line in out.splitlines() if 'Epoch(train)' in line and 'loss' in line]
    assert 2 <= len(iters) <= 4, out[-3000:]
    losses = [float(line.split(' loss: ')[1].split()[0]) for line in iters]
    assert all(np.isfinite(losses)), losses
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))


# ---------------------------------------------------------------------------------------------
# complexity goals, measured by tools/analysis/neck_complexity.py
# ---------------------------------------------------------------------------------------------
def _complexity_tool():
    import importlib.util
    path = osp.join(REPO_ROOT, 'tools', 'analysis', 'neck_complexity.py')
    spec = importlib.util.spec_from_file_location('neck_complexity', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_complexity_tool_times_compiled_models():
    """The tool's compiled rows: latency and compile time per model, ratios vs the baseline."""
    from mmdet.models.necks import FPN
    tool = _complexity_tool()
    shapes = [(c, s, s) for c, s in zip(TINY_CHANNELS, (16, 8, 4, 2))]
    entries = [
        tool.Entry('(b) tiny necks', 'FPN', lambda: FPN(TINY_CHANNELS, 8, 4).eval(),
                   tool.feature_input(shapes), batch32=False),
        tool.Entry('(b) tiny necks', 'CFFM', lambda: _tiny_neck('pyramid', num_outs=4).eval(),
                   tool.feature_input(shapes), batch32=False),
    ]
    args = tool.parse_args(['--repeats', '2', '--warmup', '1', '--memory-format',
                            'channels_last', '--compile', 'b', '--compile-backend', 'eager'])
    tool.measure_group(entries, args)
    for entry in entries:
        r = entry.results
        assert r['lat1_channels_last'] > 0 and r['lat1c_channels_last'] > 0, r
        assert r['compile_channels_last'] > 0 and r['lat32_channels_last'] is None, r
    table = tool.format_table(entries, args)
    assert '| compiled b1 NHWC (ms) | compile NHWC (s) |' in table
    cffm, fpn = entries[1].results, entries[0].results
    ratio = cffm['lat1c_channels_last'] / fpn['lat1c_channels_last']
    assert f'{cffm["lat1c_channels_last"]:.1f} ({ratio:.2f}x)' in table
    assert 'CFFM compiled / FPN eager (channels_last): ' in table
    # without compilation, no compiled column
    args = tool.parse_args(['--memory-format', 'channels_last', '--compile'])
    assert args.compile == [] and 'compiled' not in tool.format_table(entries[:0], args)


@pytest.mark.slow
def test_complexity_goals():
    """PGNet <= SimpleBaseline R50 in params and FLOPs; CFFM <= 0.5x FPN's FLOPs at 800x1333."""
    tool = _complexity_tool()
    args = tool.parse_args(['--skip-batch32', '--repeats', '1', '--warmup', '0', '--compile'])
    entries = [e for e in tool.make_entries() if e.group[1] in ('a', 'b')]
    tool.measure_group(entries[:2], args)
    tool.measure_group(entries[2:], args)
    simple, pgnet, fpn, cffm = (e.results for e in entries)
    assert pgnet['params'] <= simple['params'], (pgnet, simple)
    assert pgnet['flops'] <= simple['flops'], (pgnet, simple)
    assert cffm['flops'] <= 0.5 * fpn['flops'], (cffm, fpn)
    assert 'CFFM' in tool.format_table(entries, args)
