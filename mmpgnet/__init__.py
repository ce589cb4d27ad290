"""mmpgnet: PGNet components for MMPose and MMDetection.

``import mmpgnet`` (or ``custom_imports = dict(imports=['mmpgnet'])`` in a config) registers every
component: see :mod:`mmpgnet.registry` for the naming rule. It needs torch, mmengine and mmcv's
Python parts (``mmcv-lite`` is enough); the parts for MMDetection and MMPose are registered only
where those import (:mod:`mmpgnet.utils.optional_packages`).
"""
# isort: skip_file  (checkpoint safe globals and the file backend first, then the components)
from .version import __version__  # noqa: F401
from .utils import checkpoint_safety  # noqa: F401  (lets torch.load read MMEngine checkpoints)
from .utils import atomic_local_backend  # noqa: F401  (the 'atomic_local' file backend)
from . import datasets, engine, models  # noqa: F401,E402
from .utils.config_prefix import register_config_prefix  # noqa: E402

register_config_prefix()

__all__ = ['__version__']
