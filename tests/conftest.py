"""Shared fixtures: a tiny synthetic COCO dataset and helpers to shrink stock configs for tests."""
import os
import os.path as osp
import subprocess
import sys
from typing import List, Optional, Sequence

import pytest
from mmengine.config import Config

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: ``make test-compat`` sets this: the suite then tests the mmpgnet installed from the built wheel
TEST_INSTALLED = os.environ.get('MMPGNET_TEST_INSTALLED') == '1'
if not TEST_INSTALLED:
    sys.path.insert(0, REPO_ROOT)

import mmpgnet  # noqa: E402,F401

if TEST_INSTALLED and osp.dirname(osp.dirname(osp.abspath(mmpgnet.__file__))) == REPO_ROOT:
    raise RuntimeError(f'MMPGNET_TEST_INSTALLED=1 but mmpgnet was imported from this checkout '
                       f'({mmpgnet.__file__}), not from an installed wheel: run pytest with '
                       '`python -P` so that the working directory is not on sys.path')
from mmpgnet.datasets import SyntheticCocoConfig, generate_synthetic_coco  # noqa: E402
from mmpgnet.utils.launch import resolve_config_path  # noqa: E402
from mmpgnet.utils.synthetic_data import use_synthetic_data  # noqa: E402


@pytest.fixture(scope='session')
def synthetic_coco(tmp_path_factory) -> str:
    """Root of a small synthetic COCO person dataset (6 train, 3 val images of 192x160)."""
    root = str(tmp_path_factory.mktemp('synthetic_coco'))
    generate_synthetic_coco(
        root, num_train=6, num_val=3, seed=0, cfg=SyntheticCocoConfig(img_size=(192, 160)),
        show_progress=False)
    return root


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


def run_tool_result(args: List[str], timeout: int = 600,
                    env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run a tool of ``tools/`` with this interpreter and return how it ended.

    Args:
        args (list[str]): the script (relative to ``tools/``) and its arguments.
        timeout (int): seconds before the run is killed.
        env (dict, optional): extra environment variables; a ``PYTHONPATH`` is put after the
            checkout's.

    Returns:
        subprocess.CompletedProcess: ``returncode`` and ``stdout`` (stderr merged into it).
    """
    script = args[0]
    cmd = (['bash'] if script.endswith('.sh') else [sys.executable]) + \
        [osp.join(REPO_ROOT, 'tools', script)] + list(args[1:])
    env = dict(env or {})
    # keep the caller's PYTHONPATH (where packages were installed with pip --target, say); the
    # checkout goes first unless the suite tests an installed wheel (TEST_INSTALLED)
    first = None if TEST_INSTALLED else REPO_ROOT
    python_path = os.pathsep.join(
        p for p in (first, env.pop('PYTHONPATH', None), os.environ.get('PYTHONPATH')) if p)
    full_env = dict(os.environ, PYTHONPATH=python_path, PYTHON=sys.executable, **env)
    return subprocess.run(cmd, cwd=REPO_ROOT, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def run_tool(args: List[str], timeout: int = 600, env: Optional[dict] = None) -> str:
    """Run a tool of ``tools/`` with this interpreter; fail the test with its output if it fails.

    Args:
        args (list[str]): the script (relative to ``tools/``) and its arguments.
        timeout (int): seconds before the run is killed.
        env (dict, optional): extra environment variables.

    Returns:
        str: the combined stdout and stderr.
    """
    proc = run_tool_result(args, timeout, env)
    if proc.returncode != 0:
        pytest.fail(f'{" ".join(args)} exited with {proc.returncode}:\n{proc.stdout[-6000:]}')
    return proc.stdout
