"""The peak-memory figure restarts at each run (multirun jobs share one process); large tensors on huge pages."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gptft.memory import peak_rss_mib, reset_peak_rss


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resetting the peak needs Linux")
def test_reset_starts_a_new_peak():
    reset_peak_rss()  # a test process that ran others first may hold an older, higher peak than this block
    block = bytearray(400 * 2**20)
    block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page
    high = peak_rss_mib()
    del block
    reset_peak_rss()
    assert peak_rss_mib() < high - 300


def huge_pages_kb(env: dict) -> int:
    """AnonHugePages of a fresh process that imports gptft and allocates one 32 MiB tensor."""
    code = ("import gptft, torch; x = torch.ones(8 * 2**20); x += 1; "
            "print(next(l.split()[1] for l in open('/proc/self/smaps_rollup') if l.startswith('AnonHugePages')))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.mark.skipif(not THP_MODE.is_file() or not Path("/proc/self/smaps_rollup").is_file(),
                    reason="transparent huge pages are a Linux feature")
def test_large_tensors_get_huge_pages():
    # Pins torch's THP_MEM_ALLOC_ENABLE (not a public API): gptft sets it on import; =0 turns it off.
    mode = THP_MODE.read_text()
    if "[never]" in mode:
        pytest.skip(f"this kernel's transparent huge pages are off: {mode.strip()}")
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    assert huge_pages_kb(env) >= 30 * 1024
    if "[madvise]" in mode:  # with [always] the kernel gives huge pages to everything anyway
        assert huge_pages_kb({**env, "THP_MEM_ALLOC_ENABLE": "0"}) == 0
