"""``ridehail chaos``: a mixed workload on the production shape with one fault at a time
(``suite``), the processes it runs and breaks (``shape``) and the riders and drivers
(``workload``); the command is ``ridehail.commands.chaos``."""
