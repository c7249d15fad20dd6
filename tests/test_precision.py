"""brainspade.precision: the `channels_last` switch apart from bf16, and AutocastInferer in each combination."""

import pytest
import torch
from monai.inferers import SimpleInferer

from brainspade.errors import InputError
from brainspade.precision import AutocastInferer, resolve_channels_last


def test_channels_last_auto_is_on_for_a_cpu_and_with_bf16():
    assert resolve_channels_last("auto", "cpu", bf16=False) is True
    assert resolve_channels_last(None, "cpu", bf16=True) is True
    # a GPU: only together with bf16 (measured there with bf16 only)
    assert resolve_channels_last("auto", "cuda", bf16=False) is False
    assert resolve_channels_last("AUTO", "cuda", bf16=True) is True


def test_channels_last_setting_is_read_by_the_shared_parser():
    assert resolve_channels_last("false", "cpu") is False
    assert resolve_channels_last("Yes", "cuda") is True
    with pytest.raises(InputError, match="channels_last"):
        resolve_channels_last("sometimes", "cpu")


class _Recorder(torch.nn.Module):
    """A conv that records the memory format and dtype it was run in."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 2, 3, padding=1)
        self.seen: list[tuple[bool, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        self.seen.append((x.is_contiguous(memory_format=torch.channels_last_3d), out.dtype))
        return out


@pytest.mark.parametrize("bf16, channels_last", [(False, False), (False, True), (True, False), (True, True)], ids=str)
def test_autocast_inferer_applies_each_switch_alone(bf16, channels_last):
    torch.manual_seed(0)
    net = _Recorder()
    x = torch.randn(1, 2, 6, 6, 6)  # 2 channels: with 1, both memory formats read as contiguous
    plain = SimpleInferer()(x, net)
    out = AutocastInferer(SimpleInferer(), enabled=bf16, channels_last=channels_last)(x, net)
    cl_seen, dtype_seen = net.seen[-1]
    assert cl_seen is channels_last
    assert dtype_seen == (torch.bfloat16 if bf16 else torch.float32)
    # what callers get back is float32 in the default memory format, the same values (to bf16's precision)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert torch.allclose(out, plain, atol=5e-2 if bf16 else 1e-5)
