"""ridehail's own layers: pure rules (``domain``), persistence (``store``), operations
(``ops``) and the load tools (``load``) as subpackages; settings, connections and the
composition root (CLI, components, dev stack, worker) as the modules here."""
