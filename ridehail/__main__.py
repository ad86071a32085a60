"""``python -m ridehail``: the ``ridehail`` command, as ``ridehail dev`` starts its
component processes."""

from ridehail.cli import app

app()
