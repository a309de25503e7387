"""The bench command's defaults, in a module of their own so the CLI can show them without loading the
statistics (scipy) that the rest of `autoscale.bench` needs."""

from pathlib import Path

DEFAULT_THRESHOLD = 0.05  # smallest relative change that counts, for metrics a suite leaves unset
DEFAULT_HISTORY = Path("bench-history")  # one JSON file per run
