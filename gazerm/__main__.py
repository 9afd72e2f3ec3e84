"""``python -m gazerm``: the CLI of this source tree (as uploaded by ray job submit)."""

from gazerm.cli import app

app(prog_name="gazerm")
