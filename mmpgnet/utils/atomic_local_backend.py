"""A local file backend whose writes are atomic: a file is either the old one or the whole new one.

MMEngine's ``LocalBackend.put`` opens the destination with ``'wb'`` and writes into it, so a run
killed (or a machine that loses power) while ``CheckpointHook`` saves leaves a checkpoint cut
short under its final name. :class:`AtomicLocalBackend` writes to a temporary file in the same
folder, flushes it to disk, and renames it over the destination (``os.replace`` is atomic on
POSIX and Windows); the folder entry is synced too, so that the rename survives a power loss.

``CheckpointHook(max_keep_ckpts=k)`` removes the oldest checkpoint *before* it saves the new one,
so a run killed in that save is left with no complete checkpoint at all when ``k=1``. This
backend therefore defers a ``remove`` until its next write into the same folder has completed
(a save that fails or is killed leaves the old checkpoint in place).

It is registered as MMEngine file backend ``'atomic_local'``; ``tools/train.py`` selects it for
local checkpoint folders, and any config can::

    default_hooks = dict(checkpoint=dict(backend_args=dict(backend='atomic_local')))
"""
import glob
import os
import os.path as osp
from pathlib import Path
from typing import Set, Union

from mmengine.fileio import LocalBackend, register_backend

#: the name configs give in ``backend_args``
ATOMIC_LOCAL_BACKEND = 'atomic_local'
#: suffix of the temporary file a save writes before it renames it
TMP_SUFFIX = '.tmp'


def _fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(data: bytes, filepath: Union[str, Path]) -> None:
    """Write ``data`` to ``filepath`` so that readers never see a partial file.

    Args:
        data (bytes): the content.
        filepath (str | Path): the destination; its folder is created if needed.
    """
    filepath = str(filepath)
    folder = osp.dirname(osp.abspath(filepath))
    os.makedirs(folder, exist_ok=True)
    tmp = f'{filepath}{TMP_SUFFIX}{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


#: files whose removal waits for the next completed write into their folder (all instances:
#: CheckpointHook removes through one backend object and saves through another)
_PENDING_REMOVALS: Set[str] = set()


def _remove_pending(folder: Union[str, None] = None) -> None:
    """Remove the deferred files of ``folder`` (of every folder if None)."""
    for path in sorted(_PENDING_REMOVALS):
        if folder is None or osp.dirname(path) == folder:
            _PENDING_REMOVALS.discard(path)
            if osp.isfile(path):
                os.remove(path)


@register_backend(ATOMIC_LOCAL_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """MMEngine's ``LocalBackend`` with atomic writes and removals deferred past the next write.

    ``put`` and ``put_text`` write a temporary file and rename it; ``remove`` takes effect once
    the next write into the same folder has completed (CheckpointHook always saves right after
    it removes), never while a save that failed is all there is.

    Example:
        >>> from mmengine.fileio import get_file_backend
        >>> backend = get_file_backend('/tmp', backend_args=dict(backend='atomic_local'))
        >>> backend.put(b'weights', '/tmp/atomic_local_example.pth')
        >>> backend.get('/tmp/atomic_local_example.pth')
        b'weights'
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        """Write bytes atomically (see :func:`atomic_write_bytes`).

        Args:
            obj (bytes): the content.
            filepath (str | Path): the destination.
        """
        path = osp.abspath(str(filepath))
        atomic_write_bytes(obj, path)
        _PENDING_REMOVALS.discard(path)  # written again: no longer to be removed
        for stale in glob.glob(glob.escape(path + TMP_SUFFIX) + '[0-9]*'):
            os.remove(stale)  # left by an earlier save of this file that was killed
        _remove_pending(osp.dirname(path))

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        """Write text atomically.

        Args:
            obj (str): the content.
            filepath (str | Path): the destination.
            encoding (str): the text encoding.
        """
        self.put(obj.encode(encoding), filepath)

    def remove(self, filepath: Union[str, Path]) -> None:
        """Remove a file once the next write into its folder has completed.

        Args:
            filepath (str | Path): the file.

        Raises:
            FileNotFoundError: if it does not exist (as ``LocalBackend.remove``).
            IsADirectoryError: for a folder.
        """
        path = osp.abspath(str(filepath))
        if not osp.exists(path):
            raise FileNotFoundError(f'{filepath} does not exist')
        if osp.isdir(path):
            raise IsADirectoryError(f'{filepath} is a directory; use rmtree')
        _PENDING_REMOVALS.add(path)
