"""The deployment lock: one process at a time inside, none when unset."""

import fcntl
import os
import subprocess
import sys

import pytest

from aihwkit_nabn.utils.locks import exclusive

HOLDER = """
import sys
from aihwkit_nabn.utils.locks import exclusive
with exclusive(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()  # hold until the test says so
"""


def _try_lock(path) -> bool:
    """Whether this process can take the lock now (without waiting)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_another_process_waits_while_one_holds_the_lock(tmp_path):
    path = tmp_path / "locks" / "deploy.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not _try_lock(path)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
        assert _try_lock(path)
    finally:
        holder.kill()


def test_the_lock_is_released_after_an_error_and_is_a_no_op_when_unset(tmp_path):
    path = tmp_path / "deploy.lock"
    with pytest.raises(RuntimeError):
        with exclusive(path):
            raise RuntimeError("boom")
    assert _try_lock(path)
    with exclusive(None), exclusive(""):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy.lock"]
