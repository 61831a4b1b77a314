"""Train per-layer (PLT) and cross-layer (CLT) transcoders on the demo model's real MLP activations.

Recipe: BatchTopK training (k features per token per layer on average, across the batch) with
an AuxK loss that revives dead features; then the global BatchTopK threshold becomes a JumpReLU
threshold, and each decoder (and b_dec) is refitted by ridge least squares for that fixed
sparse code. Position 0 (BOS) and padding are never used, as in attribution.
"""

import dataclasses
import logging
import time
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers import Qwen3ForCausalLM

from tracer.models import wrap_model
from tracer.models.forward import capture_transcoder_io
from tracer.transcoders.base import Transcoders
from tracer.transcoders.fit import ridge_solve
from workbench.world.tokenizer import PAD_ID
from workbench.world.transcoders import TrainableTranscoders, decode_layers, encode_layers

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TranscoderTrainConfig:
    """Training of one transcoder family (PLT or CLT)."""

    d_transcoder: int = 512
    """Features per layer."""
    k: int = 16
    """BatchTopK: mean active features per token per layer."""
    steps: int = 400
    """Optimizer steps."""
    batch_size: int = 2048
    """Tokens per step."""
    lr: float = 4e-3
    """Adam learning rate (linear decay over the last 30% of steps)."""
    aux_k: int = 64
    """AuxK: dead features used to model the residual error, per token."""
    aux_coef: float = 0.25
    """Weight of the AuxK loss."""
    dead_after: int = 10
    """Steps without firing after which a feature counts as dead for AuxK."""
    ridge: float = 1e-4
    """Relative ridge of the final least-squares decoder refit (0 disables the refit)."""
    seed: int = 0
    """Seeds initialisation and batch order."""


def collect_mlp_io(model: Qwen3ForCausalLM, ids: Tensor, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """MLP inputs and outputs `(L, n_tokens, d_model)` at every non-pad position >= 1 of `ids`
    (row-major: sentence by sentence), through :func:`tracer.models.forward.capture_transcoder_io`."""
    keep = ids != PAD_ID  # (n, max_len)
    keep[:, 0] = False
    return capture_transcoder_io(wrap_model(model), ids, "mlp_input", "mlp_output", keep=keep, batch_size=batch_size)


def top_fraction_threshold(values: Tensor, frac: Tensor, generator: torch.Generator,
                           n_sample: int = 32_768) -> Tensor:
    """Per-layer value above which a fraction `frac` `(L,)` of `values` `(L, m)` lies, estimated
    on a random sample of columns (an exact top-k over the whole batch is much slower on CPU)."""
    n_layers, m = values.shape
    cols = torch.randint(0, m, (min(n_sample, m),), generator=generator)  # (s,)
    sample = values[:, cols].sort(dim=1, descending=True).values  # (L, s)
    idx = (frac * sample.shape[1]).long().clamp(0, sample.shape[1] - 1)  # (L,)
    return sample.gather(1, idx[:, None]).squeeze(1)  # (L,)


def batch_topk(pre: Tensor, k: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Keep the about k * n largest positive pre-activations per layer across the batch.

    pre `(L, n, F)` -> (activations `(L, n, F)`, the threshold used per layer `(L,)`)."""
    n_layers, n, d_tc = pre.shape
    flat = pre.relu().reshape(n_layers, n * d_tc)  # (L, n * F)
    thr = top_fraction_threshold(flat.detach(), torch.full((n_layers,), k / d_tc), generator)  # (L,)
    thr = thr.clamp_min(1e-6)
    acts = pre * (pre > thr[:, None, None])  # (L, n, F)
    return acts, thr


def aux_topk(pre: Tensor, dead: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """About k activations per token among dead features only. pre `(L, n, F)`, dead `(L, F)`."""
    n_layers, n, d_tc = pre.shape
    masked = pre.relu() * dead[:, None, :]  # (L, n, F)
    frac = (torch.minimum(dead.sum(dim=1), torch.tensor(k)) / d_tc).float()  # (L,)
    thr = top_fraction_threshold(masked.detach().reshape(n_layers, n * d_tc), frac, generator)  # (L,)
    return masked * (masked > thr.clamp_min(1e-6)[:, None, None])


def fvu_per_layer(y_hat: Tensor, y: Tensor) -> Tensor:
    """Fraction of variance unexplained per layer. y_hat, y `(L, n, d_model)` -> `(L,)`."""
    resid = (y - y_hat).pow(2).sum(dim=(1, 2))  # (L,)
    total = (y - y.mean(dim=1, keepdim=True)).pow(2).sum(dim=(1, 2))  # (L,)
    return resid / total.clamp_min(1e-12)


def _lr_factor(step: int, steps: int) -> float:
    start = int(0.7 * steps)
    return 1.0 if step < start else max(0.05, (steps - step) / max(1, steps - start))


def train_transcoders(kind: str, X: Tensor, Y: Tensor, cfg: TranscoderTrainConfig, *,
                      progress: bool = False, scan: str = "") -> tuple[Transcoders, dict[str, float]]:
    """Train a PLT or CLT on MLP inputs X and outputs Y `(L, n, d_model)`; returns tracer's form
    (its ``scan`` id given) and training statistics."""
    n_layers, n_tokens, d_model = X.shape
    gen = torch.Generator().manual_seed(cfg.seed)
    x_scale = X.pow(2).mean(dim=(1, 2)).sqrt()  # (L,)
    y_scale = Y.pow(2).mean(dim=(1, 2)).sqrt()  # (L,)
    module = TrainableTranscoders(kind, n_layers, d_model, cfg.d_transcoder, generator=gen)
    with torch.no_grad():
        module.b_dec.copy_(Y.mean(dim=1) / y_scale[:, None])
    opt = torch.optim.Adam(module.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    last_fired = torch.zeros(n_layers, cfg.d_transcoder, dtype=torch.long)  # (L, F)
    threshold = torch.zeros(n_layers)  # (L,) running mean of the batch's smallest kept activation
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=f"train {kind.upper()}", total=cfg.steps, disable=not progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * _lr_factor(step, cfg.steps)
        rows = torch.randint(0, n_tokens, (cfg.batch_size,), generator=gen)  # (batch,)
        xb, yb = X[:, rows] / x_scale[:, None, None], Y[:, rows] / y_scale[:, None, None]  # (L, batch, d)
        dead = (step - last_fired) > cfg.dead_after  # (L, F)
        fvu, kept_min, fired = _step(module, opt, xb, yb, dead, cfg, gen)
        last_fired[fired] = step
        if step >= cfg.steps // 2:  # threshold from the settled second half
            threshold += (kept_min - threshold) / (step - cfg.steps // 2 + 1)
        if step % 50 == 0:
            bar.set_postfix(fvu=f"{float(fvu.mean()):.3f}", dead=f"{float(dead.float().mean()):.2f}")
    logger.info("%s trained in %.0fs (train FVU %s)", kind.upper(), time.perf_counter() - t0,
                [round(float(f), 3) for f in fvu])
    saved = module.export(threshold, x_scale, y_scale, scan=scan)
    if cfg.ridge > 0:
        saved = refit_decoders(saved, X, Y, ridge=cfg.ridge)
    return saved, {"train_seconds": time.perf_counter() - t0}


def _step(module: TrainableTranscoders, opt: torch.optim.Optimizer, xb: Tensor, yb: Tensor,
          dead: Tensor, cfg: TranscoderTrainConfig, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """One BatchTopK + AuxK step; returns (FVU per layer, threshold per layer, which features
    fired `(L, F)`)."""
    pre = module.pre(xb)  # (L, batch, F)
    acts, kept_min = batch_topk(pre, cfg.k, gen)
    y_hat = module.decode(acts)  # (L, batch, d_model)
    fvu = fvu_per_layer(y_hat, yb)  # (L,)
    loss = fvu.sum()
    if bool(dead.any()):  # AuxK on the first quarter of the batch (cheaper, same expectation)
        m = max(1, yb.shape[1] // 4)
        err = (yb[:, :m] - y_hat[:, :m]).detach()  # (L, m, d_model)
        aux = aux_topk(pre[:, :m], dead, cfg.aux_k, gen)  # (L, m, F)
        err_hat = module.decode(aux) - module.b_dec[:, None]  # (L, m, d_model)
        total = (err - err.mean(dim=1, keepdim=True)).pow(2).sum(dim=(1, 2)).clamp_min(1e-12)  # (L,)
        loss = loss + cfg.aux_coef * ((err_hat - err).pow(2).sum(dim=(1, 2)) / total).sum()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    module.normalize_decoder()
    return fvu.detach(), kept_min, (acts > 0).any(dim=1)


@torch.no_grad()
def refit_decoders(tc: Transcoders, X: Tensor, Y: Tensor, *, ridge: float, max_tokens: int = 60_000) -> Transcoders:
    """Refit W_dec and b_dec by ridge least squares (:func:`tracer.transcoders.fit.ridge_solve`, ``ridge``
    relative to the design's mean squared column norm) for the fixed JumpReLU code of `tc`."""
    acts = encode_layers(tc, X[:, :max_tokens])  # (L, n, F)
    n_layers, n, d_tc = acts.shape
    W_dec = [torch.zeros(d_tc, tc.d_model) if tc.kind == "plt" else torch.zeros(d_tc, n_layers - i, tc.d_model)
             for i in range(n_layers)]
    b_dec: list[Tensor] = []
    for target in range(n_layers):
        sources = [target] if tc.kind == "plt" else list(range(target + 1))
        design = torch.cat([acts[s] for s in sources] + [torch.ones(n, 1)], dim=1)  # (n, |S| F + 1)
        sol = ridge_solve(design, Y[target, :max_tokens], relative=ridge)  # (|S| F + 1, d_model)
        b_dec.append(sol[-1])
        for j, s in enumerate(sources):
            block = sol[j * d_tc:(j + 1) * d_tc]  # (F, d_model)
            if tc.kind == "plt":
                W_dec[s] = block
            else:
                W_dec[s][:, target - s] = block
    layers = tuple(dataclasses.replace(layer, W_dec=w, b_dec=b) for layer, w, b in zip(tc.layers, W_dec, b_dec))
    return dataclasses.replace(tc, layers=layers)


@torch.no_grad()
def transcoder_metrics(tc: Transcoders, X: Tensor, Y: Tensor, chunk: int = 8192) -> list[dict[str, float]]:
    """Per layer: FVU, mean L0 (active features per token) and dead fraction (never active) on
    the tokens given (X, Y `(L, n, d_model)`)."""
    n_layers, n_tokens, _ = X.shape
    resid = torch.zeros(n_layers)
    l0 = torch.zeros(n_layers)
    ever = torch.zeros(n_layers, tc.d_transcoder, dtype=torch.bool)  # (L, F)
    for i in range(0, n_tokens, chunk):
        acts = encode_layers(tc, X[:, i:i + chunk])  # (L, c, F)
        y_hat = decode_layers(tc, acts)  # (L, c, d_model)
        resid += (Y[:, i:i + chunk] - y_hat).pow(2).sum(dim=(1, 2))
        active = acts > 0
        l0 += active.sum(dim=(1, 2)).float()
        ever |= active.any(dim=1)
    total = (Y - Y.mean(dim=1, keepdim=True)).pow(2).sum(dim=(1, 2))  # (L,)
    return [{"fvu": float(resid[l] / total[l]), "l0": float(l0[l] / n_tokens),
             "dead": float(1 - ever[l].float().mean())} for l in range(n_layers)]
