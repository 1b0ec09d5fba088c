import sys

import pytest

from lmzoo.memory import current_rss_mb, peak_rss_mb


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_peak_rss_is_at_least_the_current_rss():
    now = current_rss_mb()
    block = bytearray(64 * 2**20)  # touch 64 MB so both figures move
    block[::4096] = b"x" * len(block[::4096])
    assert 0 < now <= peak_rss_mb()
    assert peak_rss_mb() >= current_rss_mb() >= now + 32
