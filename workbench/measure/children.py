"""Child processes that die with the workbench, even when it is killed.

The harness and Locust run as subprocesses. On a normal end, an error, SIGINT or SIGTERM the
workbench stops them itself; when it is killed (``kill -9``, the OOM killer) nothing does, and an
orphaned server keeps its port and a core. So on Linux each child first asks the kernel for
SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), then becomes the real program with
``exec``: same pid, and no ``preexec_fn`` (unsafe in a threaded parent) runs between fork and exec.

The kernel sends the signal when the *thread* that started the child ends: start children from a
thread that outlives them (the main thread does). Elsewhere than Linux the command runs as given.

Example::

    subprocess.Popen(tied_to_parent([sys.executable, "-m", "serving_harness", "serve", ...]))
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

__all__ = ["tied_to_parent"]

# argv: death signal, the parent's pid, the command. PR_SET_PDEATHSIG is 1. A parent that died
# before prctl took effect is caught by the getppid check (the orphan was re-parented already).
_TIE_SCRIPT = (
    "import ctypes, os, sys\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(1, int(sys.argv[1]), 0, 0, 0) != 0:\n"
    "    sys.exit('prctl(PR_SET_PDEATHSIG) failed: errno %d' % ctypes.get_errno())\n"
    "if os.getppid() != int(sys.argv[2]):\n"
    "    sys.exit(1)\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


def tied_to_parent(command: Sequence[str], death_signal: signal.Signals = signal.SIGKILL) -> list[str]:
    """``command`` wrapped so that the process gets ``death_signal`` when this process dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return list(command)
    # -I -S: the wrapper reads no environment, site or user paths (fast, and nothing of ours runs there);
    # the program it becomes gets the environment Popen was given.
    return [sys.executable, "-I", "-S", "-c", _TIE_SCRIPT, str(int(death_signal)), str(os.getpid()), *command]
