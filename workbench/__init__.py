"""workbench: the `workbench` CLI, recipes, reports, the demo and the benchmark.

Imports run one way: workbench -> analyses -> tracer.
"""

__version__ = "0.1.0"
