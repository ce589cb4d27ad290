"""The small Table-3 detector (configs/cbn/faster-rcnn_r18-scratch_...) and its ablation grid."""
import glob
import json
import math
import os.path as osp
import sys

import pytest
import torch
from helpers.tool_runs import REPO_ROOT, run_tool

sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'analysis'))
import ablate  # noqa: E402

DET = osp.join(REPO_ROOT, 'configs', 'cbn',
               'faster-rcnn_r18-scratch_fpn_gn-all_demo_synthetic-320x240.py')
SPEC = osp.join(REPO_ROOT, 'configs', 'ablations', 'faster-rcnn_demo_table3.py')


def build_detector(cfg):
    from mmengine.registry import MODELS, DefaultScope

    import mmpgnet  # noqa: F401
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg.model)


def det_batch(model, n: int = 2):
    """A preprocessed batch of ``n`` random 128x160 images with one person box each."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    samples = []
    for i in range(n):
        sample = DetDataSample(metainfo=dict(img_shape=(128, 160), pad_shape=(128, 160),
                                             ori_shape=(128, 160), scale_factor=(1.0, 1.0),
                                             batch_input_shape=(128, 160)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[10. + 5 * i, 12., 70., 110.]]), labels=torch.tensor([0]))
        samples.append(sample)
    return torch.randn(n, 3, 128, 160), samples


@pytest.fixture(scope='module')
def spec(tmp_path_factory):
    spec = ablate.load_spec(SPEC)
    spec.work_root = str(tmp_path_factory.mktemp('table3'))
    return spec


def _norm_types(model) -> dict:
    backbone = type(model.backbone.norm1).__name__
    neck = {type(m).__name__ for m in model.neck.modules()
            if 'Norm' in type(m).__name__ or type(m).__name__ == 'CBN'}
    head = {type(c.norm).__name__ for c in model.roi_head.bbox_head.shared_convs}
    return dict(backbone=backbone, neck=neck, head=head)


NORM_CLASS = dict(gn='GroupNorm', bn='BatchNorm2d', cbn='CBN')


@pytest.mark.parametrize('variant', ['fpn_gn', 'fpn_bn', 'fpn_cbn', 'cffm_gn', 'cffm_bn',
                                     'cffm_cbn', 'giou', 'cdiou', 'cross'])
def test_table3_variants_build_what_they_say(spec, variant):
    cfg = ablate.variant_config(spec, variant)
    model = build_detector(cfg)
    neck, norm = variant.split('_') if '_' in variant else ('fpn', 'gn')
    assert type(model.neck).__name__ == neck.upper()
    expected = NORM_CLASS[norm]
    assert _norm_types(model) == dict(backbone=expected, neck={expected}, head={expected})
    assert model.roi_head.bbox_head.num_classes == 1
    assert model.backbone.norm_eval is False  # from scratch: BN statistics train
    losses = (type(model.rpn_head.loss_bbox).__name__,
              type(model.roi_head.bbox_head.loss_bbox).__name__)
    assert losses == dict(giou=('GIoULoss', 'GIoULoss'), cdiou=('CDIoULoss', 'CDIoULoss'),
                          cross=('CDIoULoss', 'GIoULoss')).get(variant, ('L1Loss', 'L1Loss'))
    if variant in ('giou', 'cdiou', 'cross'):
        assert type(model.rpn_head.loss_bbox).__module__.startswith('mmpgnet')
        assert model.rpn_head.reg_decoded_bbox and model.roi_head.bbox_head.reg_decoded_bbox
    hooks = [h['type'] for h in cfg.get('custom_hooks', [])]
    assert ('CBNHook' in hooks) == (norm == 'cbn')


@pytest.mark.parametrize('variant', ['fpn_cbn', 'cffm_cbn'])
def test_table3_cbn_variants_link_every_cbn_and_train(spec, variant):
    from mmpgnet.models.norms import link_cbn_layers
    torch.manual_seed(0)
    model = build_detector(ablate.variant_config(spec, variant))
    model.train()
    inputs, samples = det_batch(model)
    report = link_cbn_layers(model, lambda: model.loss(inputs, samples))
    assert report.total > 20 and len(report.linked) == report.total, report.skipped
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    for _ in range(4):  # past the (zero) burn-in: compensated steps, finite losses
        loss, _ = model.parse_losses(model.loss(inputs, samples))
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    cbns = [m for m in model.modules() if type(m).__name__ == 'CBN']
    assert all(bool(m.compensating) for m in cbns)


def test_table3_spec_and_its_schedule(spec):
    assert spec.metric == 'coco/bbox_mAP' and spec.baseline == 'fpn_gn' and len(spec.seeds) >= 2
    assert len(spec.variants) == 9
    cfg = ablate.variant_config(spec, 'fpn_gn')
    assert cfg.train_cfg.max_epochs == 4 and cfg.train_dataloader.dataset.indices == 500
    assert cfg.param_scheduler[1].end == cfg.param_scheduler[1].T_max == 4
    costs = ablate.model_complexity(cfg, spec.complexity_input)
    cffm = ablate.model_complexity(ablate.variant_config(spec, 'cffm_gn'), spec.complexity_input)
    # CFFM's depthwise-separable fusion: fewer parameters and FLOPs than FPN's 3x3 convs
    assert cffm['params_m'] < costs['params_m'] and cffm['gflops'] < costs['gflops']


@pytest.mark.slow
def test_detection_demo_script_trains_and_test_reproduces_val(tmp_path):
    """`make demo-det`'s script on a tiny set: training, box AP from MMDet's metric, and the
    test tool's AP on the saved checkpoint equal to the last validation during training."""
    data, work = tmp_path / 'data', tmp_path / 'work'
    out = run_tool(['demo_det.sh', str(data), str(work)], timeout=900, env=dict(
        DEMO_TRAIN_IMAGES='16', DEMO_VAL_IMAGES='6', DEMO_EPOCHS='2'))
    assert 'Detection demo finished' in out
    metrics = json.load(open(work / 'metrics.json'))
    assert math.isfinite(metrics['coco/bbox_mAP']) and 'coco/bbox_mAP_50' in metrics
    scalars = glob.glob(str(work / '*' / 'vis_data' / 'scalars.json'))
    records = [json.loads(line) for f in scalars for line in open(f)]
    val = [r for r in records if 'coco/bbox_mAP' in r]
    assert len(val) == 1 and val[0]['step'] == 2  # validated once, after the last epoch
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'):
        assert metrics[key] == val[0][key]
    losses = [r['loss'] for r in records if 'loss' in r]
    assert losses and all(math.isfinite(v) for v in losses)
