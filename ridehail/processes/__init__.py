"""The processes ridehail runs, wired from the layers below: the API, the worker, the
consumers and the relay (``components``, ``worker``), their ``/metrics``
(``processmetrics``), and ``ridehail dev``'s stack and servers (``devstack``,
``devservers``)."""
