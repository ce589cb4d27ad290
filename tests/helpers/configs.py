"""Shrink a stock config to a smoke run on the synthetic COCO data (:func:`smoke_config`)."""
import os
import os.path as osp
from typing import Optional, Sequence

from mmengine.config import Config

from .checkout import check_mmpgnet_origin

# before mmpgnet's modules are imported here; also in spawned workers, which skip conftest.py
check_mmpgnet_origin()

from mmpgnet.utils.launch import resolve_config_path  # noqa: E402
from mmpgnet.utils.synthetic_data import use_synthetic_data  # noqa: E402

__all__ = ['smoke_config']


def _loaders(cfg: Config):
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(key):
            yield cfg[key]


def _shrink_resizes(pipeline: Sequence[dict], scale) -> None:
    for t in pipeline or []:
        if t.get('type') in ('Resize', 'RandomResize', 'RandomChoiceResize'):
            t['type'] = 'Resize'
            t['scale'] = scale
            t['keep_ratio'] = True
            for k in ('scales', 'ratio_range', 'resize_type'):
                t.pop(k, None)


def smoke_config(config: str, data_root: str, work_dir: str, max_epochs: int = 1,
                 batch_size: int = 2, det_scale=(256, 192), extra: Optional[dict] = None) -> str:
    """Load a config, point it at synthetic data, shrink it to a smoke run, dump it to a file.

    The model is left as the config builds it, except that backbone ``init_cfg`` is dropped (no
    pretrained weights can be downloaded here). Detection pipelines resize to ``det_scale``.

    Args:
        config (str): config path or ``mmpose::`` / ``mmdet::`` name.
        data_root (str): synthetic dataset root.
        work_dir (str): folder for the dumped config (and the run).
        max_epochs (int): epochs to train.
        batch_size (int): batch size of every dataloader.
        det_scale (tuple): image scale for detection pipelines.
        extra (dict, optional): more options merged with ``Config.merge_from_dict``.

    Returns:
        str: path of the dumped config.
    """
    cfg = Config.fromfile(resolve_config_path(config))
    use_synthetic_data(cfg, data_root)
    for loader in _loaders(cfg):
        loader.batch_size = batch_size
        loader.num_workers = 0
        loader.persistent_workers = False
        dataset = loader.dataset
        while 'dataset' in dataset and 'pipeline' not in dataset:
            dataset = dataset.dataset
        if cfg.get('default_scope') == 'mmdet':
            _shrink_resizes(dataset.get('pipeline'), det_scale)
    backbone = cfg.model.get('backbone', {})
    if backbone.get('init_cfg') is not None:
        backbone.init_cfg = None
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 1
    cfg.default_hooks.pop('visualization', None)
    cfg.work_dir = work_dir
    if extra:
        cfg.merge_from_dict(extra)
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, 'smoke_config.py')
    cfg.dump(path)
    return path
