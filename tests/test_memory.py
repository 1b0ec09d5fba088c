import json
import subprocess
import sys

import pytest

# A fresh interpreter: inside the test process, freed heap memory left by earlier tests can be
# reused for the block, and then the resident size does not move (seen in CI).
PROBE = """
import json
from lmzoo.memory import current_rss_mb, peak_rss_mb
before = current_rss_mb()
block = bytearray(64 * 2**20)
block[::4096] = b"x" * len(block[::4096])
print(json.dumps({"before": before, "after": current_rss_mb(), "peak": peak_rss_mb()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_rss_figures_follow_an_allocation():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    rss = json.loads(out.stdout)
    assert 0 < rss["before"]
    assert rss["after"] >= rss["before"] + 32, rss  # the 64 MB block is resident
    assert rss["peak"] >= rss["after"], rss
