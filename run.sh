#!/usr/bin/env bash
# Nukki's one-command entry point on a fresh machine.
#
#   ./run.sh app     set up (first time only) and launch the Streamlit studio
#   ./run.sh api     set up (first time only) and serve the HTTP API on 127.0.0.1:8000
#   ./run.sh test    set up (first time only, with test tools) and run the whole test suite
#   ./run.sh setup   only set up the virtual environment
#
# Environment knobs:
#   PYTHON=python3.11                Python used to create the venv (3.10-3.12; default python3)
#   NUKKI_VENV=.venv                 where the virtual environment lives
#   TORCH_INDEX_URL=...              where torch comes from (default: the PyTorch CPU index;
#                                    e.g. https://download.pytorch.org/whl/cu124 for NVIDIA GPUs)
#   MMCV_WHEELS=../shared/wheels     a folder of prebuilt mmcv wheels, used only when it holds
#                                    one built for the exact torch installed (2.13.0+cpu)
set -euo pipefail
cd "$(dirname "$0")"

TORCH_VERSION=2.13.0
MMCV_VERSION=2.1.0
OPENCV_CONTRIB=opencv-contrib-python==5.0.0.93
VENV=${NUKKI_VENV:-.venv}
PYTHON=${PYTHON:-python3}
MMCV_WHEELS=${MMCV_WHEELS:-../shared/wheels}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}

say() { printf '\033[1m[nukki]\033[0m %s\n' "$*" >&2; }

setup() {
  local with_dev=$1 requirements=requirements.txt stamp
  [ "$with_dev" = 1 ] && requirements=requirements-dev.txt
  stamp="$VENV/.nukki-setup-$(cat requirements.txt "$requirements" run.sh | sha1sum | cut -c1-12)"
  if [ -f "$stamp" ]; then
    return 0
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
  fi
  local py="$VENV/bin/python"
  local pip=("$py" -m pip --disable-pip-version-check)
  "${pip[@]}" install -q --upgrade pip setuptools wheel

  # 1. torch first. Plain PyPI torch is a multi-GB CUDA build, so use the CPU index unless a
  #    wheel of the pinned version is already reachable without an index (a local wheel cache).
  if ! "$py" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    local scratch
    scratch=$(mktemp -d)
    if "${pip[@]}" download -q --no-deps --no-index -d "$scratch" "torch==$TORCH_VERSION" >/dev/null 2>&1; then
      say "installing torch $TORCH_VERSION (local wheel)"
      "${pip[@]}" install -q "torch==$TORCH_VERSION"
    else
      say "installing torch $TORCH_VERSION from $TORCH_INDEX_URL"
      "${pip[@]}" install -q "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple
    fi
    rm -rf "$scratch"
  fi

  # 2. mmcv with its compiled ops, built against that torch (no wheel on PyPI). A prebuilt wheel
  #    only matches the exact torch build it was compiled with, so offer it only then.
  if ! "$py" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
    local links=()
    if [ -d "$MMCV_WHEELS" ] && [ "$("$py" -c 'import torch; print(torch.__version__)')" = "$TORCH_VERSION+cpu" ]; then
      links=(--find-links "$MMCV_WHEELS")
    else
      say "building mmcv $MMCV_VERSION from source: about 40 minutes on 2 cores, once (pip caches the wheel)"
    fi
    "${pip[@]}" install -q ninja psutil
    MMCV_WITH_OPS=1 "${pip[@]}" install -q --no-build-isolation "${links[@]}" "mmcv==$MMCV_VERSION"
  fi

  # 3. everything else, pinned.
  say "installing $requirements"
  "${pip[@]}" install -q -r "$requirements"

  # 3b. Meta's sam2 (SAM 2.1 point prompts), an sdist built against the torch above without its
  #     CUDA extension. --no-deps: its metadata asks for torchvision, which would pull a CUDA torch
  #     from PyPI and whose PyPI wheels do not load beside the CPU torch; Nukki never imports it
  #     (inference/sam2_prompt.py does the resizing itself). Its other dependencies, pinned:
  "${pip[@]}" install -q hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 \
    iopath==0.1.10 portalocker==4.4.2
  if ! "$py" -c "import importlib.metadata as m, sys; sys.exit(m.version('sam2') != '1.1.0')" 2>/dev/null; then
    say "installing sam2 1.1.0 (SAM 2.1 point prompts)"
    SAM2_BUILD_CUDA=0 "${pip[@]}" install -q --no-deps --no-build-isolation sam2==1.1.0
  fi
  "$py" -c "import sam2.build_sam" || { say "sam2 does not import after set-up"; exit 1; }

  # 4. opencv-contrib last: mmengine pulls opencv-python, which shares the cv2 folder and lacks
  #    cv2.ximgproc. Remove the plain builds and put the contrib build back on top.
  "${pip[@]}" uninstall -q -y opencv-python opencv-python-headless >/dev/null 2>&1 || true
  "${pip[@]}" install -q --force-reinstall --no-deps "$OPENCV_CONTRIB"
  "$py" -c "import cv2; cv2.ximgproc.guidedFilter" || { say "cv2.ximgproc is missing after set-up"; exit 1; }

  if [ "$with_dev" = 1 ] && [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing Debian's chromium for the browser test"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      say "the browser test needs /usr/bin/chromium: sudo apt-get install chromium"
    fi
  fi
  rm -f "$VENV"/.nukki-setup-*
  touch "$stamp"
  say "set-up done"
}

case "${1:-app}" in
  setup)
    setup 0
    ;;
  app)
    setup 0
    shift || true
    # glibc's per-thread malloc arenas let a long-running server hold freed memory; two arenas keep
    # RSS flat across rounds of users (bench/app_memory.py).
    export MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-2}
    exec "$VENV/bin/python" -m streamlit run app.py "$@"
    ;;
  api)
    # The HTTP API on NUKKI_API_HOST:NUKKI_API_PORT (default 127.0.0.1:8000); docs at /docs.
    setup 0
    export MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-2}
    exec "$VENV/bin/python" -m api
    ;;
  test)
    setup 1
    shift || true
    # The browser test is part of the suite: missing Chromium is a failure, not a skip.
    export NUKKI_REQUIRE_BROWSER=${NUKKI_REQUIRE_BROWSER:-1}
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: ./run.sh [app|api|test|setup] [extra arguments]" >&2
    exit 2
    ;;
esac
