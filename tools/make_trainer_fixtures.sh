#!/usr/bin/env bash
# Remake tests/fixtures/trainers/{trl,llamafactory,torchtune} with the real trainers, each in its own
# throwaway venv under ${VENVS:-/tmp} (never the project's venv; CI installs none of these).
#   bash tools/make_trainer_fixtures.sh [trl|llamafactory|torchtune ...]    (default: all three)
# Pinned: TRL 1.16.0, LLaMA-Factory 0.9.5, torchtune 0.6.1, torch 2.13.0 (CPU). No hub access needed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venvs="${VENVS:-/tmp}"
declare -A packages=(
  [trl]="trl==1.16.0"
  [llamafactory]="llamafactory==0.9.5"
  [torchtune]="torchtune==0.6.1 torchao==0.10.0 transformers tokenizers"
)
for trainer in "${@:-trl llamafactory torchtune}"; do
  for name in $trainer; do
    venv="$venvs/venv-fixture-$name"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install -q torch==2.13.0 ${packages[$name]}
    if [ "$name" = llamafactory ]; then
      # torchaudio (a hard import of LLaMA-Factory's mm_plugin) has no build for torch 2.13: its newest, 2.11.1,
      # is kept without its C extension (text DPO uses none of it), and torchvision (imported by transformers when
      # present, its ops unloadable on this torch) is removed.
      "$venv/bin/pip" uninstall -q -y torchvision || true
      "$venv/bin/pip" install -q --no-deps torchaudio==2.11.1
      rm -f "$venv"/lib/python3*/site-packages/torchaudio/lib/*torchaudio*.so
    fi
    out="$root/tests/fixtures/trainers/$name"
    rm -rf "$out"
    PYTHONHASHSEED=0 CUDA_VISIBLE_DEVICES="" "$venv/bin/python" "$root/tools/make_trainer_fixtures.py" "$name" "$out"
  done
done
