#!/usr/bin/env bash
# The README's test command: set up ./.venv, then run the whole test suite.
#
# With no arguments: the `images` tier (tests/dockerd.py: installs docker.io and mmdebstrap when
# missing, starts its own dockerd, builds the images offline and runs the pipeline in them) runs
# as a second pytest process beside the rest, since its image builds mostly wait on disk and
# network; its output follows the main run's. Arguments go to one pytest run as given
# (e.g. `bash scripts/test.sh tests/test_losses.py`, `bash scripts/test.sh -m images`).
# `--fast` first: only the unit and property tests, none of the tiers (markers in pyproject.toml);
# the arguments after it go to that pytest run.
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
.venv/bin/ruff check ptdistill components pipelines tests benchmarks
if [ "${1:-}" = --fast ]; then
  shift
  exec .venv/bin/python -m pytest -m "not slow and not pipeline and not browser and not images" "$@"
fi
[ $# -eq 0 ] || exec .venv/bin/python -m pytest "$@"

bash images/install-build-tools.sh
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
start=$SECONDS
( .venv/bin/python -m pytest -m images -p no:cacheprovider --basetemp "$scratch/tmp" >"$scratch/images.log" 2>&1
  echo $? >"$scratch/images.rc"; echo $((SECONDS - start)) >"$scratch/images.s" ) &
tier=$!
main_rc=0
.venv/bin/python -m pytest -m "not images" || main_rc=$?
main_s=$((SECONDS - start))
wait "$tier" || true
echo "================ images tier (pytest -m images, run beside the rest) ================"
cat "$scratch/images.log"
images_rc=$(cat "$scratch/images.rc" 2>/dev/null || echo 1)
echo "tiers: main (not images) exit $main_rc in ${main_s} s; images exit $images_rc in $(cat "$scratch/images.s" 2>/dev/null || echo '?') s"
[ "$main_rc" -eq 0 ] && [ "$images_rc" -eq 0 ]
