"""Repeated sampling under an imperfect verifier: does the "universal scaling law" hold here?

    python -m experiments.builtin.scaling_law [--problems N] [--out DIR]

The law (issue 25's seed paper): with a judge that rejects a right answer with probability
eps, accuracy after R trials is

    I'(R) = (1 - (1 - I)^f(R)) * (1 - eps)^f(R),   f(R) = R^beta, 0 < beta <= 1,

with I the single-trial accuracy (pass@1). For eps > 0 it rises, peaks and then falls: past
some R more trials hurt. The built-in task tests it directly, because its verifier can be made
imperfect at a known rate: the exact step checker with its verdicts flipped (``noisy_oracle``),
either both ways or only right verdicts (``flip="right"``: the law's judge, which rejects right
answers and never accepts wrong ones).

One policy (builtin-small) samples R = 1..64 solutions per problem (one run at 64, smaller R
are its first R samples; the samples are the same for every verifier, since they depend only on
the problem seed). Each verifier scores them, and best-of-N and weighted voting pick an answer.
Per verifier and rule we measure accuracy at each R with a 95 % Wilson interval, take I as the
mean correctness of all 64 candidates (pass@1, measured on 64x more samples than the R = 1
accuracy), fit eps and beta by least squares on a grid, and also beta alone with eps fixed at
the flip rate, and count the R where the fitted curve lies inside the measured interval.

A third reading, "best-of-N, abstaining", counts a pick as right only if the verifier accepted
it: the law's own accounting, where a rejected right answer is a failure. The two voting rules
instead always answer, falling back to an unaccepted candidate.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..config import DatasetConfig, MethodConfig, PolicyConfig, StudyConfig, VotingConfig
from ..records import Record
from .models import LIMITS, PRM_DIR, policy_dir

POLICY = "small"
BUDGETS = tuple(2 ** i for i in range(7))  # R = 1, 2, 4, ..., 64
PROBLEMS = 300  # ~1 s per problem on one core: about 5 minutes; n = 300 gives intervals of about +-5 points
OUTPUT = "runs/scaling-law"
ACCEPT = 0.5  # a candidate is accepted when its last step scores above this (the checker: 0.9 right, 0.1 wrong)
ABSTAIN = "best_of_n/last+abstain"
RULES = {"best_of_n/last": "best-of-N", "weighted/last": "weighted voting",
         ABSTAIN: "best-of-N, abstaining unless accepted"}
EPS_GRID = np.round(np.arange(0.0, 0.9995, 0.001), 3)  # eps in [0, 0.999], step 0.001
BETA_GRID = np.round(np.arange(0.005, 1.0001, 0.005), 3)  # beta in (0, 1], step 0.005


# ---------------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verifier:
    """A reference verifier: the exact checker with verdicts flipped at ``flip_rate`` (``flip``:
    "both" ways or only "right" ones)."""

    flip_rate: float
    flip: str = "both"

    @property
    def name(self) -> str:
        return "oracle" if self.flip_rate == 0 else f"{self.flip}-{self.flip_rate:g}"

    @property
    def spec(self) -> dict:
        if self.flip_rate == 0:
            return {"type": "builtin_oracle"}
        return {"type": "noisy_oracle", "flip_rate": self.flip_rate, "flip": self.flip}

    @property
    def order(self) -> tuple:
        """The exact checker first, then both-ways flips, then right-only flips, by rate."""
        return self.flip_rate > 0, self.flip, self.flip_rate

    @classmethod
    def of(cls, spec: dict | None) -> Verifier | None:
        """The verifier a record was scored with, or None for any other PRM."""
        from reward_models.registry import reference_of  # what the PRM's registry entry declares

        ref = reference_of(spec)
        return None if ref is None else cls(ref.error_rate, ref.flip if ref.error_rate else "both")


VERIFIERS = (Verifier(0.0), Verifier(0.1), Verifier(0.2), Verifier(0.3),
             Verifier(0.1, "right"), Verifier(0.3, "right"))


def study(problems: int = PROBLEMS, output: str = OUTPUT) -> StudyConfig:
    """Sampling with subsampled budgets, once per verifier, for the small built-in policy
    (the demo's policy settings, limits, dataset and grader)."""
    policy = PolicyConfig(name=f"builtin-{POLICY}", path=str(policy_dir(POLICY)), step_format="newline",
                          temperature=1.0, max_batch_rows=1024)
    methods = [MethodConfig(name=f"sampling-{v.name}", algorithm="sampling", budgets=list(BUDGETS),
                            subsample=True, prm=v.spec) for v in VERIFIERS]
    return StudyConfig(
        description="Built-in task: repeated sampling (R = 1..64) under the exact checker with verdicts "
                    "flipped at known rates, to test the universal scaling law",
        policies=[policy], methods=methods,
        prm={"type": "likelihood", "path": str(PRM_DIR), "device": "cpu"},  # unused: every method has its own
        dataset=DatasetConfig(name="builtin", options={"n": 500}, limit=problems, grader="exact"),
        seeds=[0], limits=LIMITS, voting=VotingConfig(aggregations=["last"]),
        output=output, problems_per_chunk=problems)


# ---------------------------------------------------------------------------------------------
# The law and its fit
# ---------------------------------------------------------------------------------------------
def law(budgets: Sequence[float] | np.ndarray, I: float, eps: float, beta: float) -> np.ndarray:
    """I'(R) = (1 - (1 - I)^f) (1 - eps)^f with f = R^beta."""
    f = np.asarray(budgets, float) ** beta
    return (1 - (1 - I) ** f) * (1 - eps) ** f


def peak_budget(I: float, eps: float, beta: float) -> float:
    """The R where the law peaks (inf for eps = 0). With a = -ln(1 - I), b = -ln(1 - eps) the
    peak is at f = ln((a + b) / b) / a, whatever beta; below R = 1 the law only falls."""
    if eps <= 0:
        return float("inf")
    a, b = -np.log1p(-I), -np.log1p(-eps)
    return float(np.log((a + b) / b) / a) ** (1 / beta)


@dataclass(frozen=True)
class Fit:
    """The law fitted to one measured curve, I given: eps (fitted or fixed) and beta."""

    I: float
    eps: float
    beta: float
    rmse: float  # root mean squared error of the fitted accuracies
    eps_fixed: bool

    def predict(self, budgets: Sequence[float] | np.ndarray) -> np.ndarray:
        return law(budgets, self.I, self.eps, self.beta)

    @property
    def peak(self) -> float:
        return peak_budget(self.I, self.eps, self.beta)


def fit(budgets: Sequence[float], accuracy: Sequence[float], I: float, eps: float | None = None) -> Fit:
    """Least squares over a grid of eps (step 0.001) and beta (step 0.005); ``eps`` given: beta only.

    A grid because the surface is cheap (200k points x a few budgets), has no local minima to
    trap a grid, and needs no scipy."""
    R, acc = np.asarray(budgets, float), np.asarray(accuracy, float)
    if R.ndim != 1 or R.shape != acc.shape:
        raise ValueError(f"budgets and accuracy must be 1-D and of one length, got shapes {R.shape} and {acc.shape}")
    if R.size < 2:
        raise ValueError(f"fitting needs at least 2 budgets, got {R.size}")
    if not np.all(np.isfinite(R)) or np.any(R < 1):
        raise ValueError(f"budgets must be finite and >= 1, got {R.tolist()}")
    if not np.all(np.isfinite(acc)) or np.any((acc < 0) | (acc > 1)):
        raise ValueError(f"accuracies must lie in [0, 1], got {acc.tolist()}")
    if not 0 < I < 1:
        raise ValueError(f"I (pass@1) must lie in (0, 1), got {I}")
    if eps is not None and not 0 <= eps < 1:
        raise ValueError(f"eps must lie in [0, 1), got {eps}")
    eps_grid = EPS_GRID if eps is None else np.array([eps])
    f = R[None, None, :] ** BETA_GRID[None, :, None]  # (1, beta, budget)
    pred = (1 - (1 - I) ** f) * (1 - eps_grid[:, None, None]) ** f  # (eps, beta, budget)
    sse = ((pred - acc) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmin(sse)), sse.shape)
    return Fit(I, float(eps_grid[i]), float(BETA_GRID[j]), float(np.sqrt(sse[i, j] / R.size)), eps is not None)


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------
def verdict(record: Record, rule: str) -> bool | None:
    """The record's verdict under ``rule``; for ABSTAIN, best-of-N's pick counts only if accepted."""
    if rule != ABSTAIN:
        return record.verdict(rule)
    picked = record.verdict("best_of_n/last")
    scores = [c.step_scores[-1] for c in record.candidates if c.answer is not None and c.step_scores]
    return None if picked is None else picked and max(scores) > ACCEPT


@dataclass(frozen=True)
class Curve:
    """Measured accuracy of one (verifier, rule) at each budget; n = problems (seeds averaged per problem)."""

    verifier: Verifier
    rule: str
    I: float  # pass@1: the mean correctness of the largest budget's candidates
    budgets: tuple[int, ...]
    per_problem: np.ndarray  # (budgets, problems): each problem's verdict, averaged over seeds

    @property
    def n(self) -> int:
        return self.per_problem.shape[1]

    @property
    def accuracy(self) -> np.ndarray:
        return self.per_problem.mean(1)

    @property
    def intervals(self) -> list[tuple[float, float]]:
        from ..uncertainty import wilson

        return [wilson(float(s), self.n) for s in self.per_problem.sum(1)]


def measure(records: Iterable[Record], rules: Iterable[str] = RULES) -> list[Curve]:
    """One curve per (reference verifier, rule) over the problems every budget has."""
    verdicts: dict[tuple[Verifier, str, int], dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    correct: dict[Verifier, list[bool]] = defaultdict(list)
    top: dict[Verifier, int] = defaultdict(int)
    scored = [(v, r) for r in records if (v := Verifier.of(r.verifier)) is not None]
    for v, r in scored:
        top[v] = max(top[v], r.budget)
    for v, r in scored:
        if r.budget == top[v]:
            correct[v] += [bool(c.correct) for c in r.candidates]
        for rule in rules:
            c = verdict(r, rule)
            if c is not None:
                verdicts[(v, rule, r.budget)][r.problem_id].append(c)
    curves = []
    for v, rule in sorted({(v, rule) for v, rule, _ in verdicts}, key=lambda k: (list(RULES).index(k[1]), k[0].order)):
        budgets = tuple(sorted(b for w, q, b in verdicts if (w, q) == (v, rule)))
        problems = sorted(set.intersection(*(set(verdicts[(v, rule, b)]) for b in budgets)))
        m = np.array([[np.mean(verdicts[(v, rule, b)][p]) for p in problems] for b in budgets])
        curves.append(Curve(v, rule, float(np.mean(correct[v])), budgets, m))
    return curves


@dataclass(frozen=True)
class Verdict:
    """How the law fits one measured curve."""

    curve: Curve
    free: Fit  # eps and beta fitted
    fixed: Fit  # beta fitted, eps = the flip rate
    peak: int  # the measured best budget
    fall: float  # accuracy at the largest budget minus at the peak
    fall_p: float  # paired test of that fall over problems

    def misses(self, fit: Fit) -> np.ndarray:
        """Per budget: the distance from the prediction to the measured interval (0 inside it)."""
        pred = fit.predict(self.curve.budgets)
        lo, hi = np.array(self.curve.intervals).T
        return np.maximum(np.maximum(lo - pred, pred - hi), 0.0)


def judge(curve: Curve) -> Verdict:
    from ..uncertainty import paired_p_value

    R, acc, I = curve.budgets, curve.accuracy, curve.I
    k = int(np.argmax(acc))
    return Verdict(curve, fit(R, acc, I), fit(R, acc, I, curve.verifier.flip_rate), R[k], float(acc[-1] - acc[k]),
                   paired_p_value(curve.per_problem[-1] - curve.per_problem[k]))


# ---------------------------------------------------------------------------------------------
# Table and figure
# ---------------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _fit_cells(v: Verdict, f: Fit) -> list[str]:
    """eps, beta, RMSE, budgets inside, worst miss, the law's peak R and its fall from there to the largest R."""
    m, top = v.misses(f), v.curve.budgets[-1]
    fall = f.predict([top])[0] - f.predict(np.geomspace(1, top, 512)).max()
    return [f"{f.eps:.3f}", f"{f.beta:.3f}", _pct(f.rmse), f"{(m == 0).sum()}/{m.size}", _pct(m.max()),
            f"{f.peak:.3g} ({100 * fall:+.1f})"]


def _rows(head: list[str], rows: Iterable[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def table(verdicts: Sequence[Verdict]) -> str:
    """Markdown: measured accuracies with intervals, the free fit, and the fit with eps fixed at the flip rate."""
    budgets, n = verdicts[0].curve.budgets, verdicts[0].curve.n
    top = budgets[-1]
    fits = ["eps", "beta", "RMSE", "inside", "miss", f"law's peak R (fall by {top})"]

    def name(v: Verdict) -> list[str]:
        return [RULES[v.curve.rule], v.curve.verifier.name]

    measured = [name(v) + [_pct(v.curve.I)]
                + [f"{_pct(a)} [{_pct(lo)}, {_pct(hi)}]" for a, (lo, hi) in zip(v.curve.accuracy, v.curve.intervals)]
                + [str(v.peak), "–" if v.peak == top else f"{100 * v.fall:+.1f} ({v.fall_p:.2g})"] for v in verdicts]
    free = [name(v) + _fit_cells(v, v.free) for v in verdicts]
    fixed = [name(v) + _fit_cells(v, v.fixed) for v in verdicts]
    return "\n".join([
        f"Measured accuracy, % [95 % Wilson interval], n = {n} problems; I: pass@1 (the mean correctness of all "
        f"R = {top} candidates); peak: the R of the highest accuracy; fall: accuracy at R = {top} minus at the "
        "peak (points; p: paired test over problems):", "",
        *_rows(["rule", "verifier", "I"] + [f"R = {b}" for b in budgets] + ["peak", "fall (p)"], measured), "",
        "The law I'(R) = (1 - (1 - I)^(R^beta)) (1 - eps)^(R^beta), I fixed at pass@1, eps and beta fitted by least "
        "squares; inside: budgets whose prediction lies in the measured interval; miss: the largest distance from a "
        "prediction to its interval (points):", "",
        *_rows(["rule", "verifier"] + fits, free), "",
        "The law with eps fixed at the flip rate, beta fitted:", "",
        *_rows(["rule", "verifier"] + fits, fixed)])


def figure(verdicts: Sequence[Verdict], path: Path) -> None:
    """One panel per rule: measured points with interval bars (nudged apart along R), the free fit
    (solid) and the eps-fixed fit (dashed), a colour per verifier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = list(dict.fromkeys(v.curve.rule for v in verdicts))
    names = list(dict.fromkeys(v.curve.verifier for v in verdicts))
    colours = {w: plt.get_cmap("tab10")(i) for i, w in enumerate(names)}
    fig, axes = plt.subplots(1, len(rules), figsize=(5.2 * len(rules), 4.6), sharey=True, squeeze=False)
    for ax, rule in zip(axes[0], rules):
        for v in (v for v in verdicts if v.curve.rule == rule):
            c, col = v.curve, colours[v.curve.verifier]
            nudge = 2 ** (0.05 * (names.index(c.verifier) - (len(names) - 1) / 2))
            R = np.array(c.budgets, float)
            lo, hi = np.array(c.intervals).T
            ax.errorbar(R * nudge, 100 * c.accuracy, yerr=[100 * (c.accuracy - lo), 100 * (hi - c.accuracy)],
                        fmt="o", ms=3.5, capsize=2, color=col, label=c.verifier.name)
            grid = np.geomspace(1, R[-1], 200)
            ax.plot(grid, 100 * v.free.predict(grid), "-", color=col, lw=1.2)
            ax.plot(grid, 100 * v.fixed.predict(grid), "--", color=col, lw=1, alpha=0.7)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(BUDGETS), [str(b) for b in BUDGETS])
        ax.set_xlabel("R (samples per problem)")
        ax.set_title(RULES[rule], fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    handles += [plt.Line2D([], [], color="grey", ls="-"), plt.Line2D([], [], color="grey", ls="--")]
    labels += ["law, eps and beta fitted", "law, eps = flip rate"]
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.builtin.scaling_law", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=PROBLEMS, help=f"test problems (default {PROBLEMS})")
    ap.add_argument("--out", default=OUTPUT, help=f"results directory (default {OUTPUT})")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = ap.parse_args(argv)
    if args.problems < 1:
        ap.error(f"--problems must be at least 1, got {args.problems}")
    from ..console import guarded, quiet_libraries

    quiet_libraries()
    flags = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--debug")
    return guarded(ap.prog, args.debug, lambda: _run(args.problems, args.out, not args.no_progress),
                   resume=f"{ap.prog} {flags}".strip(), results=args.out)


def _run(problems: int, out_dir: str, progress: bool) -> int:
    from ..records import load_dir
    from ..sweep import run_study

    t0 = time.perf_counter()
    out = run_study(study(problems, out_dir), progress=progress)
    verdicts = [judge(c) for c in measure(load_dir(out))]
    text = table(verdicts)
    (out / "scaling_law.md").write_text(text + "\n", encoding="utf-8")
    figure(verdicts, out / "scaling_law.png")
    print(text)
    print(f"\ntook {time.perf_counter() - t0:.0f} s; table and figure: {out / 'scaling_law.md'}, "
          f"{out / 'scaling_law.png'}")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
