#!/usr/bin/env bash
# The README's test command: set up ./.venv, then run the whole test suite.
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
.venv/bin/ruff check ptdistill components pipelines tests benchmarks
exec .venv/bin/python -m pytest "$@"
