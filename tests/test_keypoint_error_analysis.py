"""tools/analysis/keypoint_error_analysis.py: OKS per key point, matching and oracle APs."""
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest

from mmpgnet.datasets.synthetic_coco import coco_categories

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87,
                        .87, .89, .89]) / 10.0  # COCO's published per-key-point sigmas


def _tool():
    path = osp.join(REPO_ROOT, 'tools', 'analysis', 'keypoint_error_analysis.py')
    spec = importlib.util.spec_from_file_location('keypoint_error_analysis', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _person(rng, x0, y0, visibility):
    xy = rng.uniform([x0, y0], [x0 + 40, y0 + 80], size=(17, 2))
    kpts = np.concatenate([xy, np.asarray(visibility, float)[:, None]], axis=1)
    kpts[kpts[:, 2] == 0, :2] = 0
    return kpts


def _write(tmp_path, people, preds):
    """Ground truth (image 1: the first two people; image 2: the rest) and results files."""
    anns = []
    for i, kpts in enumerate(people):
        anns.append(dict(id=i + 1, image_id=1 if i < 2 else 2, category_id=1, iscrowd=0,
                         area=2000.0, bbox=[0, 0, 50, 90], keypoints=kpts.reshape(-1).tolist(),
                         num_keypoints=int((kpts[:, 2] > 0).sum())))
    gt = dict(images=[dict(id=1, file_name='1.jpg', width=200, height=200),
                      dict(id=2, file_name='2.jpg', width=200, height=200)],
              annotations=anns, categories=coco_categories())
    results = [dict(image_id=1 if i < 2 else 2, category_id=1, score=1.0,
                    keypoints=np.concatenate([p[:, :2], np.ones((17, 1))], 1).reshape(-1).tolist())
               for i, p in enumerate(preds)]
    gt_file, res_file = str(tmp_path / 'gt.json'), str(tmp_path / 'res.json')
    json.dump(gt, open(gt_file, 'w'))
    json.dump(results, open(res_file, 'w'))
    return gt_file, res_file


@pytest.fixture
def people():
    rng = np.random.default_rng(0)
    vis = [2] * 17
    covered = [2] * 9 + [1] + [2] * 5 + [0, 2]  # left wrist covered, left ankle unlabelled
    return [_person(rng, 10, 10, vis), _person(rng, 110, 10, covered), _person(rng, 60, 60, vis)]


def test_sigmas_are_cocos():
    from pycocotools.cocoeval import Params
    np.testing.assert_allclose(Params(iouType='keypoints').kpt_oks_sigmas, COCO_SIGMAS)


def test_perfect_predictions(tmp_path, people):
    tool = _tool()
    report = tool.analyse(*_write(tmp_path, people, [p.copy() for p in people]))
    assert report['people']['count'] == 3 and report['people']['mean_oks'] == pytest.approx(1)
    for ap in report['oracles'].values():
        assert ap['AP'] == pytest.approx(1.0)
    assert report['keypoints']['left_wrist']['covered'] == 1
    assert report['keypoints']['left_ankle']['visible'] == 2  # the unlabelled one is not counted


def test_oks_errors_and_oracles(tmp_path, people):
    tool = _tool()
    preds = [p.copy() for p in people]
    preds[0][0, :2] += [3.0, 4.0]  # nose of person 1 off by 5 px: a fine error
    preds[1][9, :2] += [30.0, 0.0]  # covered left wrist of person 2 off by 30 px: a gross error
    preds[2][:, :2] += 1.0  # person 3 everywhere off by sqrt(2)
    gt_file, res_file = _write(tmp_path, people, preds)
    report = tool.analyse(gt_file, res_file)

    expected_nose = np.exp(-25 / (2 * 2000 * (2 * COCO_SIGMAS[0])**2))
    person3_nose = np.exp(-2 / (2 * 2000 * (2 * COCO_SIGMAS[0])**2))
    assert report['keypoints']['nose']['oks_visible'] == pytest.approx(
        (expected_nose + 1 + person3_nose) / 3)
    assert report['keypoints']['left_wrist']['oks_covered'] == pytest.approx(
        np.exp(-900 / (2 * 2000 * (2 * COCO_SIGMAS[9])**2)), abs=1e-9)
    assert report['keypoints']['nose']['median_error'] == pytest.approx(np.sqrt(2 / 2000))

    oracles = {name.split(' (')[0].split(' right')[0]: ap['AP']
               for name, ap in report['oracles'].items()}
    as_is = oracles['as predicted']
    assert as_is < 1.0
    assert oracles['covered points'] > as_is  # fixes the wrist
    assert oracles['face points'] > as_is
    # fixing every error (gross + fine) would give 1; each oracle alone falls short of it
    assert as_is < oracles['gross errors'] < 1.0 and as_is < oracles['fine errors'] < 1.0
    text = tool.format_report(report)
    assert '| left_wrist |' in text and '| as predicted |' in text


def test_prediction_matched_to_nearest_person(tmp_path, people):
    tool = _tool()
    gt_file, res_file = _write(tmp_path, people, [people[1].copy(), people[1].copy(), people[2]])
    gt = json.load(open(gt_file))
    matches = tool.match_predictions(gt, json.load(open(res_file)), COCO_SIGMAS)
    assert [m[0]['id'] for m in matches] == [2, 2, 3]  # both image-1 predictions fit person 2


def test_bad_inputs(tmp_path, people):
    tool = _tool()
    gt_file, res_file = _write(tmp_path, people, people)
    with pytest.raises(FileNotFoundError, match='nope.json does not exist'):
        tool.analyse(gt_file, str(tmp_path / 'nope.json'))
    json.dump([], open(res_file, 'w'))
    with pytest.raises(ValueError, match='holds no predictions'):
        tool.analyse(gt_file, res_file)
    json.dump([dict(image_id=1, category_id=1, score=1.0, keypoints=[0.0] * 15)],
              open(res_file, 'w'))
    with pytest.raises(ValueError, match='5 key points per prediction'):
        tool.analyse(gt_file, res_file)
