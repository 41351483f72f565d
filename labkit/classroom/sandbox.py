"""Start the grading kernel in a Linux mount namespace that hides the instructor's files.

    unshare -rm python -m labkit.classroom.sandbox --ro DIR ... --hide PATH ... -- KERNEL COMMAND

Inside the namespace every --ro directory is re-mounted read-only and every --hide path is covered by
an empty read-only tmpfs (a file by /dev/null), then the kernel command is exec'd (same pid, so
jupyter_client can still signal it). Nothing outside the namespace changes. `available()` probes
once whether unprivileged user namespaces are allowed here; where they are not (some distributions,
macOS, Windows) the grader runs the kernel without this layer and says so in each report.
"""
from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """True when `unshare -rm` can create a user + mount namespace and mount a tmpfs in it."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    try:
        r = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs none /mnt 2>/dev/null || mount -t tmpfs none /tmp"],
                           capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def wrap(cmd: list[str], readonly: list[Path], hide: list[Path]) -> list[str]:
    """The kernel command prefixed by the namespace launcher."""
    args = ["unshare", "-rm", sys.executable, "-s", "-m", "labkit.classroom.sandbox"]
    for p in readonly:
        args += ["--ro", str(p)]
    for p in hide:
        args += ["--hide", str(p)]
    return args + ["--", *cmd]


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.classroom.sandbox")
    parser.add_argument("--ro", action="append", default=[])
    parser.add_argument("--hide", action="append", default=[])
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    for p in args.ro:
        if os.path.exists(p):
            _mount("--bind", p, p)
            _mount("-o", "remount,bind,ro", p)
    for p in args.hide:
        if os.path.isdir(p):
            _mount("-t", "tmpfs", "-o", "ro,size=4k,mode=555", "labkit-hidden", p)
        elif os.path.exists(p):
            _mount("--bind", "/dev/null", p)
    os.execvp(cmd[0], cmd)
    return 1


if __name__ == "__main__":
    sys.exit(main())
