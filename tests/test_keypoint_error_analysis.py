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
AREA = 2000.0


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


def _box(kpts):
    xy = kpts[kpts[:, 2] > 0, :2]
    return [float(xy[:, 0].min()), float(xy[:, 1].min()), float(np.ptp(xy[:, 0])),
            float(np.ptp(xy[:, 1]))]


def _dump(obj, path):
    with open(path, 'w') as f:
        json.dump(obj, f)
    return str(path)


def _write(tmp_path, people, preds, scores=None, boxes=None):
    """Ground truth (image 1: the first two people; image 2: the rest) and results files."""
    anns = []
    for i, kpts in enumerate(people):
        anns.append(dict(id=i + 1, image_id=1 if i < 2 else 2, category_id=1, iscrowd=0,
                         area=AREA, bbox=_box(kpts), keypoints=kpts.reshape(-1).tolist(),
                         num_keypoints=int((kpts[:, 2] > 0).sum())))
    gt = dict(images=[dict(id=1, file_name='1.jpg', width=200, height=200),
                      dict(id=2, file_name='2.jpg', width=200, height=200)],
              annotations=anns, categories=coco_categories())
    results = []
    for i, p in enumerate(preds):
        res = dict(image_id=1 if i < 2 else 2, category_id=1,
                   score=1.0 if scores is None else scores[i],
                   keypoints=np.concatenate([p[:, :2], np.ones((17, 1))], 1).reshape(-1).tolist())
        if boxes is not None:
            res['bbox'] = boxes[i]
        results.append(res)
    return _dump(gt, tmp_path / 'gt.json'), _dump(results, tmp_path / 'res.json')


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
    assert report['people']['count'] == 3 and report['people']['unmatched'] == 0
    assert report['people']['mean_oks'] == pytest.approx(1)
    for ap in report['oracles'].values():
        assert ap['AP'] == pytest.approx(1.0)
    assert report['keypoints']['left_wrist']['covered'] == 1
    assert report['keypoints']['left_ankle']['visible'] == 2  # the unlabelled one is not counted


def _errors(people):
    preds = [p.copy() for p in people]
    preds[0][0, :2] += [0.6, 0.8]  # nose of person 1 off by 1 px: OKS 0.91, a fine error
    preds[1][9, :2] += [30.0, 0.0]  # covered left wrist of person 2 off by 30 px: a gross error
    preds[2][:, :2] += 1.0  # person 3 everywhere off by sqrt(2): fine errors
    return preds


def test_oks_matches_cocoeval(tmp_path, people):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    tool = _tool()
    gt_file, res_file = _write(tmp_path, people, _errors(people))
    coco = COCO(gt_file)
    evaluation = COCOeval(coco, coco.loadRes(res_file), 'keypoints')
    evaluation.evaluate()  # ious[(image, category)]: detections (equal scores: file order) x gts
    with open(gt_file) as f, open(res_file) as g:
        matches = tool.match_predictions(json.load(f), json.load(g), COCO_SIGMAS)
    for res_index, image_id, row, col in ((0, 1, 0, 0), (1, 1, 1, 1), (2, 2, 0, 0)):
        ann, oks = matches[res_index]
        labelled = np.asarray(ann['keypoints']).reshape(-1, 3)[:, 2] > 0
        assert oks[labelled].mean() == pytest.approx(evaluation.ious[(image_id, 1)][row, col])


def test_oks_errors_and_oracles(tmp_path, people):
    tool = _tool()
    gt_file, res_file = _write(tmp_path, people, _errors(people))
    report = tool.analyse(gt_file, res_file)

    def kpt_oks(d2, k):
        return np.exp(-d2 / (2 * AREA * (2 * COCO_SIGMAS[k])**2))

    assert report['keypoints']['nose']['oks_visible'] == pytest.approx(
        (kpt_oks(1.0, 0) + 1 + kpt_oks(2.0, 0)) / 3)
    assert kpt_oks(1.0, 0) > tool.GROSS_OKS > kpt_oks(900.0, 9)
    assert report['keypoints']['left_wrist']['oks_covered'] == pytest.approx(kpt_oks(900, 9))
    assert report['keypoints']['nose']['median_error'] == pytest.approx(np.sqrt(1 / AREA))

    oracles = {name.split(' (')[0].split(' right')[0]: ap['AP']
               for name, ap in report['oracles'].items()}
    as_is = oracles['as predicted']
    assert as_is < 1.0
    for name in ('covered points', 'elbows and wrists', 'gross errors', 'fine errors'):
        assert oracles[name] > as_is, name
    # each oracle corrects exactly its class
    with open(gt_file) as f, open(res_file) as g:
        results = json.load(g)
        matches = tool.match_predictions(json.load(f), results, COCO_SIGMAS)

    def exact(fixed, person, k):
        return np.allclose(np.reshape(fixed[person]['keypoints'], (-1, 3))[k, :2],
                           people[person][k, :2])

    gross = tool.oracle_results(results, matches, lambda k, v, o: o < tool.GROSS_OKS)
    fine = tool.oracle_results(results, matches, lambda k, v, o: o >= tool.GROSS_OKS)
    assert exact(gross, 1, 9) and not exact(gross, 0, 0) and not exact(gross, 2, 5)
    assert not exact(fine, 1, 9) and exact(fine, 0, 0) and exact(fine, 2, 5)
    assert results[1]['keypoints'][9 * 3] == pytest.approx(people[1][9, 0] + 30)  # not modified
    text = tool.format_report(report)
    assert '| left_wrist |' in text and '| as predicted |' in text


def test_matching_is_one_to_one_by_score_and_box(tmp_path, people):
    tool = _tool()
    # two predictions that both look like person 2: the better-scored one takes person 2
    gt_file, res_file = _write(tmp_path, people, [people[1].copy(), people[1].copy(), people[2]],
                               scores=[0.5, 0.9, 0.7])
    with open(gt_file) as f, open(res_file) as g:
        gt, results = json.load(f), json.load(g)
    assert [m[0]['id'] for m in tool.match_predictions(gt, results, COCO_SIGMAS)] == [1, 2, 3]
    # with boxes, the box a prediction was made for decides, whatever its key points look like
    boxes = [_box(people[0]), _box(people[1]), _box(people[2])]
    _, res_file = _write(tmp_path, people, [people[1].copy(), people[0].copy(), people[2]],
                         boxes=boxes)
    with open(res_file) as g:
        matches = tool.match_predictions(gt, json.load(g), COCO_SIGMAS)
    assert [m[0]['id'] for m in matches] == [1, 2, 3]
    assert matches[0][1].max() < 1.0  # person 1 judged on person 2's key points


def test_non_finite_prediction_counts_as_wrong(tmp_path, people):
    tool = _tool()
    preds = [p.copy() for p in people]
    preds[2][0, 0] = np.nan
    report = tool.analyse(*_write(tmp_path, people, preds))
    assert report['people']['count'] == 3
    assert report['keypoints']['nose']['oks_visible'] == pytest.approx(2 / 3)


def test_bad_inputs(tmp_path, people):
    tool = _tool()
    gt_file, res_file = _write(tmp_path, people, people)
    with pytest.raises(FileNotFoundError, match='nope.json does not exist'):
        tool.analyse(gt_file, str(tmp_path / 'nope.json'))
    _dump([], res_file)
    with pytest.raises(ValueError, match='holds no predictions'):
        tool.analyse(gt_file, res_file)
    good = dict(image_id=1, category_id=1, score=1.0, keypoints=[0.0] * 51)
    _dump([good, dict(good, keypoints=[0.0] * 15)], res_file)
    with pytest.raises(ValueError, match='res.json: prediction 1 has 5 key points'):
        tool.analyse(gt_file, res_file)
    _dump([dict(good, image_id=7)], res_file)
    with pytest.raises(ValueError, match='prediction 0 is for image_id 7'):
        tool.analyse(gt_file, res_file)
    gt_file, res_file = _write(tmp_path, people, people)
    with open(gt_file) as f:
        gt = json.load(f)
    for ann in gt['annotations']:
        ann['iscrowd'] = 1
    _dump(gt, gt_file)
    with pytest.raises(ValueError, match='none of its 3 predictions falls on a labelled person'):
        tool.analyse(gt_file, res_file)
