"""The rich console every command prints with."""

from rich.console import Console


def make_console() -> Console:
    """A terminal's own width; 140 columns for logs and CI, where rich would assume 80 and wrap tables.
    Lines of text never wrap (soft_wrap): a path or a command split over two lines cannot be copied."""
    console = Console(soft_wrap=True)
    return console if console.is_terminal else Console(width=140, soft_wrap=True)
