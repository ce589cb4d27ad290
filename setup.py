"""Build hook: ship the configs, tools and model index inside the package (OpenMMLab's ``.mim``).

Everything else about the package is in ``setup.cfg``. MIM (``mim train mmpgnet ...``) and
MMEngine (``get_config('mmpgnet::pgnet/...')``, ``_base_ = 'mmpgnet::...'``) look for a
package's configs in ``<package>/.mim/configs``, its tools in ``<package>/.mim/tools`` and its
model index in ``<package>/.mim/model-index.yml``. A wheel (or a regular install) gets copies of
the repository's ``configs/``, ``tools/`` and ``model-index.yml`` there; an editable install
(``pip install -e .``, as ``make install`` does) gets symbolic links to them instead, so that
edits show at once.
"""
import os
import os.path as osp
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = osp.dirname(osp.abspath(__file__))
#: repository paths shipped in ``mmpgnet/.mim``
MIM_FILES = ('configs', 'tools', 'model-index.yml')
IGNORED = shutil.ignore_patterns('__pycache__', '*.pyc')


def link_mim_files(mim_dir: str) -> None:
    """Point ``mim_dir/<name>`` at the repository's ``<name>`` (relative symbolic links).

    Args:
        mim_dir (str): the source package's ``.mim`` folder.
    """
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        target, link = osp.join(HERE, name), osp.join(mim_dir, name)
        if osp.islink(link) or osp.isfile(link):
            os.remove(link)
        elif osp.isdir(link):
            shutil.rmtree(link)
        os.symlink(osp.relpath(target, mim_dir), link)


def copy_mim_files(mim_dir: str) -> None:
    """Copy the repository's ``configs/``, ``tools/`` and ``model-index.yml`` into ``mim_dir``.

    Args:
        mim_dir (str): the built package's ``.mim`` folder.

    Raises:
        FileNotFoundError: if one of them is missing from the source tree (an sdist without
            them would build a wheel that ``mim`` cannot use).
    """
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        source, dest = osp.join(HERE, name), osp.join(mim_dir, name)
        if osp.isdir(source):
            shutil.copytree(source, dest, ignore=IGNORED, dirs_exist_ok=True)
        elif osp.isfile(source):
            shutil.copy2(source, dest)
        else:
            raise FileNotFoundError(f'{source} is missing: mmpgnet ships it in mmpgnet/.mim')


class BuildPyWithMim(build_py):
    """``build_py`` that also fills ``mmpgnet/.mim`` (copies, or links for editable installs)."""

    def run(self) -> None:
        super().run()
        if getattr(self, 'editable_mode', False):
            link_mim_files(osp.join(HERE, 'mmpgnet', '.mim'))
        else:
            copy_mim_files(osp.join(self.build_lib, 'mmpgnet', '.mim'))


setup(cmdclass={'build_py': BuildPyWithMim})
