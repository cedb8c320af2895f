from glob import glob

from setuptools import setup

package_name = "metagait_edge"

setup(
    # The distribution is metagait_edge_ros: the library is the distribution metagait-edge, and two
    # distributions whose names normalise alike make console scripts resolve by sys.path order.
    name="metagait_edge_ros",
    version="0.1.0",
    # The Python module is metagait_edge_ros so that it never shadows the metagait_edge library.
    packages=["metagait_edge_ros"],
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="metagait-edge maintainers",
    maintainer_email="maintainers@metagait-edge.invalid",
    description="ROS 2 nodes of metagait-edge: IMU, camera/identity, gait trajectory, few-shot calibration",
    license="Apache-2.0",
    # setuptools >= 72 ignores tests_require; colcon test reads the "test" extra.
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "imu_node = metagait_edge_ros.imu_node:main",
            "camera_node = metagait_edge_ros.camera_node:main",
            "trajectory_node = metagait_edge_ros.trajectory_node:main",
            "calibration_node = metagait_edge_ros.calibration_node:main",
        ],
    },
)
