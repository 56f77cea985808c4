import math

from web.metrics import heartbeat_age


def test_heartbeat_age_is_seconds_since_the_last_beat_or_infinite_without_one():
    assert heartbeat_age("1700000000.500 host-1 task", now=1700000007.0) == 6.5
    assert heartbeat_age("1700000010.000 host-1 ready", now=1700000007.0) == 0.0   # clocks a little apart
    assert heartbeat_age(None, now=1700000007.0) == math.inf                        # expired: no worker
    assert heartbeat_age("garbage", now=1700000007.0) == math.inf
