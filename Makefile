# The two commands of the README: `make run` (the pipeline on config.yaml) and `make test`.
# Both build .venv first when it is missing or older than the pinned dependencies.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= profiles/local
SNAKEMAKE_ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=
QUALITY_ARGS ?=
PAPERS_ARGS ?=

# Rules call the `labelwise` command: the venv's bin must come first on PATH.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: run test lint lint-snakemake bench quality quality-tuning quality-wcgan papers venv clean report
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

# Issue 13's comparison of GAN variants at equal compute (docs/quality.md): ≈ 60 CPU-minutes.
# Then the chosen defaults and the plain models over three seeds. Finished trainings are kept.
QUALITY_SEEDS = results/quality-seeds
QUALITY_SEEDS_REPORT = --out $(QUALITY_SEEDS) --table docs/quality_seeds_table.md \
	--figure docs/figures/quality_seeds_fid_vs_compute.png
quality: $(VENV)/.stamp
	nice $(PY) benchmarks/quality.py --dataset mnist5k --gflop 3000 --labels 3 8 --variants \
		"W-CGAN" "W-CGAN + EMA" "W-CGAN + DiffAugment + EMA" "DC-CGAN" "DC-CGAN + DiffAugment + EMA" \
		"DC-CGAN lr 2e-4" "DC-CGAN lr 2e-4 + DiffAugment (colour) + EMA" $(QUALITY_ARGS)
	nice $(PY) benchmarks/quality.py --dataset cifar10-mini --gflop 2000 --labels 1 7 --variants \
		"W-CGAN" "W-CGAN + DiffAugment + EMA" "DC-CGAN" \
		"DC-CGAN lr 2e-4 + DiffAugment + EMA" "DC-CGAN lr 2e-4 + DiffAugment (colour) + EMA" $(QUALITY_ARGS)
	$(PY) benchmarks/quality.py --report
	nice $(PY) benchmarks/quality.py --dataset mnist5k --gflop 3000 --labels 3 8 --seeds 0 1 2 $(QUALITY_SEEDS_REPORT) \
		--variants "W-CGAN" "DC-CGAN lr 2e-4 + DiffAugment (colour) + EMA" $(QUALITY_ARGS)
	nice $(PY) benchmarks/quality.py --dataset cifar10-mini --gflop 2000 --labels 1 7 --seeds 0 1 2 $(QUALITY_SEEDS_REPORT) \
		--variants "W-CGAN" "DC-CGAN" "DC-CGAN lr 2e-4 + DiffAugment (colour) + EMA" $(QUALITY_ARGS)
	$(PY) benchmarks/quality.py --report $(QUALITY_SEEDS_REPORT)

# The DC-CGAN tuning round behind config.yaml's DC-CGAN settings (docs/quality.md): mnist5k digits
# 4, 9 and 1 (three that failed in make run), ≈ 30 CPU-minutes.
QUALITY_TUNING = results/quality-tuning
quality-tuning: $(VENV)/.stamp
	nice $(PY) benchmarks/quality.py --dataset mnist5k --gflop 3000 --labels 4 9 1 --out $(QUALITY_TUNING) \
		--table docs/quality_tuning_table.md --figure docs/figures/quality_tuning_fid_vs_compute.png --variants \
		"DC-CGAN + DiffAugment (colour) + EMA" "DC-CGAN lr 2e-4" "DC-CGAN lr 2e-4 + DiffAugment" \
		"DC-CGAN lr 2e-4 + DiffAugment (colour, translation)" "DC-CGAN lr 2e-4 + DiffAugment + EMA" \
		"DC-CGAN lr 2e-4 + DiffAugment (colour) + EMA" "DC-CGAN lr_g 4e-4, lr_d 1e-4 + DiffAugment" $(QUALITY_ARGS)

# W-CGAN's tuning round behind config.yaml's W-CGAN settings (docs/quality.md, issue 25): the learning
# rate, Adam's beta1, fewer critic steps with a faster critic; mnist5k digits 3, 8 and cifar10-mini
# automobile, horse at equal compute, ≈ 40 CPU-minutes.
QUALITY_WCGAN = results/quality-wcgan
QUALITY_WCGAN_VARIANTS = "W-CGAN" "W-CGAN lr 1e-4" "W-CGAN lr 4e-4" "W-CGAN betas (0, 0.9)" \
	"W-CGAN 2 critic steps" "W-CGAN 2 critic steps, lr_d 4e-4" "W-CGAN 1 critic step, lr_g 1e-4, lr_d 3e-4" \
	"W-CGAN 1 critic step, lr_d 6e-4" "W-CGAN lr 8e-4" "W-CGAN 2 critic steps, lr_g 4e-4, lr_d 8e-4" \
	"W-CGAN 1 critic step, lr_g 4e-4, lr_d 1.2e-3"
QUALITY_WCGAN_REPORT = --out $(QUALITY_WCGAN) --table docs/quality_wcgan_table.md \
	--figure docs/figures/quality_wcgan_fid_vs_compute.png
quality-wcgan: $(VENV)/.stamp
	nice $(PY) benchmarks/quality.py --dataset mnist5k --gflop 3000 --labels 3 8 $(QUALITY_WCGAN_REPORT) \
		--variants $(QUALITY_WCGAN_VARIANTS) $(QUALITY_ARGS)
	nice $(PY) benchmarks/quality.py --dataset cifar10-mini --gflop 2000 --labels 1 7 $(QUALITY_WCGAN_REPORT) \
		--variants $(QUALITY_WCGAN_VARIANTS) $(QUALITY_ARGS)
	$(PY) benchmarks/quality.py --report $(QUALITY_WCGAN_REPORT)

# Issue 25's reproduction report (docs/papers.md): four models, mnist5k and cifar10-mini, all labels,
# three seeds, equal counted compute per label; ≤ 2 hours on an idle 2-core CPU. Finished trainings
# are kept (results/papers/): a rerun only rescores. PAPERS_ARGS=--report redoes only the report.
papers: $(VENV)/.stamp
	nice $(PY) benchmarks/papers.py $(PAPERS_ARGS)

clean:
	rm -rf results logs .snakemake report.html
