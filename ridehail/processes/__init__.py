"""The processes ridehail runs, wired from the layers below: the API, the worker, the
consumers and the relay (``components``, ``worker``), their ``/metrics``
(``processmetrics``), and ``ridehail dev``'s stack, its lock on the data dir and the
servers it runs (``devstack``, ``devlock``, ``devservers``), each started, waited for and
stopped as a server process (``serverprocess``)."""
