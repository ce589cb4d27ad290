"""Let MMEngine read ``mmpgnet::`` config paths, as it reads ``mmdet::`` and ``mmpose::`` ones.

The package ships its configs in ``mmpgnet/.mim/configs`` (``setup.py``), where MIM and
MMEngine look for them. MMEngine resolves ``<package>::<path>`` (in ``get_config``, ``get_model``
and ``_base_``) only for the packages in its ``MODULE2PACKAGE`` table, which lists the OpenMMLab
codebases; importing :mod:`mmpgnet` adds it there, so that after ``import mmpgnet``::

    from mmengine.hub import get_config
    cfg = get_config('mmpgnet::pgnet/pgnet_res50_cffm_8xb64-210e_coco-256x192.py')

and a config's ``_base_ = ['mmpgnet::pgnet/...']`` work (a config read by ``tools/train.py``, which
imports mmpgnet first, or by a script that does).
"""
from mmengine.config.utils import MODULE2PACKAGE

#: the import name and the pip name of this package
PACKAGE = 'mmpgnet'


def register_config_prefix() -> None:
    """Add ``mmpgnet`` to MMEngine's table of packages with ``::`` config paths (idempotent)."""
    MODULE2PACKAGE.setdefault(PACKAGE, PACKAGE)
