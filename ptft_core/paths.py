"""Where the lab keeps its files: one home folder, `PTFT_HOME` (default `./data`)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def child_pythonpath(env: dict[str, str]) -> str:
    """PYTHONPATH for a child process started outside the checkout: the checkout first (ptft_core, and a test
    trainer if PTFT_TRAINER names one), then whatever `env` had (a venv-less machine may carry packages there)."""
    return os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)


DEFAULT_HOME = REPO_ROOT / "data"


def home() -> Path:
    """The lab's home folder; created on first use, private to its user (0700): it holds every run, the store
    and the service's tokens."""
    path = Path(os.environ.get("PTFT_HOME") or DEFAULT_HOME).expanduser().resolve()
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)  # mkdir's own mode passes through the umask
    return path


def readable_by_others(folder: Path) -> bool:
    """Whether users other than the owner may read or enter `folder` (its group or other permission bits)."""
    return bool(folder.stat().st_mode & 0o077)


def exposure_warning(folder: Path) -> str | None:
    """What to tell the user when the lab's home is open to other users of the machine; None when it is private."""
    if not readable_by_others(folder):
        return None
    return (f"warning: the lab's home {folder} is readable by other users of this machine (mode "
            f"{folder.stat().st_mode & 0o777:o}): they can read every run and the store without a token; "
            f"`chmod 700 {folder}` makes it private")


def downloads_dir() -> Path:
    return home() / "downloads"


def datasets_dir() -> Path:
    return home() / "datasets"


def models_dir() -> Path:
    return home() / "models"


def tokenizer_cache(key: str) -> Path:
    """A trained tokenizer's folder (`families.train_tokenizer`), by its inputs' digest."""
    return home() / "cache" / "tokenizers" / key


def runs_dir() -> Path:
    return home() / "runs"


def run_dir(run_id: str) -> Path:
    return runs_dir() / run_id


def sweeps_dir(lab_home: Path | None = None) -> Path:
    """`sweeps/<sweep_id>/`: each sweep's Optuna journal (its sampler's and pruner's state), beside the run store."""
    return (lab_home or home()) / "sweeps"


def sweep_journal(sweep_id: str, lab_home: Path | None = None) -> Path:
    return sweeps_dir(lab_home) / sweep_id / "optuna.journal"


def db_path() -> Path:
    return home() / "ptft.duckdb"


def service_file(lab_home: Path | None = None) -> Path:
    """Where a running `serve` announces itself (url, pid, started); absent when none runs."""
    return (lab_home or home()) / "service.json"


def service_log(lab_home: Path | None = None) -> Path:
    """The output of a service started by a client (`make run`, the dashboard, a CLI command)."""
    return (lab_home or home()) / "service.log"


def fork_server_log(lab_home: Path | None = None) -> Path:
    """The output of the local launcher's fork server (its own, not its workers': each run has its worker.log)."""
    return (lab_home or home()) / "fork-server.log"
