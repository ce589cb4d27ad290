"""PGS guidance: losses, deep -> shallow feedback, no inference cost, plain checkpoints, errors."""
import copy
import importlib.util
import os.path as osp

import pytest
import torch
from helpers.pose_models import GUIDANCE, build_tiny, tiny_batch, tiny_pose_cfg
from helpers.tool_runs import REPO_ROOT
from mmpose.registry import MODELS

from mmpgnet.engine.hooks import GuidanceScaleHook, guidance_scale_at
from mmpgnet.models.heads import HeatmapGuidance
from mmpgnet.models.pose_estimators import PGNetPoseEstimator
from mmpgnet.utils.torch_compat import PIPELINING_MIN_TORCH, torch_at_least


def _losses(model, data):
    d = model.data_preprocessor(data, True)
    return model.loss(d['inputs'], d['data_samples'])


def test_guidance_losses_follow_the_scale_and_keep_the_main_loss():
    model = build_tiny(compute_acc=True)
    plain = build_tiny(guidance=None, compute_acc=True)
    plain.load_state_dict(model.state_dict())  # drops guidance.* keys
    data = tiny_batch(4)
    losses = _losses(model, data)
    expected = {'loss_kpt', 'acc_pose'} | {f'loss_guide_l{i}' for i in (1, 2, 3)} | \
        {f'loss_fb_l{i}' for i in (1, 2, 3)}
    assert set(losses) == expected
    assert all(losses[k] > 0 for k in expected if k.startswith('loss'))
    # the main loss is exactly the plain model's
    assert torch.equal(losses['loss_kpt'], _losses(plain, data)['loss_kpt'])
    model.guidance_scale = 0.5
    half = _losses(model, data)
    for k in expected - {'loss_kpt', 'acc_pose'}:
        torch.testing.assert_close(half[k], losses[k] * 0.5)
    model.guidance_scale = 0.0
    assert all(v == 0 for k, v in _losses(model, data).items() if 'guide' in k or 'fb' in k)


def test_guidance_without_feedback_as_the_configs_use_it():
    with_fb = build_tiny()
    no_fb = build_tiny(guidance=dict(GUIDANCE, feedback_weight=0.0))
    no_fb.load_state_dict(with_fb.state_dict())
    data = tiny_batch(4)
    losses, reference = _losses(no_fb, data), _losses(with_fb, data)
    assert set(losses) == {'loss_kpt'} | {f'loss_guide_l{i}' for i in (1, 2, 3)}
    for key in losses:  # the guidance terms themselves do not depend on the feedback
        torch.testing.assert_close(losses[key], reference[key])


def test_guidance_targets_are_gt_at_each_level_stride():
    model = build_tiny()
    d = model.data_preprocessor(tiny_batch(2), True)
    _, preds = model.extract_feat_and_guidance(d['inputs'])
    # CFFM levels 1..3 of a 64x48 input: strides 8, 16, 32
    assert [tuple(p.shape[-2:]) for p in preds] == [(8, 6), (4, 3), (2, 2)]
    assert all(p.shape[1] == 17 for p in preds)


def test_feedback_is_detached_and_trains_only_the_guidance_heads():
    feedback_only = dict(GUIDANCE, weights=[0.0, 0.0, 0.0], feedback_weight=1.0)
    model = build_tiny(guidance=feedback_only)
    plain = build_tiny(guidance=None)
    plain.load_state_dict(model.state_dict())
    data = tiny_batch(4)
    sum(v for k, v in _losses(model, data).items() if 'loss' in k).backward()
    sum(v for k, v in _losses(plain, data).items() if 'loss' in k).backward()
    # the feedback does not reach the main head (its target is detached) ...
    for (name, p), q in zip(model.head.named_parameters(), plain.head.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    # ... but trains the guidance heads
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.guidance.parameters())


def test_cffm_cascade_tap_sees_every_cascade_and_leaves_the_outputs_unchanged():
    neck = build_tiny().eval().neck
    feats = build_tiny().backbone(torch.rand(2, 3, 64, 48))
    seen = []
    outs = neck(feats, on_cascade=lambda index, levels: seen.append((index, levels)))
    for a, b in zip(outs, neck(feats)):
        assert torch.equal(a, b)
    assert [index for index, _ in seen] == list(range(neck.num_cascades)) and len(seen) > 1
    levels = neck.project(neck.prepare_inputs(feats))  # the same steps, one by one
    for index, tapped in seen:
        levels = neck.run_cascade(index, levels)
        assert len(tapped) == neck.num_levels
        assert all(torch.equal(a, b) for a, b in zip(tapped, levels))


def test_guidance_is_built_through_the_registry_and_shares_the_head_loss():
    model = build_tiny()
    assert isinstance(model.guidance, HeatmapGuidance)
    assert model.guidance.loss_module is model.head.loss_module  # the head's own loss, no copy
    own = build_tiny(guidance=dict(GUIDANCE, loss=dict(type='KeypointMSELoss',
                                                       use_target_weight=True, loss_weight=2.0)))
    assert own.guidance.loss_module is not own.head.loss_module
    own.load_state_dict(model.state_dict())
    data = tiny_batch(4)
    base, doubled = _losses(model, data), _losses(own, data)
    for key in (k for k in base if k.startswith(('loss_guide', 'loss_fb'))):
        torch.testing.assert_close(doubled[key], 2 * base[key])
    with pytest.raises(TypeError, match="unexpected keyword argument 'in_level'"):
        build_tiny(guidance=dict(GUIDANCE, in_level=[1]))


def test_inference_is_the_model_without_guidance():
    model = build_tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sum(v for k, v in _losses(model, tiny_batch(4)).items() if 'loss' in k).backward()
    opt.step()  # non-trivial weights, guidance included
    model.eval()
    without = build_tiny(guidance=None).eval()
    missing = without.load_state_dict(model.state_dict(), strict=True)  # guidance keys dropped
    assert not missing.missing_keys and not missing.unexpected_keys
    stock = build_tiny(type='TopdownPoseEstimator').eval()
    stock.load_state_dict(PGNetPoseEstimator.strip_guidance(model.state_dict()), strict=True)

    n_guidance = sum(p.numel() for p in model.guidance.parameters())
    assert n_guidance > 0
    assert sum(p.numel() for p in without.parameters()) == \
        sum(p.numel() for p in model.parameters()) - n_guidance
    assert not any(k.startswith('guidance.') for k in without.state_dict())

    calls = []
    model.guidance.register_forward_hook(lambda *a: calls.append(1))
    data = tiny_batch(3)
    with torch.no_grad():
        d = model.data_preprocessor(data, False)
        out = model(d['inputs'], None, mode='tensor')
        preds = model.test_step(copy.deepcopy(data))
        for other in (without, stock):
            assert torch.equal(other(d['inputs'], None, mode='tensor'), out)
            other_preds = other.test_step(copy.deepcopy(data))
            for p, q in zip(preds, other_preds):
                assert torch.equal(torch.as_tensor(p.pred_instances.keypoints),
                                   torch.as_tensor(q.pred_instances.keypoints))
    assert calls == []  # no guidance computation at test time


def test_export_inference_checkpoint_drops_guidance(tmp_path):
    model = build_tiny()
    src, dst = str(tmp_path / 'train.pth'), str(tmp_path / 'infer.pth')
    torch.save(dict(meta=dict(epoch=1), state_dict=model.state_dict(), optimizer={}), src)
    spec = importlib.util.spec_from_file_location(
        'export_ckpt', osp.join(REPO_ROOT, 'tools', 'misc', 'export_inference_checkpoint.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    dropped = tool.export(src, dst)
    out = torch.load(dst)
    assert dropped == len(model.guidance.state_dict()) and set(out) == {'meta', 'state_dict'}
    assert not any(k.startswith('guidance.') for k in out['state_dict'])
    build_tiny(guidance=None).load_state_dict(out['state_dict'], strict=True)


@pytest.mark.parametrize('guidance,message', [
    (dict(GUIDANCE, in_levels=[1, 4]), r'in_levels \[4\] do not exist.*indices 0\.\.3'),
    (dict(GUIDANCE, weights=[1.0]), 'weights has 1 entries but in_levels'),
    (dict(GUIDANCE, cascade=2), 'cascade=2 does not exist.*2 cascade'),
    (dict(GUIDANCE, in_levels=[]), 'in_levels is empty'),
    (dict(GUIDANCE, target_resize='nearest'), 'target_resize must be one of'),
])
def test_bad_guidance_configs_name_the_problem(guidance, message):
    with pytest.raises(ValueError, match=message):
        build_tiny(guidance=guidance)


def test_guidance_needs_a_cffm_neck():
    cfg = tiny_pose_cfg()
    cfg['neck'] = dict(type='FeatureMapProcessor', select_index=3)
    cfg['head']['in_channels'] = 64
    with pytest.raises(ValueError, match='needs|guides intermediate CFFM levels'):
        MODELS.build(cfg)


def test_guidance_scale_decays():
    assert guidance_scale_at('constant', 0.7) == 1.0
    assert guidance_scale_at('linear', 0.0) == 1.0
    assert guidance_scale_at('linear', 0.5, end_factor=0.2) == pytest.approx(0.6)
    assert guidance_scale_at('cosine', 0.5, end_factor=0.0) == pytest.approx(0.5)
    assert guidance_scale_at('cosine', 1.0, end_factor=0.1) == pytest.approx(0.1)
    assert guidance_scale_at('cosine', 2.0, end_factor=0.1) == pytest.approx(0.1)  # clipped
    hook = GuidanceScaleHook(decay='linear', begin=10, end=20, end_factor=0.0)
    assert [hook.factor_at(i, 100) for i in (0, 10, 15, 20, 50)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    cos = GuidanceScaleHook(decay='cosine')  # end defaults to the run's length
    assert cos.factor_at(50, 100) == pytest.approx(0.5)
    with pytest.raises(ValueError, match='decay must be one of'):
        GuidanceScaleHook(decay='step')
    with pytest.raises(ValueError, match='end > begin'):
        GuidanceScaleHook(decay='linear', begin=5, end=5)


def test_former_names_still_build_or_say_what_replaced_them():
    from mmengine.registry import HOOKS, MODEL_WRAPPERS, RUNNERS

    from mmpgnet.engine.model_wrappers import PipelineParallelWrapper
    from mmpgnet.engine.runner import PipelineParallelRunner
    if torch_at_least(PIPELINING_MIN_TORCH):
        with pytest.warns(DeprecationWarning, match='use PipelineParallelWrapper'):
            wrapper = MODEL_WRAPPERS.build(
                dict(type='PipelineGuidanceWrapper', split_points=['head']),
                default_args=dict(module=build_tiny()))
        assert isinstance(wrapper, PipelineParallelWrapper)
    assert issubclass(RUNNERS.get('PipelineRunner'), PipelineParallelRunner)
    with pytest.raises(ValueError, match="split in two: dict.type='GuidanceScaleHook', "
                       "decay=.*PipelineParallelTimingHook.*schedule='cosine'"):
        HOOKS.build(dict(type='PipelineGuidanceHook', schedule='cosine'))
