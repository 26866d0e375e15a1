#!/usr/bin/env bash
# Set up kdprune on a fresh Debian machine (Python 3.11, root): system TTS engines for the
# embedded corpus, a virtual environment in .venv/, and the package (with test extras when
# --test is given). Idempotent: a second run only checks and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for cmd in espeak-ng flite text2wave sox; do
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$cmd")
done
[ -d /usr/share/wordnet ] || need_apt+=(wordnet)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] installing system packages (missing: ${need_apt[*]})" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng flite festival sox wordnet-base >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $PY" >&2
  "$PY" -m venv .venv
fi
extras=""
# hf: the Hugging Face import tests run in CI; onnx: the ONNX export and runtime tests
[ "${1:-}" = "--test" ] && extras="[test,hf,onnx]"
stamp=".venv/.kdprune-installed${extras:+-test}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing kdprune$extras into .venv (torch is large: a few minutes)" >&2
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".${extras}"
  touch "$stamp"
fi
echo "[setup] ready: $(.venv/bin/python -c 'import torch, torchaudio, ray; print("torch", torch.__version__, "torchaudio", torchaudio.__version__, "ray", ray.__version__)')" >&2
