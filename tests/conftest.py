"""Fixtures, and which mmpgnet the suite tests: this checkout's, or an installed wheel's.

Helpers that test modules import live in ``tests/helpers/`` (``from helpers.tool_runs import
run_tool``, ``from helpers.configs import smoke_config``), not here.
"""
import sys

import pytest
from helpers.checkout import REPO_ROOT, TEST_INSTALLED, check_mmpgnet_origin

if not TEST_INSTALLED:
    sys.path.insert(0, REPO_ROOT)
# with MMPGNET_TEST_INSTALLED=1 (make test-compat): fail unless mmpgnet comes from the wheel
check_mmpgnet_origin()

from mmpgnet.datasets import SyntheticCocoConfig, generate_synthetic_coco  # noqa: E402


@pytest.fixture(scope='session')
def synthetic_coco(tmp_path_factory) -> str:
    """Root of a small synthetic COCO person dataset (6 train, 3 val images of 192x160)."""
    root = str(tmp_path_factory.mktemp('synthetic_coco'))
    generate_synthetic_coco(
        root, num_train=6, num_val=3, seed=0, cfg=SyntheticCocoConfig(img_size=(192, 160)),
        show_progress=False)
    return root
