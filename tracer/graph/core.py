"""The attribution graph and its file formats.

Node order (circuit-tracer 0.5.0's, see ``research/circuit-tracer-algorithm.md``)::

    [ selected features | error nodes | token nodes | logit nodes ]
      n_selected          n_layers*n_pos  n_pos         n_logits

* features: ``active_features[selected_features]``, ascending active index, i.e. sorted by
  (layer, pos, feature);
* error nodes: layer-major, node ``n_selected + layer * n_pos + pos``;
* token nodes: one per position (the token embedding, BOS included);
* logit nodes: in target order (descending probability for salient logits).

``adjacency[target, source]``: rows are targets, columns are sources. A source writes its output
vector (``a_s * W_dec[s]``, an error vector or a token embedding); a target reads with its
encoder row (effect on its *pre-activation*) or a demeaned unembedding column (effect on
``logit - mean logit``). Rows of error and token nodes are zero (they have no inputs).

Formats:
* native: one ``.safetensors`` file, tensors + a JSON header entry with ``schema_version``;
  never pickle;
* ``.npz``: exactly the keys of design notes §2.3 (those the shared reference harness writes);
* circuit-tracer ``.pt`` import: :func:`tracer.graph.ct_import.load_circuit_tracer_pt` (pickle, only
  with explicit consent).
"""

import dataclasses
import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tracer.errors import WorkbenchError
from tracer.graph.checks import parse_meta, validate_graph
from tracer.graph.stream import open_graph_file
from tracer.io import require_readable
from tracer.safetensors_header import TensorInfo, read_safetensors_file

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
NODE_FEATURE, NODE_ERROR, NODE_TOKEN, NODE_LOGIT = 0, 1, 2, 3

_TENSOR_FIELDS = (
    "adjacency",
    "input_tokens",
    "active_features",
    "activation_values",
    "selected_features",
    "logit_token_ids",
    "logit_probabilities",
    "logit_vectors",
)


@dataclass(frozen=True, eq=False, kw_only=True)
class Graph:
    """An attribution graph. See the module docstring for the node order and orientation."""

    adjacency: Tensor
    """(n_nodes, n_nodes) float; rows = targets, cols = sources."""
    input_tokens: Tensor
    """(n_pos,) int64 token ids, BOS included."""
    active_features: Tensor
    """(n_active, 3) int64 (layer, pos, feature) of *all* active features, sorted."""
    activation_values: Tensor
    """(n_active,) float activations of the active features."""
    selected_features: Tensor
    """(n_selected,) int64 indices into active_features that are nodes, ascending."""
    logit_token_ids: Tensor
    """(n_logits,) int64 vocabulary ids of the logit targets."""
    logit_probabilities: Tensor
    """(n_logits,) float softmax probabilities of the targets."""
    logit_vectors: Tensor
    """(n_logits, d_model) float demeaned unembedding columns used as the logit readers."""
    n_layers: int
    d_vocab: int
    model_id: str = ""
    transcoder_id: str = ""
    scan: str = ""
    input_string: str = ""
    logit_tokens: tuple[str, ...] = ()
    """decoded strings of the logit targets (same order as logit_token_ids)."""
    extra: dict[str, object] = field(default_factory=dict)
    """free-form JSON-serialisable provenance (config used, versions, timings)."""

    # ----------------------------------------------------------------- sizes and slices
    @property
    def n_pos(self) -> int:
        return int(self.input_tokens.shape[0])

    @property
    def n_selected(self) -> int:
        return int(self.selected_features.shape[0])

    @property
    def n_logits(self) -> int:
        return int(self.logit_token_ids.shape[0])

    @property
    def n_nodes(self) -> int:
        return int(self.adjacency.shape[0])

    @property
    def error_start(self) -> int:
        return self.n_selected

    @property
    def token_start(self) -> int:
        return self.n_selected + self.n_layers * self.n_pos

    @property
    def logit_start(self) -> int:
        return self.token_start + self.n_pos

    def __repr__(self) -> str:  # the dataclass default printed the whole adjacency
        return (f"Graph(n_nodes={self.n_nodes}, n_selected={self.n_selected}, n_pos={self.n_pos}, "
                f"n_layers={self.n_layers}, n_logits={self.n_logits}, d_vocab={self.d_vocab}, "
                f"model_id={self.model_id!r}, transcoder_id={self.transcoder_id!r}, scan={self.scan!r}, "
                f"input_string={self.input_string[:60]!r})")

    def node_fingerprint(self) -> str:
        """sha256 (hex) of what fixes the node order: the tokens, the active and selected features, the
        logit targets and ``n_layers`` (not the edge weights, nor ``d_vocab``, which an .npz file lacks: one
        prompt traced by either engine and stored as .npz or safetensors gives one fingerprint). A prune
        mask or a supernode's node ids made on one graph fit another graph only when their fingerprints are
        equal."""
        h = hashlib.sha256(str(self.n_layers).encode())
        for t in (self.input_tokens, self.active_features, self.selected_features, self.logit_token_ids):
            h.update(b"|" + t.detach().cpu().long().contiguous().numpy().tobytes())
        return h.hexdigest()

    # ----------------------------------------------------------------- node metadata
    def node_type(self) -> np.ndarray:
        """(n_nodes,) int8: 0 feature, 1 error, 2 token (embedding), 3 logit."""
        L, P = self.n_layers, self.n_pos
        return np.concatenate([
            np.full(self.n_selected, NODE_FEATURE), np.full(L * P, NODE_ERROR),
            np.full(P, NODE_TOKEN), np.full(self.n_logits, NODE_LOGIT),
        ]).astype(np.int8)

    def node_layer(self) -> np.ndarray:
        """(n_nodes,) int32: feature/error layer; tokens -1; logits n_layers."""
        L, P = self.n_layers, self.n_pos
        sel = self.active_features[self.selected_features].cpu().numpy()
        return np.concatenate([
            sel[:, 0], np.repeat(np.arange(L), P), np.full(P, -1), np.full(self.n_logits, L),
        ]).astype(np.int32)

    def node_pos(self) -> np.ndarray:
        """(n_nodes,) int32: position (logits: the last position)."""
        L, P = self.n_layers, self.n_pos
        sel = self.active_features[self.selected_features].cpu().numpy()
        return np.concatenate([
            sel[:, 1], np.tile(np.arange(P), L), np.arange(P), np.full(self.n_logits, P - 1),
        ]).astype(np.int32)

    def node_index(self) -> np.ndarray:
        """(n_nodes,) int64: feature index / -1 (error) / token id / vocab id."""
        L, P = self.n_layers, self.n_pos
        sel = self.active_features[self.selected_features].cpu().numpy()
        return np.concatenate([
            sel[:, 2], np.full(L * P, -1), self.input_tokens.cpu().numpy(),
            self.logit_token_ids.cpu().numpy(),
        ]).astype(np.int64)

    def to(self, device: str | torch.device) -> "Graph":
        """A copy with every tensor field on `device`."""
        moved = {name: getattr(self, name).to(device) for name in _TENSOR_FIELDS}
        return dataclasses.replace(self, **moved)

    # ----------------------------------------------------------------- formats
    def file_meta(self) -> dict[str, object]:
        """The JSON-able fields of the native file's header."""
        return _meta(self)

    def file_tensors(self) -> dict[str, Tensor]:
        """The tensors of the native file after the adjacency, in file order."""
        return {name: getattr(self, name) for name in _TENSOR_FIELDS[1:]}

    def npz_arrays(self) -> dict[str, np.ndarray]:
        """Every member of the §2.3 npz except the adjacency, in file order."""
        return {
            "node_type": self.node_type(), "node_layer": self.node_layer(), "node_pos": self.node_pos(),
            "node_index": self.node_index(),
            "active_features": self.active_features.cpu().numpy().astype(np.int64),
            "activation_values": self.activation_values.detach().float().cpu().numpy(),
            "selected_features": self.selected_features.cpu().numpy().astype(np.int64),
            "input_tokens": self.input_tokens.cpu().numpy().astype(np.int64),
            "logit_token_ids": self.logit_token_ids.cpu().numpy().astype(np.int64),
            "logit_probabilities": self.logit_probabilities.detach().float().cpu().numpy(),
            "logit_vectors": self.logit_vectors.detach().float().cpu().numpy(),
            "n_layers": np.int64(self.n_layers), "n_pos": np.int64(self.n_pos),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save natively (``.safetensors`` + JSON header), or as ``.npz`` if the path says so.

        Atomic, and refused up front when the disk cannot hold the file."""
        return save_graph(self, Path(path))

    @staticmethod
    def load(path: str | Path, *, mmap: bool = False) -> "Graph":
        """Load a graph saved by :meth:`save` (native or ``.npz``), checking every field.

        ``mmap=True`` maps the adjacency from the file instead of reading it (where the file's
        layout allows): pages are read on demand, and the row-block loops of pruning and scoring
        drop them again (:mod:`tracer.mapped`), so graphs larger than memory work. Such an
        adjacency is read-only: never modify it in place (torch has no read-only tensors, so a write
        kills the process with SIGSEGV; ``.clone()`` it first). A mapped ``.npz`` adjacency is not checked
        against the zip's CRC-32 (that would read it whole at load): a file damaged inside the adjacency
        loads, as a native file always does (safetensors has no checksum); sizes, headers and every other
        field are checked either way.
        """
        path = require_readable(path, "graph file")
        if path.suffix == ".npz":
            return load_npz(path, mmap=mmap)
        return load_native(path, mmap=mmap)


def graph_from_tensors(tensors: Mapping[str, Tensor], **fields: Any) -> Graph:
    """A Graph from its tensor fields (``_TENSOR_FIELDS``) and its other fields."""
    kwargs: dict[str, Any] = {**tensors, **fields}
    return Graph(**kwargs)


def _meta(graph: Graph) -> dict[str, object]:
    return {
        "schema_version": SCHEMA_VERSION,
        "n_layers": graph.n_layers,
        "d_vocab": graph.d_vocab,
        "model_id": graph.model_id,
        "transcoder_id": graph.transcoder_id,
        "scan": graph.scan,
        "input_string": graph.input_string,
        "logit_tokens": list(graph.logit_tokens),
        "extra": graph.extra,
    }


_ROW_BLOCK_BYTES = 64 << 20


def header_reserve(graph: Graph) -> int:
    """Bytes to keep for a native file's header: the escaped metadata plus room for the rest."""
    return len(json.dumps(json.dumps(_meta(graph)))) + (1 << 16)


def save_graph(graph: Graph, path: Path, fmt: str | None = None) -> Path:
    """Write `graph` through :func:`tracer.graph.stream.open_graph_file`, one block of rows at a time.

    `fmt`: "npz" or "native" (default: from the suffix, ``.npz`` or anything else)."""
    A = graph.adjacency.detach()
    n = graph.n_nodes
    with open_graph_file(path, n, A.dtype, header_reserve=header_reserve(graph), fmt=fmt) as writer:
        step = max(1, _ROW_BLOCK_BYTES // max(1, n * A.element_size()))
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            writer.adjacency[r0:r1].copy_(A[r0:r1])
            writer.rows_done(r1)
        writer.finish(graph)
    return path


def save_native(graph: Graph, path: Path) -> Path:
    """One safetensors file; the non-tensor fields are JSON in its header metadata."""
    return save_graph(graph, path, "native")


def save_npz(graph: Graph, path: Path) -> Path:
    """The npz of design notes §2.3 (uncompressed, so that writing is cheap)."""
    return save_graph(graph, path, "npz")


def _read_tensor(fh: io.BufferedReader, offset: int, dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
    """Read one array at `offset` straight into a new tensor."""
    out = torch.empty(shape, dtype=dtype)
    if out.numel():
        flat = out.reshape(-1).view(torch.uint8).numpy()  # (n_bytes,)
        fh.seek(offset)
        if fh.readinto(flat.data) != flat.nbytes:
            raise ValueError(f"file ends inside an array at byte {offset}")
    return out


def _native_tensors(path: Path, infos: dict[str, TensorInfo], data_offset: int, mmap: bool) -> dict[str, Tensor]:
    """The graph's tensors of a parsed safetensors file (the adjacency mapped when asked and aligned)."""
    from tracer.mapped import SAFETENSORS_DTYPES, map_tensor

    missing = [name for name in _TENSOR_FIELDS if name not in infos]
    if missing:
        raise WorkbenchError(f"graph file must hold the tensor {missing[0]!r}; {str(path)!r} does not. "
                             "The file is damaged: re-create it.")
    bad = [name for name in _TENSOR_FIELDS if infos[name].dtype not in SAFETENSORS_DTYPES]
    if bad:
        raise WorkbenchError(f"graph tensor {bad[0]!r} must have a numeric dtype; got {infos[bad[0]].dtype} in "
                             f"{str(path)!r}. The file is damaged: re-create it.")
    tensors = {}
    with open(path, "rb") as fh:
        for name in _TENSOR_FIELDS:
            info = infos[name]
            dtype = SAFETENSORS_DTYPES[info.dtype]
            offset = data_offset + info.begin
            aligned = offset % torch.empty((), dtype=dtype).element_size() == 0
            if name == "adjacency" and mmap and aligned:
                tensors[name] = map_tensor(path, offset, dtype, info.shape)
            else:
                tensors[name] = _read_tensor(fh, offset, dtype, info.shape)
    return tensors


def load_native(path: Path, *, mmap: bool = False) -> Graph:
    """Read :func:`save_native`'s file, checking every field (:mod:`tracer.graph.checks`)."""
    infos, data_offset, header_meta = read_safetensors_file(path, "graph file")
    meta_json = header_meta.get("manifold_workbench_graph")
    if meta_json is None and "manifold_workbench_prune" in header_meta:
        raise WorkbenchError(f"graph file must be a manifold-workbench graph; got {str(path)!r}, a prune result "
                             "(written by `workbench prune`). Pass the graph it was pruned from.")
    if meta_json is None:
        raise WorkbenchError(
            f"graph file must be a manifold-workbench graph; got {str(path)!r}, a safetensors "
            "file without graph metadata. Use a file written by `workbench trace`."
        )
    try:
        tensors = _native_tensors(path, infos, data_offset, mmap)
    except (ValueError, OSError) as err:
        raise WorkbenchError(f"graph file must be complete; got {str(path)!r} ({type(err).__name__}: "
                             f"{str(err)[:100]}). Re-create it with `workbench trace`.") from None
    meta = parse_meta(meta_json, str(path))
    version = meta.pop("schema_version", None)
    if version != SCHEMA_VERSION:
        raise WorkbenchError(
            f"graph schema_version must be {SCHEMA_VERSION}; got {version!r} in {str(path)!r}. "
            "Re-create the graph with this version of manifold-workbench."
        )
    meta["logit_tokens"] = tuple(meta.get("logit_tokens", ()))
    validate_graph(tensors, meta["n_layers"], meta["d_vocab"], str(path))
    return graph_from_tensors(tensors, **meta)


def load_npz(path: Path, *, mmap: bool = False) -> Graph:
    """Read a §2.3 npz (ours or the reference harness's), checking every field. Provenance strings
    are not in npz.

    ``mmap=True`` maps a stored (uncompressed), aligned adjacency instead of reading it."""
    import zipfile
    import zlib

    from tracer.mapped import map_tensor, npz_member

    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in (*_TENSOR_FIELDS, "n_layers") if k not in z.files]
            if missing and {"node_mask", "cumulative_scores"} <= set(z.files):  # `workbench prune`'s own npz
                raise WorkbenchError(f"graph file must be a graph; got {str(path)!r}, a prune result (written by "
                                     "`workbench prune`). Pass the graph it was pruned from.")
            if missing:
                raise WorkbenchError(f"graph npz must have keys {list(_TENSOR_FIELDS)} and n_layers; "
                                     f"{str(path)!r} lacks {missing}.")
            place = npz_member(path, "adjacency") if mmap else None
            names = _TENSOR_FIELDS[1:] if place is not None and place.mappable else _TENSOR_FIELDS
            arrays = {k: z[k] for k in (*names, "n_layers")}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        if isinstance(err, WorkbenchError):
            raise
        raise WorkbenchError(f"graph file must be a valid .npz; got {str(path)!r} "
                             f"({type(err).__name__}: {str(err)[:100]}).") from None
    n_layers = arrays["n_layers"]
    if n_layers.shape != () or n_layers.dtype.kind not in "iu":
        raise WorkbenchError(f"graph n_layers must be an integer scalar; got {n_layers.dtype} of shape "
                             f"{n_layers.shape} in {str(path)!r}.")
    try:
        tensors = {k: torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in names}
        if place is not None and place.mappable and place.torch_dtype is not None:  # mappable: a torch dtype
            tensors["adjacency"] = map_tensor(path, place.offset, place.torch_dtype, place.shape)
    except TypeError as err:  # a dtype torch has no type for (strings, unsigned 16-bit...)
        raise WorkbenchError(f"graph arrays must be numeric; got {str(err)[:80]} in {str(path)!r}.") from None
    validate_graph(tensors, int(n_layers), -1, str(path))
    return graph_from_tensors(tensors, n_layers=int(n_layers), d_vocab=-1)
