"""`workbench bench`: our engine against circuit-tracer 0.5.0 on synthetic models of any size.

* :mod:`~workbench.bench.config` -- ``ModelSpec`` (what to build) and ``BenchConfig`` (what to run);
* :mod:`~workbench.bench.build` -- random Qwen3/Llama weights, a word-level tokenizer, transcoders
  calibrated to a target L0, in circuit-tracer's on-disk formats and local caches;
* :mod:`~workbench.bench.run` -- the run: ``workbench trace`` and ``ours_runner`` for us,
  ``ct_runner.py`` (a standalone script, run with the baseline interpreter) for circuit-tracer;
* :mod:`~workbench.bench.compare` -- graph and prune equality; :mod:`~workbench.bench.report` --
  summary rows, scaling fits, the table; :mod:`~workbench.bench.procs` -- wall time, peak RSS,
  GEMM peak, machine info.
"""
