"""Start a run's processes from a small process, so their peak RSS is theirs alone.

Linux keeps a process's peak RSS across ``exec``: a child forked from the harness (which has
imported Bytewax, delta-rs and pyarrow and holds window totals) starts with the harness's
high-water mark, and ``os.wait4`` would report at least that for every contestant (a plain
``/bin/true`` spawned from a 300 MiB parent "peaks" at 313 MiB). This launcher is started
with ``python -I -S`` and imports only the standard library, so the high-water mark its
children inherit is about 10 MiB, below any contestant's own peak.

Run as a file, never imported: ``python -I -S launch.py SPEC_JSON``. SPEC is
``{"commands": [[...], ...], "logs": [[stdout_path, stderr_path], ...]}``; every command is
started at once, and the launcher prints one JSON line: wall seconds from just before the
first start until the last exit, and per process its exit code, peak RSS and CPU seconds.
"""

import json
import os
import subprocess
import sys
import time


def main() -> None:
    spec = json.loads(sys.argv[1])
    processes = []
    started = time.perf_counter()
    for command, (out, err) in zip(spec["commands"], spec["logs"], strict=True):
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            processes.append(subprocess.Popen(command, stdout=stdout, stderr=stderr))
    results = []
    for process in processes:
        _pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)  # Popen must not reap it again
        results.append(
            {
                "returncode": process.returncode,
                "peak_rss_bytes": usage.ru_maxrss * 1024,  # kilobytes on Linux
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
            }
        )
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "processes": results}), flush=True)


if __name__ == "__main__":
    main()
