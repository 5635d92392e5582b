"""Read-side queries of the dashboard pages: rows and chart inputs built from the registry's tables.

Nothing here changes state. Numbers stay numbers (pages format them with the ``units`` filters);
charts get their points here and are drawn by ``dashboard.svg``.

Every figure a page shows says where it comes from: the run that measured it (job, time, profile),
the statistic and the batch size, and its 95 % interval with the calls behind it, or "too few calls"
when the percentile rests on too few to mean anything. A version's variant table shows ONE
judgment (one job); nightly measurements are their own series and never mix into it.
"""

from modelhub.dashboard.pages.advice import advice_rows, advised_plan  # noqa: F401
from modelhub.dashboard.pages.aliases import alias_names, alias_rows  # noqa: F401
from modelhub.dashboard.pages.common import (  # noqa: F401
    ACTIVE,
    STATISTICS,
    estimate,
    is_web_address,
    latencies,
    metric_columns,
    result_summary,
    role_flags,
    run_stamp,
    variant_signature,
    variant_visible,
)
from modelhub.dashboard.pages.compare import compare  # noqa: F401
from modelhub.dashboard.pages.models import (  # noqa: F401
    governing_rows,
    history,
    model_rows,
    nightly_p95,
    production_numbers,
    rollback_plan,
    serving_counts,
    version_rows,
)
from modelhub.dashboard.pages.promote import comparison, promotion_preview, standing  # noqa: F401
from modelhub.dashboard.pages.tables import Column, sort_rows  # noqa: F401
from modelhub.dashboard.pages.variant import variant_page  # noqa: F401
from modelhub.dashboard.pages.version import VersionResults, charts, default_plan, nightly_charts, version_results  # noqa: F401
