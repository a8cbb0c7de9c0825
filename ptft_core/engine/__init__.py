"""The run engine: a priority queue, a device pool, worker processes and the single writer of the run store.

`Engine` (engine.py) is what the dashboard and the CLI use; `Launcher` (launcher.py) is the seam where a
cluster launcher would replace local subprocesses. Nothing here imports torch.
"""

from ptft_core.engine.devices import DevicePool, Gpu
from ptft_core.engine.engine import Engine
from ptft_core.engine.launcher import EXIT_UNKNOWN, Launcher, LocalSubprocessLauncher

__all__ = ["EXIT_UNKNOWN", "DevicePool", "Engine", "Gpu", "Launcher", "LocalSubprocessLauncher"]
