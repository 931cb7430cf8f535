# omnisim — every target sets itself up: a fresh clone needs only Python >= 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?= -n 2

.PHONY: demo test venv bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "omnisim needs Python >= 3.11, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (omnisim)" >/dev/null
	@echo "compiling the simulation kernels once (numba; a minute or three, cached for later runs)"
	$(PY) -m omnisim._jit
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/omnisim demo --out reports

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Benchmarks live outside the test suite; each prints its table (see BENCHMARKS.md for the
# recorded results and the exact commands). This runs the quick ones at modest sizes; files
# they write go to reports/bench/, not over the recorded results in benchmarks/.
BENCH_OUT := reports/bench
bench: $(STAMP)
	mkdir -p $(BENCH_OUT)
	$(PY) benchmarks/bench_engine_simpy.py --users 2000 --days 30 --policy seed_journey+pressure,blast,email_only
	$(PY) benchmarks/bench_engines.py --ratio-users 2000 --budget-s 120 \
		--json $(BENCH_OUT)/engines.json --plot $(BENCH_OUT)/engine_scaling.png --md $(BENCH_OUT)/engines.md
	$(PY) benchmarks/bench_ope_obd.py
	$(PY) benchmarks/bench_reports.py --events 1000000 --pandas-max 1000000
	$(PY) benchmarks/bench_sender.py --db sqlite --seconds 10
	$(PY) benchmarks/bench_rate_limit.py
	$(PY) benchmarks/bench_sweep.py --users 1000 --days 14 --seeds 2 --repeats 1
	$(PY) benchmarks/bench_fast_dask.py --users 60000 --days 7 --repeats 1
	$(PY) benchmarks/bench_tune.py --scenario default --scheduler sequential --out $(BENCH_OUT)/tune_results.jsonl

clean:
	rm -rf $(VENV) reports/*.html reports/*.ipynb .pytest_cache
