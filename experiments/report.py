"""Render, text and files: the report of a results directory, and its orchestration.

``report()`` reads the records, has ``analysis`` compute the rows, fits, frontier and efficiency,
``findings`` and ``difficulty`` decide the paper's claims, ``plots`` draw the figures, and writes
the terminal table, CSVs and results.md itself: every number is computed once, upstream, and
only formatted here.
"""
from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import difficulty, efficiency, sequential, uncertainty
from .facts import facts_for, read_facts
from .analysis import (Efficiency, FitRow, Row, SaturatingFit, compute_efficiency, config_order,
                       fit_curves, load_reference, pareto, parameter_conventions, resolve_rule, rules_in, summarize)
from .findings import Finding, findings
from .plots import (compared_curves, palette, plot_accuracy, plot_best_model, plot_difficulty, plot_levels,
                    plot_models, plot_pareto, plot_sequential_share, plot_verifier_quality)
from .records import PASS_AT_N, load_dir

DEFAULT_RULE = "weighted"


INTERVAL_NOTE = ("Wilson intervals over problems, each problem's verdicts averaged over its seeds: they cover the "
                 "choice of problems")


def format_table(rows: Sequence[Row], n_convention: str = "N = non-embedding parameters") -> str:
    """The terminal table: one line per (model, method, budget), the voting rules as columns.

    Greedy has one answer, so its line shows it once; the full long table is in table.csv and results.md."""
    keyed: dict[tuple[str, str, int], dict[str, Row]] = {}
    for r in rows:
        keyed.setdefault((r.model, r.method, r.budget), {})[r.rule] = r
    rules = list(dict.fromkeys(r.rule for r in rows))
    names = {"majority": "majority", PASS_AT_N: "pass@n"}
    head = ("model", "method", "budget", "paper FLOPs", "full: policy", "full: PRM",
            *(names.get(x, x.replace("/", " ")) for x in rules))
    body = []
    derived = False
    for (model, method, budget), by_rule in keyed.items():
        first = next(iter(by_rule.values()))
        same = len({r.accuracy for r in by_rule.values()}) == 1 and method == "greedy"
        cells = []
        for x in rules:
            r = by_rule.get(x)
            cells.append("" if r is None or (same and x != rules[0]) else
                         _pct(r) + ("*" if r.derived else ""))
            derived |= bool(r is not None and r.derived)
        body.append((model, method, str(budget), f"{first.paper_flops:.3g}",
                     f"{first.full_flops - first.prm_flops:.3g}", f"{first.prm_flops:.3g}", *cells))
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    n = sorted({r.n_problems for r in rows})
    legend = (f"accuracy % [95 % interval] ({INTERVAL_NOTE}; {'/'.join(map(str, n))} problems); FLOPs per problem, "
              f"paper = 2·N·generated tokens, full = 2·N·tokens processed, by the policy and by the PRM ({n_convention}); "
              f"pass@n = some candidate is right")
    if derived:
        legend += "; * = cut from a larger sampling run (paper FLOPs exact, full FLOPs scaled)"
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body] + ["", legend])


def markdown_table(header: Sequence[str], body: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def difficulty_markdown(study: "difficulty.DifficultyStudy", rule: str) -> str:
    def name(choice: tuple) -> str:
        return " ".join(str(x) for x in choice)

    lines = [f"# Compute-optimal strategy per difficulty ({rule})", "",
             f"Bins: {study.how}; problems x seeds per bin: "
             + ", ".join(f"{b}: {n}" for b, n in study.sizes.items()) + ". For every accuracy the best single "
             "setting reaches (used for every problem), the cheapest choice of one setting per bin that is as "
             "accurate (an exact search over all combinations; bins by the true difficulty, as in Snell et al.'s "
             "\"oracle difficulty\" experiments). Reference verifiers are left out. The choice is made and measured on "
             "the same problems, so the saving is optimistic: with few problems per bin part of it is selection "
             "noise (a setting that happened to get a bin's problems right).", "",
             markdown_table(["accuracy %", "single setting", "its FLOPs", "per-bin FLOPs", "saving", "per-bin choice"],
                            [(f"{100 * s.accuracy:.1f}", name(s.choice[0]), f"{s.flops:.3g}", f"{c.flops:.3g}",
                              f"{s.flops / c.flops:.2f}x" if c.flops > 0 else "–",
                              "; ".join(f"{b}: {name(k)}" for b, k in zip(study.bins, c.choice)))
                             for s, c in study.savings()])]
    best = study.optimal[-1] if study.optimal else None
    if best is not None and study.single:
        lines += ["", f"Highest accuracy: per bin {100 * best.accuracy:.1f} % at {best.flops:.3g} FLOPs, a single "
                      f"setting {100 * study.single[-1].accuracy:.1f} % at {study.single[-1].flops:.3g}."]
    return "\n".join(lines) + "\n"


def _reach(r: efficiency.RatioRow) -> tuple[str, str]:
    f = r.method_flops
    if f.flops != f.flops:
        return "–", "not reached"
    return (("≤ " if f.bound else "") + f"{f.flops:.3g}", ("≥ " if f.bound else "") + f"{r.ratio:.2f}x")


def format_headline(eff: Efficiency) -> str:
    lines = [f"FLOPs to reach {eff.baseline}'s best accuracy, 95 % problem-bootstrap interval in brackets "
             "(paper: Llemma-7B REBASE 6.8x fewer than sampling-WV):"]
    for r in sorted(eff.headline(), key=lambda r: (r.model, r.method)):
        flops, ratio = _reach(r)
        if flops == "–":
            reached = "not reached"
        elif r.ratio >= 1:
            reached = f"reached at {flops} FLOPs: {ratio} fewer"
        else:
            reached = f"reached at {flops} FLOPs: {1 / r.ratio:.2f}x more"
        ci = f" [ratio {r.interval_text}]" if r.interval is not None else ""
        lines.append(f"  {r.model} {r.method}: {100 * r.target:.0f}% ({r.baseline} at budget {r.budget}, "
                     f"{r.baseline_flops:.3g} FLOPs) {reached}{ci}")
    return "\n".join(lines)


def comparison_table(pairs: Sequence[efficiency.Comparison]) -> str:
    return markdown_table(["model", "method", "budget", "paper FLOPs", "against", "FLOPs ratio", "problems",
                           "Δ points [95 %]", "p"],
                          [(p.model, p.method, p.budget, f"{p.flops:.3g}",
                            (f"{p.b_model} " if p.b_model != p.model else "") + p.b_label, f"{p.flops_ratio:.2f}",
                            p.diff.n, p.diff.text, p.diff.p_text) for p in pairs])


COMPARISON_NOTE = ("Δ = accuracy of the method minus the other curve read at the method's FLOPs (interpolated per "
                   "problem in log FLOPs between the budgets shown), on the problems both ran; the interval is a paired "
                   "bootstrap over problems, p a paired two-sided test (exact McNemar for right/wrong differences, "
                   "else a sign-flip randomization test). Not corrected for the number of comparisons.")


def findings_markdown(found: Sequence[Finding]) -> list[str]:
    return ["", "## Findings, decided from the intervals", "",
            "Each of the paper's claims this study can test: *holds* (every comparison significant in the claimed "
            "direction: paired test p < 0.05; for a FLOPs ratio, its 95 % interval above 1), *holds at some budgets*, "
            "*does not hold* (some comparison significant against it) or *not significant at this size*. Intervals "
            "are 95 % paired bootstraps over problems; no correction for multiple comparisons.", "",
            markdown_table(["", "claim", "tested on", "verdict", "numbers"],
                           [(f.key, f.claim, f.subject, f"**{f.verdict}**", f.evidence) for f in found])]


RATIO_COLUMNS = ["model", "method", "baseline", "budget", "target", "baseline_flops", "method_flops",
                 "reached_at_first_budget", "ratio", "low", "high", "not_reached"]


def _ratio_dict(r: efficiency.RatioRow) -> dict[str, Any]:
    """A ratio row; low 0 = "not reached" at that end of the interval; NaN ratio = not reached."""
    ci = r.interval
    return dict(zip(RATIO_COLUMNS, (r.model, r.method, r.baseline, r.budget, r.target, r.baseline_flops,
                                    r.method_flops.flops, r.method_flops.bound, r.ratio,
                                    *((ci.low, ci.high, ci.not_reached) if ci else (math.nan,) * 3))))


COMPARISON_COLUMNS = ["model", "method", "budget", "paper_flops", "b_model", "b_method", "b_budget_low", "b_budget_high",
                      "flops_ratio", "problems", "delta", "low", "high", "p_value"]


def _comparison_dict(p: efficiency.Comparison) -> dict[str, Any]:
    return dict(zip(COMPARISON_COLUMNS, (p.model, p.method, p.budget, p.flops, p.b_model, p.b_method, *p.b_budgets,
                                         p.flops_ratio, p.diff.n, p.diff.delta, p.diff.low, p.diff.high,
                                         p.diff.p_value)))


def _efficiency_markdown(eff: Efficiency, rule: str) -> list[str]:
    parts = ["", f"## FLOPs to reach {eff.baseline}'s accuracy ({rule})", "",
             f"For each accuracy {eff.baseline} reaches (at the budget shown), the paper FLOPs each method needs for it, "
             "interpolated on log FLOPs between its budgets, never extrapolated (≤: reached already at its smallest "
             f"budget). Ratio = {eff.baseline} FLOPs / method FLOPs; the paper's headline is 6.8x (Llemma-7B, REBASE vs "
             "sampling with weighted voting, MATH500). The interval: 95 % of a paired bootstrap over problems "
             f"({uncertainty.RESAMPLES} resamples; both curves and the ratio recomputed on each, the target being "
             f"{eff.baseline}'s accuracy at the same budget in that resample); \"not reached\" at an end means the method "
             "misses the target in more than 2.5 % of resamples.", "",
             markdown_table(["model", "method", f"target (= {eff.baseline} at budget)", f"{eff.baseline} FLOPs",
                             "method FLOPs", "ratio", "95 % interval"],
                            [(r.model, r.method, f"{100 * r.target:.1f} % (b={r.budget})", f"{r.baseline_flops:.3g}",
                              *_reach(r), r.interval_text) for r in eff.ratios])]
    if eff.paired:
        parts += ["", f"## Paired on the same problems: each method vs {eff.baseline} at equal FLOPs ({rule})", "",
                  COMPARISON_NOTE, "", comparison_table(eff.paired)]
    if eff.sweep:
        rates = sorted({p.flip_rate for p in eff.sweep})
        keys = sorted({(p.model, p.algorithm, p.budget) for p in eff.sweep})
        cell = {(p.model, p.algorithm, p.budget, p.flip_rate): p for p in eff.sweep}
        parts += ["", f"## Accuracy against verifier error ({rule})", "",
                  "The task's exact checker as the verifier, with each step's verdict flipped at the given rate "
                  "(deterministically per chain); 95 % Wilson intervals over problems.", "",
                  markdown_table(["model", "algorithm", "budget"] + [f"{100 * x:.0f} % flipped" for x in rates],
                                 [(m, a, b, *[_pct(cell[(m, a, b, x)]) if (m, a, b, x) in cell else "–" for x in rates])
                                  for m, a, b in keys])]
    return parts


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------
@dataclass
class ReportResult:
    rows: list[Row]
    fits: list[FitRow]
    frontier: list[Row]
    rule: str
    table: str
    efficiency: Efficiency | None = None
    difficulty: Any = None  # difficulty.DifficultyStudy, when the records allow one
    sequential: Any = None  # sequential.SequentialStudy, when revisions ran at two ratios or more
    convention: str = "N = non-embedding parameters"
    findings: list[Finding] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


def report(results_dir: str | Path, out: str | Path | None = None, rule: str = DEFAULT_RULE,
           reference: str | None = None, plots: bool = True, panels: str = "model") -> ReportResult:
    """Summarize every records*.jsonl under ``results_dir``; write tables and plots to ``out``
    (default: ``results_dir/report``)."""
    results_dir = Path(results_dir)
    records = load_dir(results_dir)
    if not records:
        raise FileNotFoundError(f"no records (records*.jsonl) in {results_dir}")
    out = Path(out) if out is not None else results_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    rule = resolve_rule(rule, rules_in(records))
    order = config_order(results_dir)
    rows = summarize(records, order=order)
    fits = fit_curves(rows, rule)
    # Settings searched with a reference verifier (the exact checker, noisy or not) are not choices a
    # user has: they stay out of the Pareto frontier and the compute-optimal model.
    facts = facts_for(records, read_facts(results_dir))  # declared by the sweep; older directories: the registries
    reference_methods = {m for m, f in facts.items() if f.reference}
    choices = [r for r in rows if r.method not in reference_methods]
    front = pareto(choices, rule)
    ref = load_reference(reference) if reference else []
    convention = parameter_conventions(records)
    matrix = uncertainty.problem_matrix(records, rule)
    method_order = order[1] if order else ()
    eff = compute_efficiency(records, rows, rule, matrix=matrix, facts=facts, order=method_order)
    res = ReportResult(rows, fits, front, rule, format_table(rows, convention), eff, convention=convention,
                       findings=findings(records, eff.headline(), eff.sweep, matrix, method_order, facts))

    row_cols = [f.name for f in fields(Row)]
    fit_cols = ["model", "method", "rule", *(f.name for f in fields(SaturatingFit)), "max_flops", "accuracy_at_10x"]
    res.files["table.csv"] = _write_csv(out / "table.csv", [asdict(r) for r in rows], row_cols)
    res.files["fits.csv"] = _write_csv(out / "fits.csv", [
        {"model": f.model, "method": f.method, "rule": f.rule, **asdict(f.fit), "max_flops": f.max_flops,
         "accuracy_at_10x": f.extrapolated} for f in fits], fit_cols)
    res.files["pareto.csv"] = _write_csv(out / "pareto.csv", [asdict(r) for r in front], row_cols)
    res.files["findings.csv"] = _write_csv(out / "findings.csv", [asdict(f) for f in res.findings],
                                           [f.name for f in fields(Finding)])
    res.files["comparisons.csv"] = _write_csv(out / "comparisons.csv", [_comparison_dict(p) for p in eff.paired],
                                              COMPARISON_COLUMNS)
    res.files["ratios.csv"] = _write_csv(out / "ratios.csv", [_ratio_dict(r) for r in eff.ratios], RATIO_COLUMNS)
    res.difficulty = difficulty.difficulty_study(
        records, rule, {(r.model, r.method, r.budget) for r in choices if r.rule == rule and r.paper_flops > 0}, facts)
    if res.difficulty is not None:
        (out / "compute_optimal.md").write_text(difficulty_markdown(res.difficulty, rule), encoding="utf-8")
        res.files["compute_optimal.md"] = out / "compute_optimal.md"
    chain_rule = f"{sequential.CHAIN_RULE}/{rule.split('/')[1] if '/' in rule else 'last'}"
    res.sequential = sequential.sequential_study(records, chain_rule, facts)
    if res.sequential is not None:
        (out / "sequential.md").write_text(sequential_markdown(res.sequential), encoding="utf-8")
        res.files["sequential.md"] = out / "sequential.md"
    levels = sorted({r.level for r in records if r.level is not None})
    by_level = {lv: summarize([r for r in records if r.level == lv], [rule]) for lv in levels}
    if plots:
        pal = palette(rows, order, {m: f.algorithm for m, f in facts.items()}, reference_methods)
        figures = [("accuracy_vs_flops.png", lambda p: plot_accuracy(rows, rule, p, ref, fits, panels=panels, pal=pal))]
        if len(compared_curves(rows, rule, pal)) >= 2:
            figures.append(("models_compared.png", lambda p: plot_models(rows, rule, p, pal)))
        figures += [("pareto.png", lambda p: plot_pareto(choices, rule, p, pal)),
                    ("best_model_per_budget.png", lambda p: plot_best_model(choices, rule, p, pal))]
        if by_level:
            figures.append(("accuracy_by_level.png", lambda p: plot_levels(by_level, rule, p, pal)))
        if res.difficulty is not None:
            figures.append(("compute_optimal.png", lambda p: plot_difficulty(res.difficulty, rule, p)))
        if res.sequential is not None:
            figures.append(("sequential_share.png", lambda p: plot_sequential_share(res.sequential, p)))
        if eff.sweep:
            figures.append(("verifier_quality.png", lambda p: plot_verifier_quality(eff.sweep, rows, rule, p, pal)))
        for name, draw in figures:
            draw(out / name)
            res.files[name] = out / name
    (out / "results.md").write_text(_markdown(res, by_level, ref, results_dir), encoding="utf-8")
    res.files["results.md"] = out / "results.md"
    return res


def sequential_markdown(study: "sequential.SequentialStudy") -> str:
    """Tables of the sequential/parallel ratio study: accuracy per ratio and bin, the chosen ratios,
    the curves, and what the compute-optimal choice saves."""
    bins = study.bins()
    m = study.matrix
    parts = [f"# Sequential revisions vs parallel sampling ({study.rule})", "",
             f"N attempts as C chains of L (C x L = N): L = 1 is all parallel, L = N all sequential. Bins: {study.how}; "
             f"problems per bin: " + ", ".join(f"{b}: {c.n}" for b, c in {c.bin: c for c in study.cells}.items())
             + f". Accuracy % [95 % interval]: {INTERVAL_NOTE}. FLOPs are paper FLOPs per problem (generated tokens; "
             "a revision's earlier attempts are processed, not generated: they count in *full: policy*, 2·N·every token the "
             "policy processed).", ""]
    for model in study.models:
        parts += [f"## {model}: accuracy per ratio and bin", ""]
        body = []
        for s in (s for s in study.settings if s.model == model):
            cells = {c.bin: c for c in study.cells if c.setting == s}
            i = m.index(s.key)
            body.append((s.budget, f"{s.budget // s.length} x {s.length}", *[accuracy_text(c.accuracy, *c.interval) for c in
                         (cells[b] for b in bins)], f"{100 * np.nanmean(m.correct[i]):.1f}", f"{np.nanmean(m.flops[i]):.3g}",
                         f"{study.policy_flops[s.key]:.3g}"))
        parts += [markdown_table(["N", "chains x L", *bins, "all %", "paper FLOPs", "full: policy"], body), ""]
        parts += [f"## {model}: the best chain length L per bin", "",
                  "In-sample: chosen on all problems (an upper bound); cross-validated: each half of the problems "
                  "scored with the L chosen on the other half (what the compute-optimal curve uses).", "",
                  markdown_table(["N", *bins], [(budget, *[
                      next(f"{c.in_sample} (folds: {', '.join(map(str, c.per_fold))})" for c in study.choices
                           if c.model == model and c.budget == budget and c.bin == b) for b in bins])
                      for budget in study.budgets(model)]), ""]
        names = (sequential.PARALLEL, sequential.SINGLE, sequential.OPTIMAL)
        curves = {name: {b: (f, a) for b, f, a in sequential.curve(m, model, name)} for name in names}
        parts += [f"## {model}: curves (accuracy %, paper FLOPs)", "",
                  markdown_table(["N", *names], [(budget, *[
                      f"{100 * curves[n][budget][1]:.1f} ({curves[n][budget][0]:.3g})" if budget in curves[n] else "–"
                      for n in names]) for budget in study.budgets(model)]), ""]
        parts += [f"## {model}: what the compute-optimal ratio saves", "",
                  "At each baseline budget: the baseline's accuracy, the FLOPs the compute-optimal curve needs to reach "
                  "it (interpolated in log FLOPs), the ratio with its paired bootstrap interval over problems; and the "
                  "paired difference at the same budget (points, 95 % interval, p).", "",
                  markdown_table(["baseline", "N", "baseline %", "baseline FLOPs", "optimal needs", "saving",
                                  "interval", "difference at N", "p"],
                                 [(r.baseline, r.budget, f"{100 * r.target:.1f}", f"{r.baseline_flops:.3g}",
                                   f"{r.method_flops.flops:.3g}" if r.method_flops.flops == r.method_flops.flops
                                   else "not reached", f"{r.ratio:.2f}x" if r.ratio == r.ratio else "–", r.interval_text,
                                   study.differences[(model, r.budget, r.baseline)].text,
                                   study.differences[(model, r.budget, r.baseline)].p_text)
                                  for r in study.savings if r.model == model]), ""]
    return "\n".join(parts)


def _write_csv(path: Path, dicts: list[dict[str, Any]], columns: Sequence[str]) -> Path:
    """A CSV with a header even when there are no rows (so readers need no special case)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(dicts)
    return path


def accuracy_text(accuracy: float, low: float, high: float) -> str:
    """Accuracy % with its 95 % interval, as every report table writes it: "62.0 [52.2, 70.9]"."""
    return f"{100 * accuracy:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _pct(r: Row | efficiency.SweepPoint) -> str:
    return accuracy_text(r.accuracy, r.low, r.high)


def _markdown(res: ReportResult, by_level: dict[Any, list[Row]], ref: list[dict], results_dir: Path) -> str:
    rows = res.rows
    parts = [f"# Results: {results_dir}", "",
             f"FLOPs are per problem ({res.convention}). *Paper* = 2·N_policy·generated tokens (Wu et al.'s "
             "x-axis); *full* = 2·N_policy·all tokens the policy processed + 2·N_PRM·tokens the PRM processed. "
             f"Accuracy % [95 % interval]: {INTERVAL_NOTE}. `pass@n` = some candidate is right. "
             "`*` = includes records derived from a larger sampling run (paper FLOPs exact, full FLOPs scaled).", "",
             "## Table", "",
             markdown_table(["model", "method", "rule", "budget", "paper FLOPs", "full FLOPs", "of which PRM", "accuracy %",
                             "problems", "seeds"],
                            [(r.model, r.method, r.rule, r.budget, f"{r.paper_flops:.3g}", f"{r.full_flops:.3g}",
                              f"{r.prm_flops:.3g}",
                              _pct(r) + ("*" if r.derived else ""), r.n_problems, r.n_seeds) for r in rows]), "",
             f"## Saturating fits ({res.rule})", "",
             "acc(F) = a − b·exp(−c·(log10 F − log10 F0)); a is the fitted ceiling, c the rate per decade of FLOPs.", ""]
    if res.fits:
        parts.append(markdown_table(["model", "method", "a %", "b %", "c", "F0", "rmse %", "points", "acc % at 10x largest"],
                                    [(f.model, f.method, f"{100 * f.fit.a:.1f}", f"{100 * f.fit.b:.1f}", f"{f.fit.c:.3f}",
                                      f"{f.fit.f0:.3g}", f"{100 * f.fit.rmse:.2f}", f.fit.n, f"{100 * f.extrapolated:.1f}")
                                     for f in res.fits]))
    else:
        parts.append("No curve has three budgets or more; nothing fitted.")
    parts += ["", f"## Pareto frontier ({res.rule}): the compute-optimal choice per budget (reference verifiers left out)", "",
              markdown_table(["from paper FLOPs", "model", "method", "budget", "accuracy %"],
                             [(f"{r.paper_flops:.3g}", r.model, r.method, r.budget, _pct(r)) for r in res.frontier])]
    if res.findings:
        parts += findings_markdown(res.findings)
    if res.efficiency is not None:
        parts += _efficiency_markdown(res.efficiency, res.rule)
    if by_level:
        parts += ["", f"## Accuracy by difficulty level ({res.rule}), % at each budget", ""]
        keys = sorted({(r.model, r.method, r.budget) for rs in by_level.values() for r in rs})
        levels = sorted(by_level)
        cell = {(lv, r.model, r.method, r.budget): r for lv, rs in by_level.items() for r in rs}
        parts.append(markdown_table(["model", "method", "budget"] + [f"level {lv}" for lv in levels],
                                    [(m, k, b, *[f"{100 * cell[(lv, m, k, b)].accuracy:.1f}" if (lv, m, k, b) in cell else "–"
                                                 for lv in levels]) for m, k, b in keys]))
    if ref:
        parts += ["", "## Paper reference points (Wu et al. 2024)", "",
                  markdown_table(["model", "method", "budget", "rule", "paper FLOPs", "accuracy %", "source"],
                                 [(p["model"], p["method"], p["budget"], p["rule"], f"{p['paper_flops']:.3g}",
                                   p["accuracy_pct"], p["table"]) for p in ref])]
    figures = [k for k in res.files if k.endswith(".png")]
    if figures:
        parts += ["", "## Figures", ""] + [f"![{k}]({k})" for k in figures]
    return "\n".join(parts) + "\n"
