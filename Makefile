# The two commands of the README: `make run` (the pipeline on config.yaml) and `make test`.
# Both build .venv first when it is missing or older than the pinned dependencies.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= profiles/local
SNAKEMAKE_ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=
QUALITY_ARGS ?=

# Rules call the `labelwise` command: the venv's bin must come first on PATH.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: run test lint lint-snakemake bench quality venv clean report
.DEFAULT_GOAL := run

$(VENV)/.stamp: requirements.lock pyproject.toml tools/bootstrap_venv.sh tools/cpu_torchvision_shim.py
	VENV=$(VENV) bash tools/bootstrap_venv.sh

venv: $(VENV)/.stamp

run: $(VENV)/.stamp
	$(VENV)/bin/snakemake --profile $(PROFILE) $(SNAKEMAKE_ARGS)

report: $(VENV)/.stamp
	$(VENV)/bin/snakemake --profile $(PROFILE) --report report.html

test: $(VENV)/.stamp
	$(PY) -m pytest $(PYTEST_ARGS)

# Linters and formatters (settings in pyproject.toml), run by .ci/run before the tests.
# `ruff format . && snakefmt Snakefile rules` applies the formats.
lint: lint-snakemake
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/snakefmt --check Snakefile rules

# The benchmark suite (docs/benchmarks.md): medians and ratios against references, same run.
bench: $(VENV)/.stamp
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# `snakemake --lint`, failing on findings not listed as deliberate in docs/lint.md.
lint-snakemake: $(VENV)/.stamp
	$(PY) tools/snakemake_lint.py

# Issue 13's comparison of GAN variants at equal compute (docs/quality.md): ≈ 25 CPU-minutes.
QUALITY_VARIANTS = "W-CGAN" "W-CGAN + DiffAugment + EMA" "DC-CGAN"
quality: $(VENV)/.stamp
	nice $(PY) benchmarks/quality.py --dataset mnist5k --gflop 3000 --labels 3 8 \
		--variants $(QUALITY_VARIANTS) "DC-CGAN + DiffAugment + EMA" $(QUALITY_ARGS)
	nice $(PY) benchmarks/quality.py --dataset cifar10-mini --gflop 2000 --labels 1 7 \
		--variants $(QUALITY_VARIANTS) $(QUALITY_ARGS)
	$(PY) benchmarks/quality.py --report

clean:
	rm -rf results logs .snakemake report.html
