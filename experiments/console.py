"""What every command-line entry point shares: quiet libraries, and errors as one line.

``treesearch`` (experiments.cli), ``treesearch demo`` and the scripts under experiments/builtin
all end the same way: a user error is one line and status 2, a server that stopped answering
one line and status 1, Ctrl-C one line and status 130, the last ones saying what is kept and
how to resume.
"""
from __future__ import annotations

import os
import sys

from .config import ConfigError


def quiet_libraries() -> None:
    """Before torch/transformers load: one CPU thread (measured: with two threads a run
    beside two busy processes took 2.1x longer, the OpenMP threads spinning for a core), no weight-loading bars, no
    library chatter meant for developers."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def guarded(prog: str, debug: bool, command, resume: str | None = None, results: str | None = None) -> int:
    """Run ``command``; a user error is one line and status 2, a server that stopped answering one line
    and status 1, Ctrl-C one line and status 130; the last two say what is kept and how to resume."""
    from reward_models.batching import ContextLimitError
    from treesearch.serving import ServerError

    from .datasets import DatasetError
    from .records import RecordsError

    try:
        return command()
    except (ConfigError, DatasetError, RecordsError, FileNotFoundError) as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the output went to `head` or a closed pager: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ServerError as e:
        if debug:
            raise
        print(f"{prog}: error: {e}{_kept(results)}" + (f"; `{resume}` resumes" if resume else ""), file=sys.stderr)
        return 1
    except ContextLimitError as e:  # a chain outgrew the PRM: the config's limits need changing, then resume
        if debug:
            raise
        print(f"{prog}: error: {e}{_kept(results)}" + (f"; then `{resume}` resumes" if resume else ""),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{prog}: interrupted{_kept(results)}" + (f"; `{resume}` resumes" if resume else ""), file=sys.stderr)
        return 130


def _kept(results: str | None) -> str:
    """"; N records kept in DIR", for the last line of a stopped run."""
    if results is None:
        return ""
    from .records import RecordsError, load_dir

    try:
        return f"; {len(load_dir(results)):,} records kept in {results}"
    except (RecordsError, OSError):
        return f"; the records in {results} are kept"
