"""``python -m experiments ...`` (and ``accelerate launch -m experiments run CONFIG``): the treesearch CLI."""
from .cli import main

raise SystemExit(main())
