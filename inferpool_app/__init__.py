"""The application layer: the ``inferpool`` console command and the embedded stack.

It sits above every package and is the only code that configures process-wide things
(logging output, signal handlers). The dependency graph, top to bottom, is a checked
contract (``lint-imports``, configured in pyproject.toml)::

    inferpool_app          (this package: cli, worker/submit/result commands, up, demo)
    worker                 (imports results and the foundation)
    producer | results     (independent of each other; import only the foundation)
    inferpool              (foundation: errors, settings, lifecycle, logs, protocol, ...)
"""
