"""The search loop: the default plan, under a time budget (pure: no Django).

Stages, each stopped by the budget (a stage's candidates are measured together in one interleaved run):

1. accuracy-free steps (graph fusions; transformer fusions where the model has attention) from the
   root; the fastest of them and the root feeds everything after (``graph -> int8``);
2. the int8 family from that feed (dynamic per-channel QInt8 / QUInt8 / reduce_range, static QDQ
   and QOperator with MinMax / Entropy / Percentile on the calibration rows), recipes the target
   cannot run skipped (``space.int8_recipes``);
3. when no int8 recipe meets the bound: node sensitivity once (``sensitivity.rank_nodes``), then the
   most sensitive nodes kept in float step by step on the fastest failing recipes;
4. lossy chains: pruning / distillation from the feed and, when they pass, the best int8 recipe on top.

Every candidate is benchmarked with its parent first: one measured slower than its parent beyond noise
(``stats.claim``) is dropped before its accuracy is measured. The others are judged on the selection
rows under the profile (``readiness.verdict``; tail-latency limits are left to the final judgment,
which has the calls they need). The passing candidates are ranked by ``planner.rank`` (the profile's
statistic, ties where intervals overlap, then size, then fidelity); the best few and their ancestors
are kept for the job's final judgment on the held-out rows. A failing candidate is never the pick.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers import formats
from workers.errors import EngineError
from workers.evaluation import accuracy, bench, readiness, stats
from workers.passes import base, get_pass, graph, make_config
from workers.search import sensitivity
from workers.search.budget import Budget
from workers.search.records import DROPPED, FAILED, KEPT, SKIPPED, UNREACHED, Record, SearchLog
from workers.search.space import Recipe, free_recipes, int8_recipes, lossy_firsts
from workers.targets import capabilities

PassRunner = Callable[[str, Path, Path, Any], base.PassResult]
EXCLUDED_RECIPES = 2  # failing int8 recipes (fastest first) that get the step-by-step exclusion


def _run_pass(pass_name: str, src: Path, dst: Path, config: Any) -> base.PassResult:
    return get_pass(pass_name).run(src, dst, config)


@dataclass
class SearchConfig:
    """What the search aims at and with what: the profile's spec, the budget, the data (``validation``
    is the selection split), how long each model is timed per stage, how many passing ones are kept."""

    spec: readiness.ProfileSpec = field(default_factory=readiness.ProfileSpec)
    budget_s: float = 360.0
    task: str = "auto"
    validation: Path | None = None
    calibration: Path | None = None
    training: Path | None = None
    bench_time_s: float = 0.4
    max_kept: int = 3
    clock: Callable[[], float] = time.monotonic


@dataclass
class Hooks:
    """How the caller runs a pass (a sandboxed child for TorchScript), hears progress and stops the
    search (``check`` raises to cancel). ``on_record`` sees every record as it is written."""

    run_pass: PassRunner = _run_pass
    event: Callable[[str], None] = lambda message: None
    check: Callable[[], None] = lambda: None
    on_record: Callable[[Record], None] = lambda record: None


@dataclass
class Built:
    """A candidate model on disk, with its lineage and what measured it."""

    name: str
    recipe: Recipe | None
    parent: str | None
    path: Path
    depth: int = 0
    seconds: float = 0.0
    result: base.PassResult | None = None
    config_json: dict[str, Any] = field(default_factory=dict)
    report: bench.BenchReport | None = None
    ratio: stats.Estimate | None = None  # speed-up over the parent, paired within the run that measured both
    accuracy: accuracy.AccuracyReport | None = None
    verdict: readiness.Verdict | None = None

    @property
    def passed(self) -> bool:
        return self.verdict is not None and self.verdict.passed is True


@dataclass
class SearchResult:
    """Candidates kept for the final judgment (parents first), the search's own pick and its log."""

    kept: list[Built]
    best: str | None
    log: SearchLog

    def to_dict(self) -> dict[str, Any]:
        return {**self.log.to_dict(), "kept": [b.name for b in self.kept]}


def _nodes(model_path: Path) -> list[tuple[str, str]]:
    """(domain, op type) of each node of a model's main graph."""
    import onnx

    return [(n.domain, n.op_type) for n in onnx.load(str(model_path), load_external_data=False).graph.node]


def _described(options: dict[str, Any]) -> str:
    return (" with " + ", ".join(f"{k}={v}" for k, v in sorted(options.items()))) if options else ""


def _search_spec(spec: readiness.ProfileSpec) -> readiness.ProfileSpec:
    # p95 / p99 limits need hundreds of calls per model; the final judgment has them, a stage's short run does not.
    return dataclasses.replace(spec, max_p95_ms=None, max_p99_ms=None, min_speedup=None)


def _screening_spec(spec: readiness.ProfileSpec) -> readiness.ProfileSpec:
    """The spec a stage's native run is judged under: node and browser-wasm candidates are screened
    on the CPU (their runtime is too slow to start per stage); the job's final judgment measures the
    kept ones in the target itself."""
    return dataclasses.replace(spec, target=capabilities.native_provider(spec.target))


class Search:
    """One search from ``root`` (the upload or its export), judged against ``reference``."""

    def __init__(self, root: Path, reference: Path, work: Path, config: SearchConfig, hooks: Hooks | None = None,
                 root_name: str = "original") -> None:
        self.config, self.hooks, self.work = config, hooks or Hooks(), work
        self.spec = _search_spec(config.spec)
        self.budget = Budget(config.budget_s, config.clock)
        self.log = SearchLog(budget_s=config.budget_s)
        self.root = Built(root_name, None, None, Path(root))
        self.reference = Path(reference)
        self.built: dict[str, Built] = {root_name: self.root}
        self.reference_run: accuracy.ReferenceRun | None = None
        self.reference_accuracy: accuracy.AccuracyReport | None = None
        self.accuracy_runs: list[str] = []  # names whose accuracy was measured, in order
        self.task = config.task

    # --- set-up -------------------------------------------------------------------------------

    def _setup(self) -> None:
        if self.config.validation is None:
            self.log.notes.append("No validation rows: accuracy was not measured, so lossy candidates cannot pass "
                                  "an accuracy bound.")
            return
        self.reference_run = accuracy.run_reference(self.reference, self.config.validation,
                                                   batch=self.spec.batch_size)
        self.reference_accuracy = self.reference_run.itself(task=self.task)
        self.task = self.reference_accuracy.task

    def _bench_config(self) -> bench.BenchConfig:
        return bench.BenchConfig(batch_sizes=(self.spec.batch_size,), threads=self.spec.threads,
                                 provider=capabilities.native_provider(self.spec.target), iterations=400, rounds=10,
                                 processes=1, warmup_max=50, time_budget_s=self.config.bench_time_s)

    # --- records ------------------------------------------------------------------------------

    def _record(self, record: Record) -> Record:
        self.log.add(record)
        self.hooks.on_record(record)
        if record.status in (KEPT, DROPPED, FAILED):
            self.hooks.event(f"search: {record.name} {record.status}" + (f" ({record.why})" if record.why else ""))
        return record

    def _unreached(self, recipes: list[Recipe], parent: str) -> None:
        for recipe in recipes:
            self._record(Record(recipe.name, recipe.pass_name, parent, UNREACHED, "the search's time budget was spent",
                                options=dict(recipe.options)))

    def _time_left(self) -> bool:
        self.hooks.check()
        if self.budget.exhausted:
            self.log.stopped_by_budget = True
        return not self.budget.exhausted

    # --- building -----------------------------------------------------------------------------

    def _config(self, recipe: Recipe) -> Any:
        calibration = self.config.calibration if recipe.calibrated else None
        options = dict(recipe.options)
        if recipe.pass_name == "distill":  # training stops within what is left of the budget
            options.setdefault("max_time_s", max(10.0, round(0.8 * self.budget.left, 1)))
        # Passes check their outputs on real rows (check_data) where they take them: the selection split.
        return make_config(recipe.pass_name, options, validation_data=self.config.validation,
                           calibration_data=calibration, train_data=self.config.training,
                           check_data=self.config.validation)

    def _build(self, recipe: Recipe, parent: str, name: str | None = None) -> Built | None:
        """Run one recipe on ``parent``; a failed pass is recorded (with its reason) and gives None."""
        name = name or recipe.name
        source = self.built[parent]
        started = time.monotonic()
        dst = self.work / f"{len(self.log.records):03d}-{name}"
        try:
            config = self._config(recipe)
            result = self.hooks.run_pass(recipe.pass_name, source.path, dst, config)
        except base.PassError as exc:
            self.hooks.check()  # a pass that turned a cancel into its own error is not a failed recipe
            self._record(Record(name, recipe.pass_name, parent, FAILED, str(exc)[:500],
                                round(time.monotonic() - started, 2), dict(recipe.options)))
            shutil.rmtree(dst, ignore_errors=True)
            return None
        seconds = round(time.monotonic() - started, 2)
        lacking = capabilities.lacking_ops(self.spec.target, _nodes(Path(result.artifact)))
        if lacking:  # screened on the CPU, it would only fail at the final judgment in the target
            self._record(Record(name, recipe.pass_name, parent, FAILED,
                                f"{self.spec.target} cannot load it: no kernel for {', '.join(lacking)}",
                                seconds, dict(recipe.options)))
            shutil.rmtree(dst, ignore_errors=True)
            return None
        built = Built(name, recipe, parent, Path(result.artifact), source.depth + 1, seconds,
                      result, base.config_to_json(config))
        self.built[name] = built
        return built

    def _build_from(self, recipe: Recipe, parent: str) -> tuple[Built | None, str]:
        """Build on ``parent``; where that fails on a fused feed, on the root (and the root feeds the
        recipes after it: a fused graph one quantizer refuses, the next one refuses too)."""
        self.hooks.event(f"search: building {recipe.name} from {parent}")
        candidate = self._build(recipe, parent)
        if candidate is None and parent != self.root.name and self._time_left():
            candidate = self._build(recipe, self.root.name, f"{recipe.name}-from-{self.root.name}")
            if candidate is not None:
                return candidate, self.root.name
        return candidate, parent

    def _build_all(self, recipes: list[Recipe], parent: str) -> list[Built]:
        """Build each recipe on ``parent`` (or, once one needed it, on the root) until time runs out."""
        built = []
        for position, recipe in enumerate(recipes):
            if not self._time_left():
                self._unreached(recipes[position:], parent)
                break
            candidate, parent = self._build_from(recipe, parent)
            if candidate is not None:
                built.append(candidate)
        return built

    # --- measuring ----------------------------------------------------------------------------

    def _measure(self, group: list[Built]) -> None:
        """Benchmark ``group`` with its parents in one interleaved run, then drop the slower-than-parent
        ones unmeasured for accuracy and judge the rest."""
        if not group:
            return
        # Parents are measured again in the same run: a speed-up is then paired round by round.
        parents = {b.parent for b in group if b.parent is not None} - {b.name for b in group}
        models = [self.built[p] for p in sorted(parents)] + group
        items = [bench.ToMeasure(b.name, b.path, self._signature(b.path)) for b in models]
        self.hooks.event(f"search: measuring {', '.join(b.name for b in models)} together")
        run = bench.benchmark_many(items, self._bench_config(), data=self.config.validation)
        for b in models:
            b.report = run.reports.get(b.name) or b.report
        for b in group:
            if b.name in run.errors:
                self._drop(b, FAILED, f"could not be measured: {run.errors[b.name]}")
            else:
                self._judge(b)

    def _signature(self, path: Path) -> formats.Signature:
        return formats.signature_from_onnx(path)

    def _speedup(self, built: Built) -> stats.Estimate | None:
        """The speed-up over the parent, computed once, when both were measured in the same run (a
        parent measured again in a later stage would otherwise pair rounds of different runs)."""
        parent = self.built.get(built.parent or "")
        if built.ratio is None and parent is not None and parent.report is not None and built.report is not None:
            built.ratio = built.report.speedup(parent.report, self.spec.statistic, self.spec.batch_size)
        return built.ratio

    def _gain(self, built: Built) -> float:
        ratio = self._speedup(built)
        return ratio.value if ratio is not None else 1.0

    def _judge(self, built: Built) -> None:
        ratio = self._speedup(built)
        speed = ratio.to_dict() if ratio else None
        if ratio is not None and stats.claim(ratio) == stats.SLOWER:
            self._drop(built, DROPPED, f"slower than its parent {built.parent} beyond noise ({ratio.value:.2f}x "
                                       f"[{ratio.low:.2f}, {ratio.high:.2f}]); accuracy not measured", speed)
            return
        if self.reference_run is not None:
            self.accuracy_runs.append(built.name)
            try:
                built.accuracy = self.reference_run.compare(built.path, task=self.task)
            except Exception as exc:  # noqa: BLE001 - one candidate onnxruntime cannot run on the rows ends only itself
                self._drop(built, FAILED, f"does not run on the validation rows: {str(exc)[:300]}", speed)
                return
        built.verdict = readiness.verdict(_screening_spec(self.spec), bench=built.report, accuracy=built.accuracy,
                                          reference_accuracy=self.reference_accuracy,
                                          size_bytes=built.path.stat().st_size)
        metric, value = self._metric(built)
        if built.passed:
            self._record(Record(built.name, built.recipe.pass_name, built.parent, KEPT, "passes on the selection rows",
                                built.seconds, dict(built.recipe.options), speed, value, metric, True))
        else:
            self._drop(built, DROPPED, "; ".join(built.verdict.failures) or "failed the profile", speed)

    def _metric(self, built: Built) -> tuple[str | None, float | None]:
        if built.accuracy is None:
            return None, None
        metric = self.spec.metric_for(built.accuracy.task)
        return metric, built.accuracy.metrics.get(metric)

    def _drop(self, built: Built, status: str, why: str, speed: dict[str, Any] | None = None) -> None:
        metric, value = self._metric(built)
        self._record(Record(built.name, built.recipe.pass_name if built.recipe else "", built.parent, status, why,
                            built.seconds, dict(built.recipe.options) if built.recipe else {}, speed,
                            value, metric, False if built.verdict is not None else None))

    # --- stages -------------------------------------------------------------------------------

    def _free_stage(self) -> str:
        """Accuracy-free steps from the root; the fastest passing one (or the root) feeds the rest."""
        built = self._build_all(free_recipes(has_attention=graph.has_attention(self.root.path)), self.root.name)
        self._measure(built)
        # A free step that is not slower beyond noise feeds the lossy ones: it costs no accuracy, and the
        # fusions it made (attention, LayerNorm) are what int8 kernels then work on.
        feeds = [b for b in built if b.passed and (b.ratio is None or stats.claim(b.ratio) != stats.SLOWER)]
        return max(feeds, key=self._gain).name if feeds else self.root.name

    def _int8_stage(self, feed: str) -> list[Built]:
        op_types = {op for _, op in _nodes(self.built[feed].path)}
        recipes, skipped = int8_recipes(target=self.spec.target, op_types=op_types,
                                        calibrated=self.config.calibration is not None)
        for recipe, why in skipped:
            self._record(Record(recipe.name, recipe.pass_name, feed, SKIPPED, why, options=dict(recipe.options)))
        built = self._build_all(recipes, feed)
        self._measure(built)
        return built

    def _exclusion_stage(self, tried: list[Built], feed: str) -> list[Built]:
        """Keep the most sensitive nodes in float, step by step, on the failing recipes most likely to
        pass that way: the one closest to the bound, then the fastest ones."""
        failing = [b for b in tried if b.verdict is not None and not b.passed and b.accuracy is not None]
        if not failing or self.reference_run is None or not self._time_left():
            return []
        closest = max(failing, key=lambda b: self._metric(b)[1] or -math.inf)
        ranked = self._sensitivity(feed, closest)
        bases = [closest] + sorted((b for b in failing if b is not closest), key=lambda b: -self._gain(b))
        passing: list[Built] = []
        for base_candidate in bases[:EXCLUDED_RECIPES]:
            for count in sensitivity.exclusion_counts(len(ranked)):
                if not self._time_left():
                    break
                recipe = base_candidate.recipe.with_options(f"{base_candidate.name}-x{count}",
                                                            nodes_to_exclude=list(ranked[:count]))
                candidate = self._build(recipe, base_candidate.parent)
                if candidate is None:
                    continue
                self._measure([candidate])
                if candidate.passed:
                    passing.append(candidate)
                    break
                if self.log.get(candidate.name) and "slower" in self.log.get(candidate.name).why:
                    break  # more float nodes will not make it faster
        return passing

    def _sensitivity(self, feed: str, like: Built) -> list[str]:
        """Nodes ranked once per job, quantized with the weight settings of ``like`` (the failing
        recipe closest to the bound): signed weights saturate int16 sums on CPUs without VNNI, so a
        ranking taken with other settings than the recipe's would measure a different error."""
        self.hooks.event("search: measuring each weight node's sensitivity to int8 (once)")
        started = time.monotonic()
        run = self.reference_run

        def score(path: Path) -> float:
            return float(run.compare(path, task=self.task).metrics.get("rel_l2", float("nan")))

        weights = {k: v for k, v in like.recipe.options.items() if k in sensitivity.WEIGHT_OPTIONS}
        ranked, errors = sensitivity.rank_nodes(self.built[feed].path, self.work / "sensitivity", score,
                                                self._time_left, weights)
        top = ", ".join(f"{n} ({errors[n]:.3g})" for n in ranked[:3] if n in errors)
        self.log.notes.append(f"Sensitivity (quantize-one{_described(weights)}, rel_l2 on the selection rows) of "
                              f"{len(errors)} of {len(ranked)} weight nodes in {time.monotonic() - started:.1f} s; "
                              f"most sensitive: {top}.")
        return ranked

    def _chain_stage(self, feed: str, int8: Built | None) -> None:
        """Pruning / distillation from the feed; int8 on top of each that passes."""
        firsts = lossy_firsts(task=self.task, has_training=self.config.training is not None, target=self.spec.target)
        built = self._build_all(firsts, feed)
        self._measure(built)
        if int8 is None or int8.recipe is None:
            return
        chains = []
        for first in (b for b in built if b.passed):
            if not self._time_left():
                break
            candidate = self._build(int8.recipe.with_options(f"{first.name}-{int8.recipe.name}"), first.name)
            if candidate is not None:
                chains.append(candidate)
        self._measure(chains)

    # --- the pick -----------------------------------------------------------------------------

    def _candidates(self) -> list[Any]:
        from workers import planner

        passing = [b for b in self.built.values() if b.recipe is not None and b.passed and b.report is not None]
        # Only the fastest few by point value go to the interval ranking: its paired bootstraps cost
        # a tenth of a second per pair, and a candidate far behind on the point value is not the pick.
        passing.sort(key=lambda b: b.report.estimate(self.spec.statistic, self.spec.batch_size).value)
        return [planner.make_candidate(name=b.name, parent=b.parent, pass_name=b.recipe.pass_name, profile=self.spec,
                                       bench=b.report, accuracy=b.accuracy, verdict=b.verdict,
                                       reference_accuracy=self.reference_accuracy, options=b.config_json,
                                       depth=b.depth)
                for b in passing[: 2 * self.config.max_kept]]

    def _finish(self) -> SearchResult:
        from workers import planner

        ranking = planner.rank(self._candidates())
        chosen = [name for name in ranking.ordered if self.built[name].passed][: self.config.max_kept]
        chosen += [b.name for b in self.built.values() if b.recipe is not None and not b.recipe.lossy and b.passed]
        kept: list[Built] = []
        for name in chosen:
            for ancestor in self._lineage(name):
                if ancestor.recipe is not None and ancestor not in kept:
                    kept.append(ancestor)
        kept.sort(key=lambda b: b.depth)  # parents before their children
        self.log.best = ranking.best if ranking.best and self.built[ranking.best].passed else None
        self.log.spent_s = self.budget.spent
        for record in self.log.records:
            if record.status == KEPT and record.name not in {b.name for b in kept}:
                record.status, record.why = DROPPED, (f"passes, but not among the {self.config.max_kept} fastest "
                                                    "kept for the final judgment")
        return SearchResult(kept=kept, best=self.log.best, log=self.log)

    def _lineage(self, name: str) -> list[Built]:
        chain, current = [], self.built.get(name)
        while current is not None and current.recipe is not None:
            chain.append(current)
            current = self.built.get(current.parent or "")
        return chain[::-1]

    def run(self) -> SearchResult:
        """Run every stage the budget allows; the kept candidates, the pick and the log."""
        self._setup()
        feed = self._free_stage()
        int8 = self._int8_stage(feed)
        if not any(b.passed for b in int8):
            int8 += self._exclusion_stage(int8, feed)
        passing = [b for b in int8 if b.passed]
        best_int8 = max(passing, key=self._gain, default=None)
        if self._time_left():
            self._chain_stage(feed, best_int8)
        else:
            self._unreached(lossy_firsts(task=self.task, has_training=self.config.training is not None,
                                         target=self.spec.target), feed)
        return self._finish()


def run_search(root: Path, reference: Path, work: Path, config: SearchConfig, hooks: Hooks | None = None,
               root_name: str = "original") -> SearchResult:
    """Search from ``root`` under ``config`` in the scratch directory ``work`` (see the module docstring)."""
    if not Path(root).is_file():
        raise EngineError(f"There is no model file to search from at {root}.")
    work.mkdir(parents=True, exist_ok=True)
    return Search(root, reference, work, config, hooks, root_name).run()
