"""Feature families over whole dictionaries: decoder kNN graphs, co-activation evidence,
clustering, hierarchies inside families, and a query API (:class:`FeatureFamilies`); and each
feature's role on an unlabelled corpus sample (:func:`feature_roles`)."""

from analyses.families.estimator import FeatureFamilies
from analyses.families.inputs import decoder_matrix
from analyses.families.results import Family, FamilyDendrogramDisplay, FeatureFamiliesResult
from analyses.families.roles import FeatureRoles, RolesConfig, feature_roles

__all__ = ["FeatureFamilies", "FeatureFamiliesResult", "FeatureRoles", "Family", "FamilyDendrogramDisplay",
           "RolesConfig", "decoder_matrix", "feature_roles"]
