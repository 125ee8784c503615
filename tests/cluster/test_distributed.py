"""DistContext with two real gloo processes: row gathering with unequal shards, sampler shards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from calbench.engine.distributed import DistContext, launch, loopback_interface


def _gather_worker(out_dir: str, *, dist: DistContext, device: str) -> str:
    """Rank r holds 3 + 2r rows whose values encode (rank, row); gather them all."""
    n = 3 + 2 * dist.rank
    rows = torch.stack([torch.full((4,), 10.0 * dist.rank + i) for i in range(n)])
    labels = torch.arange(n, dtype=torch.long) + 100 * dist.rank
    mask = torch.arange(n) % 2 == 0
    gathered = (dist.gather_rows(rows), dist.gather_rows(labels), dist.gather_rows(mask))
    torch.save(gathered, Path(out_dir) / f"gather{dist.rank}.pt")
    return "gathered"


def _sampler_worker(out_dir: str, n: int, *, dist: DistContext, device: str) -> None:
    dataset = torch.utils.data.TensorDataset(torch.arange(n))
    sampler = dist.train_sampler(dataset, seed=7)
    seen = {}
    for epoch in (0, 1):
        dist.set_epoch(sampler, epoch)
        seen[epoch] = list(sampler)
    torch.save(seen, Path(out_dir) / f"sampler{dist.rank}.pt")


def _ddp_worker(out_dir: str, *, dist: DistContext, device: str) -> None:
    """One DDP step with rank-dependent data: weights must end identical on both ranks."""
    torch.manual_seed(dist.rank)  # different init per rank: DDP must broadcast rank 0's
    model = dist.wrap_model(nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(5, 3) + dist.rank
    model(x).pow(2).mean().backward()
    opt.step()
    dist.barrier()
    torch.save([p.detach() for p in model.parameters()], Path(out_dir) / f"ddp{dist.rank}.pt")


def _all_worker(out_dir: str, *, dist: DistContext, device: str) -> str:
    """One launch for every check below (spawning two interpreters costs seconds)."""
    for n in (10, 11):
        _sampler_worker(out_dir, n, dist=dist, device=device)
        Path(out_dir, f"sampler{dist.rank}.pt").rename(Path(out_dir, f"sampler{dist.rank}_{n}.pt"))
    _ddp_worker(out_dir, dist=dist, device=device)
    Path(out_dir, f"ifname{dist.rank}.txt").write_text(os.environ.get("GLOO_SOCKET_IFNAME", "<unset>"))
    return _gather_worker(out_dir, dist=dist, device=device)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    assert launch(_all_worker, 2, str(out)) == "gathered"  # rank 0's return value comes back
    return out


def test_gather_rows_unequal_shards_in_rank_order(two_ranks):
    tmp_path = two_ranks
    expected_rows = torch.stack([torch.full((4,), float(v)) for v in (0, 1, 2, 10, 11, 12, 13, 14)])
    expected_labels = torch.tensor([0, 1, 2, 100, 101, 102, 103, 104])
    expected_mask = torch.tensor([True, False, True, True, False, True, False, True])
    for rank in (0, 1):
        rows, labels, mask = torch.load(tmp_path / f"gather{rank}.pt")
        assert torch.equal(rows, expected_rows)
        assert torch.equal(labels, expected_labels) and labels.dtype == torch.long
        assert torch.equal(mask, expected_mask)


@pytest.mark.parametrize("n", [10, 11])
def test_train_sampler_shards_are_disjoint_and_cover(two_ranks, n):
    seen = [torch.load(two_ranks / f"sampler{r}_{n}.pt") for r in (0, 1)]
    for epoch in (0, 1):
        a, b = seen[0][epoch], seen[1][epoch]
        assert len(a) == len(b)  # equal step counts on every rank
        assert set(a) | set(b) == set(range(n))
        # disjoint up to DistributedSampler's padding of (-n) mod 2 repeated indices
        assert len(a) + len(b) - len(set(a) | set(b)) == (-n) % 2
    assert seen[0][0] != seen[0][1]  # re-seeded every epoch


def test_wrap_model_keeps_ranks_in_sync(two_ranks):
    p0, p1 = (torch.load(two_ranks / f"ddp{r}.pt") for r in (0, 1))
    for a, b in zip(p0, p1):
        assert torch.equal(a, b)


def test_local_ranks_talk_over_the_loopback_interface(two_ranks):
    # gloo otherwise picks the address the host name resolves to; where that is a filtered
    # interface the ranks' connections abort at random (a SIGABRT in CI)
    expected = loopback_interface()
    assert expected is not None
    for rank in (0, 1):
        assert Path(two_ranks, f"ifname{rank}.txt").read_text() == expected


def test_loopback_interface_is_the_one_holding_127_0_0_1():
    import socket
    import sys

    name = loopback_interface()
    if sys.platform.startswith("linux"):
        import fcntl
        import struct

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # SIOCGIFADDR
            packed = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
        assert socket.inet_ntoa(packed[20:24]) == "127.0.0.1"
    else:
        assert name.startswith("lo")


def test_launch_leaves_no_rendezvous_file(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "out").mkdir()
    before = dict(os.environ)
    assert launch(_gather_worker, 2, str(tmp_path / "out")) == "gathered"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the rendezvous directory is gone
    assert dict(os.environ) == before  # the caller's environment is untouched


def test_single_process_context_is_a_no_op():
    ctx = DistContext()
    model = nn.Linear(2, 2)
    rows = torch.randn(3, 2)
    assert ctx.is_main and ctx.train_sampler(range(5), 0) is None
    assert ctx.wrap_model(model) is model
    assert ctx.gather_rows(rows) is rows
    ctx.barrier()


def _failing_worker(*, dist: DistContext, device: str) -> None:
    raise ValueError("boom")


def test_launch_reports_a_failing_rank():
    with pytest.raises(Exception, match="boom"):
        launch(_failing_worker, 2)
