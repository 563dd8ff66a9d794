#!/bin/sh
# Installs Microsoft Presidio's analyzer (PyPI: presidio-analyzer) into bench/.peers/presidio, a venv of its own, with
# its evaluator's data generator (presidio-evaluator) when that installs. bench/dlp_bench.py runs bench/_presidio_run.py
# there. No spaCy model is downloaded: the bench runs Presidio's pattern recognizers with an NLP engine that does
# nothing (see bench/_presidio_run.py), fully offline.
# Idempotent: a finished install leaves a stamp and is not repeated.
#   PRESIDIO_VERSION=2.2.366 bench/peers/install_presidio.sh    # another version
set -eu

VERSION="${PRESIDIO_VERSION:-2.2.366}"  # the versions the figures in bench/README.md were measured with
EVALUATOR_VERSION="${PRESIDIO_EVALUATOR_VERSION:-0.3.2}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="$ROOT/bench/.peers/presidio"
STAMP="$VENV/.installed-$VERSION"
PYTHON="${PYTHON:-python3}"

[ -f "$STAMP" ] && exit 0

echo "installing presidio-analyzer $VERSION with $PYTHON into $VENV (a minute or two)"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "presidio-analyzer==$VERSION"
# presidio-evaluator (with Faker) writes the second corpus the bench scores; it brings scipy, pandas and transformers
# (no model), so it is optional: without it the bench prints that it skipped that corpus.
if ! "$VENV/bin/python" -m pip install --quiet "presidio-evaluator==$EVALUATOR_VERSION"; then
    echo "install_presidio: presidio-evaluator did not install; dlp_bench.py will skip its corpus" >&2
fi
touch "$STAMP"
