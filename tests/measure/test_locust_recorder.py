"""The Locust side's request records reach the disk every ~100 ms even while a user never yields to gevent
(a blocking socket): the engine cuts windows from what is on disk, so a late flush undercounts them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import os, time
    from pathlib import Path
    from workbench.measure.load import locustfile
    from workbench.measure.load.wire import RECORD_STRUCT, Kind

    from gevent import monkey

    blocking_sleep = monkey.get_original("time", "sleep")  # Locust patched time.sleep to yield to gevent
    recorder = locustfile._Recorder()
    path = Path(os.environ["RECORDS"]) / f"{os.getpid()}.bin"
    on_disk = []
    started = time.monotonic_ns()
    while time.monotonic_ns() - started < 600_000_000:  # 0.6 s of requests, never yielding to the hub
        now = time.monotonic_ns()
        recorder.add(now, now, now + 1000, Kind.OK)
        blocking_sleep(0.001)  # a request on a blocking socket: the hub does not run meanwhile
        on_disk.append(path.stat().st_size // RECORD_STRUCT.size)
    print(max(on_disk[: len(on_disk) // 2]), len(on_disk))
    """
)


def test_records_are_flushed_while_a_user_never_yields(tmp_path: Path) -> None:
    records = tmp_path / "records"
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "records_dir": str(records),
                "stop_file": str(tmp_path / "stop"),
                "request_timeout_s": 5,
                "max_in_flight": 4,
                "schedulers": 1,
            }
        )
    )
    env = {**os.environ, "WORKBENCH_LOAD_CONFIG": str(config), "RECORDS": str(records)}

    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr[-2000:]
    first_half_on_disk, sent = (int(x) for x in done.stdout.split())
    assert sent > 50
    assert first_half_on_disk > 0  # flushed during the first 0.3 s, not only at the end
