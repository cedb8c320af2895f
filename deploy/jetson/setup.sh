#!/usr/bin/env bash
# metagait-edge on a Jetson Orin: JetPack 6.1+ (L4T R36.4, Ubuntu 22.04, Python 3.10, CUDA 12.6,
# TensorRT 10.3) with ROS 2 Humble. Run from the repository root as a user with sudo:
#
#   deploy/jetson/setup.sh [--models DIR] [--precision fp16|int8] [--calibration NPZ...] [--no-ros] [--no-service]
#
# Steps: system packages -> venv that sees JetPack's TensorRT (--system-site-packages) -> NVIDIA's torch
# wheel for JetPack -> metagait-edge + export extras -> engines for the exported models (cached by model
# hash, TensorRT version, GPU and precision) -> /etc/metagait-edge/edge.yaml -> systemd unit.
set -euo pipefail

PREFIX=/opt/metagait-edge
VENV="$PREFIX/venv"
MODELS="$PREFIX/models"
PRECISION=fp16
CALIBRATION=()
WITH_ROS=1
WITH_SERVICE=1
SERVICE_USER="${SUDO_USER:-$USER}"
# NVIDIA's PyTorch wheels for JetPack 6 (https://developer.download.nvidia.com/compute/redist/jp/ or the
# jetson-ai-lab index). Override with TORCH_WHEEL=/path/to/torch-*.whl for an offline install.
TORCH_INDEX="${TORCH_INDEX:-https://pypi.jetson-ai-lab.dev/jp6/cu126}"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --models) MODELS="$2"; shift 2 ;;
    --precision) PRECISION="$2"; shift 2 ;;
    --calibration) shift; while [[ $# -gt 0 && "$1" != --* ]]; do CALIBRATION+=("$1"); shift; done ;;
    --no-ros) WITH_ROS=0; shift ;;
    --no-service) WITH_SERVICE=0; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
log() { printf '\n== %s\n' "$*"; }

log "checking the platform"
if [[ ! -f /etc/nv_tegra_release ]]; then
  echo "setup.sh: /etc/nv_tegra_release not found: this is not a Jetson (L4T). Aborting." >&2; exit 1
fi
head -n1 /etc/nv_tegra_release
python3 -c 'import sys; assert sys.version_info[:2] == (3, 10), sys.version' \
  || { echo "setup.sh: JetPack 6 ships Python 3.10; found $(python3 --version)" >&2; exit 1; }
python3 -c 'import tensorrt as trt; print("TensorRT", trt.__version__); assert int(trt.__version__.split(".")[0]) >= 10' \
  || { echo "setup.sh: TensorRT 10 Python bindings missing: sudo apt install nvidia-jetpack (JetPack >= 6.1)" >&2; exit 1; }

log "system packages"
sudo apt-get update
sudo apt-get install -y python3-venv python3-pip libopenblas-dev libzmq5 git
if [[ $WITH_ROS -eq 1 ]]; then
  if [[ ! -f /opt/ros/humble/setup.bash ]]; then
    sudo apt-get install -y software-properties-common curl
    sudo add-apt-repository -y universe
    sudo curl -sSL https://raw.githubusercontent.com/ros/rosdistro/master/ros.key -o /usr/share/keyrings/ros-archive-keyring.gpg
    echo "deb [arch=$(dpkg --print-architecture) signed-by=/usr/share/keyrings/ros-archive-keyring.gpg] http://packages.ros.org/ros2/ubuntu jammy main" \
      | sudo tee /etc/apt/sources.list.d/ros2.list >/dev/null
    sudo apt-get update
  fi
  sudo apt-get install -y ros-humble-ros-base ros-humble-rmw-cyclonedds-cpp python3-colcon-common-extensions
fi

log "virtual environment $VENV (sees JetPack's tensorrt through system site-packages)"
sudo mkdir -p "$PREFIX" "$MODELS" /etc/metagait-edge
sudo chown -R "$SERVICE_USER" "$PREFIX"
python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install --upgrade pip
if [[ -n "${TORCH_WHEEL:-}" ]]; then
  "$VENV/bin/pip" install "$TORCH_WHEEL"
else
  "$VENV/bin/pip" install --extra-index-url "$TORCH_INDEX" torch
fi
"$VENV/bin/python" -c 'import torch; assert torch.cuda.is_available(), "torch has no CUDA: install the JetPack wheel"; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
# The project pins the desktop torch version; on the Jetson NVIDIA's wheel is the one to keep.
"$VENV/bin/pip" install --no-deps -e "$REPO"
awk '/^dependencies = \[/{f=1; next} f && /^\]/{exit} f' "$REPO/pyproject.toml" \
  | sed -n 's/^ *"\([^"]*\)",*/\1/p' | grep -v '^torch' | xargs "$VENV/bin/pip" install
"$VENV/bin/pip" install "onnx>=1.15" "onnxruntime>=1.17" polygraphy
"$VENV/bin/metagait-edge" info
# The gait-phase path is compiled (numba) once now and cached beside the sources, not at the service's first start.
"$VENV/bin/python" -c "from metagait_edge.phase.model import precompile; precompile()"

log "TensorRT engines ($PRECISION) for the models in $MODELS"
shopt -s nullglob
CAL_ARGS=()
if [[ "$PRECISION" == int8 ]]; then
  [[ ${#CALIBRATION[@]} -gt 0 ]] || { echo "setup.sh: --precision int8 needs --calibration NPZ..." >&2; exit 1; }
  CAL_ARGS=(--calibration "${CALIBRATION[@]}")
fi
onnx_files=("$MODELS"/*.onnx)
if [[ ${#onnx_files[@]} -eq 0 ]]; then
  echo "no ONNX models in $MODELS: export them on the workstation (docs/deploy.md) and copy them here"
fi
for onnx in "${onnx_files[@]}"; do
  golden="${onnx%.onnx}.golden.npz"
  args=(--onnx "$onnx" --precision "$PRECISION" --cache "$PREFIX/engines" "${CAL_ARGS[@]}")
  [[ -f "$golden" ]] && args+=(--golden "$golden")
  "$VENV/bin/metagait-edge" build-engine "${args[@]}"
done

log "configuration /etc/metagait-edge/edge.yaml"
if [[ ! -f /etc/metagait-edge/edge.yaml ]]; then
  sudo install -m 0644 "$REPO/deploy/jetson/edge.yaml" /etc/metagait-edge/edge.yaml
else
  echo "keeping the existing /etc/metagait-edge/edge.yaml"
fi

if [[ $WITH_SERVICE -eq 1 ]]; then
  log "systemd unit metagait-edge.service"
  sed -e "s|@VENV@|$VENV|g" -e "s|@USER@|$SERVICE_USER|g" -e "s|@PREFIX@|$PREFIX|g" \
    "$REPO/deploy/jetson/metagait-edge.service" | sudo tee /etc/systemd/system/metagait-edge.service >/dev/null
  sudo systemctl daemon-reload
  sudo systemctl enable metagait-edge.service
  echo "start it with: sudo systemctl start metagait-edge; logs: journalctl -u metagait-edge -f"
fi
log "done"
