# Two entry points for users: `make demo` (the main job) and `make test` (the test suite).
# Each creates the virtual environment it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# ROS 2: /opt/ros/{jazzy,humble} when installed, else the underlay built from ../shared/ros2 (ros2_ws/ros2-env.sh).
ROS2_ENV := source ros2_ws/ros2-env.sh
COLCON := $(abspath $(BIN))/colcon
# The data root: ../shared/data beside the project when it exists, else the user's cache (see README).
ifneq ($(wildcard ../shared/data),)
export METAGAIT_DATA ?= $(abspath ../shared/data)
endif

.PHONY: venv demo eval-quick test test-lib test-ros2 test-fast test-camera-models ros2-ws clean

# The last step compiles the gait-phase path (numba) once and caches it, not at the runtime's first start.
$(BIN)/metagait-edge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,ros2-dev]"
	$(BIN)/python -c "from metagait_edge.phase.model import precompile; precompile()"
	touch $@

venv: $(BIN)/metagait-edge

demo: venv
	$(BIN)/metagait-edge demo --json demo_summary.json

eval-quick: venv
	$(BIN)/metagait-edge eval-personalization --quick --json personalization_quick.json

# The library's tests, the camera front end with its pre-trained segmentation model (its own venv, below), then
# the ROS 2 packages' tests on a real ROS 2 (launch, nodes, actions, DDS on loopback).
test: test-lib test-camera-models test-ros2

test-lib: venv
	$(BIN)/python -m pytest -q

# colcon builds ros2_ws with the venv's Python, so the node scripts run with the library installed.
ros2-ws: venv
	$(ROS2_ENV) && cd ros2_ws && $(COLCON) build --symlink-install --event-handlers console_cohesion- status- \
	  --cmake-args -DPython3_EXECUTABLE=$(abspath $(BIN))/python -DBUILD_TESTING=OFF --no-warn-unused-cli

test-ros2: ros2-ws
	export METAGAIT_ROS_DOMAIN_UNIQUE=1 && $(ROS2_ENV) && cd ros2_ws && echo "ROS 2 from $$METAGAIT_ROS2_SOURCE, ROS_DOMAIN_ID=$$ROS_DOMAIN_ID" && \
	  $(COLCON) test --packages-select metagait_edge --event-handlers console_direct+ \
	    --pytest-args -q -p no:cacheprovider && \
	  $(COLCON) test-result --verbose

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow"

# The camera front end with its pre-trained segmentation model (mediapipe 0.10.21 needs NumPy < 2): its own
# environment, so the main one keeps NumPy 2. CI keeps it in the user's cache (CAMERA_VENV, set by .ci/run):
# re-running the install there only re-points the editable install at this checkout.
CAMERA_VENV ?= .venv-camera
$(CAMERA_VENV)/bin/metagait-edge: pyproject.toml
	test -x $(CAMERA_VENV)/bin/python || $(PYTHON) -m venv $(CAMERA_VENV)
	$(CAMERA_VENV)/bin/pip install --quiet --upgrade pip
	$(CAMERA_VENV)/bin/pip install --quiet -e ".[dev,camera-models]"
	touch $@

test-camera-models: $(CAMERA_VENV)/bin/metagait-edge
	$(CAMERA_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_camera_frontend.py tests/test_camera.py

clean:
	rm -rf $(VENV) $(CAMERA_VENV) .pytest_cache ros2_ws/build ros2_ws/install ros2_ws/log
