"""The rich console every command prints with, and what it keeps out of it."""

import logging

from rich.console import Console


def make_console() -> Console:
    """A terminal's own width; 140 columns for logs and CI, where rich would assume 80 and wrap tables.
    Lines of text never wrap (soft_wrap): a path or a command split over two lines cannot be copied."""
    console = Console(soft_wrap=True)
    return console if console.is_terminal else Console(width=140, soft_wrap=True)


# the loggers whose notices reach the console of autoscale's own process and tell its user nothing:
# DeepSpeed's accelerator guess ("Setting accelerator to CPU") when a ds_config is checked. Ranks'
# logs keep theirs. (Optuna's are set where its studies are made: `optuna.logging.set_verbosity`.)
LIBRARY_LOGGERS = ("DeepSpeed",)


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def quiet_library_loggers() -> None:
    """Drop these loggers' records below ERROR. A filter on the logger, not a level: the libraries
    set their loggers' levels when imported, after this runs, and a filter survives that."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _errors_only not in logger.filters:
            logger.addFilter(_errors_only)
