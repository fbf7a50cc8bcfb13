"""From records to findings: a Table-1-style table, saturating fits, Pareto frontier, plots.

Accuracy is averaged over problems per seed, then over seeds; its standard error is over
seeds (sample std / sqrt(k)) when there are several, else over problems. FLOPs are means
per problem, recomputed from each record's ledger token counts (``ComputeLedger``), so the
paper-convention and full-cost numbers cannot drift from the tokens actually counted.
"""
from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import difficulty, efficiency, uncertainty
from .findings import Finding, findings
from .records import PASS_AT_N, Record, load_dir

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
ORACLE = PASS_AT_N
DEFAULT_RULE = "weighted"


# ---------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    model: str
    method: str
    rule: str
    budget: int
    paper_flops: float
    full_flops: float
    accuracy: float  # fraction
    low: float  # 95 % Wilson interval, n = problems (see experiments.uncertainty)
    high: float
    n_problems: int
    n_seeds: int
    derived: bool  # some records derived by subsampling a larger run
    prm_flops: float = 0.0  # the PRM's part of full_flops


def rules_in(records: Iterable[Record]) -> list[str]:
    keys: set[str] = set()
    for r in records:
        keys.update(r.votes)
    order = {"majority": 0, "best_of_n": 1, "weighted": 2}
    return sorted(keys, key=lambda k: (order.get(k.split("/")[0], 9), k))


def resolve_rule(rule: str, available: Sequence[str]) -> str:
    """"weighted" -> "weighted/last" (or the first weighted key present); exact keys pass through."""
    if rule in available or rule == ORACLE:
        return rule
    matches = [k for k in available if k.split("/")[0] == rule]
    if not matches:
        raise ValueError(f"no voting rule {rule!r} in these records; they have {list(available) + [ORACLE]}")
    return next((k for k in matches if k.endswith("/last")), matches[0])


def summarize(records: Sequence[Record], rules: Sequence[str] | None = None,
              order: tuple[Sequence[str], Sequence[str]] | None = None) -> list[Row]:
    """One row per (model, method, rule, budget); ``order`` = (models, methods) as the config lists them."""
    groups: dict[tuple[str, str, int], list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.model, r.method, r.budget)].append(r)
    rules = list(rules) if rules is not None else rules_in(records) + [ORACLE]
    rows = []
    for (model, method, budget), recs in sorted(groups.items()):
        ledgers = [r.ledger for r in recs]
        paper = float(np.mean([lg.paper_flops for lg in ledgers]))
        full = float(np.mean([lg.full_flops for lg in ledgers]))
        prm = float(np.mean([lg.prm_flops for lg in ledgers]))
        derived = any(r.derived_from for r in recs)
        for rule in rules:
            by_seed: dict[int, list[bool]] = defaultdict(list)
            for r in recs:
                c = r.verdict(rule)
                if c is not None:
                    by_seed[r.seed].append(c)
            if not by_seed:
                continue
            acc = float(np.mean([np.mean(v) for v in by_seed.values()]))
            n = len({r.problem_id for r in recs if r.verdict(rule) is not None})
            rows.append(Row(model, method, rule, budget, paper, full, acc, *uncertainty.wilson(acc * n, n), n,
                            len(by_seed), derived, prm))
    return _ordered(rows, records, rules, order)


def _ordered(rows: list[Row], records: Sequence[Record], rules: Sequence[str],
             order: tuple[Sequence[str], Sequence[str]] | None = None) -> list[Row]:
    """Models and methods in config order when known (else smaller models first, cheaper methods
    first), then budget, then rule: the same order on every run."""
    if order is not None:
        models, methods = ({m: i for i, m in enumerate(names)} for names in order)
        rank = {rule: i for i, rule in enumerate(rules)}
        return sorted(rows, key=lambda r: (models.get(r.model, len(models)), r.model, methods.get(r.method, len(methods)),
                                           r.method, r.budget, rank.get(r.rule, len(rank))))
    size: dict[str, float] = {}
    for r in records:
        size.setdefault(r.model, r.ledger.policy_params)
    cost: dict[str, float] = {}
    for r in rows:
        cost[r.method] = min(cost.get(r.method, math.inf), r.paper_flops)
    rank = {rule: i for i, rule in enumerate(rules)}
    return sorted(rows, key=lambda r: (size.get(r.model, 0), r.model, cost[r.method], r.method, r.budget,
                                       rank.get(r.rule, len(rank))))


_N_NAMES = {"non_embedding": "non-embedding parameters", "total": "total parameters",
            "configured": "the configured parameter count"}


def parameter_conventions(records: Sequence[Record]) -> str:
    """What N is in these records' FLOPs, per model when they differ ("N = non-embedding parameters")."""
    by_model: dict[str, str] = {}
    for r in records:
        by_model.setdefault(r.model, r.parameter_count)
    kinds = set(by_model.values())
    if len(kinds) == 1:
        return f"N = {_N_NAMES.get(next(iter(kinds)), next(iter(kinds)))}"
    return "N = " + "; ".join(f"{m}: {_N_NAMES.get(k, k)}" for m, k in by_model.items())


INTERVAL_NOTE = ("Wilson intervals over problems, each problem's verdicts averaged over its seeds: they cover the "
                 "choice of problems")


def format_table(rows: Sequence[Row], n_convention: str = "N = non-embedding parameters") -> str:
    """The terminal table: one line per (model, method, budget), the voting rules as columns.

    Greedy has one answer, so its line shows it once; the full long table is in table.csv and results.md."""
    keyed: dict[tuple[str, str, int], dict[str, Row]] = {}
    for r in rows:
        keyed.setdefault((r.model, r.method, r.budget), {})[r.rule] = r
    rules = list(dict.fromkeys(r.rule for r in rows))
    names = {"majority": "majority", ORACLE: "pass@n"}
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


# ---------------------------------------------------------------------------------------------
# Saturating fit: acc = a - b * exp(-c * (log10 F - log10 F0)), numpy only
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SaturatingFit:
    """a: the asymptote; b: the gap to it at F0 (the smallest FLOPs fitted); c: rate per decade."""

    a: float
    b: float
    c: float
    f0: float
    rmse: float
    n: int

    def predict(self, flops: float | np.ndarray) -> float | np.ndarray:
        return self.a - self.b * np.exp(-self.c * (np.log10(flops) - math.log10(self.f0)))


def fit_saturating(flops: Sequence[float], acc: Sequence[float]) -> SaturatingFit | None:
    """Least squares with 0 <= a <= 1 and b >= 0 (a rising curve under a ceiling an accuracy can
    reach). For each rate c the model is linear in (a, b), solved exactly (on the boundary when
    the free optimum breaks a bound); c comes from a log-spaced grid refined by golden section.
    Needs 3 distinct FLOPs."""
    x, y = np.log10(np.asarray(flops, float)), np.asarray(acc, float)
    if len(np.unique(x)) < 3:
        return None
    x0 = float(x.min())

    def solve(c: float) -> tuple[float, np.ndarray]:
        e = np.exp(-c * (x - x0))
        design = np.stack([np.ones_like(x), -e], axis=1)
        free, *_ = np.linalg.lstsq(design, y, rcond=None)
        options = [free] if 0 <= free[0] <= 1 and free[1] >= 0 else [
            np.array([1.0, max(0.0, float(e @ (1 - y)) / float(e @ e))]),  # ceiling at 1
            np.array([min(max(float(y.mean()), 0.0), 1.0), 0.0])]  # flat
        best = None
        for coef in options:
            resid = y - design @ coef
            if best is None or resid @ resid < best[0]:
                best = (float(resid @ resid), coef)
        return best

    grid = np.geomspace(1e-3, 30.0, 241)
    sse = np.array([solve(c)[0] for c in grid])
    i = int(np.argmin(sse))
    lo, hi = math.log(grid[max(i - 1, 0)]), math.log(grid[min(i + 1, len(grid) - 1)])
    g = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        m1, m2 = hi - g * (hi - lo), lo + g * (hi - lo)
        if solve(math.exp(m1))[0] <= solve(math.exp(m2))[0]:
            hi = m2
        else:
            lo = m1
    c = math.exp((lo + hi) / 2)
    err, (a, b) = solve(c)
    if sse[i] < err:  # the grid point was better (flat valley): keep it
        c = float(grid[i])
        err, (a, b) = solve(c)
    return SaturatingFit(float(a), float(b), float(c), 10 ** x0, math.sqrt(err / len(x)), len(x))


@dataclass(frozen=True)
class FitRow:
    model: str
    method: str
    rule: str
    fit: SaturatingFit
    max_flops: float

    @property
    def extrapolated(self) -> float:
        """Predicted accuracy at 10x the largest budget's FLOPs."""
        return float(self.fit.predict(10 * self.max_flops))


def fit_curves(rows: Sequence[Row], rule: str) -> list[FitRow]:
    out = []
    for (model, method), pts in _curves(rows, rule).items():
        fit = fit_saturating([p.paper_flops for p in pts], [p.accuracy for p in pts])
        if fit is not None:
            out.append(FitRow(model, method, rule, fit, max(p.paper_flops for p in pts)))
    return out


def _curves(rows: Sequence[Row], rule: str) -> dict[tuple[str, str], list[Row]]:
    curves: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        if r.rule == rule and r.paper_flops > 0:
            curves[(r.model, r.method)].append(r)
    return {k: sorted(v, key=lambda r: r.paper_flops) for k, v in sorted(curves.items())}


# ---------------------------------------------------------------------------------------------
# Pareto frontier and compute-optimal model
# ---------------------------------------------------------------------------------------------
def pareto(rows: Sequence[Row], rule: str) -> list[Row]:
    """Points no other point beats with fewer or equal FLOPs: the compute-optimal choices."""
    pts = sorted((r for r in rows if r.rule == rule and r.paper_flops > 0), key=lambda r: (r.paper_flops, -r.accuracy))
    front, best = [], -math.inf
    for r in pts:
        if r.accuracy > best:
            front.append(r)
            best = r.accuracy
    return front


def best_per_model(rows: Sequence[Row], rule: str, budgets: Sequence[float]) -> dict[str, list[float]]:
    """For each model, the best accuracy any of its settings reaches within each FLOPs budget."""
    out = {}
    for model in sorted({r.model for r in rows}):
        mine = [r for r in rows if r.model == model and r.rule == rule and r.paper_flops > 0]
        out[model] = [max((r.accuracy for r in mine if r.paper_flops <= c), default=math.nan) for c in budgets]
    return out


# ---------------------------------------------------------------------------------------------
# Reference points (the paper)
# ---------------------------------------------------------------------------------------------
def load_reference(name: str) -> list[dict[str, Any]]:
    """``<family>-<dataset>``, e.g. llemma-math500 (Llemma-7B and -34B) or paper-gsm8k (every model)."""
    family, _, dataset = name.rpartition("-")
    with open(REFERENCE_DIR / "llemma.json", encoding="utf-8") as f:
        doc = json.load(f)
    pts = [p for p in doc["points"] if p["dataset"] == dataset
           and (family == "paper" or p["model"].lower().startswith(family.lower()))]
    if not pts:
        datasets = sorted({p["dataset"] for p in doc["points"]})
        raise ValueError(f"no reference points for {name!r}; use <family>-<dataset> with family llemma, mistral, "
                         f"llama3 or paper and dataset one of {datasets}")
    return pts


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------
MODEL_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")  # Dark2
METHOD_MARKERS = "os^DvPXh<>"
_METHOD_ORDER = ("greedy", "sampling", "beam", "rebase", "mcts")


@dataclass(frozen=True)
class Palette:
    """How every figure draws each model and method, decided once per study so that a name looks the same
    in every figure and every report of it: a colour per model; a colour and a marker per method, which a
    reference-verifier variant (rebase-oracle) shares with its base method, drawn dashed; greedy in black."""

    models: dict[str, str]
    methods: dict[str, str]
    markers: dict[str, str]
    variants: frozenset[str]
    learned: dict[str, str]  # algorithm -> the first method (in the study's order) running it with a learned verifier

    def model(self, name: str) -> str:
        return self.models.get(name, "gray")

    def method(self, name: str) -> str:
        return self.methods.get(name, "gray")

    def marker(self, method: str) -> str:
        return self.markers.get(method, "o")

    def ls(self, method: str) -> str:
        return "--" if method in self.variants else "-"


def palette(rows: Sequence[Row], order: tuple[Sequence[str], Sequence[str]] | None = None,
            algorithms: dict[str, str] | None = None, reference: Iterable[str] = ()) -> Palette:
    """The palette from a stable order: the config's (``order`` = (models, methods)) when known, else the rows'
    models (smaller first) and the known methods of _METHOD_ORDER in their slots whether or not the rows have
    them, so that a method keeps its colour whichever rows a figure gets. ``algorithms``: method -> algorithm
    (default: its name); ``reference``: the methods searched with a reference verifier."""
    algorithms, reference = algorithms or {}, set(reference)
    present = {r.method for r in rows}
    models = list(dict.fromkeys([*(order[0] if order else ()), *(r.model for r in rows)]))
    names = list(dict.fromkeys([*(order[1] if order else _METHOD_ORDER), *sorted(present, key=_method_rank)]))
    alg = {m: algorithms.get(m, m) for m in names}
    learned: dict[str, str] = {}
    for m in names:
        if m in present and m not in reference:
            learned.setdefault(alg[m], m)
    base = {m: learned.get(alg[m], alg[m] if alg[m] in names else m) if m in reference else m for m in names}
    own = [m for m in names if base[m] == m and m != "greedy"]
    colors = {"greedy": "k", **{m: f"C{i % 10}" for i, m in enumerate(own)}}
    markers = {"greedy": "*", **{m: METHOD_MARKERS[i % len(METHOD_MARKERS)] for i, m in enumerate(own)}}
    return Palette({m: MODEL_COLORS[i % len(MODEL_COLORS)] for i, m in enumerate(models)},
                   {m: colors[base[m]] for m in names}, {m: markers[base[m]] for m in names},
                   frozenset(reference & set(names)), learned)


def _method_rank(method: str) -> tuple[int, str]:
    """Baselines first, then search methods, then variants (rebase-oracle after rebase)."""
    base = method.split("-")[0]
    return (_METHOD_ORDER.index(base) if base in _METHOD_ORDER else len(_METHOD_ORDER), method)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


FLOPS_LABEL = "FLOPs per problem (2·N·generated tokens)"
NO_CURVE = "no curve: no setting was run at two budgets or more"
NO_CHOICE = ("nothing to show: every setting here searched with a reference verifier\n"
             "(the exact checker, noisy or not), which is no choice a user has")


def _curve(ax, pts: Sequence[Row], color: str, label: str | None = None, ls: str = "-", marker: str = "o",
           ms: float = 4) -> None:
    """Accuracy against paper FLOPs with each point's 95 % interval."""
    ax.errorbar([p.paper_flops for p in pts], [100 * p.accuracy for p in pts], yerr=_yerr(pts), color=color,
                marker=marker, ms=ms, ls=ls, capsize=2, elinewidth=0.8, label=label)


def _greedy(ax, row: Row, color: str, label: str | None) -> None:
    """Greedy's one answer: a line across the panel (the level to beat) with a star at its FLOPs."""
    ax.axhline(100 * row.accuracy, lw=0.8, ls="-.", color=color, label=label)
    ax.plot(row.paper_flops, 100 * row.accuracy, marker="*", ms=7, color=color, ls="none")


def _note(ax, text: str, empty: bool = False) -> None:
    """Say inside the axes why they hold nothing (an empty plot reads as a bug); ``empty``: no axes either."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.4")
    if empty:
        ax.axis("off")


def _log_x(ax) -> None:
    """Log FLOPs over a decade and a bit at least, so that a power of ten is labelled, and no minor labels
    (matplotlib writes them, colliding, when fewer than two powers of ten are in view)."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = ax.get_xlim()
    if hi < lo * 10 ** 1.2:
        mid = math.sqrt(lo * hi)
        ax.set_xlim(mid / 10 ** 0.6, mid * 10 ** 0.6)


def _finish(fig, ax, path: Path, *, xlabel: str, ylabel: str, title: str) -> None:
    """The common end of every single-axes log-FLOPs plot: axes, grid, legend (when there is one), save."""
    _log_x(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    _plt().close(fig)


_OFFSETS = [(dx * r, dy * r) for r in (4, 10, 18) for dx, dy in ((-1, 1), (1, -1), (1, 1), (-1, -1), (0, 1), (0, -1))]


def _place_labels(ax, xy: Sequence[tuple[float, float]], texts: Sequence[str], fontsize: float = 7) -> None:
    """Write each text beside its point (data coordinates) at the first offset, nearest first, where it stays
    inside the axes and covers no point and no label placed before, so that close points never get colliding
    labels (one that fits nowhere takes the nearest offset). Call it once the layout is final."""
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    frame, px = ax.get_window_extent(renderer), ax.figure.dpi / 72
    taken = [Bbox.from_bounds(x - 3 * px, y - 3 * px, 6 * px, 6 * px) for x, y in ax.transData.transform(xy)]

    def label(p, text, dx, dy):
        return ax.annotate(text, p, xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                           ha="center" if dx == 0 else "left" if dx > 0 else "right", va="bottom" if dy > 0 else "top")

    for p, text in zip(xy, texts):
        for dx, dy in _OFFSETS:
            t = label(p, text, dx, dy)
            box = t.get_window_extent(renderer)
            if (frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
                    and not any(box.overlaps(b) for b in taken)):
                break
            t.remove()
        else:
            box = label(p, text, *_OFFSETS[0]).get_window_extent(renderer)
        taken.append(box)


def _numbered(ax, n: int, text: str) -> None:
    """A legend entry whose handle is the number written beside a point in the plot."""
    ax.plot([], [], ls="none", marker=f"${n}$", ms=5 + 2 * len(str(n)), color="k", label=text)


PANELS = ("model", "method")


def plot_accuracy(rows: Sequence[Row], rule: str, path: Path, reference: Sequence[dict] = (),
                  fits: Sequence[FitRow] = (), title: str = "", panels: str = "model",
                  pal: Palette | None = None) -> None:
    """Small multiples: one panel per model (a curve per method) or per method (a curve per model), greedy as
    a line at its accuracy with a star at its FLOPs, the legend under the panels; the paper's points
    numbered, the numbers listed in the legend.

    Only settings measured at two budgets or more are curves; fits are drawn over the FLOPs
    their data span (their extrapolation is a column of results.md, not a line)."""
    if panels not in PANELS:
        raise ValueError(f"panels must be one of {PANELS}, got {panels!r}")
    plt = _plt()
    pal = pal or palette(rows)
    curves = {k: v for k, v in _curves(rows, rule).items() if len(v) >= 2}
    greedy = {r.model: r for r in rows if r.method == "greedy" and r.rule == rule}
    models = [m for m in pal.models if m in {m for m, _ in curves} | set(greedy)]
    methods = [m for m in pal.methods if m in {k for _, k in curves}]
    by_model = panels == "model"
    names, series = (models, methods) if by_model else (methods, models)
    fits_by = {(f.model, f.method): f for f in fits}
    base = rule.split("/")[0]
    refs = [p for p in reference if p["rule"] in (base, "greedy")]
    n = max(1, len(names))
    cols = n if n <= 4 else math.ceil(n / 2)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(max(6.0, 4.4 * cols), 3.9 * nrows + 1), sharey=True, sharex=True,
                             squeeze=False)
    for ax, name in zip(axes.flat, names):
        for key in series:
            model, method = (name, key) if by_model else (key, name)
            pts = curves.get((model, method))
            if not pts:
                continue
            color = pal.method(method) if by_model else pal.model(model)
            _curve(ax, pts, color, key, pal.ls(method))
            f = fits_by.get((model, method))
            if f is not None:
                xs = np.geomspace(pts[0].paper_flops, pts[-1].paper_flops, 40)
                ax.plot(xs, 100 * f.fit.predict(xs), ls=":", lw=1, color=color)
        for model in ([name] if by_model else models):
            if model in greedy:
                _greedy(ax, greedy[model], pal.method("greedy") if by_model else pal.model(model),
                        "greedy" if by_model else f"greedy {model}")
        if refs:
            ax.scatter([p["paper_flops"] for p in refs], [p["accuracy_pct"] for p in refs], marker="x", color="k",
                       s=30, zorder=5)
        ax.set_title(name)
        ax.set_xlabel(FLOPS_LABEL, fontsize=8)
        ax.grid(alpha=0.3, which="both")
    _log_x(axes[0][0])
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(f"accuracy % ({rule})")
    if fits:
        axes[0][0].plot([], [], ls=":", lw=1, color="gray", label="saturating fit")
    for i, p in enumerate(refs, 1):
        _numbered(axes[0][0], i, f"{p['model']} {p['method']} {p['budget']}")
    head = title or "Accuracy vs inference compute" + (" (×, numbered: Wu et al. 2024's points)" if refs else "")
    fig.suptitle(head if curves else f"{head}\n{NO_CURVE}", fontsize=10)
    fig.tight_layout(rect=(0, _shared_legend(fig, axes), 1, 1))
    for ax in list(axes.flat)[:len(names)]:
        _place_labels(ax, [(p["paper_flops"], p["accuracy_pct"]) for p in refs], [str(i + 1) for i in range(len(refs))])
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _shared_legend(fig, axes, ncol: int = 6) -> float:
    """One legend for all panels, under them (each label once: curves first, then the other entries, each in
    order of first appearance), in as many columns (up to ``ncol``) as the figure's width holds; returns the
    share of the figure's height it takes."""
    from matplotlib.container import Container

    handles: dict = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    handles = dict(sorted(handles.items(), key=lambda kv: not isinstance(kv[1], Container)))
    if not handles:
        return 0.0
    renderer = fig.canvas.get_renderer()
    for cols in range(min(ncol, len(handles)), 0, -1):
        legend = fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=cols, fontsize=8,
                            frameon=False)
        box = legend.get_window_extent(renderer)
        if box.width <= fig.bbox.width or cols == 1:
            return (box.height + 4) / fig.bbox.height
        legend.remove()
    return 0.0


def plot_pareto(rows: Sequence[Row], rule: str, path: Path, pal: Palette | None = None) -> None:
    """Every (model, method, budget) as a point (colour = model, marker = method); the frontier stepped, its
    points numbered in the plot and listed in the legend (long labels beside close points would collide)."""
    plt = _plt()
    pal = pal or palette(rows)
    pts = [r for r in rows if r.rule == rule and r.paper_flops > 0]
    front = pareto(rows, rule)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for r in pts:
        ax.scatter(r.paper_flops, 100 * r.accuracy, color=pal.model(r.model), marker=pal.marker(r.method), alpha=0.55,
                   s=70 if pal.marker(r.method) == "*" else 28)
    if front:
        ax.step([r.paper_flops for r in front], [100 * r.accuracy for r in front], where="post", color="k", lw=1.2,
                label="Pareto frontier (numbered below)")
    else:
        _note(ax, NO_CHOICE, empty=True)
    for m in (m for m in pal.models if any(r.model == m for r in pts)):
        ax.plot([], [], color=pal.model(m), lw=5, alpha=0.6, label=m)
    for k in (k for k in pal.methods if any(r.method == k for r in pts)):
        ax.scatter([], [], color="gray", marker=pal.marker(k), label=k)
    for i, r in enumerate(front, 1):
        _numbered(ax, i, f"{r.model} {r.method} {r.budget}: {100 * r.accuracy:.0f} %")
    _log_x(ax)
    ax.set_xlabel(FLOPS_LABEL)
    ax.set_ylabel(f"accuracy % ({rule})")
    ax.set_title("Every (model, method, budget); the frontier is compute-optimal", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    entries = len(ax.get_legend_handles_labels()[0])
    if entries:  # about 30 entries fit the figure's height: more take more columns
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, ncol=math.ceil(entries / 30))
    fig.tight_layout()
    _place_labels(ax, [(r.paper_flops, 100 * r.accuracy) for r in front], [str(i + 1) for i in range(len(front))])
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_levels(by_level: dict[Any, list[Row]], rule: str, path: Path, pal: Palette | None = None) -> None:
    """One row of panels per model, one column per difficulty level; ``pal``: the study's (the main plot's colours)."""
    plt = _plt()
    levels = sorted(by_level)
    all_rows = [r for rows in by_level.values() for r in rows if r.rule == rule]
    pal = pal or palette(all_rows)
    models = [m for m in pal.models if any(r.model == m for r in all_rows)]
    fig, axes = plt.subplots(len(models), len(levels), figsize=(2.9 * len(levels), 2.6 * len(models) + 0.8),
                             sharey=True, sharex=True, squeeze=False)
    curves = {lv: {k: v for k, v in _curves(by_level[lv], rule).items() if len(v) >= 2} for lv in levels}
    for i, model in enumerate(models):
        for ax, level in zip(axes[i], levels):
            for method in (k for k in pal.methods if (model, k) in curves[level]):
                _curve(ax, curves[level][(model, method)], pal.method(method), method, pal.ls(method), ms=3)
            for g in (r for r in by_level[level] if r.model == model and r.method == "greedy" and r.rule == rule):
                _greedy(ax, g, pal.method("greedy"), "greedy")
            if not ax.has_data():
                _note(ax, "no records\nat this level")
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(f"level {level}", fontsize=9)
            if i == len(models) - 1:
                ax.set_xlabel("paper FLOPs", fontsize=8)
        axes[i][0].set_ylabel(f"{model}\naccuracy % ({rule})", fontsize=8)
    if not any(curves.values()):
        fig.suptitle(NO_CURVE, fontsize=9)
    _log_x(axes[0][0])
    fig.tight_layout(rect=(0, _shared_legend(fig, axes, ncol=7), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_best_model(rows: Sequence[Row], rule: str, path: Path, pal: Palette | None = None) -> None:
    plt = _plt()
    pal = pal or palette(rows)
    flops = sorted({r.paper_flops for r in rows if r.rule == rule and r.paper_flops > 0})
    best = best_per_model(rows, rule, flops)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model in (m for m in pal.models if m in best):
        accs = [100 * a for a in best[model]]
        rises = [i for i, a in enumerate(accs) if not math.isnan(a) and (i == 0 or a != accs[i - 1])]
        ax.step(flops, accs, where="post", color=pal.model(model), marker="o", ms=3, markevery=rises,
                label=f"{model}: best within budget")
    edges = flops + [flops[-1] * 2] if flops else []
    for lo, hi, winner in zip(edges, edges[1:], _winners(best)):
        if winner is not None:  # bottom strip: which model is compute-optimal from this budget on
            ax.axvspan(lo, hi, ymin=0, ymax=0.04, color=pal.model(winner), alpha=0.8, lw=0)
    if not flops:
        _note(ax, NO_CHOICE, empty=True)
    ax.margins(y=0.12)  # the lowest step clears the strip
    _finish(fig, ax, path, xlabel="FLOPs budget per problem", ylabel=f"best accuracy % ({rule})",
            title="Compute-optimal model per budget (bottom strip: the winner)")


def _winners(best: dict[str, list[float]]) -> list[str | None]:
    models = list(best)
    n = len(next(iter(best.values()), []))
    out = []
    for i in range(n):
        scored = [(best[m][i], m) for m in models if not math.isnan(best[m][i])]
        out.append(max(scored)[1] if scored else None)
    return out


def compared_curves(rows: Sequence[Row], rule: str, pal: Palette) -> dict[str, dict[str, list[Row]]]:
    """Per model with a sampling curve (its learned-verifier sampling method at two budgets or more): that
    curve and, when there is one, its learned-verifier REBASE curve, keyed by method."""
    curves = _curves(rows, rule)
    methods = [m for m in (pal.learned.get(BASELINE), pal.learned.get("rebase")) if m is not None]
    out = {}
    for model in pal.models:
        mine = {m: curves[(model, m)] for m in methods if len(curves.get((model, m), ())) >= 2}
        if methods and methods[0] in mine:
            out[model] = mine
    return out


def plot_models(rows: Sequence[Row], rule: str, path: Path, pal: Palette | None = None) -> None:
    """The paper's Figure 1: every policy's sampling and REBASE curves and its greedy answer on the same axes
    (colour = policy, line and marker = method), so "a small policy with search against a large one with
    sampling at equal FLOPs" reads off one plot (report() draws it with two such policies or more)."""
    plt = _plt()
    pal = pal or palette(rows)
    compared = compared_curves(rows, rule, pal)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    greedy = {r.model: r for r in rows if r.method == "greedy" and r.rule == rule}
    for model, curves in compared.items():
        for method, pts in curves.items():
            _curve(ax, pts, pal.model(model), f"{model} {method}", "-" if method != BASELINE else "--",
                   pal.marker(method), ms=5)
        if model in greedy:
            g = greedy[model]
            ax.errorbar(g.paper_flops, 100 * g.accuracy, yerr=_yerr([g]), marker="*", ms=11, ls="none",
                        color=pal.model(model), capsize=2, elinewidth=0.8, label=f"{model} greedy")
    ax.legend(fontsize=7, ncol=len(compared), loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False)
    _log_x(ax)
    ax.set_xlabel(FLOPS_LABEL)
    ax.set_ylabel(f"accuracy % ({rule})")
    ax.set_title(f"Policies compared at equal FLOPs: sampling (dashed, {rule}) and REBASE (solid)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_verifier_quality(points: Sequence[efficiency.SweepPoint], rows: Sequence[Row], rule: str, path: Path,
                          pal: Palette | None = None) -> None:
    """Accuracy at a fixed budget against the reference verifier's error rate (in the colour of the method
    running the same algorithm with the study's PRM); dashed: that method with the PRM."""
    plt = _plt()
    pal = pal or palette(rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    series: dict[tuple[str, str, int], list[efficiency.SweepPoint]] = defaultdict(list)
    for p in points:
        series[(p.model, p.algorithm, p.budget)].append(p)
    used: dict[str, int] = defaultdict(int)
    for (model, alg, budget), pts in sorted(series.items()):
        pts = sorted(pts, key=lambda p: p.flip_rate)
        method = pal.learned.get(alg, alg)
        color = pal.method(method)
        marker = METHOD_MARKERS[used[color] % len(METHOD_MARKERS)]  # a second series in one colour: another marker
        used[color] += 1
        ax.errorbar([100 * p.flip_rate for p in pts], [100 * p.accuracy for p in pts], yerr=_yerr(pts), marker=marker,
                    capsize=2, color=color, label=f"{model} {alg}, budget {budget}: checker with flipped verdicts")
        learned = [r for r in rows if r.model == model and r.method == method and r.budget == budget and r.rule == rule]
        if learned:
            ax.axhline(100 * learned[0].accuracy, ls="--", lw=1, color=color,
                       label=f"{model} {method}, budget {budget}: the study's PRM")
        if method == BASELINE:
            mv = [r for r in rows if r.model == model and r.method == method and r.budget == budget
                  and r.rule == "majority"]
            if mv:
                ax.axhline(100 * mv[0].accuracy, ls=":", lw=1, color="gray",
                           label=f"{model} {method}, budget {budget}: majority vote (no verifier)")
    ax.set_xlabel("verifier error: share of step verdicts flipped (%)")
    ax.set_ylabel(f"accuracy % ({rule})")
    ax.set_title("How verifier errors cap search")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def plot_difficulty(study: "difficulty.DifficultyStudy", rule: str, path: Path) -> None:
    """The single-setting frontier and the per-difficulty compute-optimal frontier, as steps (the first wider
    and under the second, so both show where they coincide)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for pts, label, color, lw, s in ((study.single, "best single setting for every problem", "C0", 2.2, 30),
                                     (study.optimal, "best setting per difficulty bin (compute-optimal)", "C3", 1.2, 10)):
        pts = [p for p in pts if p.flops > 0]
        if pts:
            ax.step([p.flops for p in pts], [100 * p.accuracy for p in pts], where="post", color=color, lw=lw,
                    label=label)
            ax.scatter([p.flops for p in pts], [100 * p.accuracy for p in pts], color=color, s=s)
    _finish(fig, ax, path, xlabel=FLOPS_LABEL, ylabel=f"accuracy % ({rule})",
            title=f"Compute-optimal choice per difficulty ({study.how})")


def difficulty_markdown(study: "difficulty.DifficultyStudy", rule: str) -> str:
    def name(choice: tuple) -> str:
        return " ".join(str(x) for x in choice)

    lines = [f"# Compute-optimal strategy per difficulty ({rule})", "",
             f"Bins: {study.how}; problems x seeds per bin: "
             + ", ".join(f"{b}: {n}" for b, n in study.sizes.items()) + ". For every accuracy the best single "
             "setting reaches (used for every problem), the cheapest choice of one setting per bin that is as "
             "accurate (an exact search over all combinations; oracle bins, as in Snell et al.'s "
             "oracle-difficulty experiments). Reference verifiers are left out. The choice is made and measured on "
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


# ---------------------------------------------------------------------------------------------
# Compute efficiency against the sampling baseline
# ---------------------------------------------------------------------------------------------
BASELINE = efficiency.BASELINE


@dataclass
class Efficiency:
    """The paper's headline quantities: FLOPs ratios to reach the baseline's accuracy and paired
    differences at equal FLOPs, each with its interval; and accuracy against verifier error."""

    ratios: list[efficiency.RatioRow]
    paired: list[efficiency.Comparison]
    sweep: list[efficiency.SweepPoint]

    def headline(self) -> list[efficiency.RatioRow]:
        """Per (model, method): the row at the baseline's best accuracy."""
        best: dict[tuple[str, str], efficiency.RatioRow] = {}
        for r in self.ratios:
            k = (r.model, r.method)
            if k not in best or r.target > best[k].target:
                best[k] = r
        return list(best.values())


def compute_efficiency(records: Sequence[Record], rows: Sequence[Row], rule: str, baseline: str = BASELINE,
                       matrix: uncertainty.ProblemMatrix | None = None) -> Efficiency:
    matrix = matrix if matrix is not None else uncertainty.problem_matrix(records, rule)
    settings = sorted({(r.model, r.method) for r in rows if r.method != baseline and r.rule == rule
                       and len({x.budget for x in rows if x.method == r.method and x.model == r.model}) >= 2})
    methods = sorted({m for _, m in settings})
    ratios = [x for m in methods for x in efficiency.ratio_rows(rows, rule, m, baseline, matrix)]
    pairs = [x for model, m in settings for x in efficiency.compare(matrix, model, m, model, baseline)]
    return Efficiency(ratios, pairs, efficiency.verifier_sweep(records, rule))


def _reach(r: efficiency.RatioRow) -> tuple[str, str]:
    f = r.method_flops
    if f.flops != f.flops:
        return "–", "not reached"
    return (("≤ " if f.bound else "") + f"{f.flops:.3g}", ("≥ " if f.bound else "") + f"{r.ratio:.2f}x")


def format_headline(eff: Efficiency) -> str:
    lines = [f"FLOPs to reach {BASELINE}'s best accuracy, 95 % problem-bootstrap interval in brackets "
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
        lines.append(f"  {r.model} {r.method}: {100 * r.target:.0f}% ({BASELINE} at budget {r.budget}, "
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
    parts = ["", f"## FLOPs to reach {BASELINE}'s accuracy ({rule})", "",
             f"For each accuracy {BASELINE} reaches (at the budget shown), the paper FLOPs each method needs for it, "
             "interpolated on log FLOPs between its budgets, never extrapolated (≤: reached already at its smallest "
             f"budget). Ratio = {BASELINE} FLOPs / method FLOPs; the paper's headline is 6.8x (Llemma-7B, REBASE vs "
             "sampling with weighted voting, MATH500). The interval: 95 % of a paired bootstrap over problems "
             f"({uncertainty.RESAMPLES} resamples; both curves and the ratio recomputed on each, the target being "
             f"{BASELINE}'s accuracy at the same budget in that resample); \"not reached\" at an end means the method "
             "misses the target in more than 2.5 % of resamples.", "",
             markdown_table(["model", "method", f"target (= {BASELINE} at budget)", f"{BASELINE} FLOPs",
                             "method FLOPs", "ratio", "95 % interval"],
                            [(r.model, r.method, f"{100 * r.target:.1f} % (b={r.budget})", f"{r.baseline_flops:.3g}",
                              *_reach(r), r.interval_text) for r in eff.ratios])]
    if eff.paired:
        parts += ["", f"## Paired on the same problems: each method vs {BASELINE} at equal FLOPs ({rule})", "",
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
    oracle_methods = {r.method for r in records if efficiency.flip_rate_of(r.verifier) is not None}
    choices = [r for r in rows if r.method not in oracle_methods]
    front = pareto(choices, rule)
    ref = load_reference(reference) if reference else []
    convention = parameter_conventions(records)
    matrix = uncertainty.problem_matrix(records, rule)
    eff = compute_efficiency(records, rows, rule, matrix=matrix)
    res = ReportResult(rows, fits, front, rule, format_table(rows, convention), eff, convention=convention,
                       findings=findings(records, eff.headline(), eff.sweep, matrix, order[1] if order else ()))

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
        records, rule, {(r.model, r.method, r.budget) for r in choices if r.rule == rule and r.paper_flops > 0})
    if res.difficulty is not None:
        (out / "compute_optimal.md").write_text(difficulty_markdown(res.difficulty, rule), encoding="utf-8")
        res.files["compute_optimal.md"] = out / "compute_optimal.md"
    levels = sorted({r.level for r in records if r.level is not None})
    by_level = {lv: summarize([r for r in records if r.level == lv], [rule]) for lv in levels}
    if plots:
        pal = palette(rows, order, {r.method: r.algorithm for r in records}, oracle_methods)
        figures = [("accuracy_vs_flops.png", lambda p: plot_accuracy(rows, rule, p, ref, fits, panels=panels, pal=pal))]
        if len(compared_curves(rows, rule, pal)) >= 2:
            figures.append(("models_compared.png", lambda p: plot_models(rows, rule, p, pal)))
        figures += [("pareto.png", lambda p: plot_pareto(choices, rule, p, pal)),
                    ("best_model_per_budget.png", lambda p: plot_best_model(choices, rule, p, pal))]
        if by_level:
            figures.append(("accuracy_by_level.png", lambda p: plot_levels(by_level, rule, p, pal)))
        if res.difficulty is not None:
            figures.append(("compute_optimal.png", lambda p: plot_difficulty(res.difficulty, rule, p)))
        if eff.sweep:
            figures.append(("verifier_quality.png", lambda p: plot_verifier_quality(eff.sweep, rows, rule, p, pal)))
        for name, draw in figures:
            draw(out / name)
            res.files[name] = out / name
    (out / "results.md").write_text(_markdown(res, by_level, ref, results_dir), encoding="utf-8")
    res.files["results.md"] = out / "results.md"
    return res


def config_order(results_dir: Path) -> tuple[list[str], list[str]] | None:
    """(policy names, method names) in the order of the run's resolved.yaml, if it has one."""
    import yaml

    path = results_dir / "resolved.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return [p["name"] for p in data["policies"]], [m["name"] for m in data["methods"]]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None


def _write_csv(path: Path, dicts: list[dict[str, Any]], columns: Sequence[str]) -> Path:
    """A CSV with a header even when there are no rows (so readers need no special case)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(dicts)
    return path


def _pct(r: Row | efficiency.SweepPoint) -> str:
    return f"{100 * r.accuracy:.1f} [{100 * r.low:.1f}, {100 * r.high:.1f}]"


def _yerr(pts: Sequence[Row | efficiency.SweepPoint]) -> list[list[float]]:
    """Asymmetric error bars (percentage points) from each point's interval."""
    return [[100 * (p.accuracy - p.low) for p in pts], [100 * (p.high - p.accuracy) for p in pts]]


def _markdown(res: ReportResult, by_level: dict[Any, list[Row]], ref: list[dict], results_dir: Path) -> str:
    rows = res.rows
    parts = [f"# Results: {results_dir}", "",
             f"FLOPs are per problem ({res.convention}). *Paper* = 2·N_policy·generated tokens (Wu et al.'s "
             "x-axis); *full* = 2·N_policy·all tokens the policy processed + 2·N_PRM·tokens the PRM processed. "
             f"Accuracy % [95 % interval]: {INTERVAL_NOTE}. `oracle` = some candidate is right. "
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
