"""Run every benchmark once, in sequence, with its default settings (`make bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["bench_model_server.py", "bench_proxy.py", "bench_loadgen.py", "bench_sequential.py", "bench_main_job.py",
         "bench_slow_models.py", "bench_startup.py"]

if __name__ == "__main__":
    failed = []
    for name in ORDER:
        print(f"\n=== {name} ===", flush=True)
        proc = subprocess.run([sys.executable, str(HERE / name)], timeout=900, check=False)
        if proc.returncode != 0:
            failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")
