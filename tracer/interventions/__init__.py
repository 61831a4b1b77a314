"""Feature interventions on the real model (circuit-tracer's ``feature_intervention``), and more.

:mod:`.api` (interventions, vector additions at output locations / the embedding / any residual
layer, generation), :mod:`.clean` (the clean run: the prompt's replacement model), :mod:`.patched`
(the patched forward pass), :mod:`.hooks` (hook primitives) and :mod:`.checks` (attribution =
intervention: measured adjacency columns).
"""

from tracer.interventions.api import (
    MODES,
    GenerationResult,
    Intervention,
    InterventionResult,
    VectorAddition,
    add_to_embedding,
    add_to_output_location,
    add_to_residual,
    check_intervention,
    constrained_set,
    feature_intervention,
    feature_intervention_generate,
)
from tracer.interventions.checks import measured_columns, node_perturbation, readings
from tracer.interventions.clean import CleanRun, prepare

__all__ = ["MODES", "CleanRun", "GenerationResult", "Intervention", "InterventionResult", "VectorAddition",
           "add_to_embedding", "add_to_output_location", "add_to_residual", "check_intervention",
           "constrained_set", "feature_intervention", "feature_intervention_generate", "measured_columns",
           "node_perturbation", "prepare", "readings"]
