"""Skip marks for the checks that need a newer torch than the oldest one mmpgnet supports (2.1).

mmpgnet runs on torch >= 2.1 (``make test-compat`` runs the suite on torch 2.1.2); the main suite
runs on the pinned torch 2.14, where none of these marks skips anything. Each mark says which
capability of torch the check exercises and why the older torch lacks it, so that a skip in the
torch 2.1 run is a statement about that torch, never a hidden failure of mmpgnet:

* the pipeline-parallel parts need ``torch.distributed.pipelining`` (torch 2.4); on older torch
  they refuse to be built, which ``test_torch_compat.py`` checks on every torch;
* graph-break counts under ``torch.compile``: dynamo before 2.4 cannot trace some of what newer
  dynamo traces (autograd.Function internals, context managers), so these counts are torch's;
* CUDA emulation (``FakeTensorMode`` with CUDA tensors, ``helpers.emulated_cuda``) relies on
  fake-tensor behaviour of newer torch (2.1 asks for a driver and rejects seeded generators);
* float16 autocast on the CPU (a stand-in for CUDA float16 in the device tests): torch 2.1's CPU
  autocast knows bfloat16 only;
* ``torch.load`` defaulting to ``weights_only=True`` (torch 2.6), which the checkpoint allowlist
  tests exercise.
"""
import pytest
import torch

from mmpgnet.utils.torch_compat import PIPELINING_MIN_TORCH, cpu_autocast_supports, torch_at_least


def needs_torch(version: str, capability: str) -> pytest.MarkDecorator:
    """Skip on torch older than ``version``, saying what it lacks.

    Args:
        version (str): the oldest torch with the capability.
        capability (str): what the check needs of torch.

    Returns:
        pytest.MarkDecorator: a ``skipif`` mark.
    """
    return pytest.mark.skipif(
        not torch_at_least(version),
        reason=f'needs {capability} (torch>={version}); this is torch {torch.__version__}')


#: pipeline parallelism runs on torch.distributed.pipelining
needs_pipelining = needs_torch(PIPELINING_MIN_TORCH, 'torch.distributed.pipelining')
#: exact graph / graph-break counts are those of the dynamo in newer torch
needs_modern_dynamo = needs_torch('2.4', 'a dynamo that traces autograd.Function and contexts')
#: FakeTensorMode / emulated CUDA tensors without a driver
needs_fake_cuda = needs_torch('2.4', 'fake CUDA tensors without a driver')
#: torch.load defaults to weights_only=True
needs_weights_only_default = needs_torch('2.6', "torch.load's weights_only=True default")
#: float16 autocast on the CPU
needs_cpu_float16_autocast = pytest.mark.skipif(
    not cpu_autocast_supports(torch.float16),
    reason=f'needs float16 CPU autocast, which torch {torch.__version__} lacks')
