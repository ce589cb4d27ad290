"""Where does a top-down model lose COCO key-point AP? Per-key-point OKS and oracle AP.

Input: the COCO key-point ground truth and a result file (the ``<prefix>.keypoints.json`` that
MMPose's ``CocoMetric`` writes when ``outfile_prefix`` is set). Predictions are matched one to one
to the labelled people of their image, in the order of their scores: to the person whose box
overlaps the prediction's ``bbox`` most (a top-down result carries the box it was made for), or,
without a box, to the person with the highest OKS (COCO's formula and sigmas, from pycocotools).
The tool reports:

* people (matched predictions): mean OKS and the share whose OKS exceeds 0.5 / 0.75 / 0.9;
* per key point: mean OKS of the visible (v=2) and of the covered (v=1) labelled points, and the
  median error of the visible ones in units of sqrt(area) (COCO's scale);
* oracle AP: COCO's AP after the predictions of one class of key points are replaced by the
  truth (covered points, face points, arms, gross errors with key-point OKS < 0.5, fine errors
  with OKS >= 0.5). What an oracle gains is what that class costs the model.

Example::

    python tools/test.py CONFIG CKPT --cfg-options test_evaluator.outfile_prefix=work_dirs/x/pred
    python tools/analysis/keypoint_error_analysis.py \\
        data/synthetic_coco/annotations/person_keypoints_val.json work_dirs/x/pred.keypoints.json
"""
import argparse
import json
import os.path as osp
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import analysis_utils  # noqa: E402

#: a key point is a gross error below this OKS, a fine error at or above it
GROSS_OKS = 0.5
#: names (substrings) of the key-point groups the oracles replace
FACE_NAMES = ('nose', 'eye', 'ear')
ARM_NAMES = ('elbow', 'wrist')


def keypoint_oks(pred: np.ndarray, gt: np.ndarray, area: float, sigmas: np.ndarray) -> np.ndarray:
    """COCO's per-key-point similarity ``exp(-d^2 / (2 * area * (2 * sigma)^2))``.

    Args:
        pred (np.ndarray): predicted key points, shape (K, 2) or (K, 3).
        gt (np.ndarray): ground-truth key points, shape (K, 3) with the visibility flag last.
        area (float): the person's area (COCO's scale is its square root).
        sigmas (np.ndarray): per-key-point sigmas, shape (K, ).

    Returns:
        np.ndarray: shape (K, ); meaningful where ``gt[:, 2] > 0``; 0 for a non-finite
        prediction.
    """
    d2 = ((pred[:, :2] - gt[:, :2])**2).sum(1)
    oks = np.exp(-d2 / (2 * (area + np.spacing(1)) * (2 * sigmas)**2))
    return np.where(np.isfinite(oks), oks, 0.0)  # a NaN / inf prediction is simply wrong


def match_predictions(gt: Dict, results: List[Dict],
                      sigmas: np.ndarray) -> List[Optional[Tuple[Dict, np.ndarray]]]:
    """Match predictions one to one to the labelled people of their image, best score first.

    A result with a ``bbox`` (``[x, y, w, h]``, as MMPose's top-down results carry the box they
    were predicted in) takes the free person whose box overlaps it most, if that IoU is at least
    0.5; otherwise, and for results without a box, the free person with the highest OKS. Crowd
    regions and people without labelled key points take no prediction, as in COCOeval.

    Args:
        gt (dict): the ground-truth COCO dict (``annotations`` with ``keypoints`` and ``area``).
        results (list[dict]): COCO key-point results (``image_id``, ``keypoints``, ``score``,
            optionally ``bbox``).
        sigmas (np.ndarray): per-key-point sigmas.

    Returns:
        list: per result, ``(annotation, per-key-point OKS)``, or None when no free labelled
        person is left in its image.
    """
    from pycocotools import mask as mask_utils
    by_image: Dict[int, List[Dict]] = {}
    for ann in gt['annotations']:
        if ann.get('num_keypoints', 1) > 0 and not ann.get('iscrowd', 0):
            by_image.setdefault(ann['image_id'], []).append(ann)
    taken: set = set()
    matches: List[Optional[Tuple[Dict, np.ndarray]]] = [None] * len(results)
    order = sorted(range(len(results)), key=lambda i: -float(results[i].get('score', 0.0)))
    for i in order:
        res = results[i]
        free = [a for a in by_image.get(res['image_id'], []) if a['id'] not in taken]
        if not free:
            continue
        pred = np.asarray(res['keypoints'], dtype=np.float64).reshape(-1, 3)
        oks = [keypoint_oks(pred, np.asarray(a['keypoints'], dtype=np.float64).reshape(-1, 3),
                            a['area'], sigmas) for a in free]
        best = None
        if 'bbox' in res:
            ious = mask_utils.iou([res['bbox']], [a['bbox'] for a in free], [0] * len(free))[0]
            if ious.max() >= 0.5:
                best = int(ious.argmax())
        if best is None:
            mean_oks = [o[np.asarray(a['keypoints']).reshape(-1, 3)[:, 2] > 0].mean()
                        for o, a in zip(oks, free)]
            best = int(np.argmax(mean_oks))
        taken.add(free[best]['id'])
        matches[i] = (free[best], oks[best])
    return matches


def oracle_results(results: List[Dict], matches: Sequence, replace: Callable) -> List[Dict]:
    """The results with the key points that ``replace`` selects set to their matched truth.

    Args:
        results (list[dict]): COCO key-point results.
        matches (Sequence): :func:`match_predictions` of the results.
        replace (Callable): ``replace(k, v, oks) -> bool`` for key point ``k`` with ground-truth
            visibility ``v`` and OKS ``oks``; only labelled points (v > 0) are asked.

    Returns:
        list[dict]: new results; the inputs are not modified.
    """
    fixed = []
    for res, match in zip(results, matches):
        res = dict(res)
        if match is not None:
            ann, oks = match
            pred = np.asarray(res['keypoints'], dtype=np.float64).reshape(-1, 3)
            gt = np.asarray(ann['keypoints'], dtype=np.float64).reshape(-1, 3)
            for k in range(len(gt)):
                if gt[k, 2] > 0 and replace(k, int(gt[k, 2]), float(oks[k])):
                    pred[k, :2] = gt[k, :2]
            res['keypoints'] = pred.reshape(-1).tolist()
        fixed.append(res)
    return fixed


def _indices(names: Sequence[str], parts: Sequence[str]) -> set:
    return {k for k, name in enumerate(names) if any(p in name for p in parts)}


def analyse(gt_file: str, result_file: str) -> Dict:
    """Per-person and per-key-point OKS and the oracle APs of a result file.

    Args:
        gt_file (str): the ground-truth COCO key-point annotation file.
        result_file (str): the COCO key-point result file.

    Returns:
        dict: ``people`` (mean OKS, shares above thresholds), ``keypoints`` (per name: OKS of
        visible and covered points, median error / sqrt(area)) and ``oracles`` (name -> AP dict).

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: the result file is empty, a prediction's key points or image do not fit
            the annotations, or no prediction falls on a labelled person.
    """
    from pycocotools.cocoeval import Params
    for path in (gt_file, result_file):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{path} does not exist')
    with open(gt_file) as f:
        gt = json.load(f)
    with open(result_file) as f:
        results = json.load(f)
    names = gt['categories'][0]['keypoints']
    sigmas = np.asarray(Params(iouType='keypoints').kpt_oks_sigmas)
    if not results:
        raise ValueError(f'{result_file} holds no predictions')
    if len(names) != len(sigmas):
        raise ValueError(f'{gt_file} names {len(names)} key points; COCO has sigmas for '
                         f'{len(sigmas)}')
    image_ids = {image['id'] for image in gt['images']}
    for index, res in enumerate(results):
        if len(res['keypoints']) != 3 * len(names):
            raise ValueError(f'{result_file}: prediction {index} has '
                             f'{len(res["keypoints"]) // 3} key points, {gt_file} names '
                             f'{len(names)}')
        if res['image_id'] not in image_ids:
            raise ValueError(f'{result_file}: prediction {index} is for image_id '
                             f'{res["image_id"]}, which {gt_file} does not have')
    matches = match_predictions(gt, results, sigmas)
    if all(match is None for match in matches):
        raise ValueError(f'{result_file}: none of its {len(results)} predictions falls on a '
                         f'labelled person of {gt_file}')
    people, oks_rows, vis_rows, err_rows = [], [], [], []
    for res, match in zip(results, matches):
        if match is None:
            continue
        ann, oks = match
        kpts = np.asarray(ann['keypoints'], dtype=np.float64).reshape(-1, 3)
        pred = np.asarray(res['keypoints'], dtype=np.float64).reshape(-1, 3)
        people.append(oks[kpts[:, 2] > 0].mean())
        oks_rows.append(oks)
        vis_rows.append(kpts[:, 2])
        err_rows.append(np.linalg.norm(pred[:, :2] - kpts[:, :2], axis=1) /
                        np.sqrt(max(ann['area'], np.spacing(1))))
    oks_all, vis, err = np.array(oks_rows), np.array(vis_rows), np.array(err_rows)
    people = np.array(people)

    def mean_where(values, mask):
        return float(values[mask].mean()) if mask.any() else float('nan')

    per_keypoint = {
        name: dict(oks_visible=mean_where(oks_all[:, k], vis[:, k] == 2),
                   oks_covered=mean_where(oks_all[:, k], vis[:, k] == 1),
                   median_error=float(np.median(err[vis[:, k] == 2, k]))
                   if (vis[:, k] == 2).any() else float('nan'),
                   visible=int((vis[:, k] == 2).sum()), covered=int((vis[:, k] == 1).sum()))
        for k, name in enumerate(names)
    }
    face, arms = _indices(names, FACE_NAMES), _indices(names, ARM_NAMES)
    oracles = {
        'as predicted': lambda k, v, o: False,
        'covered points (v=1) right': lambda k, v, o: v == 1,
        'face points right': lambda k, v, o: k in face,
        'elbows and wrists right': lambda k, v, o: k in arms,
        f'gross errors (OKS < {GROSS_OKS}) right': lambda k, v, o: o < GROSS_OKS,
        f'fine errors (OKS >= {GROSS_OKS}) right': lambda k, v, o: o >= GROSS_OKS,
    }
    return dict(
        people=dict(count=int(len(people)), unmatched=len(results) - int(len(people)),
                    mean_oks=float(people.mean()),
                    **{f'share_oks>{t}': float((people > t).mean()) for t in (0.5, 0.75, 0.9)}),
        keypoints=per_keypoint,
        oracles={name: analysis_utils.coco_keypoint_ap(
            gt_file, oracle_results(results, matches, rule)) for name, rule in oracles.items()})


def format_report(report: Dict) -> str:
    """Markdown tables of :func:`analyse`'s report.

    Args:
        report (dict): the report.

    Returns:
        str: the tables.
    """
    p = report['people']
    lines = [f"{p['count']} people matched ({p['unmatched']} predictions unmatched); "
             f"mean OKS {p['mean_oks']:.3f}; OKS > 0.5 / 0.75 / "
             f"0.9: {p['share_oks>0.5']:.1%} / {p['share_oks>0.75']:.1%} / "
             f"{p['share_oks>0.9']:.1%}", '']
    lines.append(analysis_utils.format_markdown_table(
        ['key point', 'OKS visible (n)', 'OKS covered (n)', 'median error / sqrt(area)'],
        [[name, f"{row['oks_visible']:.3f} ({row['visible']})",
          f"{row['oks_covered']:.3f} ({row['covered']})", f"{row['median_error']:.3f}"]
         for name, row in report['keypoints'].items()]))
    lines += ['', analysis_utils.format_markdown_table(
        ['oracle', 'AP', 'AP50', 'AP75'],
        [[name, f"{ap['AP']:.3f}", f"{ap['AP50']:.3f}", f"{ap['AP75']:.3f}"]
         for name, ap in report['oracles'].items()])]
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """Print (and optionally write) the report of a result file.

    Args:
        argv (Sequence[str], optional): arguments; ``sys.argv[1:]`` by default.

    Returns:
        dict: the report of :func:`analyse`.
    """
    parser = argparse.ArgumentParser(description='Where a key-point model loses COCO AP')
    parser.add_argument('gt_file', help='COCO key-point ground truth')
    parser.add_argument('result_file', help='COCO key-point results (*.keypoints.json)')
    parser.add_argument('--out', help='also write the tables (markdown) to this file')
    args = parser.parse_args(argv)
    report = analyse(args.gt_file, args.result_file)
    text = format_report(report)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')
    return report


if __name__ == '__main__':
    try:
        main()
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f'error: {error}')
