"""The one source of FeatureFamilies' defaults (the estimator's ``__init__`` and the
``workbench families`` flags both read them from here).

The co-activation defaults (profile cosine only, activation-weighted, average linkage cut at
0.6) and the token-class defaults (words folded by case, HDBSCAN leaf classes of 5+ words, share 0.3) were chosen
on a tuning set -- the tiny demo world's PLT and CLT and the shipped world's PLT -- by
:mod:`workbench.bench.families_world`; the shipped world's CLT was held out for scoring. (The tiny world
differs across machine types: on some the co-activation tuning picks weight 0.75 and cut 0.7; with the
token classes on, both settings give the same family ARI on the shipped world.)
"""

from dataclasses import dataclass

from analyses.base import check_choice, check_number
from analyses.families.cluster import CLUSTERINGS
from analyses.families.coactivation import WEIGHTINGS
from analyses.families.knn import KNN_METHODS

COACTIVATIONS = ("profile", "jaccard")
TOKEN_CLUSTERINGS = ("hdbscan", "average")
TOKEN_SELECTIONS = ("leaf", "eom")


@dataclass(frozen=True, kw_only=True)
class FamiliesConfig:
    """Parameters of :class:`analyses.families.FeatureFamilies`."""

    n_neighbors: int = 10
    """Nearest neighbours per feature in the sparse kNN graph."""
    min_similarity: float = 0.3
    """Sparse clustering: 'components' drops graph edges below this similarity; 'hdbscan' drops
    clusters whose within-cluster kNN edges are below it on average."""
    knn: str = "auto"
    """Neighbour search: exact (blocked GEMMs), pynndescent, or auto (exact up to exact_max features)."""
    exact_max: int = 50_000
    """Largest layer searched exactly when knn='auto'."""
    coactivation: str = "profile"
    """Co-activation evidence: 'profile' (cosine of co-activation profiles) or 'jaccard' (of firing sets)."""
    coactivation_weight: float = 1.0
    """Weight of co-activation against decoder cosine when an activation sample is given (0..1)."""
    weighting: str = "activation"
    """Co-activation profiles weight rows by activation ('activation') or count firings ('binary')."""
    coactivation_dim: int = 256
    """Count-sketch width of co-activation profiles over wide contexts (> 2048 columns)."""
    clustering: str = "auto"
    """average (dense), hdbscan or components (sparse graph), or auto: average up to dense_max features."""
    dense_max: int = 8192
    """Largest layer clustered by dense average linkage when clustering='auto'."""
    distance_threshold: float = 0.6
    """Average linkage: clusters merge while their mean distance (1 - similarity) is below this."""
    min_cluster_size: int = 5
    """HDBSCAN's min_cluster_size."""
    min_samples: int | None = None
    """HDBSCAN's min_samples (default: min(min_cluster_size, n_neighbors))."""
    min_family_size: int = 2
    """Smaller groups are not families (their features get family -1)."""
    per_layer: bool = True
    """Families never span layers (each layer is clustered on its own)."""
    max_hierarchy: int = 2000
    """Largest family that gets a hierarchy (dense average linkage of its members)."""
    random_state: int = 0
    """Seed of pynndescent, of the random projections and of the order in which HDBSCAN sees the token classes'
    words (it breaks ties by order; the words are shuffled from their text order, never taken in id order)."""
    token_families: bool = True
    """With the sample's token ids (fit's tokens / next_tokens / token_vectors; the CLI's --model --prompts), a
    feature with at least min_token_share of its energy on one class of tokens, read or predicted, joins that
    class's family (analyses.families.tokens)."""
    token_clustering: str = "hdbscan"
    """Token classes: hdbscan (scikit-learn's HDBSCAN on 1 - similarity, with token_selection and min_token_class as
    its minimum cluster size; no cut) or average (average linkage cut at token_cut). The similarity is half the
    unembedding cosine plus a quarter each of the read and predict feature-profile cosines."""
    token_selection: str = "leaf"
    """HDBSCAN's cluster selection for token classes: leaf (the finest clusters) or eom (excess of mass)."""
    token_cut: float = 0.4
    """Token classes with token_clustering='average': the distance at which the linkage is cut."""
    fold_case: bool = True
    """Tokens spelling the same word up to case and surrounding whitespace ("Two", "two") are one word in the
    token classes (needs the tokens' text: fit's token_words; the CLI passes the tokenizer's)."""
    min_token_class: int = 5
    """A token class of at least this many words is a variable that makes a family."""
    min_token_share: float = 0.3
    """A feature joins a variable's family when at least this share of its energy is on it, read or predicted."""
    max_tokens: int = 8192
    """Most frequent tokens of the sample put into classes (their similarity is a dense square)."""

    def __post_init__(self) -> None:
        check_number("n_neighbors", self.n_neighbors, lo=1, integer=True)
        check_number("min_similarity", self.min_similarity, lo=-1.0, hi=1.0)
        check_choice("knn", self.knn, KNN_METHODS)
        check_number("exact_max", self.exact_max, lo=1, integer=True)
        check_choice("coactivation", self.coactivation, COACTIVATIONS)
        check_number("coactivation_weight", self.coactivation_weight, lo=0.0, hi=1.0)
        check_choice("weighting", self.weighting, WEIGHTINGS)
        check_number("coactivation_dim", self.coactivation_dim, lo=1, integer=True)
        check_choice("clustering", self.clustering, CLUSTERINGS)
        check_number("dense_max", self.dense_max, lo=2, integer=True)
        check_number("distance_threshold", self.distance_threshold, lo=0.0, hi=2.0)
        check_number("min_cluster_size", self.min_cluster_size, lo=2, integer=True)
        if self.min_samples is not None:
            check_number("min_samples", self.min_samples, lo=1, integer=True)
        check_number("min_family_size", self.min_family_size, lo=1, integer=True)
        if not isinstance(self.per_layer, bool):
            raise TypeError(f"per_layer must be a bool; got {self.per_layer!r}.")
        check_number("max_hierarchy", self.max_hierarchy, lo=0, integer=True)
        check_number("random_state", self.random_state, lo=0, integer=True)
        if not isinstance(self.token_families, bool):
            raise TypeError(f"token_families must be a bool; got {self.token_families!r}.")
        check_choice("token_clustering", self.token_clustering, TOKEN_CLUSTERINGS)
        check_choice("token_selection", self.token_selection, TOKEN_SELECTIONS)
        check_number("token_cut", self.token_cut, lo=0.0, hi=2.0)
        if not isinstance(self.fold_case, bool):
            raise TypeError(f"fold_case must be a bool; got {self.fold_case!r}.")
        check_number("min_token_class", self.min_token_class, lo=1, integer=True)
        if self.token_clustering == "hdbscan" and self.min_token_class < 2:
            raise ValueError(f"min_token_class must be >= 2 when HDBSCAN makes the token classes (it is HDBSCAN's "
                             f"minimum cluster size); got {self.min_token_class}. Use 2 or more, or the 'average' "
                             f"token clustering.")
        check_number("min_token_share", self.min_token_share, lo=0.0, hi=1.0)
        check_number("max_tokens", self.max_tokens, lo=2, integer=True)


