"""Static checks of the ROS 2 workspace that need no ROS 2 installation."""

from __future__ import annotations

import ast
import configparser
import importlib.util
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "ros2_ws" / "src"
PKG = SRC / "metagait_edge"
IFACES = SRC / "metagait_edge_interfaces"

# Python import (top-level module) -> rosdep key / ROS package that provides it.
IMPORT_TO_DEPEND = {
    "rclpy": "rclpy", "sensor_msgs": "sensor_msgs", "std_msgs": "std_msgs", "trajectory_msgs": "trajectory_msgs",
    "builtin_interfaces": "builtin_interfaces", "lifecycle_msgs": "lifecycle_msgs",
    "metagait_edge_interfaces": "metagait_edge_interfaces", "launch": "launch", "launch_ros": "launch_ros",
    "launch_testing": "launch_testing", "launch_testing_ros": "launch_testing_ros",
    "ament_index_python": "ament_index_python", "numpy": "python3-numpy", "cv2": "python3-opencv",
    "yaml": "python3-yaml", "serial": "python3-serial", "zmq": "python3-zmq", "pytest": "python3-pytest",
    "rcl_interfaces": "rcl_interfaces", "action_msgs": "action_msgs",
}
# Not rosdep keys: the package's own module, and the metagait_edge library (pip, see docs/ros2.md).
NOT_ROSDEP = {"metagait_edge_ros", "metagait_edge", "conftest"}


def _depends(package_xml: Path) -> dict[str, set[str]]:
    root = ET.parse(package_xml).getroot()
    assert root.tag == "package" and root.get("format") == "3", f"{package_xml}: not a format 3 package.xml"
    kinds: dict[str, set[str]] = {}
    for el in root:
        kinds.setdefault(el.tag, set()).add((el.text or "").strip())
    return kinds


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _third_party(names: set[str]) -> set[str]:
    return {n for n in names if n not in sys.stdlib_module_names and n not in NOT_ROSDEP and n != "__future__"}


def test_package_xmls_parse_with_required_fields():
    for xml in (PKG / "package.xml", IFACES / "package.xml"):
        kinds = _depends(xml)
        for tag in ("name", "version", "description", "maintainer", "license"):
            assert kinds.get(tag) and all(kinds[tag]), f"{xml}: missing <{tag}>"
    assert _depends(PKG / "package.xml")["name"] == {"metagait_edge"}
    iface = _depends(IFACES / "package.xml")
    assert iface["name"] == {"metagait_edge_interfaces"}
    assert "rosidl_interface_packages" in iface["member_of_group"]
    assert {"ament_cmake", "rosidl_default_generators"} <= iface["buildtool_depend"]
    assert "rosidl_default_runtime" in iface["exec_depend"]
    # every message package used by the .msg/.action files is a dependency
    used = set()
    for f in list(IFACES.glob("msg/*.msg")) + list(IFACES.glob("action/*.action")):
        used |= set(re.findall(r"^\s*([a-z_]+)/[A-Z]\w*", f.read_text(), re.M))
    assert used <= iface["depend"] | iface.get("build_depend", set())


def test_node_code_imports_are_declared_dependencies():
    kinds = _depends(PKG / "package.xml")
    runtime = kinds.get("exec_depend", set()) | kinds.get("depend", set())
    tests = runtime | kinds.get("test_depend", set())
    code = list((PKG / "metagait_edge_ros").glob("*.py")) + list((PKG / "launch").glob("*.py"))
    assert len(code) >= 8
    for files, declared in ((code, runtime), (list((PKG / "test").glob("*.py")), tests)):
        for path in files:
            for name in _third_party(_imports(path)):
                assert name in IMPORT_TO_DEPEND, f"{path.name}: import {name!r} has no known ROS dependency key"
                assert IMPORT_TO_DEPEND[name] in declared, f"{path.name} imports {name} but package.xml lacks {IMPORT_TO_DEPEND[name]}"


def test_setup_entry_points_name_existing_functions():
    tree = ast.parse((PKG / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: k.value for k in call.keywords}
    assert ast.literal_eval(kw["packages"]) == ["metagait_edge_ros"]
    scripts = ast.literal_eval(kw["entry_points"])["console_scripts"]
    names = set()
    for spec in scripts:
        name, target = (s.strip() for s in spec.split("="))
        module, func = target.split(":")
        pkg, mod = module.split(".")
        assert pkg == "metagait_edge_ros"
        path = PKG / pkg / f"{mod}.py"
        assert path.is_file(), f"entry point {name}: {path} missing"
        funcs = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
        assert func in funcs, f"entry point {name}: {module} has no function {func}"
        names.add(name)
    assert names == {"imu_node", "camera_node", "trajectory_node", "calibration_node"}
    data_files = ast.unparse(kw["data_files"])
    for needed in ("resource_index/packages", "package.xml", "/launch", "/config"):
        assert needed in data_files
    assert (PKG / "resource" / "metagait_edge").is_file()
    assert not (PKG / "metagait_edge").exists(), "a metagait_edge folder here would shadow the library"
    cfg = configparser.ConfigParser()
    cfg.read(PKG / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/metagait_edge"
    assert cfg["install"]["install_scripts"] == "$base/lib/metagait_edge"


def test_nodes_are_managed_and_action_runs_off_the_executor_thread():
    def bases(path: Path) -> dict[str, set[str]]:
        out = {}
        for n in ast.parse(path.read_text()).body:
            if isinstance(n, ast.ClassDef):
                out[n.name] = {ast.unparse(b) for b in n.bases}
        return out

    src = PKG / "metagait_edge_ros"
    for mod, cls in (("imu_node", "ImuNode"), ("camera_node", "CameraNode"), ("trajectory_node", "TrajectoryNode")):
        assert bases(src / f"{mod}.py")[cls] == {"LifecycleNode"}
    calib = (src / "calibration_node.py").read_text()
    names = {n.id for n in ast.walk(ast.parse(calib)) if isinstance(n, ast.Name)}
    assert {"ActionServer", "MultiThreadedExecutor", "ReentrantCallbackGroup", "Calibrate"} <= names


def _launch_arguments() -> dict[str, str]:
    tree = ast.parse((PKG / "launch" / "gait.launch.py").read_text())
    assign = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "ARGUMENTS")
    args = ast.literal_eval(assign.value)
    assert "DeclareLaunchArgument" in ast.unparse(tree)
    return {k: v[0] for k, v in args.items()}


def test_launch_declares_every_documented_argument():
    args = _launch_arguments()
    required = {"serial_port", "camera", "zmq_endpoint", "backend", "model_path", "engine_path", "use_camera", "namespace"}
    assert required <= set(args)
    doc = (ROOT / "docs" / "ros2.md").read_text()
    section = doc.split("### Launch arguments", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
    assert documented == set(args)
    sys.path.insert(0, str(PKG))
    try:
        from metagait_edge_ros.params import GaitParams
    finally:
        sys.path.remove(str(PKG))
    defaults = GaitParams()
    for name, value in args.items():
        if hasattr(defaults, name):
            assert str(getattr(defaults, name)).lower() == value.lower(), f"launch default of {name} differs from gait.yaml schema"


@pytest.fixture
def params_module():
    sys.path.insert(0, str(PKG))
    try:
        from metagait_edge_ros import params
        yield params
    finally:
        sys.path.remove(str(PKG))


def test_parameter_yaml_matches_schema(params_module):
    import dataclasses

    from metagait_edge.config import ConfigError

    path = PKG / "config" / "gait.yaml"
    params = params_module.load_params_file(path)
    assert params == params_module.GaitParams()  # the shipped file is the demo configuration
    data = yaml.safe_load(path.read_text())
    keys = set(data["/**"]["ros__parameters"])
    assert keys <= {f.name for f in dataclasses.fields(params_module.GaitParams)}
    data["/**"]["ros__parameters"]["serial_prot"] = "/dev/ttyUSB0"
    with pytest.raises(ConfigError, match="serial_prot"):
        params_module.params_from_ros_yaml(data, "gait.yaml")
    data["/**"]["ros__parameters"].pop("serial_prot")
    data["/**"]["ros__parameters"]["baud_rate"] = "fast"
    with pytest.raises(ConfigError, match="baud_rate"):
        params_module.params_from_ros_yaml(data, "gait.yaml")
    with pytest.raises(ConfigError, match="/\\*\\*"):
        params_module.params_from_ros_yaml({"imu_node": data["/**"]}, "gait.yaml")
    with pytest.raises(ConfigError, match="backend"):
        params_module.params_from_ros_yaml({"/**": {"ros__parameters": {"backend": "tensorrt10"}}})


def test_every_ros_python_file_parses_and_rclpy_is_never_faked():
    for path in list(PKG.rglob("*.py")):
        ast.parse(path.read_text(), str(path))
    spec = importlib.util.find_spec("rclpy")
    if spec is not None:
        assert ROOT not in Path(spec.origin or "/").parents, "an rclpy module inside the repository"
    assert not list(ROOT.glob("**/rclpy.py")) and not list(ROOT.glob("**/rclpy/__init__.py"))
