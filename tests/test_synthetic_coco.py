"""The synthetic COCO person generator: valid COCO fields, honest visibility, determinism."""
import json
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config
from pycocotools.coco import COCO

from mmpgnet.datasets import (COCO_KEYPOINT_NAMES, SyntheticCocoConfig, generate_synthetic_coco,
                              render_image)
from mmpgnet.datasets.synthetic_coco import _visibility
from mmpgnet.utils.synthetic_data import use_synthetic_data


def _load(root, split='train'):
    with open(osp.join(root, 'annotations', f'person_keypoints_{split}.json')) as f:
        return json.load(f)


def test_coco_fields_are_valid(synthetic_coco):
    for split, n_images in (('train', 6), ('val', 3)):
        data = _load(synthetic_coco, split)
        assert len(data['images']) == n_images
        assert data['categories'][0]['name'] == 'person'
        assert data['categories'][0]['keypoints'] == list(COCO_KEYPOINT_NAMES)
        assert len(data['categories'][0]['skeleton']) == 19
        ids = [a['id'] for a in data['annotations']]
        assert len(ids) == len(set(ids)) >= n_images
        images = {im['id']: im for im in data['images']}
        for im in data['images']:
            assert osp.isfile(osp.join(synthetic_coco, split, im['file_name']))
            assert (im['width'], im['height']) == (192, 160)
        for ann in data['annotations']:
            im = images[ann['image_id']]
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and w > 0 and h > 0
            assert x + w <= im['width'] and y + h <= im['height']
            assert 0 < ann['area'] <= w * h
            kpts = np.array(ann['keypoints']).reshape(17, 3)
            vis = kpts[:, 2]
            assert set(vis.tolist()) <= {0, 1, 2}
            assert ann['num_keypoints'] == int((vis > 0).sum())
            assert np.all(kpts[vis == 0, :2] == 0)
            inside = kpts[vis > 0, :2]
            assert np.all((inside >= 0) & (inside < [im['width'], im['height']]))
            assert ann['iscrowd'] == 0 and ann['category_id'] == 1
            assert all(len(poly) >= 6 and len(poly) % 2 == 0 for poly in ann['segmentation'])


def test_loadable_by_pycocotools_and_occlusion_present(synthetic_coco):
    coco = COCO(osp.join(synthetic_coco, 'annotations', 'person_keypoints_train.json'))
    anns = coco.loadAnns(coco.getAnnIds(catIds=coco.getCatIds(catNms=['person'])))
    assert len(anns) == len(coco.getAnnIds())
    masks = [coco.annToMask(a) for a in anns]
    assert all(m.sum() > 0 for m in masks)
    vis = np.array([a['keypoints'] for a in anns]).reshape(-1, 17, 3)[..., 2]
    # visible key points dominate; occluded ones exist (people overlap, limbs cross the torso)
    assert (vis == 2).mean() > 0.5
    assert (vis == 1).sum() > 0


def test_deterministic_by_seed(tmp_path):
    a = generate_synthetic_coco(str(tmp_path / 'a'), 3, 1, seed=7, show_progress=False)
    b = generate_synthetic_coco(str(tmp_path / 'b'), 3, 1, seed=7, show_progress=False)
    c = generate_synthetic_coco(str(tmp_path / 'c'), 3, 1, seed=8, show_progress=False)
    read = lambda p: open(p).read().replace(str(tmp_path), '')  # noqa: E731
    assert read(a['train']) == read(b['train'])
    assert read(a['train']) != read(c['train'])
    img1, _ = render_image(7, 'train', 2, SyntheticCocoConfig())
    img2, _ = render_image(7, 'train', 2, SyntheticCocoConfig())
    img3, _ = render_image(7, 'val', 2, SyntheticCocoConfig())
    assert np.array_equal(img1, img2) and not np.array_equal(img1, img3)


def test_visibility_rule():
    owner = np.zeros((10, 10), np.int32)
    owner[0:5, :] = 1 + 0 * 16 + 1  # person 0, torso
    owner[5:10, :] = 1 + 1 * 16 + 1  # person 1, torso
    kpt = np.zeros((17, 2)) + 2.0
    kpt[11] = (2, 7)  # person 0's left hip lies on person 1's torso: occluded
    kpt[12] = (20, 2)  # outside the image
    vis = _visibility(kpt, owner, person=0)
    assert vis[5] == 2 and vis[11] == 1 and vis[12] == 0
    assert vis[0] == 1  # the nose is not on the head part

    # with min_part_visible, a covered point is labelled only if enough of one of its parts shows
    torso = 1  # part id of the torso
    part_area = {torso: 100}  # person 0's torso was drawn on 100 pixels, 50 of them still show
    vis = _visibility(kpt, owner, 0, part_area, min_part_visible=0.25)
    assert vis[11] == 1 and vis[5] == 2 and vis[12] == 0
    part_area = {torso: 1000}  # only 5 % of the torso shows: its covered hip is not inferable
    vis = _visibility(kpt, owner, 0, part_area, min_part_visible=0.25)
    assert vis[11] == 0 and vis[5] == 2
    with pytest.raises(ValueError, match='part_area'):
        _visibility(kpt, owner, 0, None, min_part_visible=0.25)


@pytest.mark.parametrize('kwargs,match', [
    (dict(img_size=(16, 16)), 'img_size'),
    (dict(max_people=0), 'max_people'),
    (dict(min_height=0.9, max_height=0.5), 'min_height'),
    (dict(occluder_prob=2), 'occluder_prob'),
    (dict(min_part_visible=1.5), 'min_part_visible'),
])
def test_bad_settings_raise(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_synthetic_coco(str(tmp_path), 1, 1, cfg=SyntheticCocoConfig(**kwargs),
                                show_progress=False)
    with pytest.raises(ValueError, match='num_images'):
        generate_synthetic_coco(str(tmp_path), 0, 1, show_progress=False)
    with pytest.raises(ValueError, match='unknown split'):
        render_image(0, 'holdout', 0, SyntheticCocoConfig())


def test_read_by_mmpose_and_mmdet_datasets(synthetic_coco):
    from mmdet.datasets import CocoDataset as DetCoco
    from mmpose.datasets import CocoDataset as PoseCoco
    pose = PoseCoco(data_root=synthetic_coco, ann_file='annotations/person_keypoints_val.json',
                    data_prefix=dict(img='val/'), pipeline=[], test_mode=True)
    n_people = len(_load(synthetic_coco, 'val')['annotations'])
    assert len(pose) == n_people
    item = pose[0]
    assert item['keypoints'].shape == (1, 17, 2) and osp.isfile(item['img_path'])
    det = DetCoco(data_root=synthetic_coco, ann_file='annotations/person_keypoints_val.json',
                  data_prefix=dict(img='val/'), pipeline=[], metainfo=dict(classes=('person', )),
                  test_mode=True)
    assert len(det) == 3
    assert sum(len(det[i]['instances']) for i in range(3)) == n_people


def test_use_synthetic_data_rewrites_loaders_and_metrics(synthetic_coco, tmp_path):
    from mmpgnet.utils.launch import resolve_config_path
    cfg = Config.fromfile(
        resolve_config_path('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'))
    use_synthetic_data(cfg, synthetic_coco)
    assert cfg.train_dataloader.dataset.ann_file.endswith('person_keypoints_train.json')
    assert cfg.val_dataloader.dataset.data_prefix == dict(img='val/')
    assert cfg.val_evaluator.ann_file.endswith('person_keypoints_val.json')
    with pytest.raises(FileNotFoundError, match='person_keypoints_train.json.*generate'):
        use_synthetic_data(cfg, str(tmp_path / 'empty'))
    with pytest.raises(ValueError, match='no COCO dataset'):
        use_synthetic_data(Config(dict(train_dataloader=dict(dataset=dict(type='X')))),
                           synthetic_coco)


def test_generator_cli(tmp_path):
    from helpers.tool_runs import run_tool
    out = run_tool(['dataset_converters/generate_synthetic_coco.py', str(tmp_path), '--num-train',
                    '2', '--num-val', '1', '--no-progress', '--img-size', '96', '80'])
    assert 'person_keypoints_val.json' in out
    data = json.load(open(tmp_path / 'annotations' / 'person_keypoints_val.json'))
    assert len(data['images']) == 1 and data['images'][0]['width'] == 96
