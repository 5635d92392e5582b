"""The predict API under a short fixed-rate load with a promotion in the middle (RELIABILITY.md C6, E3).

The machinery is bench/load.py's: redis-server and gunicorn (DEBUG=0, serving plane) on loopback,
an open-loop schedule mixing cache hits on "mlp-cached" and fresh bodies on "mlp", and a forced
promotion of the fp32 original of "mlp" through ``manage.py shell`` half-way. Latency is printed,
never asserted (the machine is shared).
"""

from __future__ import annotations

import pytest

from tests.real_services import bench_module, process_alive
from workers.samples import SampleModel

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.mark.timeout(150)
def test_a_short_load_with_a_promotion_has_no_server_errors_and_both_variants_answer(
        quality_mlp: SampleModel) -> None:
    load = bench_module("load")
    plan = load.Plan(requests=600, concurrency=8, rate=100.0, seconds=25.0, hit_share=0.5)

    report, info = load.run(plan, samples=quality_mlp.directory.parent, workers=2, threads=2,
                            setup_timeout=60, private_redis=True)
    print(load.render(report))

    assert info["variant"] == "int8", info["note"]  # the run needs two variants to tell them apart
    assert report.transport_errors == 0, report.first_error
    assert report.server_errors == 0, dict(report.statuses)
    assert report.promotion_ok, info["promotion_output"]
    assert report.sent == plan.requests
    assert report.statuses[200] == plan.requests
    assert report.cache_hits == report.hit_requests > 0
    assert report.variants["int8"] > 0 and report.variants["original"] > 0
    assert report.after_new > 0  # the promoted original answered once the promotion was done
    assert not [pid for pid in info["pids"] if process_alive(pid)]
