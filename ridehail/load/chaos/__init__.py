"""``ridehail chaos``: a mixed workload on the production shape with one fault at a time
(``suite``), the processes it runs and breaks (``shape``), the riders and drivers
(``workload``) and the command (``command``)."""
