"""inferpool: the foundation shared by the producer, the worker and the results client.

The dependency graph, top to bottom::

    inferpool.cli          (the console command; imports the three packages below)
    worker                 (imports producer and results)
    producer, results      (import only this foundation)
    inferpool.errors / settings / wire / lifecycle / logs
"""

__version__ = "0.1.0"
