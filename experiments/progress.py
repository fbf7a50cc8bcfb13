"""Progress: the sweep's progress bar, over generated tokens rather than records.

Budgets differ 32x in cost, so a bar over record counts would misstate the time left; this one
estimates the total tokens from the work left and the tokens per unit of work measured so far.
"""
from __future__ import annotations

from tqdm.auto import tqdm


class Progress:
    """A bar over generated tokens, moving as each problem finishes.

    The total is an estimate: the work left (problems x budget, a proxy for solutions) at the
    tokens per unit measured so far, so the time estimate follows token throughput, not
    record counts (budgets differ 32x in cost). The label names the setting running now.
    """

    def __init__(self, units: int, enabled: bool = True, desc: str = ""):
        self.units_total, self.units_done, self.tokens = max(1, units), 0, 0
        self.records = 0
        self.label = ""
        self.prefix = f"{desc}: " if desc else ""
        self.bar = tqdm(total=None, unit="tok", unit_scale=True, disable=not enabled, dynamic_ncols=True,
                        bar_format="{n_fmt}/{total_fmt} tokens generated [{elapsed}<{remaining}, {rate_fmt}] {desc}")

    def start(self, label: str) -> None:
        self.label = label
        self._show()

    def advance(self, units: int, tokens: int) -> None:
        self.units_done += units
        self.tokens += tokens
        if self.units_done:
            self.bar.total = max(self.tokens, round(self.tokens * self.units_total / self.units_done))
        self.bar.update(tokens)
        self._show()

    def wrote(self, n: int) -> None:
        self.records += n
        self._show()

    def _show(self) -> None:
        self.bar.set_description_str(f"{self.prefix}{self.label} | {self.records:,} records", refresh=True)

    def close(self) -> None:
        self.bar.close()
