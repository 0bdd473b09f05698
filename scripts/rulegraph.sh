#!/usr/bin/env bash
# Redraw docs/rulegraph.svg, the picture of the workflow's rules shown in the README.
# Needs Graphviz's `dot` (Debian: apt-get install graphviz).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/snakemake --rulegraph --quiet all | dot -Tsvg > docs/rulegraph.svg
echo "wrote docs/rulegraph.svg" >&2
