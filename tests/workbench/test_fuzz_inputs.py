"""Fuzz-style suite, part 1: hand-made mutants of the demo world's model, transcoders, graph files,
labels and manifest, each given to the CLI command that reads it.

Every case must be refused with exit 2, exactly one line on stderr, no traceback, nothing new at
the output path (and no temp file next to it), and its inputs unchanged (``assert_refused``).
Part 2 (``test_fuzz_outputs.py``) covers output paths, token ids, devices, memory and hypothesis.
"""

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.helpers_mutants import (
    Replace,
    assert_refused,
    copy_world,
    edit_header,
    edit_tensors,
    first_tensor,
    write_raw,
)

PROMPT = "Two days after Friday is"
Mutate = Callable[[Path], object]  # what a mutation returns is ignored


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A copy of the demo world, plus a good graph of it (native and npz)."""
    from tracer.attribution import attribute
    from tracer.config import AttributionConfig
    from tracer.models import load_model, tokenize
    from tracer.transcoders.loaders import load_transcoders

    root = copy_world(tmp_path_factory.mktemp("world"))
    loaded = load_model(root / "model")
    tc = load_transcoders(root / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    graph = attribute(loaded, tc, tokenize(loaded, PROMPT), AttributionConfig(verbose=False))
    graph.save(root / "graph.safetensors")
    graph.save(root / "graph.npz")
    return root


# ----------------------------------------------------------------------------- model mutants
def _drop(*names: str) -> Mutate:
    def mutate(model: Path) -> None:
        def edit(t: dict[str, torch.Tensor]) -> None:
            for name in [k for k in t if any(k == n or k.startswith(n + ".") for n in names)]:
                del t[name]
        edit_tensors(model / "model.safetensors", edit)
    return mutate


def _set_value(name: str, value: float, index: tuple[int, ...] = (0, 0)) -> Mutate:
    def mutate(model: Path) -> None:
        def edit(t: dict[str, torch.Tensor]) -> None:
            t[name][index] = value
        edit_tensors(model / "model.safetensors", edit)
    return mutate


def _tensor_edit(file: str, edit: Callable[[dict[str, torch.Tensor]], object]) -> Mutate:
    return lambda folder: edit_tensors(folder / file, edit)


def _header_edit(file: str, edit: Callable[[dict], object]) -> Mutate:
    return lambda folder: edit_header(folder / file, edit)


def _config(**changes: object) -> Mutate:
    def mutate(model: Path) -> None:
        cfg = json.loads((model / "config.json").read_text())
        cfg.update(changes)
        (model / "config.json").write_text(json.dumps(cfg))
    return mutate


def _write(file: str, data: bytes) -> Mutate:
    return lambda folder: (folder / file).write_bytes(data)


def _truncate(file: str, keep: int) -> Mutate:
    return lambda folder: (folder / file).write_bytes((folder / file).read_bytes()[:keep])


Q1 = "model.layers.1.self_attn.q_proj.weight"
_HEADER_MUTANTS: dict[str, Callable[[dict], object]] = {
    "json-list": lambda h: Replace([1, 2, 3]),
    "no-offsets": lambda h: first_tensor(h).pop("data_offsets"),
    "negative-shape": lambda h: first_tensor(h).update(shape=[-4, 128]),
    "huge-shape": lambda h: first_tensor(h).update(shape=[2**40, 2**40]),
    "string-shape": lambda h: first_tensor(h).update(shape="big"),
    "offsets-past-end": lambda h: first_tensor(h).update(data_offsets=[0, 10**12]),
    "bad-dtype": lambda h: first_tensor(h).update(dtype="Q7"),
    "entry-not-object": lambda h: h.update({"x": 5}),
}

MODEL_CASES: dict[str, tuple[Mutate, str, str | None]] = {
    # name: (mutation, backend, expected text in the message)
    "missing-lm_head-untied": (_drop("lm_head"), "auto", "'lm_head.weight' is missing"),
    "missing-lm_head-untied-hf": (_drop("lm_head"), "hf", "'lm_head.weight' is missing"),
    "missing-final-norm": (_drop("model.norm"), "auto", "'model.norm.weight' is missing"),
    "missing-final-norm-hf": (_drop("model.norm"), "hf", "'model.norm.weight' is missing"),
    "missing-q_proj": (_drop(Q1), "auto", Q1),
    "missing-q_proj-hf": (_drop(Q1), "hf", Q1),
    "missing-layer": (_drop("model.layers.2"), "auto", "model.layers.2."),
    "missing-layer-hf": (_drop("model.layers.2"), "hf", "model.layers.2."),
    "unexpected-tensor": (_tensor_edit("model.safetensors", lambda t: t.update(extra=torch.zeros(3))), "auto",
                          "'extra'"),
    "unexpected-tensor-hf": (_tensor_edit("model.safetensors", lambda t: t.update(extra=torch.zeros(3))), "hf",
                             "'extra'"),
    "misshapen": (_tensor_edit("model.safetensors", lambda t: t.update({Q1: t[Q1][:64].contiguous()})), "auto", Q1),
    "misshapen-hf": (_tensor_edit("model.safetensors", lambda t: t.update({Q1: t[Q1][:64].contiguous()})), "hf", Q1),
    "int-weight": (_tensor_edit("model.safetensors", lambda t: t.update({Q1: t[Q1].long()})), "auto", Q1),
    "nan-weight": (_set_value(Q1, math.nan), "auto", "NaN"),
    "nan-weight-hf": (_set_value(Q1, math.nan), "hf", "NaN"),
    "inf-weight": (_set_value("model.norm.weight", math.inf, (3,)), "auto", "inf"),
    "huge-weight": (_set_value("lm_head.weight", 1e38), "auto", "1e+38"),
    "truncated": (_truncate("model.safetensors", 1000), "auto", "model.safetensors"),
    "short": (_truncate("model.safetensors", 5), "auto", "shorter than 8 bytes"),
    "random-bytes": (_write("model.safetensors", bytes(range(256)) * 8), "auto", "model.safetensors"),
    "header-length-huge": (_write("model.safetensors", (2**62).to_bytes(8, "little") + b"{}"), "auto",
                           "header length"),
    **{f"header-{k}": (_header_edit("model.safetensors", f), "auto", "model.safetensors")
       for k, f in _HEADER_MUTANTS.items()},
    "no-weights": (lambda m: (m / "model.safetensors").unlink(), "auto", "*.safetensors"),
    "config-list": (_write("config.json", b"[1, 2]"), "auto", "JSON object"),
    "config-invalid-json": (_write("config.json", b"{'hidden_size': 128"), "auto", "valid JSON"),
    "config-not-utf8": (_write("config.json", b'{"a": "\xff\xfe"}'), "auto", "valid JSON"),
    "config-hidden-size-string": (_config(hidden_size="128"), "auto", "hidden_size"),
    "config-layers-negative": (_config(num_hidden_layers=-1), "auto", "num_hidden_layers"),
    "config-intermediate-string": (_config(intermediate_size="x"), "auto", "intermediate_size"),
    "config-intermediate-string-hf": (_config(intermediate_size="x"), "hf", "intermediate_size"),
    "config-rope-theta-string": (_config(rope_theta="abc"), "auto", "rope_theta"),
    "config-tie-string": (_config(tie_word_embeddings="no"), "auto", "tie_word_embeddings"),
    "config-eps-list": (_config(rms_norm_eps=[1]), "auto", "rms_norm_eps"),
    "config-more-layers": (_config(num_hidden_layers=6), "auto", "model.layers.4."),
    "config-unknown-arch": (_config(architectures=["GPT9"]), "auto", "GPT9"),
    "tokenizer-corrupt": (_write("tokenizer.json", b"{not json"), "auto", "tokenizer.json"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_model_mutants_are_refused(world, tmp_path, capfd, case):
    mutate, backend, needle = MODEL_CASES[case]
    model = tmp_path / "model"
    shutil.copytree(world / "model", model)
    mutate(model)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "g.safetensors"
    argv = ["trace", "--model", str(model), "--transcoders", str(world / "plt"), "--prompt", PROMPT,
            "--out", str(out), "--model-backend", backend, "-q"]
    assert_refused(capfd, argv, inputs=[model, world / "plt"], out=out, needle=needle)


# ----------------------------------------------------------------------------- transcoder mutants
def _all_rows(key: str, value: float, layer_file: str = "layer_0.safetensors") -> Mutate:
    def edit(t: dict[str, torch.Tensor]) -> None:
        t[key][..., 0] = value  # one column in every row: every active feature reads it
    return _tensor_edit(layer_file, edit)


def _yaml(**changes: object) -> Mutate:
    def mutate(tc: Path) -> None:
        cfg = yaml.safe_load((tc / "config.yaml").read_text())
        cfg.update(changes)
        (tc / "config.yaml").write_text(yaml.safe_dump(cfg))
    return mutate


L0 = "layer_0.safetensors"
TC_CASES: dict[str, tuple[str, Mutate, tuple[str, ...], str | None]] = {
    # name: (plt | clt, mutation, extra flags, expected text)
    "missing-W_dec": ("plt", _tensor_edit(L0, lambda t: t.pop("W_dec")), (), "'W_dec'"),
    "missing-b_enc": ("plt", _tensor_edit(L0, lambda t: t.pop("b_enc")), (), "'b_enc'"),
    "missing-b_dec": ("plt", _tensor_edit(L0, lambda t: t.pop("b_dec")), (), "'b_dec'"),
    "W_enc-1d": ("plt", _tensor_edit(L0, lambda t: t.update(W_enc=t["W_enc"][0].contiguous())), (), "W_enc"),
    "W_dec-shape": ("plt", _tensor_edit(L0, lambda t: t.update(W_dec=t["W_dec"][:, :64].contiguous())), (),
                    "W_dec"),
    "b_enc-length": ("plt", _tensor_edit(L0, lambda t: t.update(b_enc=t["b_enc"][:10].contiguous())), (),
                     "b_enc"),
    "threshold-length": ("plt", _tensor_edit(L0, lambda t: t.update(
        {"activation_function.threshold": t["activation_function.threshold"][:3].contiguous()})), (), "threshold"),
    "W_enc-int": ("plt", _tensor_edit(L0, lambda t: t.update(W_enc=t["W_enc"].long())), (), "float"),
    "nan-W_dec-lazy": ("plt", _all_rows("W_dec", math.nan), (), "NaN"),
    "nan-W_dec-eager": ("plt", _tensor_edit(L0, lambda t: t["W_dec"].__setitem__((511, 5), math.nan)),
                        ("--eager-decoder",), "NaN at index [511, 5]"),
    "inf-W_dec": ("plt", _all_rows("W_dec", math.inf), (), "inf"),
    "huge-W_dec": ("plt", _all_rows("W_dec", 1e38), (), "1e+38"),
    "nan-threshold": ("plt", _tensor_edit(L0, lambda t: t["activation_function.threshold"].__setitem__(7, math.nan)),
                      (), "threshold"),
    "nan-W_enc": ("plt", _tensor_edit(L0, lambda t: t["W_enc"].__setitem__((3, 3), math.nan)), (), "W_enc"),
    "inf-b_enc": ("plt", _tensor_edit(L0, lambda t: t["b_enc"].__setitem__(0, -math.inf)), (), "-inf"),
    **{f"header-{k}": ("plt", _header_edit(L0, f), (), L0) for k, f in _HEADER_MUTANTS.items()},
    "truncated-layer": ("plt", _truncate(L0, 3000), (), L0),
    "missing-layer-file": ("plt", lambda tc: (tc / "layer_3.safetensors").unlink(), (), "n_layers"),
    "config-not-mapping": ("plt", _write("config.yaml", b"- a\n- b\n"), (), "mapping"),
    "config-bad-yaml": ("plt", _write("config.yaml", b"a: [1,\n"), (), "valid YAML"),
    "config-kind": ("plt", _yaml(model_kind="magic"), (), "model_kind"),
    "config-topk-k": ("plt", _yaml(activation_function="topk", topk_k=-3), (), "topk_k"),
    "config-hook": ("plt", _yaml(feature_input_hook="nowhere"), (), "feature_input_hook"),
    "clt-missing-W_dec-file": ("clt", lambda tc: (tc / "W_dec_1.safetensors").unlink(), (), "W_dec_1"),
    "clt-W_dec-shape": ("clt", _tensor_edit("W_dec_1.safetensors", lambda t: t.update(
        W_dec_1=t["W_dec_1"][:, :1].contiguous())), (), "W_dec_1"),
    "clt-missing-b_enc": ("clt", _tensor_edit("W_enc_0.safetensors", lambda t: t.pop("b_enc_0")), (), "b_enc_0"),
    "clt-nan-W_enc": ("clt", _tensor_edit("W_enc_2.safetensors", lambda t: t["W_enc_2"].__setitem__((1, 1), math.nan)),
                      (), "W_enc_2"),
    "clt-nan-W_dec-lazy": ("clt", _all_rows("W_dec_0", math.nan, "W_dec_0.safetensors"), (), "W_dec_0"),
    "clt-header": ("clt", _header_edit("W_enc_1.safetensors", _HEADER_MUTANTS["no-offsets"]), (), "W_enc_1"),
}


@pytest.mark.parametrize("case", sorted(TC_CASES))
def test_transcoder_mutants_are_refused(world, tmp_path, capfd, case):
    kind, mutate, flags, needle = TC_CASES[case]
    tc = tmp_path / kind
    shutil.copytree(world / kind, tc)
    mutate(tc)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "g.npz"
    argv = ["trace", "--model", str(world / "model"), "--transcoders", str(tc), "--prompt", PROMPT,
            "--out", str(out), "-q", *flags]
    assert_refused(capfd, argv, inputs=[world / "model", tc], out=out, needle=needle)


# ----------------------------------------------------------------------------- graph-file mutants
def _graph_tensor(name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Mutate:
    return lambda g: edit_tensors(g, lambda t: t.update({name: fn(t[name]).contiguous()}))


def _graph_meta(fn: Callable[[dict], object]) -> Mutate:
    def mutate(g: Path) -> None:
        def edit(h: dict) -> None:
            meta = json.loads(h["__metadata__"]["manifold_workbench_graph"])
            new = fn(meta)
            h["__metadata__"]["manifold_workbench_graph"] = json.dumps(new.header if isinstance(new, Replace) else meta)
        edit_header(g, edit)
    return mutate


def _nan_at(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[t.numel() // 2] = math.nan
    return t


def _npz(fn: Callable[[dict[str, np.ndarray]], object]) -> Mutate:
    def mutate(g: Path) -> None:
        with np.load(g) as z:
            arrays = {k: z[k] for k in z.files}
        fn(arrays)
        with open(g, "wb") as fh:
            np.savez(fh, **arrays)
    return mutate


def _overlap_input_tokens(header: dict) -> None:
    """input_tokens' entry moved onto the first bytes of the data (its size unchanged)."""
    begin, end = header["input_tokens"]["data_offsets"]
    header["input_tokens"]["data_offsets"] = [0, end - begin]


GRAPH_CASES: dict[str, tuple[str, Mutate, str | None]] = {
    "truncated": ("safetensors", lambda g: g.write_bytes(g.read_bytes()[:5000]), None),
    "random-bytes": ("safetensors", lambda g: g.write_bytes(b"\x07" * 4096), None),
    "empty": ("safetensors", lambda g: g.write_bytes(b""), None),
    "header-list": ("safetensors", lambda g: write_raw(g, [1], b""), None),
    "no-graph-metadata": ("safetensors", lambda g: edit_header(g, lambda h: h.pop("__metadata__")), "graph metadata"),
    "nan-adjacency": ("safetensors", _graph_tensor("adjacency", _nan_at), "adjacency must be finite"),
    "inf-activation": ("safetensors", _graph_tensor("activation_values", lambda t: t * math.inf),
                       "activation_values must be finite"),
    "adjacency-shape": ("safetensors", _graph_tensor("adjacency", lambda t: t[:-1]), "adjacency must be of shape"),
    "adjacency-int": ("safetensors", _graph_tensor("adjacency", lambda t: t.long()), "float"),
    "missing-tensor": ("safetensors", lambda g: edit_tensors(g, lambda t: t.pop("logit_vectors")), "logit_vectors"),
    "selected-out-of-range": ("safetensors", _graph_tensor("selected_features", lambda t: t + 10_000),
                              "selected_features"),
    "active-features-2col": ("safetensors", _graph_tensor("active_features", lambda t: t[:, :2]), "active_features"),
    "negative-token": ("safetensors", _graph_tensor("input_tokens", lambda t: t - 100), "input_tokens"),
    "probability-above-1": ("safetensors", _graph_tensor("logit_probabilities", lambda t: t + 1),
                            "logit_probabilities"),
    # the helper's QA pass: input_tokens read out of the adjacency's bytes gave '<unk>' tokens and exit 0
    "overlapping-offsets": ("safetensors", lambda g: edit_header(g, _overlap_input_tokens), "overlaps the tensor"),
    "trailing-bytes": ("safetensors", lambda g: g.write_bytes(g.read_bytes() + b"\0" * 16), "trailing bytes"),
    "meta-invalid-json": ("safetensors", lambda g: edit_header(g, lambda h: h["__metadata__"].update(
        manifold_workbench_graph="{oops")), "metadata must be valid JSON"),
    "meta-list": ("safetensors", _graph_meta(lambda m: Replace([m])), "metadata must be a JSON object"),
    "meta-unknown-key": ("safetensors", _graph_meta(lambda m: m.update(evil=1)), "'evil'"),
    "meta-n_layers-string": ("safetensors", _graph_meta(lambda m: m.update(n_layers="4")), "n_layers"),
    "meta-n_layers-zero": ("safetensors", _graph_meta(lambda m: m.update(n_layers=0)), "n_layers"),
    "meta-schema": ("safetensors", _graph_meta(lambda m: m.update(schema_version=99)), "schema_version"),
    "meta-logit_tokens-null": ("safetensors", _graph_meta(lambda m: m.update(logit_tokens=None)),
                               "graph logit_tokens must be a list; got null"),
    "meta-extra-null": ("safetensors", _graph_meta(lambda m: m.update(extra=None)), "graph extra must be a dict"),
    "npz-not-zip": ("npz", lambda g: g.write_bytes(b"PK\x03\x04garbage" * 10), None),
    "npz-text": ("npz", lambda g: g.write_bytes(b"hello"), None),
    "npz-missing-key": ("npz", _npz(lambda a: a.pop("adjacency")), "adjacency"),
    "npz-no-n_layers": ("npz", _npz(lambda a: a.pop("n_layers")), "n_layers"),
    "npz-nan-adjacency": ("npz", _npz(lambda a: a["adjacency"].__setitem__((5, 5), np.nan)),
                          "adjacency must be finite"),
    "npz-object-array": ("npz", _npz(lambda a: a.update(adjacency=np.array([{"x": 1}], dtype=object))), None),
    "npz-string-array": ("npz", _npz(lambda a: a.update(input_tokens=np.array(["a", "b"]))), None),
    "npz-n_layers-vector": ("npz", _npz(lambda a: a.update(n_layers=np.array([4, 4]))), "n_layers"),
}


@pytest.mark.parametrize("command", ["prune", "export"])
@pytest.mark.parametrize("case", sorted(GRAPH_CASES))
def test_graph_mutants_are_refused(world, tmp_path, capfd, case, command):
    fmt, mutate, needle = GRAPH_CASES[case]
    graph = tmp_path / f"g.{fmt}"
    shutil.copy(world / f"graph.{fmt}", graph)
    mutate(graph)
    out = tmp_path / ("p.npz" if command == "prune" else "viewer")
    argv = [command, str(graph), "--out", str(out), "-q"]
    assert_refused(capfd, argv, inputs=[graph], out=out, needle=needle)


# ----------------------------------------------------------------------------- labels, supernodes
LABEL_CASES: dict[str, tuple[bytes | None, str | None]] = {
    "not-utf8": (b'{"layer": 0, "feature": 1, "label": "\xff\xfe"}\n', "UTF-8"),
    "bad-json-line": (b'{"layer": 0, "feature": 1, "label": "a"}\n{oops\n', "line 2"),
    "no-label": (b'{"layer": 0, "feature": 1}\n', None),
    "negative-feature": (b'{"layer": 0, "feature": -1, "label": "a"}\n', "feature index"),
    "duplicate": (b'{"layer": 0, "feature": 1, "label": "a"}\n{"layer": 0, "feature": 1, "label": "b"}\n', "unique"),
    "layer-beyond-graph": (b'{"layer": 9, "feature": 1, "label": "a"}\n', "4 layers"),
    "clt-labels-for-plt-graph": (None, "demo-world-clt"),
    "deep-json": (b"[" * 100_000 + b"]" * 100_000, None),
    "neuronpedia-bad-key": (b'{"12/x": "a"}', None),
}


@pytest.mark.parametrize("case", sorted(LABEL_CASES))
def test_label_mutants_are_refused(world, tmp_path, capfd, case):
    data, needle = LABEL_CASES[case]
    labels = tmp_path / "labels.jsonl"
    if data is None:
        shutil.copy(world / "labels_clt.jsonl", labels)
    else:
        labels.write_bytes(data)
    out = tmp_path / "viewer"
    argv = ["export", str(world / "graph.safetensors"), "--out", str(out), "--labels", str(labels), "-q"]
    assert_refused(capfd, argv, inputs=[labels, world / "graph.safetensors"], out=out, needle=needle)


@pytest.mark.parametrize("content", [b"{oops", b"5", b'{"supernodes": 7}', b'[["a", 3]]', b'{"supernodes": [],'
                                     b' "pinnedIds": [1]}'])
def test_supernode_mutants_are_refused(world, tmp_path, capfd, content):
    sn = tmp_path / "sn.json"
    sn.write_bytes(content)
    out = tmp_path / "viewer"
    argv = ["export", str(world / "graph.safetensors"), "--out", str(out), "--supernodes", str(sn), "-q"]
    assert_refused(capfd, argv, inputs=[sn, world / "graph.safetensors"], out=out, needle="--supernodes")


# ----------------------------------------------------------------------------- manifest mutants
def _manifest(fn: Callable[[dict], object]) -> Mutate:
    def mutate(path: Path) -> None:
        m = json.loads(path.read_text())
        new = fn(m)
        path.write_text(json.dumps(new.header if isinstance(new, Replace) else m))
    return mutate


MANIFEST_CASES: dict[str, tuple[Mutate, str | None]] = {
    "not-json": (lambda p: p.write_bytes(b"{oops"), "valid UTF-8 JSON"),
    "not-utf8": (lambda p: p.write_bytes(b'{"demo_prompts": "\xff"}'), "valid UTF-8 JSON"),
    "list": (lambda p: p.write_text("[]"), "must be an object"),
    "no-demo-prompts": (_manifest(lambda m: m.pop("demo_prompts")), "demo_prompts"),
    "prompts-list": (_manifest(lambda m: m.update(demo_prompts=["a"])), "demo_prompts"),
    "prompt-not-text": (_manifest(lambda m: m.update(demo_prompts={"a": 5})), "demo_prompts"),
    "name-parent-dirs": (_manifest(lambda m: m.update(demo_prompts={"../../x": PROMPT})), "'../../x'"),
    "name-absolute": (_manifest(lambda m: m.update(demo_prompts={"/tmp/evil": PROMPT})), "'/tmp/evil'"),
    "name-dotdot": (_manifest(lambda m: m.update(demo_prompts={"a..b": PROMPT})), "name"),
    "name-hidden": (_manifest(lambda m: m.update(demo_prompts={".x": PROMPT})), "name"),
    "name-too-long": (_manifest(lambda m: m.update(demo_prompts={"a" * 300: PROMPT})), "name"),
    "answers-not-text": (_manifest(lambda m: m.update(demo_answers={"day_arith": [1]})), "demo_answers"),
    "files-absolute": (_manifest(lambda m: m["files"].update(model="/etc")), "files.model"),
    "files-escape": (_manifest(lambda m: m["files"].update(plt="../../plt")), "files.plt"),
    "unknown-word": (_manifest(lambda m: m.update(demo_prompts={"x": "Two days after Funday is"})), "'Funday'"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_manifest_mutants_are_refused(world, tmp_path, capfd, case):
    mutate, needle = MANIFEST_CASES[case]
    w = tmp_path / "w"
    w.mkdir()
    for part in ("model", "plt", "labels_plt.jsonl"):
        (w / part).symlink_to(world / part)
    shutil.copy(world / "manifest.json", w / "manifest.json")
    mutate(w / "manifest.json")
    out = tmp_path / "demo"
    argv = ["demo", "--world", str(w), "--out", str(out), "-q"]
    assert_refused(capfd, argv, inputs=[w / "manifest.json", world / "model", world / "plt"], out=out, needle=needle)
    assert not (tmp_path / "x").exists() and not Path("/tmp/evil.safetensors").exists()


# ----------------------------------------------------------------------------- activation-run mutants
@pytest.fixture(scope="module")
def activation_run(world, tmp_path_factory):
    """A finished `workbench activations` run of the world's PLT transcoders (every layer's features)."""
    from tracer.activations import collect_activations
    from tracer.models import load_model
    from tracer.transcoders.loaders import load_transcoders

    loaded = load_model(world / "model")
    tc = load_transcoders(world / "plt", n_layers=loaded.n_layers, d_model=loaded.d_model)
    out = tmp_path_factory.mktemp("acts") / "run"
    collect_activations(loaded, tc, [PROMPT, "One day after Monday is Tuesday ."], out, verbose=False)
    return out


def _shard_edit(edit: Callable[[dict[str, np.ndarray]], object]) -> Mutate:
    def mutate(run: Path) -> None:
        from safetensors.numpy import load_file, save_file

        path = run / "shard-00000.safetensors"
        tensors = load_file(str(path))
        edit(tensors)
        save_file(tensors, str(path))
    return mutate


def _set_at(name: str, value: float) -> Callable[[dict[str, np.ndarray]], object]:
    def edit(t: dict[str, np.ndarray]) -> None:
        t[name][:3] = value
    return edit


ACTIVATION_CASES: dict[str, tuple[Mutate, str]] = {
    "truncated-shard": (_truncate("shard-00000.safetensors", 200), "must be a readable safetensors file"),
    "missing-shard": (lambda run: (run / "shard-00000.safetensors").unlink(), "must exist"),
    "missing-tensor": (_shard_edit(lambda t: t.pop("f1.value")), "must hold tensor 'f1.value'"),
    "feature-out-of-range": (_shard_edit(_set_at("f1.feature", 10**6)), "features outside [0, 512)"),
    "row-out-of-range": (_shard_edit(_set_at("f2.row", 10**6)), "rows outside"),
    "nan-values": (_shard_edit(_set_at("f0.value", math.nan)), "non-finite values"),
    "negative-values": (_shard_edit(_set_at("f0.value", -2.0)), "non-negative"),
    "length-mismatch": (_shard_edit(lambda t: t.update({"f3.row": t["f3.row"][:-1]})), "lengths"),
    "index-not-json": (_write("index.json", b"{oops"), "readable JSON"),
    "index-other-format": (_write("index.json", b'{"format": "other"}'), "activation index"),
}


@pytest.mark.parametrize("case", sorted(ACTIVATION_CASES))
def test_activation_run_mutants_are_refused(world, activation_run, tmp_path, capfd, case):
    """`workbench cluster --activations` reads a user's run: a damaged one is refused in one line (once,
    an out-of-range feature index crashed scipy with a segmentation fault)."""
    mutate, needle = ACTIVATION_CASES[case]
    run = tmp_path / "run"
    shutil.copytree(activation_run, run)
    mutate(run)
    out = tmp_path / "s.json"
    argv = ["cluster", str(world / "graph.safetensors"), "--transcoders", str(world / "plt"), "--activations",
            str(run), "--out", str(out), "-q"]
    assert_refused(capfd, argv, inputs=[run, world / "graph.safetensors"], out=out, needle=needle)
