"""The ``ridehail`` program: the command (``cli``, the root that puts together the
sub-commands of ``commands``, one module per group), the processes it runs
(``processes``), one-shot operations on a running system (``ops``) and the load tools
(``load``). It stands on every other package and none imports it."""
