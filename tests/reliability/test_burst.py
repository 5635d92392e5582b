"""A burst of ten times capacity on /predict is shed with 503 + Retry-After (RELIABILITY.md C6).

The machinery is bench/burst.py's: one gunicorn worker (DEBUG=0, serving plane) serving a
generated model whose run takes milliseconds, admission limited to one prediction at work; its
capacity is measured, then ten times that rate is offered on a fixed schedule. Latency is printed,
never asserted (the machine is shared).
"""

from __future__ import annotations

import pytest

from tests.real_services import bench_module, process_alive

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.mark.timeout(180)
def test_ten_times_capacity_is_shed_with_retry_after_while_admitted_requests_are_answered() -> None:
    burst = bench_module("burst")
    outcome = burst.run(burst.Burst(seconds=3.0, capacity_seconds=2.0))
    print(burst.render(outcome))

    assert outcome.failures == []
    assert outcome.statuses[503] > outcome.statuses[200] > 0  # most of a 10x burst is refused, some admitted
    assert outcome.rss_peak_mb - outcome.rss_before_mb < 200  # refusals hold no memory; no queue grows
    assert not [pid for pid in outcome.pids if process_alive(pid)]
