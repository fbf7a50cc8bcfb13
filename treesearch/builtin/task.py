"""Built-in miniature reasoning task: chained arithmetic in the paper's step format.

A question is a start value and 1-5 operations to apply in order ("Left to right: 37 + 8
* 3"). The gold solution applies them one line at a time, the running value
always the left operand, then states the answer on its own line::

    Step 1: 37 + 8 = 45
    Step 2: 45 * 3 = 135
    The answer is 135

so a solution has 2 to 6 steps (answer line included). Why this shape: every step is
checkable from its own text (``a op b = c``) plus the question, which makes per-step error
rates exact and lets a process reward model be labelled without a judge; and a ~1M
parameter model learns it on a laptop CPU in minutes, with errors that look like LLM
errors on math (carries, multi-digit products, borrows, losing track of which
instruction comes next).

Why an expression and not words ("Start at 37. Add 8. Multiply by 3."): a probe with the
worded form and a 1M-parameter model learnt nothing useful in 8 CPU minutes. With the
expression, step k's "op b" is a verbatim copy of the question text right after step
k-1's "op b" (an induction-head lookup), and the question is half as many characters,
so tiny models learn the bookkeeping fast and the remaining errors are arithmetic.

Difficulty knobs (see ``LEVELS``): number of operations and the size of the numbers.
Train and test are disjoint by construction: a question belongs to the test side iff a
hash of its text falls in the test bucket, so no test question can ever be generated for
training, whatever the seeds.
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

OPS = ("+", "-", "*")
_QUESTION_RE = re.compile(r"^Left to right: (\d+)((?: [-+*] \d+)+)$")
_INSTR_RE = re.compile(r" ([-+*]) (\d+)")
_STEP_RE = re.compile(r"^Step (\d+): (-?\d+) ([-+*]) (\d+) = (-?\d+)\s*$")
_ANSWER_RE = re.compile(r"^The answer is (-?\d+)\s*$")

TEST_SEED = 20240801
TEST_BUCKETS = 10  # one bucket in ten of the question space is reserved for test


@dataclass(frozen=True)
class LevelSpec:
    """How hard one level is: operations, value range and operand sizes."""

    n_ops: int
    max_start: int
    max_value: int  # running value stays within [0, max_value]
    max_addend: int  # operand of + and - is 1..max_addend
    max_factor: int  # operand of * is 2..max_factor
    p_mul: float = 0.5  # chance of "*" when it is feasible (+ and - share the rest)


# Operands b are single digits at every level: "a_units op b =" then sits at fixed offsets,
# which a tiny model learns far faster than variable-width operands (measured: with 2-digit
# addends a 1M-parameter model's + steps were still 94 % wrong after 1.4k updates). The
# ceiling on the running value is the arithmetic knob: with values < 100 at levels 1-3 a
# 2x64 model solved those levels 98 % in 5 CPU minutes, so values reach 3 digits from
# level 2 and 4 digits from level 4, and half the feasible steps multiply (multi-digit
# products with chained carries are what small models get wrong; + and - are learnt).
LEVELS: dict[int, LevelSpec] = {
    1: LevelSpec(n_ops=1, max_start=99, max_value=99, max_addend=9, max_factor=9),
    2: LevelSpec(n_ops=2, max_start=99, max_value=999, max_addend=9, max_factor=9),
    3: LevelSpec(n_ops=3, max_start=99, max_value=999, max_addend=9, max_factor=9),
    4: LevelSpec(n_ops=4, max_start=99, max_value=9999, max_addend=9, max_factor=9),
    5: LevelSpec(n_ops=5, max_start=99, max_value=9999, max_addend=9, max_factor=9),
}


@dataclass(frozen=True)
class BuiltinProblem:
    """One problem; ``answer`` is a string like the MATH gold answers."""

    id: str
    question: str
    answer: str
    level: int
    solution_steps: list[str] = field(default_factory=list)  # each line ends with "\n"

    @property
    def solution(self) -> str:
        return "".join(self.solution_steps)


@dataclass(frozen=True)
class StepGrade:
    """Verdict on one generated step given the question and the steps before it.

    ``kind``: "ok", "arith" (c != a op b), "copy" (a is not the running value or op/b is
    not the next instruction), "answer" (answer line disagrees with the running value or
    comes too early), "format" (unparsable) or "extra" (a step after all instructions).
    """

    ok: bool
    kind: str


def apply_op(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown op {op!r}")


def _feasible(a: int, spec: LevelSpec) -> list[tuple[str, range]]:
    """Operations (with their operand ranges) that keep the value in [0, max_value]."""
    out: list[tuple[str, range]] = []
    hi = min(spec.max_addend, spec.max_value - a)
    if hi >= 1:
        out.append(("+", range(1, hi + 1)))
    hi = min(spec.max_addend, a)
    if hi >= 1:
        out.append(("-", range(1, hi + 1)))
    hi = min(spec.max_factor, spec.max_value // a) if a > 0 else 0
    if hi >= 2:
        out.append(("*", range(2, hi + 1)))
    return out


def _pick_op(rng: random.Random, feasible: list[tuple[str, range]], p_mul: float) -> tuple[str, range]:
    """Multiplications are the hard steps (multi-digit products), so they are favoured."""
    muls = [f for f in feasible if f[0] == "*"]
    others = [f for f in feasible if f[0] != "*"]
    if muls and (not others or rng.random() < p_mul):
        return muls[0]
    return rng.choice(others)


def render(start: int, ops: Sequence[tuple[str, int]]) -> tuple[str, list[str], int]:
    """Question text, gold step lines and the answer for a start value and operations."""
    question = f"Left to right: {start}" + "".join(f" {op} {b}" for op, b in ops)
    steps, value = [], start
    for k, (op, b) in enumerate(ops, 1):
        new = apply_op(value, op, b)
        steps.append(f"Step {k}: {value} {op} {b} = {new}\n")
        value = new
    steps.append(f"The answer is {value}\n")
    return question, steps, value


def sample_problem(rng: random.Random, level: int) -> BuiltinProblem:
    spec = LEVELS[level]
    start = rng.randint(2, spec.max_start)
    value, ops = start, []
    for _ in range(spec.n_ops):
        op, rng_b = _pick_op(rng, _feasible(value, spec), spec.p_mul)
        b = rng.choice(rng_b)
        ops.append((op, b))
        value = apply_op(value, op, b)
    question, steps, answer = render(start, ops)
    pid = hashlib.sha1(question.encode()).hexdigest()[:12]
    return BuiltinProblem(id=f"L{level}-{pid}", question=question, answer=str(answer), level=level, solution_steps=steps)


def is_test_question(question: str) -> bool:
    """The fixed train/test partition of the question space (by text hash)."""
    return int(hashlib.sha256(question.encode()).hexdigest()[:8], 16) % TEST_BUCKETS == 0


def stream(seed: int, levels: Sequence[int] = (1, 2, 3, 4, 5), split: str | None = None, dedup: bool = True) -> Iterator[BuiltinProblem]:
    """Problems with levels cycled uniformly; ``split`` filters by partition.

    With ``dedup`` no question repeats (finite sets; raises once a level's question space
    is used up); without it the stream is endless (training: the small level-1 space
    of ~9k questions simply recurs).
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    i = misses = 0
    while True:
        level = levels[i % len(levels)]
        p = sample_problem(rng, level)
        if dedup and p.question in seen:
            misses += 1
            if misses > 100_000:
                raise RuntimeError(f"level {level} question space exhausted ({len(seen)} distinct)")
            continue
        if split is not None and is_test_question(p.question) != (split == "test"):
            continue
        if dedup:
            seen.add(p.question)
        i, misses = i + 1, 0
        yield p


def generate(n: int, seed: int, levels: Sequence[int] = (1, 2, 3, 4, 5), split: str | None = None) -> list[BuiltinProblem]:
    """``n`` distinct problems, equally many per level (in level-cycling order)."""
    out: list[BuiltinProblem] = []
    for p in stream(seed, levels, split):
        if len(out) == n:
            break
        out.append(p)
    return out


def train_split(n: int, seed: int = 0, levels: Sequence[int] = (1, 2, 3, 4, 5)) -> list[BuiltinProblem]:
    return generate(n, seed=seed + 1, levels=levels, split="train")


def train_stream(seed: int = 0, levels: Sequence[int] = (1, 2, 3, 4, 5)) -> Iterator[BuiltinProblem]:
    """Endless training problems (no test question can appear, see ``is_test_question``)."""
    return stream(seed + 1, levels, split="train", dedup=False)


def test_split(n: int = 500, levels: Sequence[int] = (1, 2, 3, 4, 5)) -> list[BuiltinProblem]:
    """The fixed test set: always the same problems for the same ``n``; prefixes nest."""
    return generate(n, seed=TEST_SEED, levels=levels, split="test")


# ---------------------------------------------------------------- parsing and checking

def parse_question(question: str) -> tuple[int, list[tuple[str, int]]] | None:
    """(start, [(op, b), ...]) from a question, or None if it is not a task question."""
    m = _QUESTION_RE.match(question.strip())
    if not m:
        return None
    return int(m.group(1)), [(op, int(b)) for op, b in _INSTR_RE.findall(m.group(2))]


def answer_of(question: str) -> str | None:
    """The gold answer of a task question, or None if it is not one."""
    parsed = parse_question(question)
    return None if parsed is None else str(render(*parsed)[2])


def parse_step(step: str) -> tuple[int, str, int, int] | None:
    """(a, op, b, c) of a "Step k: a op b = c" line, or None (answer lines included)."""
    m = _STEP_RE.match(step.strip("\n"))
    if not m:
        return None
    return int(m.group(2)), m.group(3), int(m.group(4)), int(m.group(5))


def step_number(step: str) -> int | None:
    m = _STEP_RE.match(step.strip("\n"))
    return int(m.group(1)) if m else None


def parse_answer(step: str) -> str | None:
    m = _ANSWER_RE.match(step.strip("\n"))
    return m.group(1) if m else None


def arithmetic_ok(step: str) -> bool:
    """True iff the line parses and its equation holds (checkable from the step alone)."""
    parsed = parse_step(step)
    return parsed is not None and apply_op(parsed[0], parsed[1], parsed[2]) == parsed[3]


def grade_steps(question: str, steps: Sequence[str]) -> list[StepGrade]:
    """Local verdict per step: is it the right next move from the state the steps reached?

    A step that correctly continues from an earlier wrong value is "ok" locally; use
    ``on_gold_path`` for Math-Shepherd-style labels (can the gold answer still be reached).
    """
    parsed_q = parse_question(question)
    if parsed_q is None:
        raise ValueError(f"not a builtin question: {question!r}")
    start, ops = parsed_q
    value, grades = start, []
    for k, step in enumerate(steps):
        ans = parse_answer(step)
        if ans is not None:
            good = k == len(ops) and ans == str(value)
            grades.append(StepGrade(good, "ok" if good else "answer"))
            continue
        parsed = parse_step(step)
        if parsed is None or step_number(step) != k + 1:
            grades.append(StepGrade(False, "format"))
            continue
        a, op, b, c = parsed
        if k >= len(ops):
            grades.append(StepGrade(False, "extra"))
        elif (a, op, b) != (value, *ops[k]):
            grades.append(StepGrade(False, "copy"))
        elif apply_op(a, op, b) != c:
            grades.append(StepGrade(False, "arith"))
        else:
            grades.append(StepGrade(True, "ok"))
        value = c  # the next step should continue from what was written
    return grades


def on_gold_path(question: str, steps: Sequence[str]) -> list[bool]:
    """Per step: have all steps so far been locally correct (gold answer still reachable)?"""
    out, good = [], True
    for g in grade_steps(question, steps):
        good = good and g.ok
        out.append(good)
    return out


def check_solution(problem: BuiltinProblem) -> bool:
    """Verify a gold solution step by step and its final answer."""
    grades = grade_steps(problem.question, problem.solution_steps)
    return (
        all(g.ok for g in grades)
        and len(grades) == LEVELS[problem.level].n_ops + 1
        and parse_answer(problem.solution_steps[-1]) == problem.answer
        and all(s.endswith("\n") for s in problem.solution_steps)
    )


def split_steps(text: str) -> list[str]:
    """Split generated text into step lines, each keeping its "\n" (a trailing partial line too)."""
    return [line for line in text.splitlines(keepends=True) if line.strip()]


def level_counts(problems: Iterable[BuiltinProblem]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for p in problems:
        counts[p.level] = counts.get(p.level, 0) + 1
    return dict(sorted(counts.items()))
