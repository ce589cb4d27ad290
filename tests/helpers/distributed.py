"""Start gloo process groups in spawned test workers, and wait for them without hanging."""
import os
import socket
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist


def free_port() -> int:
    """A TCP port that is free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def init_gloo(rank: int, world: int, port: int, timeout_s: int = 60) -> None:
    """Join a gloo job on the loopback address (one thread per process).

    ``MASTER_ADDR`` / ``MASTER_PORT`` are set as torchrun sets them, so that the job's store can
    be reached by address (:func:`mmpgnet.utils.peer_watch.start_peer_watch`).
    """
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))


def spawn_and_wait(fn, args, nprocs: int, timeout: float) -> None:
    """Run ``fn(rank, *args)`` in ``nprocs`` spawned processes; fail the test if they hang."""
    ctx = torch.multiprocessing.start_processes(fn, args=args, nprocs=nprocs, join=False,
                                                start_method='spawn')
    deadline = time.time() + timeout
    while not ctx.join(timeout=max(1.0, deadline - time.time())):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f'{nprocs} processes did not finish within {timeout} s')
