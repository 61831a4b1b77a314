"""Collecting transcoder activations (and chosen vectors) over a corpus, streamed to disk.

Prompts are tokenized once, then processed shard by shard (``shard_prompts`` prompts each) in
batched forward passes of the real model (right-padded: causal attention makes the padding
invisible to the real positions). Each layer's transcoder input at the real positions (padding and
the BOS left out, as :func:`tracer.replacement.encode` zeroes the BOS) is encoded in bounded chunks
(:func:`tracer.replacement.encode_non_bos`); the non-zero activations and
the requested vectors go into one safetensors shard, written atomically, and ``index.json`` is
rewritten (atomically) after every shard. A killed run started again with the same prompts and
settings continues at the first shard the index does not list; the listed shards are read and
checked first, and a damaged one is collected again.
"""

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from tracer.activations.prompts import PromptRecord
from tracer.activations.store import (
    FORMAT,
    INDEX,
    PROMPTS,
    SCHEMA_VERSION,
    ActivationStore,
    ShardInfo,
    read_index,
    shard_name,
)
from tracer.config import ActivationConfig
from tracer.errors import StaleRunError, WorkbenchError
from tracer.io import TEMP_PREFIX, atomic_path, check_output_path, json_safe
from tracer.models.forward import capture
from tracer.models.loaded import LoadedModel
from tracer.models.tokens import check_token_ids, tokenize, tokenize_many
from tracer.replacement import encode_non_bos
from tracer.transcoders.base import Transcoders
from tracer.transcoders.identity import transcoder_signature
from tracer.transcoders.loaders import check_against_model
from tracer.weights import check_finite_run

logger = logging.getLogger(__name__)


def _check_layers(cfg: ActivationConfig, n_layers: int) -> tuple[int, ...]:
    feature_layers = tuple(range(n_layers)) if cfg.feature_layers is None else cfg.feature_layers
    for name, layers, top in (("feature_layers", feature_layers, n_layers - 1),
                              ("mlp_input_layers", cfg.mlp_input_layers, n_layers - 1),
                              ("residual_layers", cfg.residual_layers, n_layers)):
        bad = [x for x in layers if x > top]
        if bad:
            raise WorkbenchError(f"{name} must be in [0, {top}] for this model; got {bad[0]}.")
    return feature_layers


def _at_prompt(err: WorkbenchError, i: int, record: PromptRecord) -> WorkbenchError:
    """``err`` prefixed with the prompt it is about and its file line (keeping the remedies it offers)."""
    line = "" if record.line is None else f" (prompt file line {record.line})"
    out = WorkbenchError(f"prompt {i}{line}: {err}")
    out.fields = err.fields
    return out


def _tokenize(loaded: LoadedModel, records: list[PromptRecord], allow_unk: bool) -> list[Tensor]:
    """Every prompt's ids; an error names the first prompt it is about and its file line."""
    try:
        return tokenize_many(loaded, [r.prompt for r in records], allow_unk=allow_unk)
    except WorkbenchError as err:
        for i, rec in enumerate(records):  # only on error: find the prompt to name
            try:
                tokenize(loaded, rec.prompt, allow_unk=allow_unk)
            except WorkbenchError as one:
                raise _at_prompt(one, i, rec) from None
        raise err


def _check_lengths(loaded: LoadedModel, records: list[PromptRecord], tokens: list[Tensor]) -> None:
    """The longest prompt must fit the model's context (and attention window), as for `trace`
    (:func:`tracer.models.tokens.check_token_ids`); the error names the prompt and its file line."""
    i = max(range(len(tokens)), key=lambda k: int(tokens[k].shape[0]))
    try:
        check_token_ids(loaded, tokens[i])
    except WorkbenchError as err:
        raise _at_prompt(err, i, records[i]) from None


def _vector_positions(cfg: ActivationConfig, records: list[PromptRecord], lengths: list[int]) -> list[list[int]]:
    """Per prompt: the positions whose vectors are stored."""
    if not (cfg.residual_layers or cfg.mlp_input_layers):
        return [[] for _ in records]
    if cfg.positions == "all":
        return [list(range(n)) for n in lengths]
    if cfg.positions == "last":
        return [[n - 1] for n in lengths]
    out = []
    for i, (rec, n) in enumerate(zip(records, lengths)):
        pos = rec.meta.get("position")
        if isinstance(pos, bool) or not isinstance(pos, int) or not -n <= pos < n:
            raise _at_prompt(WorkbenchError(f"'position' must be an integer in [-{n}, {n}) (the prompt has {n} "
                                            f"tokens with the BOS); got {pos!r}."), i, rec)
        out.append([pos % n])
    return out


def _fingerprint(loaded: LoadedModel, tc: Transcoders, tokens: list[Tensor], cfg: ActivationConfig,
                 positions: list[list[int]]) -> str:
    """What makes two runs the same run: model, transcoders, settings, tokens and (for ``positions="field"``,
    where the records choose them) the positions whose vectors are stored."""
    h = hashlib.sha256(json.dumps({"model": loaded.model_id, "transcoders": tc.source, "kind": tc.kind,
                                   "config": _config_json(cfg)}, sort_keys=True).encode())
    for t in tokens:
        h.update(t.numpy().astype(np.int64).tobytes() + b"|")
    if cfg.positions == "field":
        h.update(json.dumps(positions).encode())
    return h.hexdigest()


def _config_json(cfg: ActivationConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg).items()}


def _shard_entries(shard_prompts: int, lengths: list[int]) -> list[dict[str, Any]]:
    """The index entry of every shard of the run (``file``, ``prompts`` [start, end), ``row_offset``, ``n_rows``)."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # (n_prompts + 1,)
    entries = []
    for lo in range(0, len(lengths), shard_prompts):
        hi = min(lo + shard_prompts, len(lengths))
        entries.append({"file": shard_name(lo // shard_prompts), "prompts": [lo, hi], "row_offset": int(offsets[lo]),
                        "n_rows": int(offsets[hi] - offsets[lo])})
    return entries


def read_run_index(out: Path, name: str = "output folder") -> dict[str, Any]:
    """The index of the activation run in ``out``; an unreadable or foreign one is a one-line error."""
    try:
        return read_index(out)
    except WorkbenchError as err:
        raise WorkbenchError(f"{err} Remove the folder or choose another {name}.") from None


def check_run_folder(out: Path, name: str = "output folder") -> None:
    """Before any work: ``out`` must be new, empty (temp files aside) or an activation run's folder."""
    if (out / INDEX).is_file():
        read_run_index(out, name)
    elif out.is_dir() and any(not n.startswith(TEMP_PREFIX) for n in os.listdir(out)):
        raise WorkbenchError(f"{name} must be new, empty or an activation run's folder; got {str(out)!r}, which "
                             f"holds other files and no {INDEX}. Choose another {name}.")


def _intact(store: ActivationStore, shard: ShardInfo) -> bool:
    try:
        store.check_shard(shard)
    except WorkbenchError as err:
        logger.warning("collecting %s again: %s", shard.file, err)
        return False
    return True


_SAME_RUN = (("fingerprint", "other prompts, model or settings"),
             ("transcoder_signature", "transcoders whose files have changed since"),
             ("dtype", "the model in another dtype"))
"""What a resumed run must share with the folder's: (index key, what differs when it does not). The
fingerprint always; the transcoder files' signature and the model's dtype where both indexes record them
(runs from before they were recorded resume as before)."""


def _check_same_run(out: Path, index: dict[str, Any], base: dict[str, Any]) -> None:
    """Refuse to resume a run in ``out`` whose shards were made otherwise than this one's would be."""
    for key, what in _SAME_RUN:
        theirs, mine = index.get(key), base.get(key)
        if theirs != mine and (key == "fingerprint" or (theirs is not None and mine is not None)):
            raise StaleRunError(f"output folder must be new or hold this same run; got {str(out)!r}, which holds "
                                f"a run of {what} ({key} {theirs!r}, this run's {mine!r}). Use a new output folder.")


def _resume(out: Path, base: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The index of the same run in ``out``, listing its finished shards that read back intact."""
    index = read_run_index(out)
    _check_same_run(out, index, base)
    shards = index.get("shards")
    listed = [e for e in entries if isinstance(shards, list) and e in shards]  # entries as this run writes them
    _write_index(out, {**base, "shards": listed})
    store = ActivationStore(out)
    done = [e for e, shard in zip(listed, store.shards) if _intact(store, shard)]
    logger.info("resuming %s: %d of %d shards done", out, len(done), len(entries))
    return {**base, "shards": done}


def _start_or_resume(out: Path, base: dict[str, Any], records: list[PromptRecord], tokens: list[Tensor],
                     entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The index to continue from: a fresh one, or the folder's own when it is the same run."""
    if (out / INDEX).is_file():
        return _resume(out, base, entries)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / PROMPTS) as tmp:
        with tmp.open("w", encoding="utf-8") as fh:
            for rec, t in zip(records, tokens):
                row = {"prompt": rec.prompt, "n_pos": int(t.shape[0]), "tokens": t.tolist(), **rec.meta}
                fh.write(json.dumps(json_safe(row), ensure_ascii=False, allow_nan=False) + "\n")  # NaN -> null
    index = {**base, "shards": []}
    _write_index(out, index)  # now a run killed in its first shard is resumable
    return index


def _write_index(out: Path, index: dict[str, Any]) -> None:
    with atomic_path(out / INDEX) as tmp:
        tmp.write_text(json.dumps(json_safe(index), indent=1, allow_nan=False) + "\n")


def collect_activations(loaded: LoadedModel, transcoders: Transcoders, prompts: Sequence[PromptRecord | str],
                        out_dir: str | Path, config: ActivationConfig | None = None, *, allow_unk: bool = False,
                        verbose: bool = False) -> ActivationStore:
    """Run ``prompts`` through the model and store sparse activations (and vectors) under ``out_dir``.

    ``out_dir`` must be a new folder, an empty one, or this run's folder (to resume it); it is
    checked before any work.
    """
    if isinstance(prompts, (str, PromptRecord)):
        raise WorkbenchError(f"prompts must be a list of prompts; got a {type(prompts).__name__}. Wrap it in a list.")
    out = check_output_path(out_dir, folder=True, name="output folder")
    check_run_folder(out)
    cfg = config or ActivationConfig()
    check_against_model(transcoders, n_layers=loaded.n_layers, d_model=loaded.d_model)
    feature_layers = _check_layers(cfg, loaded.n_layers)
    records = [p if isinstance(p, PromptRecord) else PromptRecord(prompt=p) for p in prompts]
    if not records:
        raise WorkbenchError("prompts must be non-empty; got none. Pass at least one prompt.")
    tokens = _tokenize(loaded, records, allow_unk)
    _check_lengths(loaded, records, tokens)
    lengths = [int(t.shape[0]) for t in tokens]
    positions = _vector_positions(cfg, records, lengths)
    entries = _shard_entries(cfg.shard_prompts, lengths)
    base = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "config": _config_json(cfg),
            "fingerprint": _fingerprint(loaded, transcoders, tokens, cfg, positions), "model_id": loaded.model_id,
            "transcoder_id": transcoders.source, "transcoder_signature": transcoder_signature(transcoders.source),
            "transcoder_kind": transcoders.kind, "dtype": str(loaded.dtype).removeprefix("torch."),
            "n_layers": loaded.n_layers,
            "d_model": loaded.d_model, "feature_layers": list(feature_layers), "n_prompts": len(records),
            "n_rows": sum(lengths), "n_shards": len(entries),
            "d_transcoder": {str(i): transcoders.layers[i].d_transcoder for i in feature_layers}}
    index = _start_or_resume(out, base, records, tokens, entries)
    done = {s["file"] for s in index["shards"]}
    tcd = transcoders.to(loaded.device, loaded.dtype)
    in_loc = loaded.adapter.input_location(transcoders.input_hook)
    with tqdm(total=len(records), desc="activations", disable=not verbose) as pbar:
        for entry in entries:
            lo, hi = entry["prompts"]
            if entry["file"] not in done:
                arrays = collect_shard(loaded, tcd, in_loc, tokens[lo:hi], positions[lo:hi], lo, cfg,
                                       feature_layers)
                _write_shard(out / entry["file"], arrays)
                index["shards"].append(entry)
                index["shards"].sort(key=lambda s: s["prompts"][0])
                _write_index(out, index)
            pbar.update(hi - lo)
    return ActivationStore(out)


def _write_shard(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Prompt indices grouped by similar length (less padding), deterministic."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def collect_shard(loaded: LoadedModel, tc: Transcoders, input_location: str, tokens: list[Tensor],
                  positions: list[list[int]], first_prompt: int, cfg: ActivationConfig,
                  feature_layers: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The arrays of one shard (see :mod:`tracer.activations.store` for the layout)."""
    lengths = [int(t.shape[0]) for t in tokens]
    row_start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    value_dtype = np.float16 if cfg.value_dtype == "float16" else np.float32
    feats: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {layer: [] for layer in feature_layers}
    vecs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    input_layers = sorted(set(feature_layers) | set(cfg.mlp_input_layers))
    for batch in _batches(lengths, cfg.batch_size):
        T = max(lengths[i] for i in batch)
        ids = torch.zeros(len(batch), T, dtype=torch.long)
        mask = torch.zeros(len(batch), T, dtype=torch.bool)  # (B, T) real positions
        for b, i in enumerate(batch):
            ids[b, :lengths[i]], mask[b, :lengths[i]] = tokens[i], True
        with capture(loaded, input_location=input_location if input_layers else None,
                     residual_layers=cfg.residual_layers) as got:
            loaded.logits(ids)
        starts = torch.from_numpy(row_start[batch])  # (B,)
        for what, captured in (("residual stream layer", got.residual), ("transcoder input layer", got.inputs)):
            for at, h in captured.items():  # the whole batch at once; where it fails, its real positions
                if not bool(torch.isfinite(h).all()):
                    check_finite_run([(f"{what} {at}", h[mask.to(h.device)])], loaded, tc)
        for layer in feature_layers:
            feats[layer].append(_sparse_acts(tc, layer, got.inputs[layer], mask, starts, cfg.encode_rows,
                                             value_dtype))
        picks = [(b, p) for b, i in enumerate(batch) for p in positions[i]]
        if picks:
            bb, pp = torch.tensor([b for b, _ in picks]), torch.tensor([p for _, p in picks])
            rows = (starts[bb] + pp).numpy()
            for key, store, layers in (("resid", got.residual, cfg.residual_layers),
                                       ("input", got.inputs, cfg.mlp_input_layers)):
                for layer in layers:
                    x = store[layer][bb, pp].float().cpu().numpy().astype(value_dtype)  # (n, d)
                    vecs.setdefault(f"{key}{layer}", []).append((rows, x))
    return _assemble_shard(tokens, lengths, first_prompt, feats, vecs, cfg, value_dtype, loaded.d_model)


def _sparse_acts(tc: Transcoders, layer: int, x: Tensor, mask: Tensor, starts: Tensor, encode_rows: int,
                 value_dtype: type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, features, values) of one layer's non-zero activations for a batch (B, T, d).

    Only real positions are encoded: padding and position 0 (the BOS, whose activations
    :func:`tracer.replacement.encode` zeroes) are left out before the encoder, not masked after it.
    """
    B, T, _ = x.shape
    real = mask.clone()  # (B, T)
    real[:, 0] = False
    where = torch.nonzero(real)  # (n_real, 2): (b, t), row-major
    global_rows = starts[where[:, 0]] + where[:, 1]  # (n_real,)
    xs = x[real.to(x.device)]  # (n_real, d_model)
    layer_tc = tc.layers[layer]
    rows: list[np.ndarray] = []
    feats: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for r0 in range(0, int(xs.shape[0]), max(1, encode_rows)):
        acts = encode_non_bos(layer_tc, xs[r0:r0 + encode_rows].to(layer_tc.W_enc.dtype))  # (n, d_tc)
        nz = torch.nonzero(acts)  # (nnz, 2): (row, feature); NaN and inf are non-zero
        values = acts[nz[:, 0], nz[:, 1]]  # (nnz,)
        check_finite_run([(f"layer {layer} activations", values)], None, tc)  # names a transcoder weight to blame
        vals.append(values.float().cpu().numpy().astype(value_dtype))
        rows.append(global_rows[r0 + nz[:, 0].cpu()].numpy())
        feats.append(nz[:, 1].cpu().numpy())
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, value_dtype)
    return np.concatenate(rows), np.concatenate(feats), np.concatenate(vals)


def _assemble_shard(tokens: list[Tensor], lengths: list[int], first_prompt: int,
                    feats: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
                    vecs: dict[str, list[tuple[np.ndarray, np.ndarray]]], cfg: ActivationConfig,
                    value_dtype: type, d_model: int) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {
        "prompt": np.repeat(np.arange(first_prompt, first_prompt + len(tokens)), lengths).astype(np.int64),
        "pos": np.concatenate([np.arange(n) for n in lengths]).astype(np.int32),
        "token": torch.cat(tokens).numpy().astype(np.int64),
    }
    for layer, parts in feats.items():
        rows, f, v = (np.concatenate([p[i] for p in parts]) for i in range(3))
        # CSR order: by row, then feature. Each part lists a prompt's rows as one ascending run,
        # features ascending within a row (nonzero's row-major order), so a stable sort by row
        # (timsort: merging the runs) gives it.
        order = np.argsort(rows, kind="stable")
        arrays[f"f{layer}.row"] = rows[order].astype(np.int32)
        arrays[f"f{layer}.feature"] = f[order].astype(np.int32)
        arrays[f"f{layer}.value"] = v[order]
    for key, pairs in vecs.items():
        vrows = np.concatenate([r for r, _ in pairs])
        x = np.concatenate([v for _, v in pairs])
        vorder = np.argsort(vrows, kind="stable")
        arrays[f"{key}.row"], arrays[key] = vrows[vorder].astype(np.int32), x[vorder]
    for key, layers in (("resid", cfg.residual_layers), ("input", cfg.mlp_input_layers)):
        for layer in layers:  # a shard whose prompts selected no position still has the arrays
            if f"{key}{layer}" not in arrays:
                arrays[f"{key}{layer}.row"] = np.zeros(0, np.int32)
                arrays[f"{key}{layer}"] = np.zeros((0, d_model), value_dtype)
    return arrays
