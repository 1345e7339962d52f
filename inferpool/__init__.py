"""inferpool: the foundation shared by the producer, the worker and the results client.

The dependency graph, top to bottom (a checked contract: ``lint-imports``)::

    inferpool_app          (the application: console command, embedded stack, demo)
    worker                 (imports results and this foundation)
    producer | results     (independent of each other; import only this foundation)
    inferpool              (errors, settings, lifecycle, logs, protocol, Kafka connection)
"""

__version__ = "0.1.0"
