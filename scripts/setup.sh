#!/usr/bin/env bash
# Build everything the project runs on from nothing, idempotently:
#   Debian packages (libb64 for perf_analyzer), .venv with the locked Python packages,
#   the project itself (editable) and the Helm tooling under .tools/.
# Re-running is cheap: each part is skipped while its inputs are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------------
# libb64-0d: perf_analyzer; prometheus: promtool, which checks the chart's alert rules;
# hey, wrk: compiled HTTP load tools (overload test, FastAPI-vs-Triton baseline).
DEBIAN_PACKAGES=(libb64-0d prometheus hey wrk)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- Python 3.11 virtual environment --------------------------------------------------
PYTHON=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    PYTHON="$candidate"; break
  fi
done
[[ -n "$PYTHON" ]] || { echo "error: Python 3.11 is required (found none on PATH)" >&2; exit 1; }

stamp=".venv/.requirements.sha256"
want="$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  [[ -x .venv/bin/python ]] || { log "creating .venv with $($PYTHON --version)"; "$PYTHON" -m venv .venv; }
  log "installing locked Python packages (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip==24.2
  .venv/bin/python -m pip install -q -r requirements.lock
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi

# --- Helm and the manifest checkers (for the chart tests) ------------------------------
bash scripts/install_helm_tools.sh
log "setup complete"
