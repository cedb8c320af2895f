from __future__ import annotations

import subprocess
import sys

from metagait_edge.cli import build_parser, main


def test_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert "info" in sub.choices
    for name, p in sub.choices.items():
        assert p.description, f"command {name} has no description"


def test_module_entry_point_matches_console_script():
    out = subprocess.run([sys.executable, "-m", "metagait_edge", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("metagait-edge ")


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_import_does_not_pull_heavy_or_robot_only_modules():
    code = "import sys, metagait_edge, metagait_edge.cli; print(','.join(m for m in ('torch','rclpy','tensorrt','cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
