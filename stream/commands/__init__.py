"""Sub-commands of the ``slowburn`` CLI, one module each (see :mod:`stream.cli`)."""
