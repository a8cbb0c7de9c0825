"""The device pool: CPU slots and GPU slots, discovered once without importing torch in this process.

The engine runs inside the Streamlit server, which must stay light: CUDA devices are found with `nvidia-smi`
(or, where only the driver's device files exist, `torch.cuda.device_count()` in a short-lived subprocess).
`PTFT_GPUS` overrides discovery: `none` (or empty) for no GPU, or a comma-separated list of indices.

Each worker gets `CUDA_VISIBLE_DEVICES` (its GPU's index, its GPUs' indices for a run of several ranks, or ""
for a CPU slot, so a CPU run cannot touch a GPU), `PTFT_DEVICE` (`cuda` or `cpu`) and
`PTFT_THREADS`/`OMP_NUM_THREADS`/`MKL_NUM_THREADS` = cores / slots, so N concurrent CPU runs share the cores
instead of each starting one thread per core.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


def cpu_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class Gpu:
    index: int
    name: str = "GPU"
    memory_mib: int | None = None


def discover_gpus(timeout: float = 20.0) -> list[Gpu]:
    override = os.environ.get("PTFT_GPUS")
    if override is not None:
        override = override.strip().lower()
        if override in ("", "none", "cpu"):
            return []
        return [Gpu(int(i)) for i in override.split(",") if i.strip()]
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=timeout, check=True,
            ).stdout
            gpus = []
            for line in out.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if parts and parts[0].isdigit():
                    mem = int(float(parts[2])) if len(parts) > 2 and parts[2].replace(".", "").isdigit() else None
                    gpus.append(Gpu(int(parts[0]), parts[1] if len(parts) > 1 else "GPU", mem))
            return gpus
        except (subprocess.SubprocessError, OSError, ValueError) as exc:
            log.warning("nvidia-smi failed (%s); trying torch in a subprocess", exc)
    if not (Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia").exists()) and not smi:
        return []
    try:
        out = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
            capture_output=True, text=True, timeout=max(timeout, 60.0), check=True,
        ).stdout
        return [Gpu(i) for i in range(int(out.strip().splitlines()[-1]))]
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as exc:
        log.warning("could not count CUDA devices (%s); running on CPU only", exc)
        return []


@dataclass
class Slots:
    name: str  # "cpu" or "cuda:<index>"
    kind: str  # "cpu" or "cuda"
    capacity: int
    env: dict[str, str]
    description: str = ""
    runs: list[str] = field(default_factory=list)

    @property
    def free(self) -> int:
        return self.capacity - len(self.runs)


@dataclass(frozen=True)
class Allocation:
    """What one run holds: a slot of one device, or a slot on each of several GPUs (a run of several ranks)."""

    name: str  # "cpu", "cuda:0" or "cuda:0,1"
    env: dict[str, str]


class DevicePool:
    """Slots per device; `acquire(kind, run_id)` takes one (or one on each of several GPUs), `release(run_id)`
    gives them back."""

    def __init__(self, cpu_slots: int | None = None, gpu_slots_per_device: int = 1,
                 gpus: list[Gpu] | None = None, cores: int | None = None, gpus_per_node: int | None = None):
        self.cores = cores or cpu_cores()  # a Ray cluster's CPUs, or this machine's cores
        cpu_slots = max(1, self.cores // 2) if cpu_slots is None else int(cpu_slots)
        if cpu_slots < 0:
            raise ValueError("cpu_slots must be >= 0")
        gpus = discover_gpus() if gpus is None else gpus
        # The most GPUs one run can hold: its ranks run on one node (torchrun --standalone).
        self.gpus_per_node = len(gpus) if gpus_per_node is None else int(gpus_per_node)
        gpu_total = len(gpus) * gpu_slots_per_device
        cpu_threads = max(1, self.cores // max(1, cpu_slots))
        gpu_threads = self._gpu_threads = max(1, self.cores // max(1, cpu_slots + gpu_total))
        self.devices: list[Slots] = []
        for gpu in gpus:
            self.devices.append(Slots(
                f"cuda:{gpu.index}", "cuda", gpu_slots_per_device,
                {"CUDA_VISIBLE_DEVICES": str(gpu.index), "PTFT_DEVICE": "cuda", **_threads(gpu_threads)},
                f"{gpu.name}" + (f", {gpu.memory_mib} MiB" if gpu.memory_mib else ""),
            ))
        self.devices.append(Slots(
            "cpu", "cpu", cpu_slots, {"CUDA_VISIBLE_DEVICES": "", "PTFT_DEVICE": "cpu", **_threads(cpu_threads)},
            f"{self.cores} cores, {cpu_threads} thread(s) per run",
        ))

    @property
    def has_gpu(self) -> bool:
        return any(d.kind == "cuda" for d in self.devices)

    def kind_for(self, config_device: str) -> str:
        """The slot kind a run's `device` setting needs: auto takes a GPU when there is one."""
        if config_device == "auto":
            return "cuda" if self.has_gpu else "cpu"
        return config_device

    def acquire(self, kind: str, run_id: str, gpus: int = 1) -> Allocation | None:
        """A slot of the freest device of `kind`, or, for a run of several ranks on GPUs, a slot on each of
        `gpus` distinct GPUs (all or nothing); None when they are not free."""
        candidates = sorted((d for d in self.devices if d.kind == kind and d.free > 0), key=lambda d: -d.free)
        count = gpus if kind == "cuda" else 1
        if len(candidates) < count:
            return None
        taken = sorted(candidates[:count], key=lambda d: d.name)
        for d in taken:
            d.runs.append(run_id)
        return self._allocation(taken)

    def occupy(self, device_name: str | None, run_id: str) -> Allocation:
        """Count a re-adopted run against its devices (even beyond capacity: it is running, whatever we think)."""
        names = _device_names(device_name)
        taken = [d for d in self.devices if d.name in names] or [next(d for d in self.devices if d.kind == "cpu")]
        for d in taken:
            d.runs.append(run_id)
        return self._allocation(taken)

    def _allocation(self, devices: list[Slots]) -> Allocation:
        if len(devices) == 1:
            return Allocation(devices[0].name, devices[0].env)
        indices = [d.name.split(":", 1)[1] for d in devices]
        env = {**devices[0].env, "CUDA_VISIBLE_DEVICES": ",".join(indices),
               **_threads(self._gpu_threads * len(devices))}  # each rank keeps one GPU slot's threads
        return Allocation("cuda:" + ",".join(indices), env)

    def release(self, run_id: str) -> None:
        for d in self.devices:
            if run_id in d.runs:
                d.runs.remove(run_id)

    def describe(self) -> list[dict]:
        return [{"device": d.name, "kind": d.kind, "description": d.description, "slots": d.capacity,
                 "busy": len(d.runs), "runs": list(d.runs), "threads": int(d.env["PTFT_THREADS"])}
                for d in self.devices]


def _device_names(name: str | None) -> set[str]:
    """The pool's device names in an allocation's name: "cuda:0,1" -> {"cuda:0", "cuda:1"}."""
    if not name or not name.startswith("cuda:"):
        return {name or "cpu"}
    return {f"cuda:{index}" for index in name.split(":", 1)[1].split(",")}


def _threads(n: int) -> dict[str, str]:
    return {"PTFT_THREADS": str(n), "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
