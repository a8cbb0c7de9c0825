"""Compute precision: bf16 autocast only where the device computes it natively (unless asked for), float32 always
selectable, float32 master weights either way."""


import pytest
import torch
from safetensors.torch import load_file
from tiny_runs import tiny_pretrain

from ptft_core import models
from ptft_core.config import ConfigError
from ptft_core.journal import MemoryLogger
from ptft_core.studies.costs import cpu_native_bf16
from ptft_core.training import run_pretrain

CPU = torch.device("cpu")


def test_native_bf16_is_what_the_cpu_says():
    # torch's answer (the worker's) and /proc/cpuinfo's (the cost model's, which does not import torch) agree.
    assert models.native_bf16(CPU) == cpu_native_bf16()


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("cpu_default", [True, False])
def test_auto_takes_bf16_only_where_it_is_native(monkeypatch, native, cpu_default):
    # The hardware query is the one thing a test cannot change: it answers as another CPU would.
    monkeypatch.setattr(models, "native_bf16", lambda device: native)
    monkeypatch.setattr(models, "CPU_AUTO_BF16", cpu_default)
    expected = torch.bfloat16 if native and cpu_default else torch.float32
    assert models.resolve_precision("auto", CPU) == expected
    assert models.resolve_precision("float32", CPU) == torch.float32  # always selectable
    assert models.resolve_precision("bf16", CPU) == torch.bfloat16  # asked for: emulated where not native


def test_autocast_follows_the_run_precision():
    x = torch.randn(4, 8)
    w = torch.randn(8, 8)
    with models.compute_precision(torch.bfloat16), models.autocast(CPU):
        assert (x @ w).dtype == torch.bfloat16
    with models.compute_precision(torch.float32), models.autocast(CPU):
        assert (x @ w).dtype == torch.float32
    with models.autocast(CPU):  # outside any run: float32 on a CPU
        assert (x @ w).dtype == torch.float32


def test_an_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="precision"):
        tiny_pretrain(precision="fp16")


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "float32"])
def test_a_run_trains_in_the_precision_it_asks_for_with_float32_weights(home, tmp_path, precision):
    logger = MemoryLogger()
    config = tiny_pretrain(precision=precision, max_steps=30, eval_every=30, block_size=64, batch_size=16,
                           vocab_size=2000)
    assert run_pretrain(config, tmp_path, logger) == "completed"
    notes = [e["message"] for e in logger.events if e["type"] == "note"]
    assert any(n.startswith(f"computing in {precision}") for n in notes), notes
    start, end = logger.values("loss", "validation")
    assert end < start - 0.2, (start, end)
    weights = load_file(str(tmp_path / "checkpoints" / "final" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}
