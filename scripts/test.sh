#!/usr/bin/env bash
# The whole test suite from a fresh clone: environment, lint, unit tests, workflow tests.
#   bash scripts/test.sh [pytest arguments]
# Every test runs here, the `slow` ones (workflow, SLURM, multi-second unit tests) included;
# while working, `python -m pytest -m "not slow"` is the fast subset (README.md, Tests).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-env.sh --dev
# SLURM for tests/test_slurm.py (a one-node test cluster); installs only as root, and
# test_slurm.py skips itself when it is missing and cannot be installed.
bash scripts/slurm-cluster.sh install ||
    echo "test.sh: SLURM not installed; tests/test_slurm.py will be skipped" >&2
# Real Fashion-MNIST files (the original gzip idx) for the loader and workflow format tests.
if [[ ! -d /usr/share/datasets/fashion-mnist && $(id -u) -eq 0 ]]; then
    apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends dataset-fashion-mnist; }
fi
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 MPLBACKEND=Agg

echo "== lint: ruff, snakefmt, snakemake --lint" >&2
ruff check .
ruff format --check .
snakefmt --check Snakefile workflow/rules
snakemake --lint --cores 1 >/dev/null || { snakemake --lint --cores 1; exit 1; }

echo "== tests: pytest" >&2
status=0
# Two workers, each test module on one (its module fixtures, the workflow runs and the SLURM
# cluster, stay single): one module's waits (SLURM polls) and single-threaded unit tests overlap
# another's work.
python -m pytest -n 2 --dist loadfile --durations=15 "$@" || status=$?
# pytest exits 5 when it collected no test: that is a failure of the suite, say so.
if [[ $status -eq 5 ]]; then
    echo "test.sh: pytest collected no tests" >&2
    exit 1
fi
exit $status
