"""brainspade.distributed: the torchrun plumbing of every multi_gpu_train config, in one gloo process."""

from __future__ import annotations

import socket

import pytest
import torch

from brainspade import distributed


@pytest.fixture
def one_process_group(monkeypatch):
    with socket.socket() as s:  # a free port on the loopback interface
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(k, v)
    distributed.init_process_group()
    yield
    distributed.destroy_process_group()


def test_outside_torchrun_this_process_is_rank0():
    assert not torch.distributed.is_initialized() and distributed.is_rank0()


def test_ddp_wraps_the_network_on_the_rank_device(one_process_group):
    assert torch.distributed.is_initialized() and torch.distributed.get_backend() == "gloo"
    distributed.init_process_group()  # joining twice is a no-op
    device = distributed.rank_device()
    assert device == torch.device("cpu") and distributed.is_rank0()
    net = distributed.ddp(torch.nn.Linear(3, 2), device)
    assert isinstance(net, torch.nn.parallel.DistributedDataParallel)
    out = net(torch.ones(4, 3))
    out.sum().backward()  # the gradient all-reduce runs
    assert net.module.weight.grad is not None


def test_rank_handlers_keep_writers_on_rank0_only(monkeypatch):
    from monai.handlers import CheckpointLoader, CheckpointSaver, LrScheduleHandler, StatsHandler

    from brainspade.handlers import TimeLimitHandler

    saver = CheckpointSaver(save_dir="unused", save_dict={"x": torch.nn.Linear(1, 1)})
    loader = CheckpointLoader(load_path="unused.pt", load_dict={"x": torch.nn.Linear(1, 1)})
    lr = LrScheduleHandler(torch.optim.lr_scheduler.StepLR(torch.optim.SGD([torch.zeros(1)], lr=1.0), 1))
    stats, limit = StatsHandler(), TimeLimitHandler(10)
    handlers = [loader, saver, None, lr, stats, limit]
    assert distributed.rank_handlers(handlers) == [loader, saver, lr, stats, limit]
    monkeypatch.setattr(distributed, "is_rank0", lambda: False)
    assert distributed.rank_handlers(handlers) == [loader, lr, limit]  # in step on every rank; no writers
