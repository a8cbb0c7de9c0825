"""The dashboard in a real browser: `streamlit run app.py` on a free port with its own lab home, driven by
Playwright with Debian's chromium (Playwright cannot download its own browser here; `make browser` installs it).

One journey, as a person would make it: launch a tiny fine-tune (two seeds) from the Fine-tune page, watch both
complete on Runs, see their curves and reliability diagrams on Compare, open Inspect, put them side by side in the
Arena; then the same lab served read-only shows no control that launches or changes anything, and still predicts.
`make screenshots` (PTFT_SCREENSHOTS=1) saves each page to docs/screenshots/<page>.png on the way; a plain test
run leaves the tracked pictures alone and waits for nothing but what it checks.

Without chromium the tests skip, except in CI (CI=true), where a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import stop_lab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "docs" / "screenshots"
SAVE_SCREENSHOTS = os.environ.get("PTFT_SCREENSHOTS") == "1"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1440, "height": 1100}
MAX_SCREENSHOT_BYTES = 300_000
RUN_TIMEOUT_MS = 240_000  # two tiny fine-tunes, one after the other, on two busy CPU cores


def chromium() -> Path:
    if CHROMIUM.is_file():
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing: the e2e tests need Debian's chromium in CI (make browser)")
    pytest.skip(f"{CHROMIUM} is not installed (make browser installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the Streamlit server did not come up: {log.read_text()[-3000:]}")
        time.sleep(0.5)


@contextlib.contextmanager
def streamlit_server(home: Path, log: Path, read_only: bool = False) -> Iterator[str]:
    """`streamlit run app.py` on a free port for `home`; yields its URL once /_stcore/health answers."""
    port = free_port()
    env = {**os.environ, "PTFT_HOME": str(home)}
    env.pop("PTFT_TRAINER", None)  # the real trainer
    env.pop("PTFT_READ_ONLY", None)
    if read_only:
        env["PTFT_READ_ONLY"] = "1"
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, log)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    path = chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(path), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# --- driving Streamlit widgets --------------------------------------------------------------------------------------


def settle(page) -> None:
    """Wait for the script run a widget change started (the status widget shows while it runs)."""
    page.wait_for_timeout(400)
    page.locator("[data-testid='stStatusWidget']").wait_for(state="hidden", timeout=60_000)


def open_page(page, url: str) -> None:
    page.goto(url)
    page.locator("h1").first.wait_for(timeout=90_000)
    settle(page)


def choose(page, label: str, option: str) -> None:
    """Pick an option of a selectbox (a combobox whose list opens on click; a rerun may close it: retry)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    choice = page.get_by_role("option", name=option, exact=True)
    for _ in range(3):
        page.get_by_role("combobox", name=label, exact=True).click()
        try:
            choice.click(timeout=5_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
            settle(page)
    else:
        pytest.fail(f"could not choose {option!r} in {label!r}")
    settle(page)


def fill(page, label: str, value: str) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(value)
    field.press("Enter")
    settle(page)


def charts(page) -> int:
    return page.locator(".js-plotly-plot .main-svg").count()


def screenshot(page, name: str) -> None:
    """docs/screenshots/<name>.png when asked (`make screenshots`), re-encoded with a 256-colour palette when a plain
    PNG is over the limit."""
    if not SAVE_SCREENSHOTS:
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.wait_for_timeout(1500)  # plotly's transitions, widgets drawn after the run
    page.screenshot(path=str(path))
    if path.stat().st_size > MAX_SCREENSHOT_BYTES:
        from PIL import Image

        Image.open(path).convert("RGB").quantize(colors=256).save(path, optimize=True)
    assert path.stat().st_size <= MAX_SCREENSHOT_BYTES, f"{path} is {path.stat().st_size} bytes"


def launch(page, prefix: str) -> list[str]:
    """Click Launch on the open form; the ids of the runs it queued (`prefix`-...), from its success message."""
    page.get_by_role("button", name="Launch").click()
    success = page.get_by_test_id("stAlertContentSuccess")
    success.wait_for(timeout=30_000)
    return re.findall(rf"{prefix}-\d{{8}}-\d{{6}}-[0-9a-f]{{6}}", success.inner_text())


def wait_completed(page, url: str, run_id: str, log: Path) -> None:
    open_page(page, f"{url}/runs?run={run_id}")
    status = page.get_by_test_id("stCaptionContainer").filter(has_text=run_id)
    status.filter(has_text=re.compile("completed|failed|cancelled|interrupted")).wait_for(timeout=RUN_TIMEOUT_MS)
    assert "completed" in status.first.inner_text(), log.read_text()[-3000:]


# --- the journey -----------------------------------------------------------------------------------------------------


@pytest.fixture
def lab_home(home):
    """The test's lab home; the lab service a dashboard started for it (detached) is stopped afterwards."""
    yield home
    stop_lab(home)


def test_launch_watch_compare_inspect_then_read_only(lab_home, tmp_path, browser):
    home = lab_home
    log = tmp_path / "streamlit.log"
    page = browser.new_page(viewport=VIEWPORT)
    with streamlit_server(home, log) as url:
        open_page(page, url)
        screenshot(page, "home")

        # Fine-tune: a randomly initialised tiny BERT on 5% of amazon, 10 steps, two seeds, the form's default
        # evaluation schedule (before the first step, then about ten times).
        open_page(page, f"{url}/finetune")
        page.get_by_text("A preset (random init)", exact=True).click()
        settle(page)
        choose(page, "Dataset", "amazon")
        fill(page, "Label fraction", "0.05")
        fill(page, "Max length (tokens)", "32")
        fill(page, "Batch size", "16")
        fill(page, "Epochs", "1")
        fill(page, "Max steps (0: all epochs)", "10")
        fill(page, "Log every (steps)", "1")
        fill(page, "Learning rate", "0.001")
        page.get_by_text("Forgetting: probes and mitigations").click()
        settle(page)
        choose(page, "Probe corpus", "news")
        fill(page, "Probe texts", "16")
        fill(page, "Seeds", "0,1")
        run_ids = launch(page, "ft")
        assert len(run_ids) == 2, run_ids
        screenshot(page, "finetune")

        # Runs: the live view follows the runs (seed 1 is queued behind seed 0) until both are completed.
        for run_id in reversed(run_ids):
            wait_completed(page, url, run_id, log)
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 1",
                               timeout=60_000)
        screenshot(page, "runs")

        # Compare: both runs from a shared link; their validation curves are drawn with a visible point per
        # evaluation (step 0 and ten more each: short series carry markers).
        open_page(page, f"{url}/compare?runs={','.join(run_ids)}&metrics=validation/accuracy&metrics=train/loss"
                        "&smooth=0.3")
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= 2",
                               timeout=60_000)
        assert page.locator(".js-plotly-plot .scatterlayer .trace path.js-line").count() >= 2
        page.wait_for_function(
            "document.querySelectorAll('.js-plotly-plot .scatterlayer .trace .points path.point').length >= 16",
            timeout=60_000)
        page.get_by_test_id("stMain").evaluate("main => main.scrollBy(0, 330)")
        screenshot(page, "compare")

        for name in ("data", "pretrain", "studies"):
            open_page(page, f"{url}/{name}")
            screenshot(page, name)

        # Inspect: attention of the base (random init) and of the fine-tuned model, side by side.
        open_page(page, f"{url}/inspect")
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2",
                               timeout=RUN_TIMEOUT_MS)
        assert not page.get_by_test_id("stException").count()
        screenshot(page, "inspect")

        # Calibration: both runs' reliability diagrams (the diagonal, a line per run) beside their ECE.
        open_page(page, f"{url}/compare?runs={','.join(run_ids)}&view=Calibration")
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= 3",
                               timeout=60_000)
        assert page.get_by_text("ECE", exact=False).count() >= 1
        screenshot(page, "calibration")

        # Arena: the two runs side by side on one text (a bar group each), through the service's predictor, then
        # where they disagree over amazon's test split.
        open_page(page, f"{url}/arena")
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .barlayer .trace').length >= 2",
                               timeout=RUN_TIMEOUT_MS)
        page.get_by_text("classifiers agree", exact=False).or_(
            page.get_by_text("classifiers disagree", exact=False)).first.wait_for(timeout=60_000)
        screenshot(page, "arena")
        open_page(page, f"{url}/arena?arena-tab=Where+they+disagree")
        page.get_by_text("test texts of amazon", exact=False).wait_for(timeout=RUN_TIMEOUT_MS)
        assert not page.get_by_test_id("stException").count()

    # The same lab, read-only (a viewer of the service the first dashboard started, which outlived it): everything
    # can be seen, nothing can be launched, cancelled or deleted.
    with streamlit_server(home, log, read_only=True) as url:
        open_page(page, f"{url}/data")
        page.get_by_text("Read-only demo").first.wait_for(timeout=30_000)
        nav = page.get_by_test_id("stSidebarNav")
        nav.get_by_text("Runs").wait_for(timeout=30_000)
        assert nav.get_by_text("Fine-tune").count() == 0 and nav.get_by_text("Pretrain").count() == 0
        assert page.get_by_role("button", name="Launch").count() == 0
        open_page(page, f"{url}/runs?run={run_ids[0]}")
        for label in ("Launch", "Cancel", "Resume", "Retry", "Delete", "Tags and note"):
            assert page.get_by_role("button", name=label).count() == 0, label
        open_page(page, f"{url}/compare?runs={run_ids[0]}")
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 1",
                               timeout=60_000)
        open_page(page, f"{url}/arena")  # a viewer may predict: it changes nothing
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .barlayer .trace').length >= 2",
                               timeout=RUN_TIMEOUT_MS)


def progress_step(page, run_id: str) -> int:
    bar = page.get_by_test_id("stProgress").filter(has_text=run_id)
    bar.wait_for(timeout=60_000)
    return int(re.search(r"step ([\d,]+)/", bar.inner_text()).group(1).replace(",", ""))


def test_demo_shows_the_lab_training_live_and_changes_nothing(lab_home, tmp_path, browser, monkeypatch):
    """`ptft demo --host 0.0.0.0` beside a lab that trains: a visitor without the viewer token gets a prompt, the
    editor token is refused, the viewer link shows the run training live (its step moves on the Runs page with
    no reload), and no control that changes anything is there."""
    from ptft_core.client import connect, read_token, start_service

    monkeypatch.setenv("PTFT_TRAINER", "tests.fake_trainer:run")  # a long, slow stand-in run: training throughout
    monkeypatch.setenv("PTFT_FAKE_STEP_S", "0.25")
    monkeypatch.setenv("PTFT_GPUS", "none")
    start_service(lab_home)
    lab = connect(lab_home)
    run_id = lab.submit({"kind": "pretrain", "name": "live-demo", "max_steps": 2000, "eval_every": 50})
    log = tmp_path / "demo.log"
    port = free_port()
    with open(log, "ab") as out:
        demo = subprocess.Popen([sys.executable, "-m", "ptft_core", "demo", "--host", "0.0.0.0", "--port", str(port)],
                                cwd=REPO, env=os.environ, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, demo, log)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"{url}/runs")
        page.get_by_text("This demo needs the viewer token").wait_for(timeout=90_000)
        assert page.locator("h1", has_text="Runs").count() == 0

        page.goto(f"{url}/runs?token={read_token(lab_home, 'editor')}")
        page.get_by_text("The token was refused").wait_for(timeout=60_000)

        open_page(page, f"{url}/runs?run={run_id}&token={read_token(lab_home, 'viewer')}")
        first = progress_step(page, run_id)
        page.wait_for_function(  # the live fragment redraws the bar: no reload, no click
            """([id, first]) => [...document.querySelectorAll("[data-testid='stProgress']")].some(
                   bar => bar.innerText.includes(id) && parseInt(bar.innerText.match(/step ([\\d,]+)\\//)[1]
                                                              .replace(/,/g, '')) > first)""",
            arg=[run_id, first], timeout=60_000)
        for label in ("Launch", "Cancel", "Resume", "Retry", "Delete", "Tags and note"):
            assert page.get_by_role("button", name=label).count() == 0, label
        page.get_by_text("Read-only demo").first.wait_for(timeout=10_000)
        page.get_by_role("link", name="Studies").click()  # another page, same session: the token is kept
        page.locator("h1", has_text="Studies").wait_for(timeout=60_000)
        settle(page)
        assert page.get_by_role("button", name="Launch").count() == 0
        assert not page.get_by_test_id("stException").count()
        assert lab.get_run(run_id)["status"] == "running"  # the demo changed nothing
    finally:
        demo.terminate()
        demo.wait(timeout=30)


def test_an_image_transfer_from_the_forms_to_its_class_activation_map(lab_home, tmp_path, browser):
    """Pretrain a small ResNet on digits from the Pretrain form, fine-tune it from the Fine-tune form (a linear
    probe), watch both on Runs and Compare, and open the fine-tune's class-activation map on Inspect. About 35 s:
    two real runs one after the other, and five pages drawn in a real browser."""
    log = tmp_path / "streamlit.log"
    page = browser.new_page(viewport=VIEWPORT)
    with streamlit_server(lab_home, log) as url:
        open_page(page, f"{url}/pretrain")
        page.get_by_text("Image classifier", exact=True).click()
        settle(page)
        choose(page, "Dataset", "digits")
        fill(page, "Epochs", "1")
        (parent,) = launch(page, "ip")
        wait_completed(page, url, parent, log)

        open_page(page, f"{url}/finetune")
        page.get_by_text("Image classifier", exact=True).click()
        settle(page)
        choose(page, "Strategy", "linear probe")
        fill(page, "Max steps (0: all epochs)", "20")
        (child,) = launch(page, "if")
        from ptft_core.client import connect

        assert connect(lab_home).get_run(child)["config"]["base"] == f"run:{parent}"  # the only image run, picked
        screenshot(page, "finetune-images")
        wait_completed(page, url, child, log)
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 1",
                               timeout=60_000)

        open_page(page, f"{url}/compare?runs={parent},{child}&metrics=validation/accuracy")
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= 2",
                               timeout=60_000)

        open_page(page, f"{url}/inspect?run={child}")
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2",
                               timeout=RUN_TIMEOUT_MS)
        page.get_by_text("Grad-CAM").first.wait_for(timeout=30_000)
        assert not page.get_by_test_id("stException").count()
        screenshot(page, "inspect-images")
