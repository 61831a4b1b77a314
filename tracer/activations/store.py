"""Reading a corpus activation run: an index, a prompt table and safetensors shards.

Layout of a run folder (written by :func:`tracer.activations.collect.collect_activations`)::

    index.json            format, schema_version, config, model/transcoder ids, dims, finished shards
    prompts.jsonl         one record per prompt: prompt, n_pos, token ids, and its metadata fields
    shard-00000.safetensors ...

Every token position of every prompt is a **row**; rows are numbered globally in prompt order
(prompt 0's positions 0..n_pos-1, then prompt 1's, ...). A shard holds the rows of a contiguous
range of prompts:

* ``prompt`` / ``pos`` / ``token`` (n_rows,): the row table;
* ``f{layer}.row``, ``f{layer}.feature``, ``f{layer}.value`` (nnz,): a layer's non-zero feature
  activations (rows local to the shard), sorted by (row, feature) -- CSR order;
* ``resid{L}`` (n, d_model) with ``resid{L}.row`` (n,): residual-stream vectors at residual layer L;
* ``input{layer}`` / ``input{layer}.row``: transcoder-input vectors of a layer.

Position 0 (the BOS) never has feature activations. Each array is read on its own (safetensors
is memory-mapped), so a layer's matrix is read without loading the rest.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tracer.errors import WorkbenchError
from tracer.io import loads_json

FORMAT = "manifold-workbench-activations"
SCHEMA_VERSION = 1
INDEX, PROMPTS = "index.json", "prompts.jsonl"


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


@dataclass(frozen=True, kw_only=True)
class ShardInfo:
    file: str
    prompts: tuple[int, int]
    """[start, end) prompt indices"""
    row_offset: int
    n_rows: int


def read_index(directory: Path) -> dict[str, Any]:
    path = directory / INDEX
    try:
        index = loads_json(path.read_text())
    except FileNotFoundError:
        raise WorkbenchError(f"activation run must have {INDEX}; got none in {str(directory)!r}. "
                             "Collect activations into this folder first.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WorkbenchError(f"{INDEX} must be readable JSON; got {str(path)!r} ({err}).") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise WorkbenchError(f"{INDEX} must be a manifold-workbench activation index; got {str(path)!r}.")
    if index.get("schema_version") != SCHEMA_VERSION:
        raise WorkbenchError(f"activation index schema_version must be {SCHEMA_VERSION}; got "
                             f"{index.get('schema_version')!r} in {str(path)!r}. Re-collect with this version.")
    _check_index_tables(index, path)
    return index


def _check_index_tables(index: dict[str, Any], path: Path) -> None:
    """The index's layer table and shard list, checked before anything is read through them: a width for
    every feature layer, and shards named by plain file names in the run's folder (never a path)."""
    def bad(what: str) -> WorkbenchError:
        return WorkbenchError(f"activation index must be the one `workbench activations` writes; got {str(path)!r}, "
                              f"whose {what[:160]}. Collect the run again.")

    layers, widths = index.get("feature_layers"), index.get("d_transcoder")
    if not isinstance(layers, list) or not all(type(x) is int and x >= 0 for x in layers):
        raise bad(f"feature_layers is not a list of layer numbers: {str(layers)[:60]}")
    if not isinstance(widths, dict) or any(type(widths.get(str(x))) is not int or widths[str(x)] < 1 for x in layers):
        raise bad(f"d_transcoder does not give a width for every feature layer {layers}")
    shards = index.get("shards")
    if not isinstance(shards, list) or not all(isinstance(e, dict) for e in shards):
        raise bad("shards is not a list of shard entries")
    for e in shards:
        name = e.get("file")
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", "..") or "\\" in name:
            raise bad(f"shard file {str(name)[:60]!r} is not a file name in the run's folder")
        if not (isinstance(e.get("prompts"), list) and len(e["prompts"]) == 2
                and all(type(x) is int for x in (*e["prompts"], e.get("row_offset"), e.get("n_rows")))):
            raise bad(f"shard {name!r} lacks integer prompts [start, end), row_offset and n_rows")


class ActivationStore:
    """A finished (or partial) activation run, read lazily."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.index = read_index(self.directory)
        self.shards = [ShardInfo(file=s["file"], prompts=(int(s["prompts"][0]), int(s["prompts"][1])),
                                 row_offset=int(s["row_offset"]), n_rows=int(s["n_rows"]))
                       for s in self.index["shards"]]
        self._records: list[dict[str, Any]] | None = None

    # ----------------------------------------------------------------- sizes and tables
    @property
    def complete(self) -> bool:
        """Every shard of the run is finished."""
        return len(self.shards) == int(self.index["n_shards"])

    @property
    def n_prompts(self) -> int:
        """Prompts in the finished shards."""
        return self.shards[-1].prompts[1] if self.shards else 0

    @property
    def n_rows(self) -> int:
        return self.shards[-1].row_offset + self.shards[-1].n_rows if self.shards else 0

    @property
    def feature_layers(self) -> list[int]:
        return [int(x) for x in self.index["feature_layers"]]

    def d_transcoder(self, layer: int) -> int:
        return int(self.index["d_transcoder"][str(layer)])

    @property
    def records(self) -> list[dict[str, Any]]:
        """Per prompt: ``prompt``, ``n_pos``, ``tokens`` and the record's metadata fields."""
        if self._records is None:
            path = self.directory / PROMPTS
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
                self._records = [loads_json(line) for line in lines if line.strip()]
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise WorkbenchError(f"{PROMPTS} must be the run's readable JSON lines; got {str(path)!r} ({err}). "
                                     "Collect the run again.") from None
        return self._records

    def _tensor(self, shard: ShardInfo, name: str) -> np.ndarray:
        """One tensor of a shard; a missing, unreadable or incomplete shard is a one-line WorkbenchError."""
        from safetensors import SafetensorError, safe_open

        path = self.directory / shard.file
        try:
            with safe_open(str(path), framework="np") as f:
                if name not in f.keys():  # noqa: SIM118 - safe_open has no __contains__
                    raise WorkbenchError(f"activation shard {shard.file} must hold tensor {name!r}; got none in "
                                         f"{str(self.directory)!r} (a damaged run). Collect it again.")
                return f.get_tensor(name)
        except FileNotFoundError:
            raise WorkbenchError(f"activation shard {shard.file} must exist; got none in {str(self.directory)!r} "
                                 "(a damaged run). Collect it again.") from None
        except (OSError, SafetensorError) as err:
            raise WorkbenchError(f"activation shard {shard.file} must be a readable safetensors file; got "
                                 f"{str(path)!r} ({str(err).splitlines()[0]}). Collect it again.") from None

    def _checked_coo(self, shard: ShardInfo, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, features, values) of one layer in one shard, checked: equal lengths, indices in range,
        finite values (a damaged or hand-edited shard is refused here, not crashed on later)."""
        r, f, v = (self._tensor(shard, f"f{layer}.{k}") for k in ("row", "feature", "value"))
        rows, feats = r.astype(np.int64), f.astype(np.int64)
        problem = None
        if not (rows.ndim == feats.ndim == v.ndim == 1 and len(rows) == len(feats) == len(v)):
            problem = f"row, feature and value lengths {len(rows)}, {len(feats)}, {len(v)} differ"
        elif len(rows) and (rows.min() < 0 or rows.max() >= shard.n_rows):
            problem = f"rows outside [0, {shard.n_rows})"
        elif len(feats) and (feats.min() < 0 or feats.max() >= self.d_transcoder(layer)):
            problem = f"features outside [0, {self.d_transcoder(layer)})"
        elif not np.isfinite(v).all():
            problem = "non-finite values"
        if problem is not None:
            raise WorkbenchError(f"activation shard {shard.file} layer {layer} must hold valid activations; got "
                                 f"{problem} in {str(self.directory)!r} (a damaged run). Collect it again.")
        return rows + shard.row_offset, feats, v

    def _checked_vectors(self, shard: ShardInfo, prefix: str, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """(global rows (n,), vectors (n, d_model)) of one kind and layer in one shard, checked: matching
        lengths, d_model columns, rows in range."""
        r, v = self._tensor(shard, f"{prefix}{layer}.row"), self._tensor(shard, f"{prefix}{layer}")
        rows, d = r.astype(np.int64), int(self.index["d_model"])
        bad_shape = rows.ndim != 1 or v.shape != (rows.size, d)
        if bad_shape or (rows.size and (rows.min() < 0 or rows.max() >= shard.n_rows)):
            raise WorkbenchError(f"activation shard {shard.file} must hold valid {prefix}{layer} vectors; got rows "
                                 f"{r.shape} and vectors {v.shape} (d_model {d}, {shard.n_rows} rows) in "
                                 f"{str(self.directory)!r} (a damaged run). Collect it again.")
        return rows + shard.row_offset, v

    def check_shard(self, shard: ShardInfo) -> None:
        """Read and check every array of one shard (row table, each layer's activations, the vectors):
        a missing, unreadable or damaged shard is a one-line WorkbenchError."""
        for key in ("prompt", "pos", "token"):
            t = self._tensor(shard, key)
            if t.shape != (shard.n_rows,):
                raise WorkbenchError(f"activation shard {shard.file} {key!r} must have shape ({shard.n_rows},); got "
                                     f"{t.shape} in {str(self.directory)!r} (a damaged run). Collect it again.")
        for layer in self.feature_layers:
            self._checked_coo(shard, layer)
        for prefix, key in (("resid", "residual_layers"), ("input", "mlp_input_layers")):
            for layer in self.index["config"][key]:
                self._checked_vectors(shard, prefix, int(layer))

    def row_table(self) -> dict[str, np.ndarray]:
        """``prompt``, ``pos``, ``token`` of every row (n_rows,)."""
        parts: dict[str, list[np.ndarray]] = {"prompt": [], "pos": [], "token": []}
        for shard in self.shards:
            for key, values in parts.items():
                values.append(self._tensor(shard, key))
        return {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in parts.items()}

    # ----------------------------------------------------------------- features and vectors
    def layer_coo(self, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, features, values) of one layer's non-zero activations, global rows, CSR order."""
        if layer not in self.feature_layers:
            raise WorkbenchError(f"layer must be one of the collected feature layers {self.feature_layers}; "
                                 f"got {layer!r}.")
        rows, feats, vals = [], [], []
        for shard in self.shards:
            r, f, v = self._checked_coo(shard, layer)
            rows.append(r)
            feats.append(f)
            vals.append(v)
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        return np.concatenate(rows), np.concatenate(feats), np.concatenate(vals)

    def layer_matrix(self, layer: int) -> Any:
        """``scipy.sparse.csr_matrix`` (n_rows, d_transcoder) of one layer's activations (float16 runs as
        float32: scipy's sparse indexing has no float16)."""
        from scipy import sparse

        rows, feats, vals = self.layer_coo(layer)
        vals = vals.astype(np.float32) if vals.dtype == np.float16 else vals
        indptr = np.zeros(self.n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=self.n_rows), out=indptr[1:])
        return sparse.csr_matrix((vals, feats, indptr), shape=(self.n_rows, self.d_transcoder(layer)))

    def feature_matrix(self, layers: list[int] | None = None) -> tuple[Any, np.ndarray]:
        """(``scipy.sparse.csr_matrix`` (n_token_rows, n_columns) of the activations at every position >= 1
        (BOS rows, never active, left out), each of ``layers``' features in turn (default: every collected
        layer); (n_columns, 2) int64 (layer, feature) of each column)."""
        from scipy import sparse

        layers = self.feature_layers if layers is None else [int(x) for x in layers]
        keep = self.row_table()["pos"] > 0  # (n_rows,)
        blocks = [self.layer_matrix(layer)[keep] for layer in layers]  # (n_token_rows, d_transcoder) each
        keys = [np.stack([np.full(self.d_transcoder(layer), layer), np.arange(self.d_transcoder(layer))], 1)
                for layer in layers]  # (d_transcoder, 2) each
        n_token_rows = int(keep.sum())
        matrix = sparse.hstack(blocks).tocsr() if blocks else sparse.csr_matrix((n_token_rows, 0), dtype=np.float32)
        return matrix, (np.concatenate(keys).astype(np.int64) if keys else np.zeros((0, 2), np.int64))

    def vectors(self, kind: str, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows (n,), vectors (n, d_model)) stored for ``kind`` 'residual' or 'input' at ``layer``."""
        prefix = {"residual": "resid", "input": "input"}.get(kind)
        key = "residual_layers" if kind == "residual" else "mlp_input_layers"
        if prefix is None or layer not in self.index["config"][key]:
            raise WorkbenchError(f"vectors must be collected first; got kind {kind!r} layer {layer!r}, but the "
                                 f"run stored residual layers {self.index['config']['residual_layers']} and "
                                 f"input layers {self.index['config']['mlp_input_layers']}.")
        rows, vecs = [], []
        for shard in self.shards:
            r, v = self._checked_vectors(shard, prefix, layer)
            rows.append(r)
            vecs.append(v)
        d = int(self.index["d_model"])
        return (np.concatenate(rows) if rows else np.zeros(0, np.int64),
                np.concatenate(vecs) if vecs else np.zeros((0, d), np.float32))
