"""The evidence an unlabelled corpus sample gives the supernode clustering: co-activation profiles
(:class:`analyses.families.coactivation.CoactivationContext`) and the features' roles
(:func:`analyses.families.roles.feature_roles`), from prompts run here (``--prompts``) or from a
``workbench activations`` run (``--activations``)."""

import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

STEADY_ROLES = 0.9
"""Split-half role agreement (matched: ``RoleAgreement.matched_agreement``) below which the roles are logged as
unsteady (a corpus too small for them)."""


class CorpusEvidence(NamedTuple):
    """What an unlabelled corpus sample gives the clustering."""

    context: Any
    """The co-activation context (:class:`analyses.families.coactivation.CoactivationContext`)."""
    roles: Any
    """The features' roles (:class:`analyses.families.roles.FeatureRoles`), or None (not read)."""
    split_half: Any = None
    """How steady the roles are on this sample (:class:`analyses.families.roles.RoleAgreement` of the roles read on
    its even and odd prompts), or None (not measured)."""


def prompt_coactivation(loaded: Any, transcoders: Any, prompts: str | Path | list[str], *,
                        verbose: bool, allow_unk: bool = False, roles: bool = True,
                        roles_config: Any = None, split_half: bool = False) -> CorpusEvidence:
    """The co-activation context and the features' roles (None without ``roles``) of unlabelled prompts (a file
    of lines, or the lines) over every transcoder layer, columns keyed by (layer, feature); ``roles_config``: a
    :class:`analyses.families.roles.RolesConfig` (None: its defaults); ``split_half``: also measure how steady
    the roles are (:func:`roles_split_half`)."""
    from analyses.families.coactivation import CoactivationContext
    from workbench.cmd_families import collect_feature_matrix, read_prompts

    lines = read_prompts(prompts) if isinstance(prompts, (str, Path)) else prompts
    A, keys, tokens, next_tokens, prompt = collect_feature_matrix(
        loaded, transcoders, lines, list(range(transcoders.n_layers)), verbose=verbose, allow_unk=allow_unk)
    context = CoactivationContext.from_activations(A, keys)
    logger.info("co-activation sample: %d prompts, %d token rows", len(lines), context.n_rows)
    if not roles:
        return CorpusEvidence(context, None)
    table = sample_roles(loaded, A, keys, tokens, next_tokens, transcoders.kind, transcoders.source, roles_config)
    steadiness = roles_split_half(loaded, A, keys, tokens, next_tokens, prompt, roles_config) if split_half else None
    return CorpusEvidence(context, table, steadiness)


def sample_roles(loaded: Any, A: Any, keys: Any, tokens: Any, next_tokens: Any, kind: str | None,
                 source: str | None, config: Any = None) -> Any:
    """The features' roles on an activation sample (:func:`analyses.families.roles.feature_roles`): ``A``
    (n_rows, n_columns) keyed by ``keys``, each row's token and next token, the model's unembedding and token
    texts; ``kind`` / ``source``: the sample's transcoders, recorded with the roles; ``config``: a RolesConfig
    (None: its defaults)."""
    from analyses.families.roles import feature_roles
    from workbench.cmd_families import token_texts

    roles = feature_roles(A, keys, tokens=tokens, next_tokens=next_tokens,
                          token_vectors=loaded.W_U.detach().float().cpu().numpy(), token_words=token_texts(loaded),
                          config=config, transcoder_kind=kind, transcoder_source=source)
    logger.info("feature roles: %d roles over %d features that fire in the sample", len(roles.names),
                int((roles.role >= 0).sum()))
    return roles


def store_coactivation(store: Any, n_layers: int | None = None, d_transcoder: int | None = None,
                       kind: str | None = None, source: str | None = None, loaded: Any = None,
                       roles_config: Any = None, split_half: bool = False) -> CorpusEvidence:
    """The co-activation context and the features' roles of a collected activation run (``workbench
    activations``): every feature layer it holds, columns keyed by (layer, feature); the roles need the
    model's unembedding (``loaded``; None without it). With ``n_layers`` / ``d_transcoder`` / ``kind`` /
    ``source`` (the graph's transcoders), a run of other transcoders is refused; ``roles_config``: a RolesConfig
    (None: its defaults); ``split_half``: also measure how steady the roles are (:func:`roles_split_half`)."""
    from analyses.families.coactivation import CoactivationContext
    from tracer.errors import WorkbenchError
    from tracer.transcoders.identity import check_same_transcoders

    if source is not None:
        check_same_transcoders(store.index.get("transcoder_signature"), store.index.get("transcoder_id"), source,
                               "--activations", str(store.directory))

    layers = store.feature_layers
    if not layers:
        raise WorkbenchError(f"--activations must hold transcoder feature activations; {str(store.directory)!r} "
                             "has no feature layers. Collect them with `workbench activations` (feature layers).")
    for layer in layers:
        if (n_layers is not None and layer >= n_layers) or (d_transcoder is not None
                                                            and store.d_transcoder(layer) != d_transcoder):
            raise WorkbenchError(f"--activations must come from the graph's transcoders ({n_layers} layers of "
                                 f"{d_transcoder} features); got layer {layer} with {store.d_transcoder(layer)} "
                                 "features. Collect them with these transcoders.")
    run_kind = store.index.get("transcoder_kind")
    if kind is not None and run_kind is not None and run_kind != kind:
        raise WorkbenchError(f"--activations must come from the graph's transcoders ({kind}); got a run of {run_kind} "
                             f"transcoders in {str(store.directory)!r}. Collect them with these transcoders.")
    if not store.complete:
        logger.warning("--activations: an unfinished run; using its %d finished prompts", store.n_prompts)
    try:
        context = CoactivationContext.from_store(store)
    except WorkbenchError:  # a damaged run: the store's own message
        raise
    except ValueError as err:  # e.g. negative activations: not a transcoder run this similarity can read
        raise WorkbenchError(f"--{str(err).splitlines()[0]} ({str(store.directory)!r})") from None
    logger.info("co-activation sample: %d prompts, %d token rows, layers %s", store.n_prompts, context.n_rows, layers)
    if loaded is None:
        logger.info("--activations without --model: no feature roles (they read the model's unembedding)")
        return CorpusEvidence(context, None)
    from analyses.families.roles import row_tokens

    run_model = store.index.get("model_id")
    if run_model and loaded.model_id and run_model != loaded.model_id:
        logger.warning("--activations: the run was collected with model %r, --model is %r; the roles read the run's "
                       "token ids with --model's unembedding", run_model, loaded.model_id)
    rows = store.row_table()  # the context holds the run's activations as they are (activation weighting)
    try:
        tokens = row_tokens(rows["prompt"], rows["pos"], rows["token"])  # (tokens, next_tokens), (n_rows,) each
        prompt = rows["prompt"][rows["pos"] > 0]  # (n_token_rows,) the feature matrix's rows (BOS rows left out)
    except ValueError as err:  # a damaged row table
        raise WorkbenchError(f"--activations {str(err).splitlines()[0]} ({str(store.directory)!r})") from None
    try:
        roles = sample_roles(loaded, context.activations, context.keys, *tokens, context.transcoder_kind,
                             context.transcoder_source, roles_config)
    except ValueError as err:  # token ids outside --model's vocabulary: another model's run, or a damaged one
        raise WorkbenchError(f"--activations must hold token ids of --model's vocabulary: {str(err).splitlines()[0]} "
                             f"({str(store.directory)!r}). Collect the run with this model.") from None
    steadiness = roles_split_half(loaded, context.activations, context.keys, *tokens, prompt, roles_config) \
        if split_half else None
    return CorpusEvidence(context, roles, steadiness)


def roles_split_half(loaded: Any, A: Any, keys: Any, tokens: Any, next_tokens: Any, prompt: Any,
                     config: Any = None) -> Any:
    """How steady the roles of a sample are (:func:`analyses.families.roles.split_half_agreement`: the roles read
    on its even and on its odd prompts, ``prompt`` (n_rows,) each row's), logged as a warning below
    :data:`STEADY_ROLES`; None for a sample of fewer than two prompts."""
    from analyses.families.roles import split_half_agreement
    from workbench.cmd_families import token_texts

    if np.unique(np.asarray(prompt) % 2).size < 2:
        logger.info("roles' steadiness: not measured (a sample needs prompts of both parities to split)")
        return None
    got = split_half_agreement(A, keys, prompt=np.asarray(prompt, dtype=np.int64), tokens=tokens,
                               next_tokens=next_tokens, token_vectors=loaded.W_U.detach().float().cpu().numpy(),
                               token_words=token_texts(loaded), config=config)
    if got.n_features and got.matched_agreement < STEADY_ROLES:
        logger.warning("roles are unsteady on this sample: %.0f%% of %d features keep their role between its two "
                       "halves (even and odd prompts; %.0f%% by name); a larger corpus gives steadier roles and groups",
                       100 * got.matched_agreement, got.n_features, 100 * got.agreement)
    else:
        logger.info("roles' steadiness: %.1f%% of %d features keep their role between the sample's halves (%.1f%% "
                    "by name)", 100 * got.matched_agreement, got.n_features, 100 * got.agreement)
    return got
