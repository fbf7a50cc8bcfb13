"""Render, figures: every matplotlib drawing of the report, from analysed rows.

Kept apart from the numbers (``analysis``) and the text (``report``) so that matplotlib is
imported only when a figure is drawn, and so that a study's colours and markers (``Palette``)
are decided in one place and look the same in every figure.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import difficulty, efficiency, sequential
from .facts import BASELINE_ALGORITHM
from .analysis import FitRow, Row, _curves, best_per_model, pareto

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
    methods = [m for m in (pal.learned.get(BASELINE_ALGORITHM), pal.learned.get("rebase")) if m is not None]
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
            _curve(ax, pts, pal.model(model), f"{model} {method}", "--" if method == pal.learned.get(BASELINE_ALGORITHM) else "-",
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
        if alg == BASELINE_ALGORITHM:
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


def _yerr(pts: Sequence[Row | efficiency.SweepPoint]) -> list[list[float]]:
    """Asymmetric error bars (percentage points) from each point's interval."""
    return [[100 * (p.accuracy - p.low) for p in pts], [100 * (p.high - p.accuracy) for p in pts]]


def plot_sequential_share(study: "sequential.SequentialStudy", path: Path) -> None:
    """Snell et al.'s Figure (accuracy against the sequential share): one panel per budget of the first model
    with ratios, one line per difficulty bin, each point with its 95 % interval; x from all parallel (N chains
    of one attempt) to all sequential (one chain of N)."""
    plt = _plt()
    model = study.models[0]
    budgets = study.budgets(model)
    bins = study.bins()
    fig, axes = plt.subplots(1, len(budgets), figsize=(3.6 * len(budgets), 3.8), sharey=True, squeeze=False)
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(bins)))
    dodge = 0.012  # bins side by side at each ratio, so their intervals do not hide each other
    for ax, budget in zip(axes[0], budgets):
        for k, (b, color) in enumerate(zip(bins, colors)):
            cells = sorted((c for c in study.cells if c.bin == b and c.setting.model == model
                            and c.setting.budget == budget), key=lambda c: c.setting.length)
            acc = [100 * c.accuracy for c in cells]
            err = [[a - 100 * c.interval[0] for a, c in zip(acc, cells)], [100 * c.interval[1] - a for a, c in zip(acc, cells)]]
            ax.errorbar([c.setting.share + dodge * (k - (len(bins) - 1) / 2) for c in cells], acc, yerr=err, color=color, marker="o", ms=4, capsize=2,
                        elinewidth=0.7, label=b)
        cells = sorted({c.setting for c in study.cells if c.setting.model == model and c.setting.budget == budget},
                       key=lambda s: s.length)
        ax.set_xticks([s.share for s in cells], [f"{s.budget // s.length}x{s.length}" for s in cells], fontsize=7)
        ax.set_title(f"N = {budget} attempts", fontsize=10)
        ax.set_xlabel("chains x attempts per chain\n(all parallel -> all sequential)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"accuracy % ({study.rule})")
    if bins:  # beside the last panel, where it covers no point
        axes[0][-1].legend(fontsize=7, title=study.how if len(study.how) < 20 else "bin", loc="center left",
                           bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"Sequential revisions vs parallel sampling per difficulty ({model})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
