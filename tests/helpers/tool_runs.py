"""Run the scripts of ``tools/`` in a subprocess, as a user would, with this interpreter."""
import os
import os.path as osp
import subprocess
import sys
from typing import List, Optional

import pytest

from .checkout import REPO_ROOT, TEST_INSTALLED

__all__ = ['REPO_ROOT', 'run_tool', 'run_tool_result']


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
