"""analyses: feature geometry on top of :mod:`tracer`.

Estimators follow the scikit-learn contract (:mod:`analyses.base`): ``__init__`` stores
keyword-only parameters, ``fit`` validates them and returns ``self``, fitted attributes end in
``_``. Results are typed frozen dataclasses that save as JSON plus safetensors
(:mod:`analyses.results`) and plot themselves through ``*Display`` objects
(:mod:`analyses.display`).

Imports run one way: ``workbench -> analyses -> tracer``. The package import is light; import the
module you use.
"""

__all__: list[str] = []
