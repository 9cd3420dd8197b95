"""The peak-memory figure restarts at each run (multirun jobs share one process)."""
import sys

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
