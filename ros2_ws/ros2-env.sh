# Source me (bash): a ROS 2 environment for building and testing ros2_ws.
#
#   source ros2_ws/ros2-env.sh
#
# 1. An installed ROS 2 (Jazzy or Humble under /opt/ros, e.g. from apt on Ubuntu) is used when there is one.
# 2. Otherwise the minimal ROS 2 Jazzy underlay from ../shared/ros2 is built once (about 6 minutes on 2 cores,
#    idempotent) into $METAGAIT_ROS2_PREFIX (default ~/.cache/metagait-edge/ros2-jazzy) and sourced; its
#    env.sh keeps Cyclone DDS discovery on the loopback interface.
# 3. ROS_DOMAIN_ID is left as it is (unset: ROS's default, 0), so that every terminal that sources this file
#    sees the same graph (launch in one, `ros2 action send_goal` in another). With METAGAIT_ROS_DOMAIN_UNIQUE=1
#    (`make test-ros2`) it is set per shell from its PID, so that concurrent test runs on one machine never see
#    each other's topics.
# 4. The workspace's own install/setup.bash is sourced when it exists (after `make ros2-ws`).
# 5. METAGAIT_DATA defaults to ../shared/data beside the project when that folder exists, as in the Makefile.
#
# Needs bash; sets METAGAIT_ROS2_SOURCE to what it used.

_metagait_ws="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_metagait_root="$(dirname "$_metagait_ws")"
METAGAIT_ROS2_SOURCE=""
for _distro in jazzy humble; do
  if [ -z "$METAGAIT_ROS2_SOURCE" ] && [ -f "/opt/ros/$_distro/setup.bash" ]; then
    # shellcheck disable=SC1090
    source "/opt/ros/$_distro/setup.bash"
    METAGAIT_ROS2_SOURCE="/opt/ros/$_distro"
    # Tests must never send DDS traffic to other hosts.
    export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST  # Jazzy
    export ROS_LOCALHOST_ONLY=1                     # Humble (ignored, with a deprecation note, on Jazzy)
  fi
done
if [ -z "$METAGAIT_ROS2_SOURCE" ]; then
  _metagait_prefix="${METAGAIT_ROS2_PREFIX:-$HOME/.cache/metagait-edge/ros2-jazzy}"
  _metagait_underlay="${METAGAIT_ROS2_UNDERLAY:-$_metagait_root/../shared/ros2/build-underlay}"
  if [ ! -f "$_metagait_prefix/env.sh" ] || [ ! -f "$_metagait_prefix/.complete" ]; then
    if [ ! -x "$_metagait_underlay" ]; then
      echo "ros2-env.sh: no ROS 2 under /opt/ros and no underlay builder at $_metagait_underlay" >&2
      return 1 2>/dev/null || exit 1
    fi
  fi
  if [ -x "$_metagait_underlay" ]; then
    # Idempotent: returns at once when the underlay at this prefix matches the source archive.
    "$_metagait_underlay" "$_metagait_prefix" || { return 1 2>/dev/null || exit 1; }
  fi
  # shellcheck disable=SC1091
  source "$_metagait_prefix/env.sh"
  METAGAIT_ROS2_SOURCE="$_metagait_prefix"
fi
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_cyclonedds_cpp}"
if [ -n "${METAGAIT_ROS_DOMAIN_UNIQUE:-}" ]; then
  # 1..100: valid for Cyclone DDS on Linux; distinct per shell, so parallel test runs do not cross-talk.
  export ROS_DOMAIN_ID=$(( ($$ % 100) + 1 ))
fi
if [ -f "$_metagait_ws/install/setup.bash" ]; then
  # shellcheck disable=SC1091
  source "$_metagait_ws/install/setup.bash"
fi
# The data root, as the Makefile sets it: ../shared/data beside the project when it exists (README, Data).
if [ -z "${METAGAIT_DATA:-}" ] && [ -d "$_metagait_root/../shared/data" ]; then
  export METAGAIT_DATA="$(cd "$_metagait_root/../shared/data" && pwd)"
fi
export METAGAIT_ROS2_SOURCE
unset _metagait_ws _metagait_root _metagait_prefix _metagait_underlay _distro
