"""Points of a prompt set for manifold fits, collected once through :mod:`tracer.activations`.

:func:`collect_points` runs the prompts through
:func:`~tracer.activations.collect_activations` (sparse transcoder activations of every layer,
residual-stream vectors at the chosen residual layers and positions) into a run folder;
:class:`PointSet` reads, per prompt, the vector at one position: residual-stream vectors, a
layer's feature activations, or a feature set's reconstruction ``Σ a_i W_dec[i]``
(:func:`tracer.replacement.decode_features`). Positions are token indices per prompt (BOS = 0;
negative counts from the prompt's end). A run folder that already holds the same run is reused; one
that holds another run is replaced (it is a cache).
"""

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

from tracer.activations import ActivationConfig, ActivationStore, PromptRecord, collect_activations
from tracer.activations.store import INDEX
from tracer.errors import StaleRunError, WorkbenchError
from tracer.io import atomic_write_json
from tracer.models import LoadedModel
from tracer.replacement import decode_features
from tracer.transcoders.base import Transcoders

logger = logging.getLogger(__name__)

CACHE_MARK = "workbench-cache.json"
"""Marks an activation run that a command (manifold fit / discover) made for its own points (and may replace)."""


class PointSet:
    """One vector per prompt at a chosen position, read from an activation run."""

    def __init__(self, store: ActivationStore) -> None:
        self.store = store
        self.records: list[dict[str, Any]] = store.records
        n_pos = np.array([int(r["n_pos"]) for r in self.records], dtype=np.int64)
        self.n_pos = n_pos  # (n_prompts,)
        self.row_start = np.concatenate([[0], np.cumsum(n_pos)[:-1]]).astype(np.int64)  # (n_prompts,)
        self._residual: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._acts: dict[int, sp.csr_matrix] = {}

    @property
    def n_prompts(self) -> int:
        return len(self.records)

    def rows(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """(n_prompts,) global row of each prompt's position (negative positions count from its end)."""
        pos = np.asarray(positions, dtype=np.int64)
        if pos.shape != (self.n_prompts,) or np.any(pos >= self.n_pos) or np.any(pos < -self.n_pos):
            raise WorkbenchError(f"positions must hold one in-range token index per prompt ({self.n_prompts}); "
                                 f"got shape {pos.shape}.")
        return self.row_start + np.where(pos < 0, pos + self.n_pos, pos)

    def residual(self, layer: int, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """(n_prompts, d_model) residual-stream vectors of residual layer ``layer`` (float64)."""
        if layer not in self._residual:
            self._residual[layer] = self.store.vectors("residual", layer)
        rows, vecs = self._residual[layer]
        want = self.rows(positions)
        at = np.searchsorted(rows, want)  # rows are sorted (collection order)
        if np.any(at >= len(rows)) or np.any(rows[np.minimum(at, len(rows) - 1)] != want):
            raise WorkbenchError(f"residual vectors must be stored at the requested positions; got none at some of "
                                 f"them for layer {layer}. Collect with positions='all'.")
        return vecs[at].astype(np.float64)  # (n_prompts, d_model)

    def activations(self, layer: int, positions: Sequence[int] | np.ndarray) -> sp.csr_matrix:
        """(n_prompts, d_transcoder) feature activations of transcoder layer ``layer``."""
        if layer not in self._acts:
            self._acts[layer] = self.store.layer_matrix(layer)
        return self._acts[layer][self.rows(positions)]

    def reconstruction(self, transcoders: Transcoders, layer: int, features: Sequence[int],
                       positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """(n_prompts, d_model) ``Σ_{i∈features} a_i W_dec[i]`` of transcoder layer ``layer`` (a CLT: its own layer)."""
        feats = np.asarray(sorted(features), dtype=np.int64)
        A = np.asarray(self.activations(layer, positions)[:, feats].todense(), dtype=np.float32)  # (n, n_f)
        rec = decode_features(transcoders.layers[layer], torch.from_numpy(feats), torch.from_numpy(A))
        rec = rec[:, 0] if rec.dim() == 3 else rec  # CLT: the slice into its own layer, (n, d_model)
        return rec.double().numpy()


def prompt_records(rows: Sequence[dict[str, Any]]) -> list[PromptRecord]:
    """Records ``{"prompt", ...}`` as :class:`PromptRecord` s (every other field is metadata)."""
    return [PromptRecord(prompt=r["prompt"], meta={k: v for k, v in r.items() if k != "prompt"}) for r in rows]


def collect_points(loaded: LoadedModel, transcoders: Transcoders, records: Sequence[PromptRecord], out_dir: Path, *,
                   residual_layers: Sequence[int], positions: Literal["all", "last", "field"] = "all",
                   verbose: bool = False) -> PointSet:
    """Collect (or reuse) an activation run of ``records`` under ``out_dir`` and open it as a :class:`PointSet`."""
    cfg = ActivationConfig(residual_layers=tuple(int(x) for x in residual_layers), positions=positions)
    store = cached_run(loaded, transcoders, records, out_dir, cfg, verbose=verbose)
    logger.info("activations of %d prompts in %s", store.n_prompts, out_dir)
    return PointSet(store)


def cached_run(loaded: LoadedModel, transcoders: Transcoders, records: Sequence[PromptRecord | str], out_dir: Path,
               cfg: ActivationConfig, *, verbose: bool = False, allow_unk: bool = False) -> ActivationStore:
    """A command's own activation run of ``records`` in ``out_dir``: reused, resumed, or collected anew in place
    of a stale cache of the command's (one of other prompts or settings). A run without :data:`CACHE_MARK`
    (e.g. from ``workbench activations``) is never deleted: it is refused in one line."""
    ours = (out_dir / CACHE_MARK).is_file() or not (out_dir / INDEX).is_file()  # a run we start is our cache
    try:
        return _collect_or_replace(loaded, transcoders, records, out_dir, cfg, verbose=verbose, allow_unk=allow_unk)
    finally:  # marked even when interrupted, so a later run of other prompts may replace it
        if ours and (out_dir / INDEX).is_file() and not (out_dir / CACHE_MARK).is_file():
            atomic_write_json(out_dir / CACHE_MARK, {"cache": True, "note": "made by a workbench command for its "
                                                     "own points; replaced when their prompts or settings change"})


def _collect_or_replace(loaded: LoadedModel, transcoders: Transcoders, records: Sequence[PromptRecord | str],
                        out_dir: Path, cfg: ActivationConfig, *, verbose: bool, allow_unk: bool) -> ActivationStore:
    try:
        return collect_activations(loaded, transcoders, list(records), out_dir, cfg, verbose=verbose,
                                   allow_unk=allow_unk)
    except StaleRunError:  # a run of other prompts or settings (any other refusal is the caller's to see)
        if not (out_dir / CACHE_MARK).is_file():  # a run the user made (workbench activations): never deleted
            raise WorkbenchError(f"{out_dir} holds an activation run of other prompts or settings without the mark "
                                 f"of a manifold command's cache ({CACHE_MARK}: a run of `workbench activations`, or a "
                                 "cache from before the mark), so it is kept. Move or delete it, or choose another "
                                 "--out.") from None
        logger.warning("replacing the stale activation run in %s (other prompts, model or settings)", out_dir)
        shutil.rmtree(out_dir)  # a cache folder of ours that holds another run
        return collect_activations(loaded, transcoders, list(records), out_dir, cfg, verbose=verbose,
                                   allow_unk=allow_unk)
