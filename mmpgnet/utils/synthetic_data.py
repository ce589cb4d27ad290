"""Point a stock MMPose or MMDetection config at a dataset made by the synthetic generator."""
import os.path as osp
from typing import Any, Iterator

from mmengine.config import Config, ConfigDict

#: dataloader -> split of the synthetic dataset it reads
DATALOADER_SPLITS = dict(train_dataloader='train', val_dataloader='val', test_dataloader='val')
_WRAPPER_KEYS = ('dataset', 'datasets')


def synthetic_ann_file(data_root: str, split: str) -> str:
    """Path of a split's annotation file in a synthetic dataset (see ``generate_synthetic_coco``).

    Args:
        data_root (str): dataset root.
        split (str): ``'train'`` or ``'val'``.

    Returns:
        str: ``<data_root>/annotations/person_keypoints_<split>.json``.
    """
    return osp.join(data_root, 'annotations', f'person_keypoints_{split}.json')


def coco_datasets(dataset_cfg: Any) -> Iterator[ConfigDict]:
    """Yield every COCO dataset dict inside a dataset config, through wrappers and lists."""
    if isinstance(dataset_cfg, (list, tuple)):
        for item in dataset_cfg:
            yield from coco_datasets(item)
        return
    if not isinstance(dataset_cfg, dict):
        return
    if 'ann_file' in dataset_cfg and 'Coco' in str(dataset_cfg.get('type', '')):
        yield dataset_cfg
    for key in _WRAPPER_KEYS:
        if key in dataset_cfg:
            yield from coco_datasets(dataset_cfg[key])


def _evaluators(cfg: Config) -> Iterator[ConfigDict]:
    for key in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg.get(key)
        for metric in (evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]):
            if isinstance(metric, dict):
                yield metric


def use_synthetic_data(cfg: Config, data_root: str) -> Config:
    """Rewrite a config's dataloaders and COCO evaluators to read a synthetic dataset.

    Every COCO dataset of the train / val / test dataloaders (also inside dataset wrappers) gets
    ``data_root``, the split's annotation file and image folder; top-down pose datasets evaluate
    on ground-truth boxes (``bbox_file=None``); every ``CocoMetric`` gets the val annotation file.
    Everything else (pipelines, model, schedule) stays as the config has it.

    Args:
        cfg (Config): a loaded MMPose or MMDetection config; modified in place.
        data_root (str): root of a dataset written by
            :func:`mmpgnet.datasets.generate_synthetic_coco`.

    Returns:
        Config: the same ``cfg``.

    Raises:
        FileNotFoundError: if an annotation file that a dataloader needs is missing.
        ValueError: if the config has no COCO dataset to redirect.
    """
    data_root = osp.abspath(data_root)
    found = 0
    for loader_key, split in DATALOADER_SPLITS.items():
        loader = cfg.get(loader_key)
        if not loader:
            continue
        ann_file = synthetic_ann_file(data_root, split)
        if not osp.isfile(ann_file):
            raise FileNotFoundError(
                f'{loader_key} needs the annotation file {ann_file}, which does not exist: '
                f'generate the dataset with `python tools/dataset_converters/'
                f'generate_synthetic_coco.py {data_root}`')
        for dataset in coco_datasets(loader.get('dataset')):
            dataset.data_root = data_root
            dataset.ann_file = ann_file
            dataset.data_prefix = dict(img=f'{split}/')
            if 'bbox_file' in dataset:
                dataset.bbox_file = None
            found += 1
    if found == 0:
        raise ValueError('use_synthetic_data: the config has no COCO dataset (a dataset type '
                         'containing "Coco" with an ann_file) in its dataloaders')
    for metric in _evaluators(cfg):
        if 'ann_file' in metric or 'Coco' in str(metric.get('type', '')):
            metric['ann_file'] = synthetic_ann_file(data_root, 'val')
    return cfg
