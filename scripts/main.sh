#!/usr/bin/env bash
# The README's main command: set up ./.venv, then run the synthetic benchmark pipeline locally
# (kfp.local, artifacts in ./runs, MLflow in ./mlflow.db). Extra arguments go to `ptdistill run`.
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
exec .venv/bin/ptdistill run synthetic "$@"
