"""Which mmpgnet the suite tests: this checkout's, or (``make test-compat``) an installed wheel's.

``tests/conftest.py`` puts the checkout on ``sys.path`` unless ``MMPGNET_TEST_INSTALLED=1`` and
then calls :func:`check_mmpgnet_origin`; :mod:`helpers.configs` calls it too, so that the check
also runs in spawned workers, which import the test modules (and so the helpers) but not conftest.
"""
import os
import os.path as osp

#: the root of this checkout (``tests/..``)
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: ``make test-compat`` sets this: the suite then tests the mmpgnet installed from the built wheel
TEST_INSTALLED = os.environ.get('MMPGNET_TEST_INSTALLED') == '1'


def check_mmpgnet_origin() -> None:
    """Import mmpgnet; with ``MMPGNET_TEST_INSTALLED=1``, fail if it came from this checkout.

    Raises:
        RuntimeError: the suite should test an installed wheel but imported the checkout.
    """
    import mmpgnet
    if TEST_INSTALLED and osp.dirname(osp.dirname(osp.abspath(mmpgnet.__file__))) == REPO_ROOT:
        raise RuntimeError(f'MMPGNET_TEST_INSTALLED=1 but mmpgnet was imported from this checkout '
                           f'({mmpgnet.__file__}), not from an installed wheel: run pytest with '
                           '`python -P` so that the working directory is not on sys.path')
