"""``import mmpgnet`` with torch, mmengine and mmcv's Python parts only (as with ``mmcv-lite``).

A subprocess makes ``mmdet``, ``mmpose`` and mmcv's compiled ops (``mmcv._ext``, ``mmcv.ops``)
fail to import, imports mmpgnet, builds CFFM (both modes), CBN linked to a conv and the two box
losses by their registry names, and trains them a few steps. Its numbers must equal the same
computation in this process, where everything imports (so the lite path is the same code), and
the loss values the hand-computed ones.
"""
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, Tuple

import pytest
import torch
from torch import Tensor, nn

TESTS_DIR = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(TESTS_DIR)

#: What a lite install lacks; a finder raises ``ModuleNotFoundError`` for these and their children.
BLOCKED = ('mmdet', 'mmpose', 'mmcv._ext', 'mmcv.ops')

# Boxes (x1, y1, x2, y2) and their losses by hand:
#   pair 0: [0,0,2,2] vs [1,1,3,3]: I = 1, U = 7, C = 9 (3x3), centres (1,1)/(2,2), D^2 = 18
#           GIoU = 1 - 1/7 + (9 - 7)/9; DIoU = 1 - 1/7 + 2/18; corners: (2 + 2) / 2 = 2 -> same
#   pair 1: [0,0,2,2] vs [0,0,4,4]: I = 4, U = 16, C = 16, centres (1,1)/(2,2), D^2 = 32
#           GIoU = 1 - 1/4 + 0; DIoU = 1 - 1/4 + 2/32; corners: (0 + 8) / 2 = 4 -> 1 - 1/4 + 4/32
PRED = [[0., 0., 2., 2.], [0., 0., 2., 2.]]
TARGET = [[1., 1., 3., 3.], [0., 0., 4., 4.]]
HAND_LOSSES = {
    'giou': [1 - 1 / 7 + 2 / 9, 0.75],
    'cdiou_center': [1 - 1 / 7 + 2 / 18, 0.75 + 2 / 32],
    'cdiou_corner': [1 - 1 / 7 + 2 / 18, 0.75 + 4 / 32],
}
WEIGHT = [1.0, 0.5]
AVG_FACTOR = 1.5


def lite_child_script(out: str) -> str:
    """A script that blocks :data:`BLOCKED`, imports mmpgnet and saves its results to ``out``."""
    return f'''
import importlib.abc
import sys
import warnings

BLOCKED = {BLOCKED!r}


class _LiteInstall(importlib.abc.MetaPathFinder):
    """Make the packages a lite install lacks fail to import, as if absent."""

    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + '.') for b in BLOCKED):
            raise ModuleNotFoundError(f'No module named {{name!r}} (blocked by the test)',
                                      name=name)
        return None


sys.meta_path.insert(0, _LiteInstall())
warnings.filterwarnings('error', message='.*is installed but')  # absent: no warning
sys.path[:0] = [{REPO_ROOT!r}, {TESTS_DIR!r}]
import torch
import mmpgnet  # noqa: F401
import test_lite_import as t

result = t.compute_components()
result['lite'] = t.lite_facts()
torch.save(result, {out!r})
print('lite import OK')
'''


def lite_facts() -> Dict:
    """What a lite process sees: missing packages, registered names, left-out components."""
    from mmengine.registry import HOOKS, MODEL_WRAPPERS, MODELS

    from mmpgnet.utils.optional_packages import MissingPackageError, unavailable_packages
    facts = dict(
        unavailable=sorted(unavailable_packages()),
        loaded=sorted(m for m in sys.modules if m.split('.')[0] in ('mmdet', 'mmpose')
                      or m.startswith(('mmcv.ops', 'mmcv._ext'))),
        registered={name: MODELS.get(name) is not None for name in (
            'mmpgnet.CFFM', 'mmpgnet.GIoULoss', 'mmpgnet.CDIoULoss', 'CBN',
            'mmpgnet.PGNetPoseEstimator')},
        hooks={name: HOOKS.get(name) is not None for name in ('CBNHook', 'ChannelsLastHook')},
        wrappers={name: MODEL_WRAPPERS.get(name) is not None
                  for name in ('DeviceAgnosticDDP', 'PipelineParallelWrapper')})
    try:
        from mmpgnet.models.pose_estimators import PGNetPoseEstimator  # noqa: F401
        facts['left_out_error'] = None
    except MissingPackageError as err:
        facts['left_out_error'] = str(err)
    return facts


def _cffm_run(mode: str) -> Dict[str, Tensor]:
    """Build ``mmpgnet.CFFM`` by name, one forward + backward; outputs and grads."""
    from mmengine.registry import MODELS
    torch.manual_seed(0)
    neck = MODELS.build(dict(type='mmpgnet.CFFM', in_channels=[4, 8, 16], out_channels=8,
                             out_mode=mode, num_outs=4 if mode == 'pyramid' else None))
    gen = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, c, s, s, generator=gen) for c, s in ((4, 16), (8, 8), (16, 4))]
    outs = neck(feats)
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)
    loss.backward()
    result = {f'out{i}': o.detach() for i, o in enumerate(outs)}
    result.update({f'grad.{n}': p.grad for n, p in neck.named_parameters()})
    return result


def _cbn_run(steps: int = 5) -> Dict[str, Tensor]:
    """Two mmcv ConvModules with ``norm_cfg=dict(type='CBN')``, linked, trained ``steps`` SGD steps.

    Burn-in 1 and a window of 2: the last steps normalise with compensated past statistics.
    """
    from mmcv.cnn import ConvModule

    from mmpgnet.models.norms import link_cbn_layers
    torch.manual_seed(0)
    norm_cfg = dict(type='CBN', buffer_num=2, burnin_iters=1)
    model = nn.Sequential(
        ConvModule(3, 8, 3, padding=1, norm_cfg=norm_cfg),
        ConvModule(8, 8, 3, stride=2, padding=1, norm_cfg=norm_cfg))
    gen = torch.Generator().manual_seed(2)
    batches = [torch.randn(4, 3, 12, 10, generator=gen) for _ in range(steps)]
    report = link_cbn_layers(model, lambda: model(batches[0]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result: Dict[str, Tensor] = dict(linked=torch.tensor(len(report.linked)))
    for step, x in enumerate(batches):
        out = model(x)
        loss = (out * out).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        result[f'loss{step}'] = loss.detach()
        result[f'compensating{step}'] = torch.tensor(
            [m.norm.compensating for m in model])
    result.update({k: v.clone() for k, v in model.state_dict().items()})
    return result


def _loss_run() -> Dict[str, Tensor]:
    """``mmpgnet.GIoULoss`` / ``CDIoULoss`` by name: per-pair values, weighted means, grads."""
    from mmengine.registry import MODELS
    cfgs = dict(giou=dict(type='mmpgnet.GIoULoss'),
                cdiou_center=dict(type='mmpgnet.CDIoULoss'),
                cdiou_corner=dict(type='mmpgnet.CDIoULoss', distance='corner'))
    result: Dict[str, Tensor] = {}
    for kind, cfg in cfgs.items():
        loss = MODELS.build(cfg)
        pred = torch.tensor(PRED, requires_grad=True)
        target = torch.tensor(TARGET)
        result[f'{kind}.none'] = loss(pred, target, reduction_override='none').detach()
        value = loss(pred, target, weight=torch.tensor(WEIGHT), avg_factor=AVG_FACTOR)
        value.backward()
        result[f'{kind}.weighted'] = value.detach()
        result[f'{kind}.grad'] = pred.grad
    return result


def compute_components() -> Dict[str, Dict[str, Tensor]]:
    """Run every component of the lite set on CPU (in whichever process imports this).

    Returns:
        dict: ``cffm_single``, ``cffm_pyramid``, ``cbn`` and ``losses`` results.
    """
    return dict(cffm_single=_cffm_run('single'), cffm_pyramid=_cffm_run('pyramid'),
                cbn=_cbn_run(), losses=_loss_run())


def _run_lite_child(tmp_path) -> Tuple[Dict, str]:
    out = str(tmp_path / 'lite.pt')
    script = tmp_path / 'lite_child.py'
    script.write_text(lite_child_script(out))
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    proc = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f'the lite process failed (exit {proc.returncode}):\n{log[-6000:]}')
    return torch.load(out, weights_only=False), log


@pytest.mark.slow
def test_import_and_train_components_without_mmdet_mmpose_and_mmcv_ops(tmp_path):
    lite, log = _run_lite_child(tmp_path)
    facts = lite.pop('lite')
    assert 'lite import OK' in log
    assert facts['unavailable'] == ['mmdet', 'mmpose']
    assert facts['loaded'] == [], f'blocked modules were imported: {facts["loaded"]}'
    assert facts['registered'] == {'mmpgnet.CFFM': True, 'mmpgnet.GIoULoss': True,
                                   'mmpgnet.CDIoULoss': True, 'CBN': True,
                                   'mmpgnet.PGNetPoseEstimator': False}
    assert facts['hooks'] == {'CBNHook': True, 'ChannelsLastHook': True}
    assert facts['wrappers'] == {'DeviceAgnosticDDP': True, 'PipelineParallelWrapper': False}
    assert 'PGNetPoseEstimator needs mmpose' in facts['left_out_error']

    # the loss values by hand; the weighted mean as mmdet's weight_reduce_loss defines it
    eps = torch.finfo(torch.float32).eps
    for kind, hand in HAND_LOSSES.items():
        hand = torch.tensor(hand)
        torch.testing.assert_close(lite['losses'][f'{kind}.none'], hand, rtol=1e-5, atol=0)
        weighted = (hand * torch.tensor(WEIGHT)).sum() / (AVG_FACTOR + eps)
        torch.testing.assert_close(lite['losses'][f'{kind}.weighted'], weighted, rtol=1e-5,
                                   atol=0)
    # CBN: linked both layers, compensated in the last steps, trained (loss went down)
    cbn = lite['cbn']
    assert int(cbn['linked']) == 2
    assert cbn['compensating0'].tolist() == [False, False]
    assert cbn['compensating4'].tolist() == [True, True]
    assert float(cbn['loss4']) < float(cbn['loss0'])

    # everything equals the same computation with mmdet, mmpose and mmcv's ops importable
    full = compute_components()
    for part, values in full.items():
        assert set(lite[part]) == set(values), part
        for key, value in values.items():
            torch.testing.assert_close(lite[part][key], value, msg=f'{part}.{key} differs')


def test_left_out_components_name_the_missing_package(monkeypatch):
    from mmpgnet.utils import optional_packages as op
    assert op.package_available('mmpose') and op.package_available('mmdet')
    getattr_ = op.missing_component_getattr('mmpgnet.x', 'mmpose', ['Thing'])
    monkeypatch.setitem(op._reasons, 'mmpose', '`import mmpose.models` failed: boom')
    with pytest.raises(op.MissingPackageError, match=r'mmpgnet.x.Thing needs mmpose.*boom'):
        getattr_('Thing')
    with pytest.raises(AttributeError, match="has no attribute 'Other'"):
        getattr_('Other')
    with pytest.raises(ValueError, match="unknown optional package 'mmseg'"):
        op.package_available('mmseg')
