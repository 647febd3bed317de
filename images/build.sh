#!/usr/bin/env bash
# Build and push the ptdistill images, tagged by the current git commit, and record the pushed
# references in images/images.json (the one place components/images.py reads) and in
# infra/k8s/mlflow/kustomization.yaml (the MLflow server image).
#
#   REGISTRY=europe-docker.pkg.dev/<project>/ptdistill images/build.sh [cpu|gpu|mlflow ...]
#
# Env: REGISTRY (required), PUSH=0 to build only, ALLOW_DIRTY=1 to build a dirty work tree
# (the tag then gets a -dirty suffix), DOCKER (default: docker).
set -euo pipefail

if [[ -z "${REGISTRY:-}" ]]; then
    echo "error: REGISTRY is not set; e.g. REGISTRY=europe-docker.pkg.dev/<project>/ptdistill $0" >&2
    exit 2
fi
REGISTRY="${REGISTRY%/}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DOCKER="${DOCKER:-docker}"
PUSH="${PUSH:-1}"

TAG="$(git rev-parse --short HEAD)"
if [[ -n "$(git status --porcelain -- pyproject.toml README.md ptdistill components pipelines images)" ]]; then
    if [[ "${ALLOW_DIRTY:-0}" != 1 ]]; then
        echo "error: uncommitted changes in the image sources; commit them or set ALLOW_DIRTY=1" >&2
        exit 3
    fi
    TAG="${TAG}-dirty"
fi

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(cpu gpu mlflow)

declare -A refs
for target in "${targets[@]}"; do
    case "$target" in
        cpu|gpu) context="." ;;
        mlflow) context="images" ;;
        *) echo "error: unknown image '$target' (cpu, gpu, mlflow)" >&2; exit 2 ;;
    esac
    ref="${REGISTRY}/ptdistill-${target}:${TAG}"
    echo ">> building ${ref}"
    DOCKER_BUILDKIT=1 "$DOCKER" build -f "images/Dockerfile.${target}" -t "$ref" \
        --label "org.opencontainers.image.revision=$(git rev-parse HEAD)" "$context"
    if [[ "$PUSH" == 1 ]]; then
        "$DOCKER" push "$ref"
    fi
    refs[$target]="$ref"
done

# Merge into images/images.json (keeps the entries of images not rebuilt this time) and point
# the MLflow kustomization at the new server image.
REF_CPU="${refs[cpu]:-}" REF_GPU="${refs[gpu]:-}" REF_MLFLOW="${refs[mlflow]:-}" python3 - <<'PY'
import json, os, re
from pathlib import Path

path = Path("images/images.json")
refs = json.loads(path.read_text()) if path.exists() else {}
for key in ("cpu", "gpu", "mlflow"):
    if os.environ.get(f"REF_{key.upper()}"):
        refs[key] = os.environ[f"REF_{key.upper()}"]
path.write_text(json.dumps(refs, indent=2) + "\n")
print(f"wrote {path}: {refs}")

mlflow = os.environ.get("REF_MLFLOW")
if mlflow:
    name, tag = mlflow.rsplit(":", 1)
    kust = Path("infra/k8s/mlflow/kustomization.yaml")
    text = kust.read_text()
    text = re.sub(r"(?m)^(\s*newName:).*$", lambda m: f"{m.group(1)} {name}", text, count=1)
    text = re.sub(r"(?m)^(\s*newTag:).*$", lambda m: f'{m.group(1)} "{tag}"', text, count=1)
    kust.write_text(text)
    print(f"updated {kust}: {mlflow}")
PY
echo ">> compile pipelines now to use these images (components/images.py reads images/images.json)"
