#!/usr/bin/env bash
# One-command setup on a fresh Debian/Ubuntu machine (idempotent: safe to re-run).
#
#   bash scripts/setup.sh            # runtime: system GL libraries + .venv with vla-rl
#   bash scripts/setup.sh --dev      # + test tools, Ray and the Meta-World adapter
#   bash scripts/setup.sh --extras dist,wandb   # any extras of pyproject.toml
#
# Environment: VENV (default .venv), PYTHON (default python3).
# On machines without an NVIDIA GPU, torch is pinned to the local CPU build (torch==2.13.0) and
# every install runs with scripts/constraints-cpu.txt, so no CUDA wheels (and no torchvision,
# which breaks transformers' image utilities on CPU) are pulled.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS=""
die() { echo "setup.sh: error: $*" >&2; exit 1; }
say() { echo "setup.sh: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dev) EXTRAS="${EXTRAS:+$EXTRAS,}dev,metaworld,dist" ;;
    --extras) shift; [ $# -gt 0 ] || die "--extras needs a value, e.g. --extras dist,wandb"; EXTRAS="${EXTRAS:+$EXTRAS,}$1" ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (use --dev, --extras LIST or --help)" ;;
  esac
  shift
done

# --- system packages for offscreen MuJoCo rendering (EGL via Mesa, OSMesa as fallback) -------
SYSTEM_PACKAGES="libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6"
missing=""
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in $SYSTEM_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null 2>&1 || die "missing system packages:$missing; install them as root: apt-get install -y$missing"
      SUDO="sudo"
    fi
    say "installing system packages:$missing"
    $SUDO apt-get update -qq || die "apt-get update failed (no access to the Debian package mirror?)"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null \
      || die "apt-get install$missing failed"
  else
    say "system packages present ($SYSTEM_PACKAGES)"
  fi
else
  say "not a Debian system: make sure libEGL (Mesa) or libOSMesa is installed for offscreen rendering"
fi

# --- Python virtual environment -------------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; install Python >= 3.10"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "Python >= 3.10 required, found $("$PYTHON" --version)"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV" || die "could not create $VENV (on Debian: apt-get install python3-venv)"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip setuptools wheel || die "could not upgrade pip in $VENV"

CONSTRAINTS=()
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  say "NVIDIA GPU found: installing the default (CUDA) torch build"
else
  say "no GPU: pinning the CPU build torch==2.13.0 and the known-good CPU versions"
  CONSTRAINTS=(-c scripts/constraints-cpu.txt)
  "${PIP[@]}" install -q torch==2.13.0 || die "pip install torch==2.13.0 failed"
fi

TARGET="."
[ -n "$EXTRAS" ] && TARGET=".[$EXTRAS]"
say "installing vla-rl ($TARGET)"
"${PIP[@]}" install -q "${CONSTRAINTS[@]}" -e "$TARGET" || die "pip install -e '$TARGET' failed"

# --- checks ---------------------------------------------------------------------------------
if [ ${#CONSTRAINTS[@]} -gt 0 ]; then
  "$VENV/bin/python" - <<'PY' || die "the CPU environment is not as expected (see above)"
import importlib.util, sys
import torch
if torch.version.cuda is not None or not torch.__version__.startswith("2.13.0"):
    sys.exit(f"torch {torch.__version__} (cuda {torch.version.cuda}) was installed instead of the CPU build 2.13.0")
if importlib.util.find_spec("torchvision") is not None:
    sys.exit("torchvision is installed; on CPU it breaks transformers' image utilities: pip uninstall -y torchvision")
PY
fi
"$VENV/bin/python" - <<'PY' || die "offscreen rendering does not work; see the error above"
import gymnasium as gym, os
import envs
env = gym.make("VLARL/Reach-v0", image_size=32)
obs, _ = env.reset(seed=0)
assert obs["image"].any(), "rendered an all-black frame"
env.close()
print(f"setup.sh: rendering works (MUJOCO_GL={os.environ['MUJOCO_GL']})")
PY
say "done. Python: $VENV/bin/python"
