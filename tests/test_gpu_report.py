"""tools/analysis/gpu_report.py: the one-line exit without CUDA, and its table on the CPU."""
import importlib.util
import os.path as osp
import re

import pytest
import torch
from helpers.tool_runs import REPO_ROOT, run_tool

TOOL = osp.join(REPO_ROOT, 'tools', 'analysis', 'gpu_report.py')


def _load_tool():
    spec = importlib.util.spec_from_file_location('gpu_report', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_exits_2(monkeypatch, capsys, tmp_path):
    tool = _load_tool()
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    out = tmp_path / 'report.md'
    assert tool.main(['--out', str(out)]) == 2
    assert capsys.readouterr().out == 'no CUDA device: nothing to report\n'
    assert not out.exists()


def test_cpu_cannot_run_amp():
    with pytest.raises(SystemExit):
        _load_tool().parse_args(['--device', 'cpu', '--precisions', 'amp'])


@pytest.mark.slow
def test_cpu_table_with_tiny_sizes(tmp_path):
    out = tmp_path / 'report.md'
    stdout = run_tool(['analysis/gpu_report.py', '--device', 'cpu', '--batch-size', '1',
                       '--input-size', '64', '64', '--pairs', '1000', '--warmup', '1',
                       '--repeats', '1', '--out', str(out)], timeout=600)
    report = out.read_text()
    assert report in stdout
    rows = [line for line in report.splitlines() if line.startswith('| ') and ' vs ' in line
            and not line.startswith('| comparison')]
    names = [row.split(' | ')[0] for row in rows]
    assert len(rows) == 4, report
    assert 'PGNet R50 (CFFM + guidance) vs SimpleBaseline R50' in names[0]
    assert 'CBN (k=3, linked) vs BN' in names[1] and 'compensating 53/53' in rows[1]
    assert 'CBN linked 53/53' in rows[1]
    assert names[2].startswith('| fused CDIoU vs DIoU (mmdet)')
    assert names[3].startswith('| fused GIoU vs GIoU (mmdet)')
    for row in rows:
        cells = [c.strip() for c in row.strip('|').split('|')]
        ours_ms, peer_ms, ratio = float(cells[3]), float(cells[4]), float(cells[5])
        assert ours_ms > 0 and peer_ms > 0
        # the ratio of the unrounded times: within what the printed 2 decimals allow
        low = (ours_ms - 0.005) / (peer_ms + 0.005)
        high = (ours_ms + 0.005) / max(peer_ms - 0.005, 1e-3)
        assert low - 0.005 <= ratio <= high + 0.005
        assert cells[6] == cells[7] == cells[8] == 'n/a'  # no memory figures on the CPU
        ours_loss, peer_loss = (float(v) for v in cells[9].split(' / '))
        assert torch.isfinite(torch.tensor([ours_loss, peer_loss])).all()
        if 'IoU' in cells[0]:  # same boxes, same formula (CDIoU centre = DIoU): same loss
            assert ours_loss == peer_loss
    assert re.search(r'Median of 1 timed steps after 1 warm-up steps', report)


@pytest.mark.slow
def test_compiled_pgnet_row_trains_like_eager(monkeypatch):
    """``--only compile``: the compiled train step trains as the eager one does (demo model)."""
    tool = _load_tool()
    monkeypatch.setattr(tool, 'PGNET_CONFIG', osp.join(
        REPO_ROOT, 'configs', 'pgnet', 'pgnet_res18_cffm_demo_synthetic-128x96.py'))
    args = tool.parse_args(['--device', 'cpu', '--only', 'compile', '--batch-size', '2',
                            '--input-size', '64', '48', '--warmup', '1', '--repeats', '1'])
    rows = tool.compare_compile(args, torch.device('cpu'))
    assert len(rows) == 1 and rows[0].precision == 'fp32'
    ours, peer = rows[0].ours, rows[0].peer
    assert ours.ms > 0 and peer.ms > 0 and ours.first_s > 0 and peer.first_s > 0
    assert rows[0].notes[0].startswith('first step: compiled ')
    # same seed, weights and batch, four Adam steps each (--warmup 1 is raised to 3 for this
    # row): the same loss up to the compiled kernels' rounding, which Adam's normalised first
    # steps amplify (three steps: 1.3 % apart on torch 2.14, 0.1 % on torch 2.11)
    assert abs(ours.loss - peer.loss) <= 2e-2 * abs(peer.loss), (ours.loss, peer.loss)
    assert 'PGNet R50: torch.compile(train_step) vs eager' in tool.format_table(rows)
