"""PeerWatch: heartbeats in the job's store name the rank that stopped, and how it stopped."""
import socket
from datetime import timedelta

import pytest
import torch.distributed as dist
from helpers.distributed import free_port

from mmpgnet.utils import peer_watch
from mmpgnet.utils.peer_watch import LostPeer, PeerWatch, StoreUnreachableError

INTERVAL = 0.2


@pytest.fixture
def store_port():
    """The port of a real TCPStore server, as torchrun's agent or rank 0 hosts one."""
    port = free_port()
    server = dist.TCPStore('127.0.0.1', port, is_master=True, wait_for_workers=False,
                           timeout=timedelta(seconds=5))
    yield port
    del server


def _client(port: int) -> dist.TCPStore:
    return dist.TCPStore('127.0.0.1', port, is_master=False, timeout=timedelta(seconds=5))


def test_a_rank_whose_heartbeat_stops_is_lost_and_one_with_a_note_ended_with_an_error(store_port):
    watches = [PeerWatch(_client(store_port), r, 4, INTERVAL).start() for r in range(3)]
    # rank 3 never started (e.g. died during start-up); rank 1 is killed; rank 2 fails and says so
    watches[1].stop()
    watches[2].report_failure(RuntimeError('CUDA error: an illegal memory access\nmore lines'))
    watches[2].stop()
    lost = watches[0].lost_peers()
    assert [p.rank for p in lost] == [1, 3, 2]  # those that died without a word first
    assert lost[0] == LostPeer(1, socket.gethostname(), watches[1].pid, '')
    assert 'stopped without an error report' in lost[0].describe()
    assert f'(pid {watches[1].pid} on {socket.gethostname()})' in lost[0].describe()
    assert lost[1] == LostPeer(3)
    assert lost[2].error == 'RuntimeError: CUDA error: an illegal memory access more lines'
    assert lost[2].describe().endswith('ended with an error: RuntimeError: CUDA error: an '
                                       'illegal memory access more lines')
    watches[0].stop()


def test_live_ranks_are_not_lost(store_port):
    watches = [PeerWatch(_client(store_port), r, 3, INTERVAL).start() for r in range(3)]
    try:
        assert watches[1].lost_peers() == []
    finally:
        for w in watches:
            w.stop()


class _DeadStore:
    """A store client whose server is gone."""

    def set(self, *args):
        raise RuntimeError('Connection reset by peer')

    add = get = set


def test_a_store_that_does_not_answer_is_reported():
    watch = PeerWatch(_DeadStore(), 1, 2, INTERVAL)
    with pytest.raises(StoreUnreachableError, match='Connection reset'):
        watch.lost_peers(wait_s=0)
    watch.report_failure(ValueError('x'))  # must not raise either


def test_the_tool_message_names_the_lost_rank(store_port, monkeypatch):
    watches = [PeerWatch(_client(store_port), r, 2, INTERVAL).start() for r in range(2)]
    watches[1].stop()
    monkeypatch.setattr(peer_watch, '_WATCH', watches[0])
    error = RuntimeError('[gloo/pair.cc:561] Connection closed by peer [127.0.0.1]:39600')
    message = peer_watch.lost_peer_message(error)
    assert message.startswith(f'rank 0 (pid {watches[0].pid} on {socket.gethostname()}) '
                              'stopped because the job lost a process: rank 1 (pid ')
    assert message.endswith("This rank's error: RuntimeError: [gloo/pair.cc:561] Connection "
                            'closed by peer [127.0.0.1]:39600')
    # rank 0 left its own note for the others
    assert _client(store_port).get(watches[0]._key('error', 0)).decode().startswith('RuntimeError')


def test_no_message_when_every_peer_is_alive_or_without_a_watch(store_port, monkeypatch):
    watches = [PeerWatch(_client(store_port), r, 2, INTERVAL).start() for r in range(2)]
    monkeypatch.setattr(peer_watch, '_WATCH', watches[0])
    assert peer_watch.lost_peer_message(ValueError('a bug of this rank')) is None
    # a peer that stopped with an error of its own (a bug every rank hits) is not "lost"
    watches[1].report_failure(ValueError('the same bug'))
    watches[1].stop()
    monkeypatch.setattr(peer_watch, '_WATCH', PeerWatch(_client(store_port), 0, 2,
                                                        INTERVAL).start())
    assert peer_watch.lost_peer_message(ValueError('the same bug')) is None
    monkeypatch.setattr(peer_watch, '_WATCH', None)
    assert peer_watch.lost_peer_message(ValueError('one process')) is None
    assert peer_watch.start_peer_watch() is None  # no process group: nothing to watch
