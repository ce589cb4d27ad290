"""Check a checkpoint before a run loads it, and find the newest complete one to resume from.

MMEngine hands a checkpoint file to ``torch.load`` and the state dict to ``load_state_dict(strict=
False)``. A file cut short by a run killed while saving then fails with a multi-line PyTorch
traceback (``failed finding central directory``), an HTML page saved as ``.pth`` with a long
``weights_only`` message, and the checkpoint of *another* model loads "successfully" with every
tensor skipped (a warning in the log), so that ``tools/test.py`` evaluates random weights.

The tools call :func:`check_run_checkpoint` after building the runner and before it loads
anything: every such file gives one :class:`CheckpointError` line that names the file and what is
wrong with it. ``--resume`` without a file, and a config's ``resume=True`` without ``load_from``
(:func:`resume_request`), use :func:`find_resumable_checkpoint`, which skips a checkpoint left
incomplete and resumes from the newest complete one.
"""
import glob
import logging
import os.path as osp
import pickle
import re
import zipfile
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.distributed as dist
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch import nn

#: what a checkpoint is loaded for: it decides how closely it must fit the model
LOAD_MODES = ('resume', 'test', 'load_from')
#: the zip archive that ``torch.save`` writes (torch >= 1.6) starts with this
_ZIP_MAGIC = b'PK\x03\x04'
#: pickle protocol 2+ (``torch.save(..., _use_new_zipfile_serialization=False)``)
_PICKLE_MAGIC = b'\x80'
#: how many example keys an error message names
_EXAMPLES = 3


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


def _first_line(error: BaseException, limit: int = 160) -> str:
    text = ' '.join(str(error).split())
    match = re.search(r'Unsupported global: GLOBAL (\S+)', text)
    if match:  # torch's weights_only refusal: the class it met is what matters
        return f'it pickles {match.group(1)}, which torch.load(weights_only=True) refuses'
    match = re.search(r'WeightsUnpickler error: (.+?)(?: Check the documentation|$)', text)
    if match:  # another weights_only refusal (e.g. an opcode of a plain pickle)
        return f'torch.load(weights_only=True) refuses it ({match.group(1).strip()})'
    return f'{type(error).__name__}: {text[:limit]}' if text else type(error).__name__


def incomplete_reason(path: str) -> Optional[str]:
    """Why a file cannot be a complete checkpoint, from its size and bytes only (no unpickling).

    Args:
        path (str): the file.

    Returns:
        str | None: e.g. ``'is empty (0 bytes)'``, or None when the file looks complete.
    """
    size = osp.getsize(path)
    if size == 0:
        return 'is empty (0 bytes)'
    with open(path, 'rb') as f:
        head = f.read(4)
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            return (f'is truncated ({size} bytes; its zip archive has no central directory): '
                    'the run that wrote it was probably stopped while saving')
        return None
    if head[:1] == _PICKLE_MAGIC:
        return None  # the legacy format: only unpickling tells
    return f'is not a PyTorch checkpoint (it starts with {head!r})'


def read_checkpoint(path: str) -> dict:
    """Load a checkpoint as MMEngine will (``torch.load`` with torch's ``weights_only`` default).

    Args:
        path (str): a local checkpoint file.

    Returns:
        dict: the checkpoint.

    Raises:
        FileNotFoundError: if there is no such file.
        CheckpointError: if it is empty, truncated, not a checkpoint, holds objects torch refuses
            to unpickle, or holds no tensors.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    reason = incomplete_reason(path)
    if reason:
        raise CheckpointError(f'checkpoint {path} {reason}')
    try:
        # a zip checkpoint is memory-mapped: each rank checks it without a copy in host memory
        checkpoint = torch.load(path, map_location='cpu', mmap=zipfile.is_zipfile(path))
    except (pickle.UnpicklingError, RuntimeError, EOFError, IndexError, ValueError,
            AttributeError, ImportError, KeyError) as error:
        where = '' if zipfile.is_zipfile(path) else \
            ' (an old-format or plain pickle: cut short, or not written by torch.save)'
        raise CheckpointError(
            f'checkpoint {path} cannot be read{where}: {_first_line(error)}') from error
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'checkpoint {path} holds a {type(checkpoint).__name__}, not a '
                              'dict of weights')
    weights_of(checkpoint, path)  # raises when there are none
    return dict(checkpoint)


def weights_of(checkpoint: Mapping, path: str = 'checkpoint') -> Dict[str, torch.Tensor]:
    """The model tensors of a checkpoint, keys revised as MMEngine does (``module.`` dropped).

    Args:
        checkpoint (Mapping): an MMEngine checkpoint or a bare state dict.
        path (str): the file, for the error message.

    Returns:
        dict[str, Tensor]: the tensors by parameter / buffer name.

    Raises:
        CheckpointError: if it has none.
    """
    state = checkpoint.get('state_dict', checkpoint)
    tensors = {re.sub(r'^module\.', '', k): v for k, v in state.items()
               if isinstance(v, torch.Tensor)} if isinstance(state, Mapping) else {}
    if not tensors:
        raise CheckpointError(f'checkpoint {path} holds no model weights (no tensors under '
                              f"'state_dict'; top-level keys: {sorted(map(str, checkpoint))[:5]})")
    return tensors


def _fit(weights: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]
         ) -> Tuple[List[str], List[str], List[str], List[str]]:
    common = [k for k in model_state if k in weights]
    # 0-dim tensors (BatchNorm's num_batches_tracked) fit any model with a layer of that name
    fitting = [k for k in common
               if weights[k].shape == model_state[k].shape and model_state[k].dim() > 0]
    reshaped = [k for k in common if weights[k].shape != model_state[k].shape]
    # older checkpoints lack the 0-dim counters; MMEngine loads them, and so may we
    missing = [k for k in model_state if k not in weights and model_state[k].dim() > 0]
    unexpected = [k for k in weights if k not in model_state]
    return fitting, reshaped, missing, unexpected


def _examples(keys: List[str]) -> str:
    more = f', ... ({len(keys)} in all)' if len(keys) > _EXAMPLES else ''
    return ', '.join(keys[:_EXAMPLES]) + more


def check_checkpoint_fits(weights: Mapping[str, torch.Tensor], model: nn.Module, path: str,
                          mode: str) -> None:
    """Raise unless the checkpoint's tensors fit the model as closely as ``mode`` needs.

    * ``'load_from'`` (fine-tuning, MMEngine loads with ``strict=False``): at least one tensor
      must fit by name and shape; other mismatches are left to MMEngine's warnings, as a
      detector fine-tuned to other classes has a head of another shape.
    * ``'test'``: every tensor of the model must be there with its shape (the checkpoint may
      hold more, e.g. PGS guidance heads that the test-time model leaves out).
    * ``'resume'``: the checkpoint must be of exactly this model (same names, same shapes), or
      the optimizer state would be restored onto the wrong parameters.

    Args:
        weights (Mapping[str, Tensor]): the checkpoint's tensors (:func:`weights_of`).
        model (nn.Module): the model (a wrapper's ``module`` is used).
        path (str): the file, for the message.
        mode (str): one of :data:`LOAD_MODES`.

    Raises:
        CheckpointError: naming the file, how many tensors do not fit, and examples.
        ValueError: for an unknown ``mode``.
    """
    if mode not in LOAD_MODES:
        raise ValueError(f'mode must be one of {LOAD_MODES}, got {mode!r}')
    model = model.module if is_model_wrapper(model) else model
    model_state = model.state_dict()
    fitting, reshaped, missing, unexpected = _fit(weights, model_state)
    what = f'checkpoint {path} is not a checkpoint of this model ({type(model).__name__})'
    if not fitting:
        raise CheckpointError(f'{what}: none of its {len(weights)} tensors fits one of the '
                              f'model\'s by name and shape (it has {_examples(list(weights))})')
    if mode == 'load_from':
        return
    if reshaped:
        k = reshaped[0]
        raise CheckpointError(
            f'{what}: {len(reshaped)} tensors have other shapes, e.g. {k}: '
            f'{tuple(weights[k].shape)} in the file, {tuple(model_state[k].shape)} in '
            'the model')
    if missing:
        raise CheckpointError(f'{what}: it lacks {len(missing)} of the model\'s tensors '
                              f'({_examples(missing)})')
    if mode == 'resume' and unexpected:
        raise CheckpointError(f'{what}: it has {len(unexpected)} tensors the model lacks '
                              f'({_examples(unexpected)}); resume needs the same model')


def _step_of(path: str) -> int:
    match = re.search(r'(\d+)\.pth$', osp.basename(path))
    return int(match.group(1)) if match else -1


def _last_checkpoint_record(work_dir: str) -> Optional[str]:
    """The path MMEngine's CheckpointHook last wrote into ``work_dir/last_checkpoint``."""
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return None
    with open(record) as f:
        return f.read().strip() or None


def resume_request(cli_resume: Optional[str], cfg) -> Tuple[Optional[str], str]:
    """What a training run resumes from, and the option that asked for it.

    ``--resume`` on the command line wins. Without it, a config's ``resume=True`` with no
    ``load_from`` is MMEngine's "the latest checkpoint of the work dir" (the file named in
    ``last_checkpoint``, which a killed save can leave deleted or truncated): it is taken as
    ``--resume`` without a file, the newest complete checkpoint. A config that names its
    ``load_from`` is left to MMEngine.

    Args:
        cli_resume (str | None): ``--resume``'s value: None (not given), ``'auto'`` (given
            without a file) or a checkpoint path.
        cfg (Config): the run's config (``resume``, ``load_from``).

    Returns:
        tuple[str | None, str]: ``'auto'``, a checkpoint path, or None (nothing for the tool
        to resolve), and ``'--resume'`` or ``'resume=True'`` for the messages.
    """
    if cli_resume is None and cfg.get('resume') is True and not cfg.get('load_from'):
        return 'auto', 'resume=True'
    return cli_resume, '--resume'


def find_resumable_checkpoint(work_dir: str, option: str = '--resume') -> Optional[str]:
    """The newest complete checkpoint of a work dir, for ``--resume`` without a file.

    MMEngine resumes from the file named in ``work_dir/last_checkpoint``. That file is written
    after the checkpoint, so a run killed while saving leaves it naming the previous checkpoint,
    but that one may have been removed (``max_keep_ckpts`` deletes before it saves), and a file
    written by a tool without atomic saves can be cut short after it was recorded. This returns
    the recorded checkpoint if it is complete, else the newest complete ``epoch_*.pth`` /
    ``iter_*.pth`` (``best_*`` ones would rewind training), warning about each one it skips.

    Args:
        work_dir (str): the run's work dir.
        option (str): what asked for the resume, as messages name it (``--resume``, or
            ``resume=True`` from a config).

    Returns:
        str | None: the checkpoint, or None if the work dir has none at all (train from the
        start, as MMEngine does).

    Raises:
        CheckpointError: if there are checkpoints but none is complete.
    """
    recorded = _last_checkpoint_record(work_dir)
    found = sorted(glob.glob(osp.join(work_dir, '*.pth')), key=_step_of, reverse=True)
    found = [p for p in found if not osp.basename(p).startswith('best_')]
    candidates = ([recorded] if recorded else []) + [p for p in found if p != recorded]
    skipped = []
    for path in candidates:
        if not osp.isfile(path):
            skipped.append(f'{path} (named in last_checkpoint) does not exist')
            continue
        reason = incomplete_reason(path)
        if reason is None:
            for note in skipped:
                print_log(f'{option}: skipped checkpoint {note}; resuming from {path}',
                          'current', level=logging.WARNING)
            return path
        skipped.append(f'{path} {reason}')
    if skipped:
        raise CheckpointError(f'{option}: no complete checkpoint in {work_dir}: '
                              + '; '.join(skipped))
    print_log(f'{option}: no checkpoint in {work_dir} yet: the run starts as the config says',
              'current', level=logging.INFO)
    return None


def check_run_checkpoint(cfg, model: nn.Module, mode: str) -> None:
    """Check the checkpoint a run will load (``cfg.load_from``) before the runner loads it.

    Remote files (``https://``, ``open-mmlab://``, ...) are left to MMEngine's loaders.

    Args:
        cfg (Config): the run's config (``load_from``).
        model (nn.Module): the built model, or its wrapper.
        mode (str): one of :data:`LOAD_MODES`.

    Raises:
        FileNotFoundError: if a local checkpoint does not exist.
        CheckpointError: if it is unusable or does not fit (:func:`check_checkpoint_fits`).
    """
    path = cfg.get('load_from')
    if not path or '://' in str(path):
        return
    weights = weights_of(read_checkpoint(path), path)
    check_checkpoint_fits(weights, model, path, mode)


def check_same_checkpoint_on_every_rank(path: Optional[str], option: str = '--resume') -> None:
    """Raise unless every rank of a distributed run resumes from the same checkpoint.

    Each rank looks for the newest checkpoint in its own view of the work dir. Without storage
    that every node sees, node 0 (which saves) finds one and the others none: they would start
    at iteration 0 and wait forever for rank 0 at the end of the run. Collective (every rank must
    call it); a no-op without a process group.

    Args:
        path (str | None): the checkpoint this rank resumes from.
        option (str): what asked for the resume, as the message names it.

    Raises:
        CheckpointError: naming what each rank found.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    found: List[Optional[str]] = [None] * dist.get_world_size()
    dist.all_gather_object(found, path)
    if len(set(found)) > 1:
        listing = ', '.join(f'rank {r}: {p or "none"}' for r, p in enumerate(found))
        raise CheckpointError(f'{option}: the ranks found different checkpoints ({listing}): put '
                              'the work dir on storage every node sees, or pass --resume FILE '
                              '(or set load_from) with a file that every node has')
