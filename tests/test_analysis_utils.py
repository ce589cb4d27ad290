"""The analysis tools' shared helper: timing order, Markdown tables, config loading, COCO AP."""
import json
import os.path as osp
import sys

import pytest
from helpers.tool_runs import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'analysis'))
import analysis_utils  # noqa: E402


def test_time_calls_warms_up_then_times_each_call_in_order():
    calls, seen = [], []
    counter = iter(range(100))
    timing = analysis_utils.time_calls(
        lambda: calls.append('fn') or next(counter), repeats=3, warmup=2,
        sync=lambda: calls.append('sync'), before=lambda: calls.append('before'),
        each=seen.append)
    timed = ['before', 'sync', 'fn', 'sync']  # a timed call: the clock runs between the syncs
    warm_rest = ['before', 'fn']  # later warm-up calls are not timed, so not synced
    assert calls == timed + warm_rest + timed * 3  # the first warm-up call is timed (first_s)
    assert seen == [2, 3, 4] and timing.last == 4 and len(timing.seconds) == 3
    assert timing.first_s is not None and timing.first_s >= 0
    assert timing.median_s == sorted(timing.seconds)[1]
    assert timing.median_ms == pytest.approx(1000 * timing.median_s)


def test_round_robin_alternates_and_keeps_no_result():
    order = []
    timings = analysis_utils.time_round_robin(
        [lambda: order.append('a'), lambda: order.append('b')], repeats=2, warmup=1)
    assert order == ['a', 'b'] * 3
    assert [len(t.seconds) for t in timings] == [2, 2] and all(t.last is None for t in timings)


def test_markdown_tables():
    assert analysis_utils.format_markdown_table(['a', 'b'], [[1, 2.5], ['x', 'y']], align='lr') \
        == '| a | b |\n| --- | ---: |\n| 1 | 2.5 |\n| x | y |'
    assert analysis_utils.format_markdown_table(['name', 'v'], [['ab', 1]], align='lc',
                                                padded=True) \
        == '| name | v |\n|------|:-:|\n| ab   | 1 |'


def test_load_config_resolves_package_prefixes_and_scope():
    cfg = analysis_utils.load_config(
        'mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_res50_8xb64-210e_coco-256x192.py')
    assert cfg.model.type == 'TopdownPoseEstimator'
    assert analysis_utils.config_scope(cfg) == 'mmpose'
    assert analysis_utils.config_scope(dict(), default='mmdet') == 'mmdet'


def _person(ann_id: int, x0: float) -> dict:
    keypoints = []
    for k in range(17):
        keypoints += [x0 + 5 + 3 * k, 20 + 4 * k, 2]
    return dict(id=ann_id, image_id=1, category_id=1, iscrowd=0, num_keypoints=17,
                bbox=[x0, 10, 60, 90], area=60 * 90, keypoints=keypoints)


def test_coco_keypoint_ap_hand_computed(tmp_path):
    gt = dict(images=[dict(id=1, width=300, height=120, file_name='1.jpg')],
              annotations=[_person(1, 0), _person(2, 150)],
              categories=[dict(id=1, name='person', keypoints=[str(k) for k in range(17)],
                               skeleton=[])])
    gt_file = tmp_path / 'gt.json'
    gt_file.write_text(json.dumps(gt))
    exact = [dict(image_id=1, category_id=1, keypoints=a['keypoints'], score=0.9)
             for a in gt['annotations']]
    assert analysis_utils.coco_keypoint_ap(str(gt_file), exact) == dict(
        AP=pytest.approx(1.0), AP50=pytest.approx(1.0), AP75=pytest.approx(1.0),
        AR=pytest.approx(1.0))
    # the second person's prediction 40 px off (OKS ~ 0): recall stops at 1/2 with precision 1,
    # so 51 of COCO's 101 recall points have precision 1: AP = 51 / 101, AR = 1 / 2
    off = dict(exact[1], score=0.5, keypoints=[v + 40 * (i % 3 == 0) for i, v in
                                               enumerate(exact[1]['keypoints'])])
    results = [exact[0], off]
    stats = analysis_utils.coco_keypoint_ap(str(gt_file), results)
    assert stats == dict(AP=pytest.approx(51 / 101), AP50=pytest.approx(51 / 101),
                         AP75=pytest.approx(51 / 101), AR=pytest.approx(0.5))
    assert results == [exact[0], off] and 'id' not in off  # loadRes's additions stay in a copy
