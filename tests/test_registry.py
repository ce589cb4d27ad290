"""The naming rule of mmpgnet.registry, and stock configs building with custom_imports."""
import os.path as osp

import pytest
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import HOOKS as ROOT_HOOKS
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope, Registry

from mmpgnet import registry as R
from mmpgnet.utils.launch import resolve_config_path


def _fresh_name(prefix: str) -> str:
    import uuid
    return f'{prefix}{uuid.uuid4().hex[:8]}'


def test_register_model_reaches_both_scopes_by_prefix_and_bare_name():
    name = _fresh_name('TmpNeck')
    cls = R.register_model(name)(type(name, (nn.Module, ), {}))
    from mmdet.registry import MODELS as DET
    from mmpose.registry import MODELS as POSE
    for scope, reg in (('mmdet', DET), ('mmpose', POSE)):
        with DefaultScope.overwrite_default_scope(scope):
            assert type(reg.build(dict(type=name))) is cls
            assert type(reg.build(dict(type=f'mmpgnet.{name}'))) is cls


def test_register_model_never_replaces_a_downstream_name():
    from mmdet.registry import MODELS as DET
    mmdet_giou = DET.get('GIoULoss')
    name = 'GIoULoss'
    ours = type('OurGIoU', (nn.Module, ), {})
    # our registry already holds mmpgnet.GIoULoss if the losses are installed: use a child
    local = Registry('model', parent=ROOT_MODELS, scope=_fresh_name('s'))
    assert R._register_bare(local, ours, name, strict=False)
    assert not R._register_bare(DET, ours, name, strict=False)
    assert DET.get('GIoULoss') is mmdet_giou


def test_root_registration_is_strict():
    name = _fresh_name('TmpHook')
    cls = R.register_hook(name)(type(name, (), {}))
    assert ROOT_HOOKS.get(name) is cls
    other = type(name, (), {})
    with pytest.raises(KeyError, match='already registered'):
        R._register_bare(ROOT_HOOKS, other, name, strict=True)


def test_unknown_downstream_scope():
    with pytest.raises(ValueError, match="unknown downstream scope 'mmseg'"):
        R.downstream_models_registry('mmseg')


def test_ddp_and_amp_wrappers_registered_in_root():
    from mmengine.registry import MODEL_WRAPPERS, OPTIM_WRAPPERS

    from mmpgnet.engine import CPUAmpOptimWrapper, DeviceAgnosticDDP
    assert MODEL_WRAPPERS.get('DeviceAgnosticDDP') is DeviceAgnosticDDP
    assert OPTIM_WRAPPERS.get('CPUAmpOptimWrapper') is CPUAmpOptimWrapper
    assert MODEL_WRAPPERS.get('mmpgnet.DeviceAgnosticDDP') is DeviceAgnosticDDP


@pytest.mark.parametrize('config,scope', [
    ('mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_res50_8xb64-210e_coco-256x192.py',
     'mmpose'),
    ('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', 'mmdet'),
])
def test_stock_configs_build_with_custom_imports(tmp_path, config, scope):
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = ['{config}']\n"
                     "custom_imports = dict(imports=['mmpgnet'], allow_failed_imports=False)\n"
                     "model = dict(backbone=dict(init_cfg=None))\n")
    cfg = Config.fromfile(str(child))
    assert cfg.default_scope == scope
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 1e6


def test_resolve_config_path(tmp_path):
    path = resolve_config_path('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
    assert path.endswith('faster-rcnn_r50_fpn_1x_coco.py')
    # mmpgnet's own configs, packaged in mmpgnet/.mim (copied into a wheel, linked for -e .)
    path = resolve_config_path('mmpgnet::pgnet/pgnet_res18_cffm_demo_synthetic-128x96.py')
    repo_config = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', 'pgnet',
                           'pgnet_res18_cffm_demo_synthetic-128x96.py')
    with open(path) as packaged, open(repo_config) as source:
        assert packaged.read() == source.read()
    with pytest.raises(FileNotFoundError, match='does not exist'):
        resolve_config_path('mmdet::no/such.py')
    with pytest.raises(FileNotFoundError, match='does not exist'):
        resolve_config_path(str(tmp_path / 'missing.py'))
