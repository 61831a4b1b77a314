"""Import circuit-tracer ``Graph.to_pt`` files (a ``torch.save``'d dict: a pickle).

Unpickling can run arbitrary code, so this happens only with explicit consent
(``trust_pickle=True``). Even then the unpickler is restricted:
it rebuilds tensors, dtypes, devices and plain containers, and turns every class from
``circuit_tracer`` or ``transformer_lens`` (``LogitTarget``, ``UnifiedConfig``, a legacy
``HookedTransformerConfig``) into an inert attribute holder. Any other global is refused, so
circuit-tracer need not be installed and a tampered file cannot import ``os``.

Field mapping to :class:`tracer.graph.Graph`:

* ``adjacency_matrix`` -> ``adjacency``; ``input_tokens``, ``active_features``,
  ``activation_values``, ``selected_features``, ``logit_probabilities``, ``input_string`` as is;
* ``logit_targets`` (``LogitTarget(token_str, vocab_idx)`` list, or a legacy tensor of ids, or
  the older key ``logit_tokens``) -> ``logit_token_ids`` and ``logit_tokens``;
* ``cfg.n_layers`` -> ``n_layers``; ``vocab_size`` (else ``cfg.d_vocab``) -> ``d_vocab``;
  ``cfg.tokenizer_name`` (else ``cfg.model_name``) -> ``model_id``;
* ``scan``: a string as is; a list -> ``scan=""`` and ``extra["transcoder_list"]``;
* ``logit_vectors``: **not stored in .pt files**, and not recomputable without the model; the
  graph gets an empty ``(n_logits, 0)`` tensor and ``extra["logit_vectors"]`` says why.
  Everything that needs them (interventions on logits) must re-trace the prompt.
* the whole cfg is kept as JSON in ``extra["circuit_tracer_cfg"]``.
"""

import io
import logging
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tracer.errors import WorkbenchError
from tracer.graph.checks import validate_graph
from tracer.graph.core import Graph, graph_from_tensors
from tracer.memory import check_fits

logger = logging.getLogger(__name__)

_STUB_PACKAGES = ("circuit_tracer", "transformer_lens")
def _rebuild_tensor_checked(storage: Any, storage_offset: int, size: Any, stride: Any, *args: Any) -> Tensor:
    """torch's ``_rebuild_tensor_v2``, after checking that the tensor fits in memory.

    A pickle states a tensor's size and strides freely: a few bytes of storage with zero strides
    describe a 30 GB tensor, which the first copy (``.contiguous()``, a dtype change, saving)
    would try to allocate. Its logical size is checked against the memory available first.
    """
    dims = tuple(size) if isinstance(size, (tuple, list, torch.Size)) else None
    if dims is None or not all(isinstance(d, int) and d >= 0 for d in dims):
        raise pickle.UnpicklingError(f"a tensor with size {str(size)[:40]}")
    numel = 1
    for d in dims:
        numel *= d
    dtype = storage.dtype if isinstance(getattr(storage, "dtype", None), torch.dtype) else torch.float64
    itemsize = torch.empty((), dtype=dtype).element_size()
    check_fits(numel * itemsize, "cpu", f"a tensor of shape {list(dims)} in the .pt file",
               remedy="The file describes more data than this machine can hold.")
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, *args)  # pyright: ignore[reportPrivateUsage]


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_checked,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,  # pyright: ignore[reportPrivateUsage]
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
}


class _Stub:
    """An inert stand-in for a pickled circuit-tracer / TransformerLens object."""

    _qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Stub":
        obj = super().__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<{self._qualname} stub>"


def _stub_class(module: str, name: str) -> type:
    return type(name, (_Stub,), {"_qualname": f"{module}.{name}", "__module__": "tracer.ct_import"})


class _ForbiddenGlobal(pickle.UnpicklingError):
    """A global outside the allowlist."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Allows tensors, dtypes and plain containers; stubs circuit-tracer classes; refuses the rest."""

    _stubs: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[key]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.split(".")[0] in _STUB_PACKAGES:
            return self._stubs.setdefault(key, _stub_class(module, name))
        raise _ForbiddenGlobal(f"refusing to load global {module}.{name}")


class _RestrictedPickleModule:
    """The ``pickle_module`` torch.load uses: our Unpickler, pickle's everything else."""

    Unpickler = _RestrictedUnpickler
    __name__ = "tracer.ct_import._RestrictedPickleModule"

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()


def _read_pt(path: Path) -> dict[str, Any]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=_RestrictedPickleModule)
    except WorkbenchError:
        raise  # a tensor too big for memory (checked while unpickling)
    except _ForbiddenGlobal as err:
        raise WorkbenchError(f"graph .pt must hold only circuit-tracer graph data; {str(path)!r} does not "
                             f"({err}). It was not loaded.") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError,
            io.UnsupportedOperation) as err:
        why = f"{type(err).__name__}: {str(err)[:120]}"
        raise WorkbenchError(f"graph .pt must be a torch.save file; {str(path)!r} is not readable as one "
                             f"({why}). Re-save it with Graph.to_pt.") from None
    if not isinstance(data, dict) or "adjacency_matrix" not in data:
        raise WorkbenchError(f"graph .pt must be a circuit-tracer Graph.to_pt dict with 'adjacency_matrix'; "
                             f"{str(path)!r} holds {type(data).__name__}. Save it with Graph.to_pt.")
    return data


def _cfg_dict(cfg: Any) -> dict[str, Any]:
    """The cfg stub's fields as JSON-friendly values."""
    fields = dict(getattr(cfg, "__dict__", {})) if cfg is not None else {}
    fields.pop("_args", None)
    return {k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v) for k, v in fields.items()}


def _logit_targets(data: dict[str, Any], path: Path) -> tuple[Tensor, tuple[str, ...]]:
    """(vocab ids, token strings) from LogitTarget stubs, a legacy id tensor, or old 'logit_tokens'."""
    targets = data.get("logit_targets", data.get("logit_tokens"))
    if isinstance(targets, Tensor):  # legacy: a tensor of vocab ids
        return targets.long().flatten(), tuple("" for _ in range(targets.numel()))
    if isinstance(targets, (list, tuple)):
        pairs = []
        for t in targets:
            args = getattr(t, "_args", None) or (getattr(t, "token_str", ""), getattr(t, "vocab_idx", None))
            if len(args) < 2 or not isinstance(args[1], int):
                raise WorkbenchError(f"logit_targets must be LogitTarget(token_str, vocab_idx) records; "
                                     f"got {t!r} in {str(path)!r}.")
            pairs.append((str(args[0]), int(args[1])))
        return torch.tensor([v for _, v in pairs], dtype=torch.long), tuple(s for s, _ in pairs)
    raise WorkbenchError(f"graph .pt must have logit_targets; {str(path)!r} has none. "
                         "Re-save it with Graph.to_pt.")


_PT_TENSORS = ("adjacency_matrix", "input_tokens", "active_features", "activation_values", "selected_features",
               "logit_probabilities")


def _pt_tensors(data: dict[str, Any], path: Path) -> dict[str, Tensor]:
    """The graph's tensors from a .pt dict, each present and a tensor (or, for tokens, a list of ints)."""
    out: dict[str, Tensor] = {}
    for key in _PT_TENSORS:
        value = data.get(key)
        if key == "input_tokens" and isinstance(value, list) and all(isinstance(v, int) for v in value):
            value = torch.tensor(value, dtype=torch.long)
        if not isinstance(value, Tensor):
            raise WorkbenchError(f"graph .pt must hold the tensor {key!r}; {str(path)!r} has "
                                 f"{type(value).__name__}. Re-save it with Graph.to_pt.")
        out[key] = value
    return out


def _to_graph(data: dict[str, Any], path: Path) -> Graph:
    cfg = data.get("cfg")
    cfg_fields = _cfg_dict(cfg)
    n_layers = cfg_fields.get("n_layers")
    if not isinstance(n_layers, int) or isinstance(n_layers, bool):
        raise WorkbenchError(f"graph .pt cfg must have n_layers; {str(path)!r} lacks it. "
                             "Save it with Graph.to_pt.")
    t = _pt_tensors(data, path)
    logit_ids, logit_strings = _logit_targets(data, path)
    scan = data.get("scan")
    extra: dict[str, object] = {
        "source": f"circuit-tracer .pt ({path.name})", "circuit_tracer_cfg": cfg_fields,
        "logit_vectors": "unavailable: circuit-tracer .pt files do not store them; re-trace to get them",
    }
    if isinstance(scan, (list, tuple)):
        extra["transcoder_list"] = [str(s) for s in scan]
    vocab = data.get("vocab_size") or cfg_fields.get("d_vocab") or -1
    vocab = vocab if isinstance(vocab, int) and not isinstance(vocab, bool) else -1
    tensors = {
        "adjacency": t["adjacency_matrix"], "input_tokens": t["input_tokens"].long(),
        "active_features": t["active_features"].long() if not t["active_features"].is_floating_point()
        else t["active_features"], "activation_values": t["activation_values"],
        "selected_features": t["selected_features"].long() if not t["selected_features"].is_floating_point()
        else t["selected_features"], "logit_token_ids": logit_ids, "logit_probabilities": t["logit_probabilities"],
        "logit_vectors": torch.zeros(len(logit_ids), 0, dtype=torch.float32),
    }
    validate_graph(tensors, n_layers, int(vocab), str(path))
    graph = graph_from_tensors(
        tensors, n_layers=n_layers, d_vocab=int(vocab),
        model_id=str(cfg_fields.get("tokenizer_name") or cfg_fields.get("model_name") or ""),
        scan=scan if isinstance(scan, str) else "", input_string=str(data.get("input_string") or ""),
        logit_tokens=logit_strings, extra=extra,
    )
    return graph


def load_circuit_tracer_pt(path: str | os.PathLike[str], *, trust_pickle: bool) -> Graph:
    """Read a circuit-tracer ``Graph.to_pt`` file as a :class:`Graph` (see the module docstring).

    Refuses unless `trust_pickle` is True: the file is a pickle. The adjacency keeps its dtype.
    """
    p = Path(path)
    if not p.is_file():
        raise WorkbenchError(f"graph .pt file must exist; got {str(p)!r}. Check the path.")
    if not trust_pickle:
        raise WorkbenchError(f"{str(p)!r} is a pickle; allow it (trust_pickle=True) only if you trust its "
                             "source. Loading a pickle can run code.")
    graph = _to_graph(_read_pt(p), p)
    logger.info("imported %s: %d nodes (%d features)", p, graph.n_nodes, graph.n_selected)
    return graph
