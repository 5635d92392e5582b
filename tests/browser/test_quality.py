"""How every page looks and reads, in a real browser: axe-core finds nothing on any dashboard page,
error page or admin page we override, at 1440×900 and at a phone's 390×844; no page is wider than
the phone; chart labels neither overlap nor leave their chart; screenshots of each page at both
sizes are saved (``shoot``)."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import RequestFactory
from django.urls import NoReverseMatch, reverse

from modelhub import nightly, server_errors, services
from modelhub.models import ModelVersion, OptimizationJob
from tests import factories
from tests.browser import axe
from workers.samples import SampleModel

pytestmark = pytest.mark.django_db(transaction=True)  # the live server's threads see commits only
MODEL = factories.TEAM_MODEL
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
FIRST_NIGHT = datetime.date(2026, 1, 10)


@dataclass
class World:
    """A model with one optimized version in production, nightly history, a queued job and users."""

    maintainer: Any
    approver: Any
    viewer: Any
    lead: Any  # maintainer and approver: offered every form
    version: ModelVersion
    job: OptimizationJob
    queued: OptimizationJob


@pytest.fixture
def world(quality_mlp: SampleModel, media_root: Path, queue_tasks: Callable[[], Any]) -> World:
    maintainer = factories.staff_user("maria", "maintainer")
    approver = factories.staff_user("abe", "approver")
    viewer = factories.staff_user("vic", "viewer")
    lead = factories.staff_user("lea", "maintainer", "approver")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    # Forced: with a 0.2 s budget on a busy machine a percentile may rest on too few calls to pass.
    factories.promote(version.variants.get(name="int8-dynamic"), approver, force=True, reason="the page walk's production")
    for offset in range(3):
        nightly.nightly_run(night=FIRST_NIGHT + datetime.timedelta(days=offset), model=MODEL)
    with queue_tasks():
        queued = services.benchmark_request(variant=version.variants.get(name="prune-structured"), user=maintainer,
                                            profile=factories.team_profile(), bench=factories.TEAM_BENCH)
    return World(maintainer, approver, viewer, lead, version, version.jobs.order_by("pk").first(), queued)


def _url(name: str, *args: Any) -> str | None:
    """A named route, or None where it does not exist (yet)."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def _picked(url: str | None, number: int, *variants: str) -> str | None:
    """The variant comparison with ``variants`` of version ``number`` chosen."""
    return url and url + "?" + "&".join(f"pick={number}:{name}" for name in variants)


def _pages(w: World) -> list[tuple[str, str | None]]:
    """(screenshot name, path) of every page an approver sees, the dashboard's and the admin's."""
    n, v = MODEL, w.version.number
    model_pk, result = w.version.model.pk, w.job.results.first()
    return [
        ("models", _url("dashboard:models")),
        ("model", _url("dashboard:model", n)),
        ("version", _url("dashboard:version", n, v)),
        ("version-one-run", (_url("dashboard:version", n, v) or "") + f"?job={w.job.pk}"),
        ("job-finished", _url("dashboard:job", w.job.pk)),
        ("job-queued", _url("dashboard:job", w.queued.pk)),
        ("compare", _url("dashboard:compare", n)),
        ("promote-failing", _url("dashboard:promote", n, v, "prune-structured")),
        ("promote-serving", _url("dashboard:promote", n, v, "int8-dynamic")),
        ("optimize", _url("dashboard:optimize", n, v)),
        ("variant", _url("dashboard:variant", n, v, "int8-dynamic")),
        ("variant-original", _url("dashboard:variant", n, v, "original")),
        ("compare-variants-choose", _url("dashboard:compare-variants", n)),
        ("compare-variants", _picked(_url("dashboard:compare-variants", n), v, "original", "int8-dynamic",
                                     "prune-structured")),
        ("error-404", "/dashboard/models/no-such-model/"),
        ("admin-index", _url("admin:index")),
        ("admin-upload", (_url("admin:modelhub_modelversion_add") or "") + f"?model={model_pk}"),
        ("admin-models", _url("admin:modelhub_registeredmodel_changelist")),
        ("admin-versions", _url("admin:modelhub_modelversion_changelist")),
        ("admin-version", _url("admin:modelhub_modelversion_change", w.version.pk)),
        ("admin-variants", _url("admin:modelhub_variant_changelist")),
        ("admin-variant", _url("admin:modelhub_variant_change", w.version.variants.get(name="int8-dynamic").pk)),
        ("admin-jobs", _url("admin:modelhub_optimizationjob_changelist")),
        ("admin-job", _url("admin:modelhub_optimizationjob_change", w.job.pk)),
        ("admin-results", _url("admin:modelhub_benchmarkresult_changelist")),
        ("admin-result", _url("admin:modelhub_benchmarkresult_change", result.pk) if result else None),
        ("admin-profiles", _url("admin:modelhub_readinessprofile_changelist")),
        ("admin-events", _url("admin:modelhub_promotionevent_changelist")),
        ("admin-regressions", _url("admin:modelhub_regression_changelist")),
    ]


def _too_wide(page: Any) -> str:
    """"" when the page fits the viewport's width, else how wide it is and what sticks out."""
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    if width[0] <= width[1]:
        return ""
    culprits = page.evaluate("""() => [...document.querySelectorAll('body *')]
      .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.table-scroll, .event-log'))
      .slice(0, 4).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
                       (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : ''))""")
    return f"{width[0]} px wide in a {width[1]} px viewport (sticking out: {', '.join(culprits)})"


def _check(page: Any, name: str, shoot: Callable[[str], Path], size: str, problems: list[str]) -> None:
    page.wait_for_load_state("networkidle")
    shoot(f"quality-{size}-{name}")
    found = axe.violations(page)
    if found:
        problems.append(f"{name} at {size} ({page.url}):\n{axe.describe(found)}")
    if wide := _too_wide(page):
        problems.append(f"{name} at {size} width: {wide}")
    if size == "desktop" and page.locator("#changelist .results").count():
        widths = page.evaluate("(e => [e.scrollWidth, e.clientWidth])(document.querySelector('#changelist .results'))")
        if widths[0] > widths[1]:
            problems.append(f"{name}: the changelist is {widths[0]} px wide in its {widths[1]} px box at 1440 px")


@pytest.fixture
def walk(page: Any, live_server: Any, log_in: Callable[..., None], shoot: Callable[[str], Path]
         ) -> Iterator[Callable[[list[tuple[str, str | None]], str], list[str]]]:
    """Open each (name, path) at each size; return the problems found (axe violations, overflow)."""

    def walk(pages: list[tuple[str, str | None]], size: str) -> list[str]:
        page.set_viewport_size(DESKTOP if size == "desktop" else PHONE)
        problems: list[str] = []
        for name, path in pages:
            if path is None:
                continue
            page.goto(f"{live_server.url}{path}")
            _check(page, name, shoot, size, problems)
        return problems

    yield walk


def test_every_page_has_no_accessibility_violation_and_fits_a_phone(
        page: Any, log_in: Callable[..., None], walk: Callable[..., list[str]], world: World) -> None:
    """B1 (every route a browser reaches, enumerated): axe-core finds 0 violations on each dashboard
    page, the 404 page and the admin pages we override, at 1440×900 and at 390×844, and at both
    sizes no page is wider than the viewport (tables scroll inside their own box)."""
    log_in(world.lead)
    pages = _pages(world)
    problems = walk(pages, "desktop") + walk(pages, "phone")
    assert not problems, "\n\n".join(problems)


def test_a_viewer_sees_accessible_pages_and_a_framed_403(
        page: Any, log_in: Callable[..., None], walk: Callable[..., list[str]], world: World) -> None:
    """B2 (a page the role may not open): a viewer refused an admin add page gets a 403 in the
    dashboard's frame with a way back; it, the admin's login page and the pages a viewer sees have
    0 axe violations at both sizes."""
    problems = walk([("admin-login", "/admin/login/")], "desktop") + walk([("admin-login", "/admin/login/")], "phone")
    log_in(world.viewer)
    forbidden = _url("admin:modelhub_governingprofile_add")
    response = page.goto(page.url.split("/dashboard/")[0] + forbidden)
    assert response.status == 403
    assert page.locator("h1").inner_text() == "You may not open this page"
    assert page.locator("#error-way-back a").count() >= 1
    viewer_pages = [("error-403", forbidden), ("viewer-model", _url("dashboard:model", MODEL)),
                    ("viewer-version", _url("dashboard:version", MODEL, world.version.number))]
    problems += walk(viewer_pages, "desktop") + walk(viewer_pages, "phone")
    assert not problems, "\n\n".join(problems)


def test_the_500_page_keeps_the_dashboards_frame_and_passes_axe(
        page: Any, live_server: Any, shoot: Callable[[str], Path], db: None) -> None:
    """G16 (HTML for browsers, JSON for the API): the 500 page a browser gets is in the dashboard's
    frame with a way back, has 0 axe violations and fits a phone; the API still gets JSON."""
    request = RequestFactory().get("/dashboard/models/x/", HTTP_ACCEPT="text/html")
    html = server_errors.server_error(request).content.decode()
    api = server_errors.server_error(RequestFactory().get("/api/v1/models/"))
    assert api["Content-Type"] == "application/json" and b"error" in api.content
    page.goto(f"{live_server.url}/static/dashboard/dashboard.css")  # same origin for the page's stylesheets
    for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        page.set_content(html, wait_until="networkidle")
        shoot(f"quality-{size}-error-500")
        assert page.locator("h1").inner_text() == "Something went wrong on our side"
        assert page.locator("#error-way-back a[href='/dashboard/']").count() == 1
        axe.assert_accessible(page, f"the 500 page at {size}")
        assert not _too_wide(page)


def test_the_admins_view_site_link_opens_the_dashboard(
        page: Any, log_in: Callable[..., None], live_server: Any, world: World) -> None:
    """B1 (a link every admin page carries): "View site" goes to the dashboard's models list, not a 404."""
    log_in(world.maintainer, "/admin/")
    page.click("text=View site")
    page.wait_for_load_state()
    assert page.url == f"{live_server.url}/dashboard/"
    assert page.locator("#models").count() == 1


def test_chart_labels_neither_overlap_nor_leave_the_chart_at_either_width(
        page: Any, log_in: Callable[..., None], world: World) -> None:
    """G13 (never silent: a figure drawn but unreadable): on the version page's scatter every point's
    label lies inside the chart and overlaps no other label, at 1440 px and at 390 px, where the
    label text stays at least 9 px tall."""
    log_in(world.approver, f"/dashboard/models/{MODEL}/versions/{world.version.number}/")
    for viewport in (DESKTOP, PHONE):
        page.set_viewport_size(viewport)
        boxes = page.evaluate("""() => {
          const svg = document.querySelector('#chart-scatter svg');
          const frame = svg.getBoundingClientRect();
          const labels = [...svg.querySelectorAll('text.point-label')].map(t => t.getBoundingClientRect());
          return {frame: [frame.left, frame.top, frame.right, frame.bottom],
                  labels: labels.map(b => [b.left, b.top, b.right, b.bottom])};
        }""")
        left, top, right, bottom = boxes["frame"]
        labels = boxes["labels"]
        assert len(labels) == 3
        for box in labels:
            assert left <= box[0] and box[2] <= right + 0.5 and top <= box[1] and box[3] <= bottom + 0.5, box
            assert box[3] - box[1] >= 9, f"labels {box[3] - box[1]:.1f} px tall at {viewport['width']} px"
        for i, a in enumerate(labels):
            for b in labels[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
        page.focus("#chart-scatter details summary")  # the values are a keyboard away
        page.keyboard.press("Enter")
        table = page.locator("#chart-scatter details table")
        assert table.locator("tbody tr").count() == 3
        assert re.search(r"\d+(\.\d+)? ms", table.inner_text())
        page.keyboard.press("Enter")


def test_admin_pages_write_numbers_with_units_and_json_as_tables(
        page: Any, log_in: Callable[..., None], live_server: Any, world: World) -> None:
    """B3 (stored rows are shown, never edited by hand): a benchmark result's page writes its
    latencies in ms, its size in MB and its JSON (intervals, verdict) as tables; the results
    changelist writes its columns with units too, and fits 1440 px."""
    result = world.job.results.get(variant__name="int8-dynamic")
    log_in(world.lead, f"/admin/modelhub/benchmarkresult/{result.pk}/change/")
    row = page.locator(".field-shown__p50_ms .readonly")
    assert re.fullmatch(r"[\d.,]+ ms", row.inner_text().strip())
    assert re.fullmatch(r"[\d.,]+ (MB|kB)", page.locator(".field-shown__size_bytes .readonly").inner_text().strip())
    assert page.locator(".field-shown__intervals .readonly > table.mh-json").count() == 1
    assert page.locator(".field-shown__verdict .readonly > table.mh-json").count() == 1
    assert "{" not in page.locator(".field-shown__verdict .readonly").inner_text()
    page.goto(f"{live_server.url}/admin/modelhub/benchmarkresult/")
    assert re.search(r"\d ms", page.locator("#result_list tbody tr").first.inner_text())
    assert not _too_wide(page)
