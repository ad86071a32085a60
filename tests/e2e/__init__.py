"""End to end: the `ridehail` command, its processes, the production shape and the UI."""
