"""tools/train.py, tools/test.py, --resume and tools/dist_train.sh on stock configs, end to end."""
import glob
import json
import os
import os.path as osp

import pytest
import torch
from helpers.configs import smoke_config
from helpers.tool_runs import run_tool

POSE_R50 = 'mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_res50_8xb64-210e_coco-256x192.py'
FASTER_RCNN = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
DEMO = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                'configs/pgnet/pgnet_res18_cffm_demo_synthetic-128x96.py')
# a ResNet-18 variant of the stock pose config keeps the multi-run tests quick
SMALL_POSE = dict(model=dict(backbone=dict(depth=18), head=dict(in_channels=512)))


def _scalars(work_dir: str):
    """The per-iteration records of MMEngine's JSON log of a run."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    assert files, f'no scalars.json log under {work_dir}'
    with open(files[-1]) as f:
        return [json.loads(line) for line in f if line.strip()]


# a one-class (person) detector whose untrained scores are below the stock threshold: keep every
# box so that COCO evaluation really runs on its predictions
PERSON = dict(metainfo=dict(classes=('person', )))
KEEP_ALL_BOXES = dict(
    model=dict(test_cfg=dict(rcnn=dict(score_thr=0.0)),
               roi_head=dict(bbox_head=dict(num_classes=1))),
    train_dataloader=dict(dataset=PERSON), val_dataloader=dict(dataset=PERSON),
    test_dataloader=dict(dataset=PERSON))


@pytest.mark.slow
@pytest.mark.parametrize('config,metric,extra', [(POSE_R50, 'coco/AP', None),
                                                 (FASTER_RCNN, 'coco/bbox_mAP', KEEP_ALL_BOXES)])
def test_train_then_test_stock_config(synthetic_coco, tmp_path, config, metric, extra):
    work_dir = str(tmp_path / 'run')
    cfg = smoke_config(config, synthetic_coco, work_dir, max_epochs=1, batch_size=4, extra=extra)
    run_tool(['train.py', cfg, '--work-dir', work_dir])
    ckpt = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(ckpt)
    records = _scalars(work_dir)
    losses = [r['loss'] for r in records if 'loss' in r]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert glob.glob(osp.join(work_dir, '*', '*.log'))
    out_json = str(tmp_path / 'metrics.json')
    run_tool(['test.py', cfg, ckpt, '--work-dir', str(tmp_path / 'test'), '--out', out_json])
    metrics = json.load(open(out_json))
    assert metric in metrics and -1.0 <= metrics[metric] <= 1.0


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint(synthetic_coco, tmp_path):
    work_dir = str(tmp_path / 'run')
    first = smoke_config(POSE_R50, synthetic_coco, work_dir, max_epochs=1, batch_size=4,
                         extra=SMALL_POSE)
    run_tool(['train.py', first])
    ckpt1 = torch.load(osp.join(work_dir, 'epoch_1.pth'))
    iters_per_epoch = ckpt1['meta']['iter']
    assert ckpt1['meta']['epoch'] == 1 and iters_per_epoch > 0

    second = smoke_config(POSE_R50, synthetic_coco, work_dir, max_epochs=2, batch_size=4,
                          extra=SMALL_POSE)
    out = run_tool(['train.py', second, '--resume'])
    assert f'resumed epoch: 1, iter: {iters_per_epoch}' in out
    ckpt2 = torch.load(osp.join(work_dir, 'epoch_2.pth'))
    assert ckpt2['meta']['epoch'] == 2 and ckpt2['meta']['iter'] == 2 * iters_per_epoch
    # the message hub kept the first run's history: the loss buffer holds both epochs' records
    loss_buf = ckpt2['message_hub']['log_scalars']['train/loss']
    assert len(loss_buf.data[0]) == 2 * iters_per_epoch
    # an explicit checkpoint path works too, and a missing one fails with a clear message
    run_tool(['train.py', second, '--resume', osp.join(work_dir, 'epoch_1.pth'),
              '--work-dir', str(tmp_path / 'explicit')])
    with pytest.raises(pytest.fail.Exception, match='checkpoint .*missing.pth does not exist'):
        run_tool(['train.py', second, '--resume', str(tmp_path / 'missing.pth')])
    run_tool(['test.py', second, osp.join(work_dir, 'epoch_2.pth'), '--work-dir',
              str(tmp_path / 'test')])


@pytest.mark.slow
def test_dist_train_two_gloo_processes(synthetic_coco, tmp_path):
    work_dir = str(tmp_path / 'dist')
    cfg = smoke_config(POSE_R50, synthetic_coco, work_dir, max_epochs=1, batch_size=2,
                       extra=SMALL_POSE)
    out = run_tool(['dist_train.sh', cfg, '2'])
    assert "'backend': 'gloo'" in out
    assert 'Distributed training: True' in out
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    ckpt = torch.load(osp.join(work_dir, 'epoch_1.pth'))
    assert not any(k.startswith('module.') for k in ckpt['state_dict'])


@pytest.mark.slow
def test_amp_on_cpu_uses_bfloat16_autocast(synthetic_coco, tmp_path):
    work_dir = str(tmp_path / 'amp')
    cfg = smoke_config(POSE_R50, synthetic_coco, work_dir, max_epochs=1, batch_size=4,
                       extra=SMALL_POSE)
    out = run_tool(['train.py', cfg, '--amp'])
    assert 'CPUAmpOptimWrapper' in open(osp.join(work_dir, 'smoke_config.py')).read() or \
        'CPUAmpOptimWrapper' in out
    losses = [r['loss'] for r in _scalars(work_dir) if 'loss' in r]
    assert losses and all(torch.isfinite(torch.tensor(losses)))


def test_train_reports_missing_config_and_data(tmp_path, synthetic_coco):
    with pytest.raises(pytest.fail.Exception, match='config file .*nope.py does not exist'):
        run_tool(['train.py', str(tmp_path / 'nope.py')])
    with pytest.raises(pytest.fail.Exception,
                       match='person_keypoints_train.json.*does not exist') as failure:
        run_tool(['train.py', POSE_R50, '--synthetic-data', str(tmp_path / 'nothing')])
    assert 'Traceback' not in str(failure.value)  # one line that names the file, no stack


def test_broken_annotations_name_file_and_field(synthetic_coco, tmp_path):
    import shutil
    root = tmp_path / 'broken'
    shutil.copytree(synthetic_coco, root)
    ann_file = root / 'annotations' / 'person_keypoints_train.json'
    data = json.load(open(ann_file))
    del data['annotations'][1]['keypoints']
    json.dump(data, open(ann_file, 'w'))
    with pytest.raises(pytest.fail.Exception,
                       match=r'person_keypoints_train.json: annotations\[1\].*"keypoints"'):
        run_tool(['train.py', POSE_R50, '--synthetic-data', str(root)])
    data = json.load(open(root / 'annotations' / 'person_keypoints_val.json'))
    os.remove(root / 'val' / data['images'][0]['file_name'])
    (tmp_path / 'x.pth').write_bytes(b'')
    with pytest.raises(pytest.fail.Exception,
                       match=r'images\[0\] refers to .*jpg, which is not') as failure:
        run_tool(['test.py', POSE_R50, str(tmp_path / 'x.pth'), '--synthetic-data', str(root)])
    assert 'Traceback' not in str(failure.value)


def test_cpu_launchers(monkeypatch):
    from mmengine.config import Config

    from mmpgnet.utils.launch import setup_cpu_distributed
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config(dict(launcher='slurm'))
    with pytest.raises(ValueError, match='--launcher slurm needs GPUs.*--launcher pytorch'):
        setup_cpu_distributed(cfg)
    cfg = Config(dict(launcher='none'))
    setup_cpu_distributed(cfg)
    assert 'model_wrapper_cfg' not in cfg


@pytest.mark.slow
def test_pgnet_trains_with_mmengine_compile(synthetic_coco, tmp_path):
    """MMEngine's ``compile=True`` (inductor) on the PGNet demo model, bfloat16 autocast as in
    the demo: a few iterations with finite losses. Its data preprocessing runs eagerly
    (``PGNetPoseEstimator.train_step``); without that MMPose's data samples crash dynamo."""
    work_dir = str(tmp_path / 'compiled')
    cfg = smoke_config(DEMO, synthetic_coco, work_dir, max_epochs=2, batch_size=2,
                       extra=dict(compile=True, param_scheduler=[], randomness=dict(seed=0)))
    out = run_tool(['train.py', cfg, '--amp'], timeout=900)
    assert 'Model has been "compiled"' in out
    losses = [r['loss'] for r in _scalars(work_dir) if 'loss' in r]
    assert len(losses) >= 4 and all(torch.isfinite(torch.tensor(losses)))
