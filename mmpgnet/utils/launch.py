"""What ``tools/train.py`` and ``tools/test.py`` share: arguments, config set-up, CPU launch."""
import argparse
import os
import os.path as osp
import sys
from typing import Callable, Optional

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .atomic_local_backend import ATOMIC_LOCAL_BACKEND
from .checkpoint_check import CheckpointError
from .peer_watch import lost_peer_message, report_failure, start_peer_watch, stop_peer_watch
from .synthetic_data import DATALOADER_SPLITS, coco_datasets, use_synthetic_data
from .torch_compat import COMPILE_FEATURE, COMPILE_MIN_TORCH, TorchVersionError, require_torch

#: annotation files up to this size are validated before the run (larger ones load slowly)
VALIDATE_MAX_BYTES = 100 * 2**20


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add the arguments both tools take: config, work dir, options, launcher, synthetic data.

    Args:
        parser (argparse.ArgumentParser): the tool's parser.
    """
    parser.add_argument('config', help='config file (may inherit mmpose:: / mmdet:: configs)')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument(
        '--synthetic-data',
        metavar='DIR',
        help='read every COCO dataloader and metric from a dataset made by '
        'tools/dataset_converters/generate_synthetic_coco.py instead of the paths in the config')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value pairs (e.g. train_cfg.max_iters=10)')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher (tools/dist_train.sh and dist_test.sh use pytorch)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def _package_dir(package: str) -> str:
    """The folder of an installed package, editable installs included.

    MMEngine's ``get_installed_path`` joins the distribution's location with the package name,
    which misses a PEP 660 editable install (``pip install -e .``, as ``make install`` does): the
    import system's answer is used where it has one.
    """
    import importlib.util
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.origin:
        return osp.dirname(spec.origin)
    from mmengine.utils import get_installed_path
    return get_installed_path(package)


def resolve_config_path(config: str) -> str:
    """Resolve a config path, also of the ``mmpose::path`` / ``mmdet::path`` form.

    Args:
        config (str): a file path, or ``<package>::<path inside its .mim/configs>``.

    Returns:
        str: the path of an existing config file.

    Raises:
        FileNotFoundError: if the file does not exist.
    """
    path = config
    if '::' in config:
        package, rel_path = config.split('::', 1)
        path = osp.join(_package_dir(package), '.mim', 'configs', rel_path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {config} does not exist'
                                + (f' (looked at {path})' if path != config else ''))
    return path


def load_config(args: argparse.Namespace, mode: str = 'train') -> Config:
    """Load the config and apply the common arguments to it.

    Args:
        args (argparse.Namespace): parsed arguments of :func:`add_common_args`.
        mode (str): ``'train'`` (validates the train and val data) or ``'test'`` (test data).

    Returns:
        Config: the config with launcher, options, work dir and data applied.

    Raises:
        FileNotFoundError: if the config file or a synthetic annotation file does not exist.
        TorchVersionError: for ``compile`` on a torch older than ``COMPILE_MIN_TORCH``.
    """
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = Config.fromfile(resolve_config_path(args.config))
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.synthetic_data:
        use_synthetic_data(cfg, args.synthetic_data)
    if cfg.get('compile'):
        require_torch(COMPILE_FEATURE, COMPILE_MIN_TORCH)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    validate_annotations(
        cfg, ('train_dataloader', 'val_dataloader') if mode == 'train' else ('test_dataloader', ))
    if mode == 'train':
        use_atomic_checkpoints(cfg)
    setup_cpu_distributed(cfg)
    return cfg


def use_atomic_checkpoints(cfg: Config) -> None:
    """Save checkpoints through :class:`~mmpgnet.utils.atomic_local_backend.AtomicLocalBackend`.

    A run killed while it saves then leaves the previous checkpoint and no partial file. Only a
    ``CheckpointHook`` that writes to a local folder and names no storage backend of its own
    (``backend_args`` / ``file_client_args``) is changed.

    Args:
        cfg (Config): the config; modified in place.
    """
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if not hook or hook.get('backend_args') or hook.get('file_client_args'):
        return
    if '://' in str(hook.get('out_dir') or cfg.work_dir):
        return
    hook['backend_args'] = dict(backend=ATOMIC_LOCAL_BACKEND)


def validate_annotations(cfg: Config, loaders=tuple(DATALOADER_SPLITS)) -> None:
    """Check the COCO annotation files of the config's dataloaders before anything is built.

    A missing file, a missing field or a missing image then fails with a message naming the
    file and the field (:func:`mmpgnet.datasets.validate_coco_file`) instead of a ``KeyError``
    from inside the loader. Files over ``VALIDATE_MAX_BYTES`` (full COCO) are left to the loader.

    Args:
        cfg (Config): the config.
        loaders (Sequence[str]): the dataloader keys to check.
    """
    from mmpgnet.datasets import validate_coco_file
    keypoints = cfg.get('default_scope') == 'mmpose'
    for key in loaders:
        loader = cfg.get(key)
        if not loader:
            continue
        for dataset in coco_datasets(loader.get('dataset')):
            root = dataset.get('data_root') or ''
            ann_file = osp.join(root, dataset.ann_file)
            if osp.isfile(ann_file) and osp.getsize(ann_file) > VALIDATE_MAX_BYTES:
                continue
            img_dir = osp.join(root, (dataset.get('data_prefix') or {}).get('img', ''))
            validate_coco_file(ann_file, keypoints=keypoints, img_dir=img_dir)


def setup_cpu_distributed(cfg: Config, timeout_s: Optional[int] = None) -> None:
    """Make a distributed run work on CPU processes.

    MMEngine's launcher calls ``torch.cuda.set_device`` (fails without a GPU) and uses nccl, and
    its ``Runner`` hands ``device_ids`` to DDP (rejected for CPU modules). Without CUDA this
    initialises the gloo process group itself (the Runner then skips its own init) and, unless the
    config names a wrapper, wraps the model in :class:`DeviceAgnosticDDP`. With CUDA it changes
    nothing.

    Args:
        cfg (Config): the config (``cfg.launcher`` set); modified in place.
        timeout_s (int, optional): collective timeout, so that a dead rank ends the job with an
            error instead of a hang; default ``env_cfg.dist_cfg.timeout`` or 300 s.

    Raises:
        ValueError: for the ``slurm`` / ``mpi`` launchers without CUDA, which MMEngine cannot
            start on CPU processes.
    """
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    if cfg.launcher != 'pytorch':
        raise ValueError(f'--launcher {cfg.launcher} needs GPUs (MMEngine selects a CUDA device '
                         'for it); on CPU processes use --launcher pytorch, e.g. '
                         'tools/dist_train.sh')
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(type='DeviceAgnosticDDP')
    if cfg.launcher == 'pytorch' and not dist.is_initialized():
        from datetime import timedelta
        seconds = timeout_s or int(dist_cfg.get('timeout', 300))
        dist.init_process_group(backend='gloo', timeout=timedelta(seconds=seconds))


def close_distributed() -> None:
    """Destroy the process group at the end of a run, if there is one.

    A gloo process group left to the interpreter's exit can abort one rank
    (``terminate called without an active exception``) after a successful run, which torchrun
    then reports as a failed job; closing it explicitly ends every rank cleanly.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        stop_peer_watch()
        dist.destroy_process_group()


def enable_amp(cfg: Config) -> None:
    """Switch the optimizer wrapper to mixed precision: CUDA fp16 or CPU bfloat16 autocast.

    Args:
        cfg (Config): the config; modified in place.
    """
    if torch.cuda.is_available():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    else:
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'
        cfg.optim_wrapper.pop('loss_scale', None)


def build_runner(cfg: Config) -> Runner:
    """Build MMEngine's ``Runner``, or the config's own ``runner_type`` from the RUNNERS registry.

    In a distributed run the process group exists once the runner does: each rank then starts
    its :class:`~mmpgnet.utils.peer_watch.PeerWatch` heartbeat, so that if a rank dies the
    others' errors name it (:func:`run_cli`).

    Args:
        cfg (Config): the loaded config.

    Returns:
        Runner: the runner.
    """
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    start_peer_watch()
    return runner


def run_cli(main: Callable[[], object]) -> None:
    """Run a tool's ``main``; bad input and a lost peer rank exit with one line that names them.

    The loaders' own tracebacks from deep inside a dataset say less than the error that
    :func:`load_config` and :func:`validate_annotations` raise, which names the file and the field.
    Every ``FileNotFoundError`` and ``CocoFormatError`` becomes such a one-line exit (whichever
    code raised it: the message names the file), as do a ``TorchVersionError`` (a feature the
    installed torch lacks) and a ``CheckpointError`` (an empty, truncated, foreign or unreadable
    checkpoint). In a distributed run, any other error first asks the job's heartbeats
    (:func:`~mmpgnet.utils.peer_watch.lost_peer_message`) whether a peer rank was lost: if so the
    line names it (rank, host, pid, and its own error if it left one), else the error keeps its
    traceback.

    Args:
        main (Callable): the tool's entry point, called without arguments.
    """
    from mmpgnet.datasets import CocoFormatError
    try:
        main()
    except (FileNotFoundError, CocoFormatError, TorchVersionError, CheckpointError) as error:
        report_failure(error)
        sys.exit(f'error: {error}')
    except Exception as error:  # noqa: BLE001 (re-raised unless a peer rank was lost)
        message = lost_peer_message(error)
        if message is None:
            raise
        sys.exit(f'error: {message}')
