"""Feature families over whole dictionaries: decoder kNN graphs, co-activation evidence,
clustering, hierarchies inside families, and a query API (:class:`FeatureFamilies`)."""

from analyses.families.estimator import FeatureFamilies
from analyses.families.inputs import decoder_matrix
from analyses.families.results import Family, FamilyDendrogramDisplay, FeatureFamiliesResult

__all__ = ["FeatureFamilies", "FeatureFamiliesResult", "Family", "FamilyDendrogramDisplay", "decoder_matrix"]
