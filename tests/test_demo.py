"""The demo config trains and evaluates; the inference, plotting and baseline tools work."""
import json
import os.path as osp

import numpy as np
import pytest
from helpers.configs import smoke_config
from helpers.tool_runs import run_tool

DEMO = 'configs/pgnet/pgnet_res18_cffm_demo_synthetic-128x96.py'


@pytest.fixture(scope='module')
def demo_run(synthetic_coco, tmp_path_factory):
    """Train the demo config for one epoch on the tiny set; return (config, work_dir, ckpt)."""
    work_dir = str(tmp_path_factory.mktemp('demo'))
    cfg = smoke_config(DEMO, synthetic_coco, work_dir, max_epochs=1, batch_size=8)
    run_tool(['train.py', cfg, '--amp'])
    return cfg, work_dir, osp.join(work_dir, 'epoch_1.pth')


@pytest.mark.slow
def test_demo_config_trains_and_evaluates(demo_run, tmp_path):
    cfg, work_dir, ckpt = demo_run
    assert osp.isfile(ckpt)
    out = str(tmp_path / 'metrics.json')
    run_tool(['test.py', cfg, ckpt, '--out', out, '--work-dir', str(tmp_path)])
    metrics = json.load(open(out))
    for key in ('coco/AP', 'coco/AP .5', 'coco/AP .75', 'coco/AR'):
        assert key in metrics and 0.0 <= metrics[key] <= 1.0
    curves = str(tmp_path / 'curves.png')
    summary = run_tool(['analysis/plot_training_curves.py', work_dir, '--out', curves])
    assert 'last_loss=' in summary and osp.getsize(curves) > 10_000


@pytest.mark.slow
def test_inference_tool_writes_keypoints_and_overlay(demo_run, synthetic_coco, tmp_path):
    cfg, _, ckpt = demo_run
    image = osp.join(synthetic_coco, 'val', '000000000001.jpg')
    out_dir = tmp_path / 'inf'
    run_tool(['inference.py', cfg, ckpt, image, '--out-dir', str(out_dir), '--bbox', '10', '10',
              '120', '150', '--bbox', '60', '5', '180', '155'])
    result = json.load(open(out_dir / '000000000001.json'))
    assert len(result['people']) == 2 and len(result['keypoint_names']) == 17
    kpts = np.array(result['people'][0]['keypoints'])
    assert kpts.shape == (17, 2) and np.isfinite(kpts).all()
    assert osp.getsize(out_dir / '000000000001.png') > 1000
    # whole image as the box when none is given
    run_tool(['inference.py', cfg, ckpt, image, '--out-dir', str(tmp_path / 'whole')])
    whole = json.load(open(tmp_path / 'whole' / '000000000001.json'))
    assert whole['people'][0]['bbox'] == [0.0, 0.0, 192.0, 160.0]


@pytest.mark.slow
def test_inference_tool_bad_inputs(demo_run, tmp_path):
    cfg, _, ckpt = demo_run
    with pytest.raises(pytest.fail.Exception, match='image .*missing.jpg does not exist'):
        run_tool(['inference.py', cfg, ckpt, str(tmp_path / 'missing.jpg')])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(pytest.fail.Exception, match='no image found'):
        run_tool(['inference.py', cfg, ckpt, str(tmp_path / 'empty')])


def test_mean_pose_baseline_is_low(synthetic_coco):
    out = run_tool(['analysis/mean_pose_baseline.py', synthetic_coco])
    ap = float(out.split('AP=')[1].split(',')[0])
    assert 0.0 <= ap < 0.3  # the synthetic poses vary: a fixed pose in the box scores low


#: the AP the short demo run below must reach on its 16 val images. Measured on 2 cores, same
#: data, random training seeds: 0.172, 0.188, 0.200, 0.214 in float32 (as the test runs) and
#: 0.186, 0.199, 0.215, 0.215 with --amp; an untrained model scores 0.0 and the mean pose in each
#: box 0.002. A bound near half the lowest run fails only if the demo stops learning.
DEMO_MIN_AP = 0.1


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_demo_script_end_to_end(tmp_path):
    """`make demo`'s script, shortened: every artefact it announces exists and the model learned.

    640 train images for 2 epochs (204 steps), 16 val images, in float32 (DEMO_AMP=0): on a CPU
    without native bfloat16 (AMD EPYC, AVX2) a step takes 0.24 s in float32 and 1.8 s with --amp,
    which the demo_run fixture above already covers. About 1.5 min on 2 free cores.
    """
    data, work = tmp_path / 'data', tmp_path / 'work'
    out = run_tool(['demo.sh', str(data), str(work)], timeout=1500, env=dict(
        DEMO_TRAIN_IMAGES='640', DEMO_VAL_IMAGES='16', DEMO_EPOCHS='2', DEMO_AMP='0'))
    assert 'PGNet demo finished' in out and 'mean-pose baseline' in out
    metrics = json.load(open(work / 'metrics.json'))
    baseline_ap = float((work / 'baseline.txt').read_text().split('AP=')[1].split(',')[0])
    assert baseline_ap < DEMO_MIN_AP / 10, f'the mean pose scores AP {baseline_ap}: too easy a task'
    assert metrics['coco/AP'] >= DEMO_MIN_AP, (
        f'the demo did not learn: AP {metrics["coco/AP"]:.3f} after 2 epochs (runs reach about '
        f'0.2; an untrained model 0.0, the mean pose {baseline_ap})')
    analysis = (work / 'error_analysis.md').read_text()
    assert '| as predicted |' in analysis and '| left_wrist |' in analysis
    assert len(list((work / 'vis').glob('*.png'))) == 8  # demo.sh draws --num 8
    assert osp.getsize(work / 'training_curves.png') > 10_000
    # DEMO_EPOCHS shortened the whole schedule, not only the loop
    from mmengine.config import Config
    cfg = Config.fromfile(str(work / osp.basename(DEMO)))
    assert cfg.train_cfg.max_epochs == 2 and cfg.default_hooks.checkpoint.interval == 2
    assert cfg.param_scheduler[1].end == cfg.param_scheduler[1].T_max == 2
