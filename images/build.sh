#!/usr/bin/env bash
# Build the ptdistill images (cpu, gpu, mlflow), tagged by the current git commit.
#
# Online (the default; unchanged): build FROM python:3.11.11-slim-bookworm, push to REGISTRY and
# record the pushed references in images/images.json (the one place components/images.py reads)
# and in infra/k8s/mlflow/kustomization.yaml (the MLflow server image):
#
#   REGISTRY=europe-docker.pkg.dev/<project>/ptdistill images/build.sh [cpu|gpu|mlflow ...]
#
# Local (--load): build into the local daemon only, never push, REGISTRY optional (without it
# the tags are ptdistill-<image>:<git-sha>); images/images.json is left alone: the script prints
# `export PTDISTILL_CPU_IMAGE=...` lines (read by components/images.py at compile time) instead.
#
# Offline (--offline; no container registry, no PyTorch index, HTTPS through a proxy):
#   * the base is made from Debian packages (mmdebstrap --variant=minbase: python3, python3-venv,
#     ca-certificates) and `docker import`ed as ptdistill-base:<hash of its recipe>, reused while
#     the recipe is unchanged, and passed to the Dockerfiles as BASE_IMAGE;
#   * torch comes from a local wheel folder (TORCH_WHEELS) served as a PEP 503 index by Python's
#     http.server on 127.0.0.1 (TORCH_INDEX_URL of the CPU image; the GPU image still takes
#     torch's CUDA wheels from PIP_INDEX_URL);
#   * the host's CA bundle (CA_BUNDLE) reaches pip as a BuildKit secret, never an image layer;
#   * builds run with --network host (a daemon started with --bridge=none has no other network).
#
#   TORCH_WHEELS=/opt/wheels images/build.sh --offline --load cpu mlflow
#
# Flags: --load, --offline, --help; then the images to build (default: cpu gpu mlflow).
# Env: REGISTRY (required unless --load), PUSH=0 build only (online path), ALLOW_DIRTY=1 build a
# dirty work tree (tag suffix -dirty; --load allows it by itself), DOCKER (default: docker; it
# must have BuildKit, e.g. Debian's /usr/bin/docker), TORCH_WHEELS (--offline: folder with the
# torch wheel), CA_BUNDLE (--offline: default /etc/ssl/certs/ca-certificates.crt when present),
# TORCH_INDEX_PORT (--offline: 127.0.0.1 port of that index, default 38517, or the next free), PIP_INDEX_URL (PyPI
# or a mirror; default pypi.org), DEBIAN_MIRROR (--offline: default
# http://deb.debian.org/debian), DEBIAN_SUITE (default bookworm: python 3.11 like the slim base).
set -euo pipefail
shopt -s inherit_errexit  # a failing step inside "$(...)" (the offline base) stops the script too
# The whole script is one block, parsed before it runs: editing this file during a long build
# cannot derail the build in progress.
{

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

LOAD=0
OFFLINE=0
targets=()
for arg in "$@"; do
    case "$arg" in
        --load) LOAD=1 ;;
        --offline) OFFLINE=1 ;;
        -h|--help) usage; exit 0 ;;
        cpu|gpu|mlflow) targets+=("$arg") ;;
        *) echo "error: unknown argument '$arg' (flags: --load --offline; images: cpu gpu mlflow)" >&2; exit 2 ;;
    esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=(cpu gpu mlflow)

if [[ -z "${REGISTRY:-}" && "$LOAD" != 1 ]]; then
    echo "error: REGISTRY is not set; e.g. REGISTRY=europe-docker.pkg.dev/<project>/ptdistill $0 (or $0 --load to build local images only)" >&2
    exit 2
fi
REGISTRY="${REGISTRY:-}"
REGISTRY="${REGISTRY%/}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DOCKER="${DOCKER:-docker}"
PUSH="${PUSH:-1}"
[[ "$LOAD" == 1 ]] && PUSH=0
export DOCKER_BUILDKIT=1

TAG="$(git rev-parse --short HEAD)"
if [[ -n "$(git status --porcelain -- pyproject.toml README.md ptdistill components pipelines images)" ]]; then
    if [[ "${ALLOW_DIRTY:-0}" != 1 && "$LOAD" != 1 ]]; then
        echo "error: uncommitted changes in the image sources; commit them or set ALLOW_DIRTY=1" >&2
        exit 3
    fi
    TAG="${TAG}-dirty"
fi

build_args=()
if [[ -n "${PIP_INDEX_URL:-}" ]]; then
    build_args+=(--build-arg "PIP_INDEX_URL=${PIP_INDEX_URL}")
fi

cleanup=()
# shellcheck disable=SC2317  # run by the EXIT trap
on_exit() { local c; for c in "${cleanup[@]}"; do eval "$c"; done; }
trap on_exit EXIT

# --offline: the Debian base image, made once per recipe.
offline_base() {
    local suite="${DEBIAN_SUITE:-bookworm}" mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    # shellcheck disable=SC2054,SC2016  # commas of --include; $1 is the hook's, not ours
    local recipe=(mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd
        "--dpkgopt=path-exclude=/usr/share/doc/*" "--dpkgopt=path-exclude=/usr/share/man/*"
        "--dpkgopt=path-exclude=/usr/share/locale/*"
        '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*'
        "$suite")
    local hash ref
    hash="$(printf '%s\n' "${recipe[@]}" "$mirror" | sha256sum | cut -c1-12)"
    ref="ptdistill-base:${suite}-${hash}"
    if "$DOCKER" image inspect "$ref" >/dev/null 2>&1; then
        echo ">> base ${ref} (cached)" >&2
    else
        command -v mmdebstrap >/dev/null || { echo "error: --offline needs mmdebstrap (apt-get install -y mmdebstrap)" >&2; exit 4; }
        local tmp
        tmp="$(mktemp -d)"
        echo ">> base ${ref}: ${recipe[*]} ${mirror}" >&2
        "${recipe[@]}" - "$mirror" >"$tmp/base.tar"
        "$DOCKER" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["/bin/bash"]' "$tmp/base.tar" "$ref" >&2
        rm -rf "$tmp"
    fi
    echo "$ref"
}

# --offline: serve TORCH_WHEELS as a PEP 503 index on 127.0.0.1 (until exit) at TORCH_INDEX.
serve_wheels() {
    local wheels="${TORCH_WHEELS}"
    local dir port
    dir="$(mktemp -d)"
    python3 - "$wheels" "$dir/simple" <<'PY'
import re, sys
from pathlib import Path

wheels, simple = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
projects: dict[str, list[Path]] = {}
for wheel in sorted(wheels.glob("*.whl")):
    name = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
    projects.setdefault(name, []).append(wheel)
for name, files in projects.items():
    folder = simple / name
    folder.mkdir(parents=True)
    links = []
    for f in files:
        (folder / f.name).symlink_to(f)
        links.append(f'<a href="{f.name}">{f.name}</a><br>')
    (folder / "index.html").write_text("<html><body>\n" + "\n".join(links) + "\n</body></html>\n")
PY
    # A fixed port, so the index URL (a build argument: part of the layer cache key) stays the
    # same between builds; the next ones while another build serves there.
    local first="${TORCH_INDEX_PORT:-38517}" port pid
    for port in $(seq "$first" $((first + 19))); do
        python3 -c "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$port" 2>/dev/null && continue
        python3 -m http.server --bind 127.0.0.1 --directory "$dir" "$port" >"$dir/http.log" 2>&1 &
        pid=$!
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break  # could not bind: taken meanwhile
            if python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1])" \
                    "http://127.0.0.1:${port}/simple/torch/" 2>/dev/null && kill -0 "$pid" 2>/dev/null; then
                cleanup+=("kill $pid 2>/dev/null; rm -rf '$dir'")
                TORCH_INDEX="http://127.0.0.1:${port}/simple"
                return 0
            fi
            sleep 0.1
        done
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
    echo "error: no free port for the torch index on 127.0.0.1:${first}-$((first + 19)); set TORCH_INDEX_PORT" >&2
    exit 4
}

# Every input is checked before the first slow step (the base takes minutes to make).
if [[ "$OFFLINE" == 1 ]]; then
    if [[ " ${targets[*]} " == *" cpu "* ]] && { [[ -z "${TORCH_WHEELS:-}" || ! -d "${TORCH_WHEELS}" ]] \
            || ! compgen -G "${TORCH_WHEELS}/torch-*.whl" >/dev/null; }; then
        echo "error: --offline needs TORCH_WHEELS, a folder holding the torch wheel (got '${TORCH_WHEELS:-}')" >&2
        exit 4
    fi
    ca="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
    if [[ -n "${CA_BUNDLE:-}" && ! -f "$ca" ]]; then
        echo "error: CA_BUNDLE=${CA_BUNDLE} is not a file" >&2; exit 4
    fi
fi
if ! daemon_error="$("$DOCKER" info --format '{{.ServerVersion}}' 2>&1)"; then
    echo "error: the Docker daemon at ${DOCKER_HOST:-its default socket} does not answer ($(tail -n1 <<<"$daemon_error")); start one or set DOCKER_HOST" >&2
    exit 4
fi

if [[ "$OFFLINE" == 1 ]]; then
    base="$(offline_base)"
    build_args+=(--network host --build-arg "BASE_IMAGE=${base}")
    if [[ -f "$ca" ]]; then
        build_args+=(--secret "id=pip_ca,src=${ca}")
    fi
    if [[ " ${targets[*]} " == *" cpu "* ]]; then
        serve_wheels
        build_args+=(--build-arg "TORCH_INDEX_URL=${TORCH_INDEX}")
    fi
fi

declare -A refs
for target in "${targets[@]}"; do
    case "$target" in
        cpu|gpu) context="." ;;
        mlflow) context="images" ;;
    esac
    if [[ -n "$REGISTRY" ]]; then
        ref="${REGISTRY}/ptdistill-${target}:${TAG}"
    else
        ref="ptdistill-${target}:${TAG}"
    fi
    echo ">> building ${ref}" >&2
    start=$SECONDS
    "$DOCKER" build -f "images/Dockerfile.${target}" -t "$ref" "${build_args[@]}" \
        --label "org.opencontainers.image.revision=$(git rev-parse HEAD)" "$context"
    echo ">> built ${ref} in $((SECONDS - start)) s" >&2
    if [[ "$PUSH" == 1 ]]; then
        "$DOCKER" push "$ref"
    fi
    refs[$target]="$ref"
done

if [[ "$LOAD" == 1 ]]; then
    # Local images: nothing committed is rewritten; components/images.py reads these at compile time.
    for target in "${targets[@]}"; do
        echo "export PTDISTILL_${target^^}_IMAGE=${refs[$target]}"
    done
    exit 0
fi

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
exit 0
}
