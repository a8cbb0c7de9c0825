"""What a run costs and how well it uses its device, logged at the training log interval under split "device":

- `train_flops`: the training FLOPs so far, estimated as (6 × non-embedding parameters + 12 × layers × width ×
  sequence length) per token (Kaplan et al. 2020: forward and backward of every weight matmul, plus attention's
  score and value products). For a partly frozen model (linear probe, frozen layers) it is an upper bound: the
  frozen weights get no gradient.
- `model_tflops`: that estimate per second over the last interval, and `mfu` (model-FLOP utilisation): the same
  rate as a share of the device's peak in the run's compute dtype. The peak is measured, not taken from a
  datasheet: the best of a few square matmuls on this device with this run's threads, at the start of every
  run (about 0.1 s on a CPU); `PTFT_HOME/device_peaks.json` keeps the best seen per machine and dtype, so a
  measurement made while other jobs shared the device does not lower it.
- On a CPU: `cpu_percent` (this process, 100 = one core busy) and `rss_mib`; on CUDA: `gpu_memory_mib` (the peak
  allocated by torch) and, where `pynvml` is installed, `gpu_util` (percent of time a kernel ran).
"""

from __future__ import annotations

import json
import os
import platform
import time

import torch
from torch import nn

from ptft_core import paths

PEAKS_FILE = "device_peaks.json"
PEAK_SIZE = {"cpu": 1024, "cuda": 8192}  # square matmul side: big enough to reach the device's matmul peak
PEAK_REPEATS = 5


def non_embedding_parameters(model: nn.Module) -> int:
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


def flops_per_token(model: nn.Module, sequence_length: int) -> float:
    """Training FLOPs per token of a transformer (see the module docstring)."""
    config = getattr(model, "config", None) or getattr(getattr(model, "saved", None), "config", None)
    layers = getattr(config, "num_hidden_layers", 0) or 0
    width = getattr(config, "hidden_size", 0) or 0
    return 6.0 * non_embedding_parameters(model) + 12.0 * layers * width * sequence_length


def device_key(device: torch.device, dtype: torch.dtype) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"
    return f"{device.type}|{name}|{str(dtype).removeprefix('torch.')}"


def measure_peak(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of the best of PEAK_REPEATS square matmuls in `dtype` on `device` (one warm-up first)."""
    n = PEAK_SIZE[device.type]
    # Its own generator: drawing from the global one would shift a resumed run's dropout off its course.
    generator = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    best = float("inf")
    for i in range(PEAK_REPEATS + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            best = min(best, time.perf_counter() - start)
    return 2.0 * n ** 3 / best


def device_peak(device: torch.device, dtype: torch.dtype) -> float:
    """The device's matmul peak in `dtype`: measured now, and the best ever measured on this machine kept."""
    file = paths.home() / PEAKS_FILE
    key = device_key(device, dtype)
    try:
        peaks = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        peaks = {}
    measured = measure_peak(device, dtype)
    if measured > peaks.get(key, 0.0):
        peaks[key] = measured
        tmp = file.with_name(f".{file.name}.{os.getpid()}")
        try:
            tmp.write_text(json.dumps(peaks, indent=1, sort_keys=True), encoding="utf-8")
            tmp.replace(file)
        except OSError:  # a read-only home: measured again next time
            tmp.unlink(missing_ok=True)
    return float(peaks[key])


class Utilisation:
    """Reads what the last log interval cost: `read(tokens_per_s, tokens_seen)` -> the "device" metrics, from
    this process's tokens per second (one rank's, in a run of several: against its own device's peak, on a CPU
    measured with its share of the threads) and the run's tokens so far (all ranks')."""

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype, sequence_length: int):
        self.device = device
        self.per_token = flops_per_token(model, sequence_length)
        self.peak = device_peak(device, dtype)
        self.nvml = _nvml_handle(device)
        import psutil

        self.process = psutil.Process()
        self.process.cpu_percent()  # starts its interval

    def read(self, tokens_per_s: float, tokens_seen: int) -> dict[str, float]:
        rate = self.per_token * tokens_per_s
        metrics = {"train_flops": self.per_token * tokens_seen, "model_tflops": rate / 1e12, "mfu": rate / self.peak}
        if self.device.type == "cuda":
            metrics["gpu_memory_mib"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
            if self.nvml is not None:
                import pynvml

                metrics["gpu_util"] = float(pynvml.nvmlDeviceGetUtilizationRates(self.nvml).gpu)
        else:
            metrics["cpu_percent"] = self.process.cpu_percent()
            metrics["rss_mib"] = self.process.memory_info().rss / 2 ** 20
        return metrics


def _nvml_handle(device: torch.device):
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
    except Exception:  # no pynvml, or no NVML: utilisation is not logged, the rest is
        return None

