"""Name the rank a distributed job lost, in the error that every other rank ends with.

When a process of a gloo or NCCL job dies, its peers' collectives fail with the backend's words
(``Connection closed by peer [127.0.0.1]:39600``, a timeout): an address, not a rank, and ranks
that were not talking to the dead one fail later with errors about *surviving* peers that have
already exited. :class:`PeerWatch` lets every rank say which rank was lost and how:

* each rank runs a daemon thread that bumps a heartbeat counter in the job's key-value store
  (the ``TCPStore`` at ``MASTER_ADDR:MASTER_PORT`` that ``torchrun`` or ``init_process_group``
  set up; this opens its own client connection to it) every ``interval_s`` seconds;
* a rank that fails with any exception records a one-line note under its rank
  (:meth:`PeerWatch.report_failure`) before it exits;
* it then reads every rank's counter twice, ``2.5 * interval_s`` apart (:meth:`lost_peers`):
  a rank whose counter stopped and that left no note stopped without a word (killed, hung, out of
  memory, a crash in native code, its machine gone); one that left a note ended with that error.

:func:`mmpgnet.utils.launch.run_cli` (every tool's entry) asks :func:`lost_peer_message` when a
run fails: if a peer was lost it prints one line naming the rank (its host and pid) and exits
with status 1; any other error keeps its traceback. Counters, not clocks, are compared, so the
clocks of different machines need not agree.
If the store itself does not answer, the process that hosts it (rank 0 without ``torchrun``, the
launcher of node 0 with it) is the one lost, and the message says so.
"""
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Dict, List, Optional

import torch.distributed as dist
from mmengine.logging import print_log

#: seconds between two heartbeats of a rank
HEARTBEAT_INTERVAL_S = 1.0
#: a peer is lost when its counter has not moved for this many intervals
STALE_INTERVALS = 2.5
#: seconds a store operation may take before the store counts as unreachable
STORE_TIMEOUT_S = 10.0


class StoreUnreachableError(RuntimeError):
    """The job's key-value store does not answer: the process that hosts it is gone."""


@dataclass
class LostPeer:
    """A rank that stopped its heartbeat.

    Args:
        rank (int): its global rank.
        host (str): its machine's name ('' if it never reported).
        pid (int): its process id (0 if it never reported).
        error (str): the note it left before exiting ('' if it died without one).
    """
    rank: int
    host: str = ''
    pid: int = 0
    error: str = ''

    def describe(self) -> str:
        """Say which rank this is and how it stopped.

        Returns:
            str: e.g. ``rank 1 (pid 4242 on node-b) stopped without an error report ...``.
        """
        where = f' (pid {self.pid} on {self.host})' if self.pid else ''
        if self.error:
            return f'rank {self.rank}{where} ended with an error: {self.error}'
        return (f'rank {self.rank}{where} stopped without an error report (killed, out of '
                'memory, hung, a crash in native code, or its machine is gone)')


def _job_prefix() -> str:
    """Keys of this job attempt: torchrun restarts reuse the store, so the attempt is part."""
    run = os.environ.get('TORCHELASTIC_RUN_ID', 'none')
    restart = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')
    return f'mmpgnet/peer_watch/{run}/{restart}'


class PeerWatch:
    """Heartbeats of every rank in the job's store, and the census of who stopped.

    Args:
        store (dist.Store): the job's store (a client connection of its own).
        rank (int): this rank.
        world_size (int): the number of ranks.
        interval_s (float): seconds between heartbeats.
    """

    def __init__(self, store: dist.Store, rank: int, world_size: int,
                 interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        self.store = store
        self.rank = rank
        self.world_size = world_size
        self.interval_s = interval_s
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._prefix = _job_prefix()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()  # one store request at a time on this connection

    def _key(self, kind: str, rank: int) -> str:
        return f'{self._prefix}/{kind}/{rank}'

    def _beat(self) -> None:
        with self._lock:  # a counter: ``add`` exists in every torch (``check`` not before 2.3)
            self.store.add(self._key('beat', self.rank), 1)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._beat()
            except Exception:  # noqa: BLE001 (a busy or lost store: try again next interval)
                continue

    def start(self) -> 'PeerWatch':
        """Write the first heartbeat, then keep beating in a daemon thread.

        Returns:
            PeerWatch: self.
        """
        with self._lock:
            self.store.set(self._key('who', self.rank), f'{self.host}|{self.pid}')
        self._beat()
        self._thread = threading.Thread(target=self._run, name='mmpgnet-peer-watch',
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the heartbeat (at the end of a run) and wait for a beat in flight."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=STORE_TIMEOUT_S)

    def report_failure(self, error: BaseException) -> None:
        """Leave a one-line note of this rank's error for the census of the others.

        Args:
            error (BaseException): the error this rank ends with.
        """
        text = ' '.join(str(error).split())[:200]
        try:
            with self._lock:
                self.store.set(self._key('error', self.rank), f'{type(error).__name__}: {text}')
                self.store.add(self._key('errors', self.rank), 1)
        except Exception:  # noqa: BLE001 (a store that is gone shows in lost_peers)
            pass

    def _counts(self, kind: str) -> Dict[int, int]:
        """The counters ``kind`` of the other ranks (0 where a rank never wrote one)."""
        try:
            with self._lock:
                return {r: int(self.store.add(self._key(kind, r), 0))
                        for r in range(self.world_size) if r != self.rank}
        except Exception as error:  # noqa: BLE001
            raise StoreUnreachableError(str(error)) from error

    def _text(self, kind: str, rank: int) -> str:
        with self._lock:
            return self.store.get(self._key(kind, rank)).decode()

    def lost_peers(self, wait_s: Optional[float] = None) -> List[LostPeer]:
        """The other ranks whose heartbeat stopped (this takes ``wait_s`` seconds).

        Args:
            wait_s (float, optional): how long to watch the counters; default
                ``STALE_INTERVALS * interval_s``.

        Returns:
            list[LostPeer]: lost ranks, those that died without a note first.

        Raises:
            StoreUnreachableError: if the store does not answer.
        """
        before = self._counts('beat')
        time.sleep(STALE_INTERVALS * self.interval_s if wait_s is None else wait_s)
        after = self._counts('beat')
        notes = self._counts('errors')
        lost = []
        try:
            for rank, count in after.items():
                if count and count != before[rank]:
                    continue  # still beating
                host, pid = self._text('who', rank).split('|') if count else ('', '0')
                note = self._text('error', rank) if notes[rank] else ''
                lost.append(LostPeer(rank, host, int(pid), note))
        except Exception as error:  # noqa: BLE001
            raise StoreUnreachableError(str(error)) from error
        return sorted(lost, key=lambda p: (bool(p.error), p.rank))


_WATCH: Optional[PeerWatch] = None


def start_peer_watch(interval_s: float = HEARTBEAT_INTERVAL_S) -> Optional[PeerWatch]:
    """Start this process's :class:`PeerWatch` once the default process group exists.

    Returns the running watch if there is one. Nothing starts in a one-process run, or when the
    job's store address is unknown (``MASTER_ADDR`` / ``MASTER_PORT`` unset, e.g. a ``file://``
    init method) or unreachable (a warning then says so; the run goes on).

    Args:
        interval_s (float): seconds between heartbeats.

    Returns:
        PeerWatch | None: the watch, or None.
    """
    global _WATCH
    if _WATCH is not None:
        return _WATCH
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    addr, port = os.environ.get('MASTER_ADDR'), os.environ.get('MASTER_PORT')
    if not addr or not port:
        return None
    try:
        store = dist.TCPStore(addr, int(port), is_master=False,
                              timeout=timedelta(seconds=STORE_TIMEOUT_S))
        _WATCH = PeerWatch(store, dist.get_rank(), dist.get_world_size(), interval_s).start()
    except Exception as error:  # noqa: BLE001 (the run goes on; only the naming is lost)
        print_log(f'PeerWatch: no heartbeat in the store at {addr}:{port} ({error}); a lost '
                  'rank will not be named', 'current', logging.WARNING)
    return _WATCH


def stop_peer_watch() -> None:
    """Stop this process's heartbeat, if it has one (the end of a successful run)."""
    global _WATCH
    if _WATCH is not None:
        _WATCH.stop()
        _WATCH = None


def report_failure(error: BaseException) -> None:
    """Stop this rank's heartbeat and leave the note of its error (no-op without a watch).

    Args:
        error (BaseException): the error this rank ends with.
    """
    if _WATCH is not None:
        _WATCH.stop()
        _WATCH.report_failure(error)


def lost_peer_message(error: BaseException) -> Optional[str]:
    """The line to end with if ``error`` came from a lost peer, else None (a real error).

    Leaves this rank's note for the others first. Call it from the ``except`` of a failed run.

    Args:
        error (BaseException): the error this rank fails with.

    Returns:
        str | None: ``'rank 0 (pid ... on ...) stopped because the job lost a process: rank 1
        (pid ... on ...) stopped without an error report ...'``, or None when no peer stopped
        without leaving an error of its own (a failure that every rank shares keeps its
        traceback).
    """
    watch = _WATCH
    if watch is None:
        return None
    report_failure(error)
    here = f'rank {watch.rank} (pid {watch.pid} on {watch.host})'
    first = ' '.join(str(error).split())[:240]
    try:
        lost = watch.lost_peers()
    except StoreUnreachableError:
        addr = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        return (f'{here} stopped: the job\'s store at {addr} does not answer, so the process '
                'that hosts it is gone (rank 0 when started without torchrun, else the launcher '
                f'of node 0); this rank\'s error: {type(error).__name__}: {first}')
    if not any(not p.error for p in lost):
        return None  # every peer is alive or ended with an error of its own: not a lost rank
    return (f'{here} stopped because the job lost a process: '
            + '; '.join(p.describe() for p in lost)
            + f'. This rank\'s error: {type(error).__name__}: {first}')
