#!/bin/sh
# Installs IBM ContextForge (PyPI: mcp-contextforge-gateway) into bench/.peers/contextforge, a venv of its own made
# with Python 3.12 (ContextForge needs >= 3.12; Chamberlain's venv is 3.11). bench/mcp_proxy_bench.py runs it from
# there. Idempotent: a finished install leaves a stamp and is not repeated.
#   PYTHON312=/path/to/python3.12 bench/peers/install_contextforge.sh   # another interpreter
set -eu

VERSION="${CONTEXTFORGE_VERSION:-1.1.0}"  # the version bench/peers/contextforge.md was written against
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="$ROOT/bench/.peers/contextforge"
STAMP="$VENV/.installed-$VERSION"

[ -f "$STAMP" ] && exit 0

find_python() {
    if [ -n "${PYTHON312:-}" ]; then echo "$PYTHON312"; return; fi
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12.*/bin/python3.12; do
        [ -x "$candidate" ] && { echo "$candidate"; return; }
    done
    command -v python3.12 || true
}

PYTHON="$(find_python)"
if [ -z "$PYTHON" ]; then
    echo "install_contextforge: no Python 3.12 found (pyenv install 3.12, or set PYTHON312)" >&2
    exit 1
fi

echo "installing mcp-contextforge-gateway $VERSION with $PYTHON into $VENV (a minute or two)"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "mcp-contextforge-gateway==$VERSION"
touch "$STAMP"
