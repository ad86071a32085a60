"""The ``ridehail`` command's sub-commands, one module per group, each a Typer app or a
few commands defined at module level; ``ridehail.cli`` puts them together. ``options``
holds the options several commands offer alike (``--json``, ``-v``) and ``oneshot`` what
the one-shot operations share: a runtime for a single piece of work, and the
explanation when a server does not fit ridehail."""
