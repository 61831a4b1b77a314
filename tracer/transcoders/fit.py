"""Least-squares fits used to build transcoders (decoders, skips) from captured MLP inputs/outputs."""

import torch
from torch import Tensor


def ridge_solve(design: Tensor, target: Tensor, *, penalty: float = 0.0, relative: float = 0.0) -> Tensor:
    """``argmin_W |design @ W - target|^2 + lam |W|^2``: (n_features, d_out), in ``design``'s dtype.

    design: (n_samples, n_features); target: (n_samples, d_out). ``lam = penalty + relative * m``
    with ``m`` the mean squared column norm of ``design`` (``relative`` makes the ridge scale-free).
    Solves through the smaller Gram matrix: ``(X^T X + lam I)^-1 X^T Y`` or ``X^T (X X^T + lam I)^-1 Y``.
    ``lam`` is formed in ``design``'s dtype, as the rest of the solve (a float32 fit rounds it once
    in float32, so it reproduces fits that computed ``relative * mean`` as a float32 tensor).
    """
    n, p = design.shape
    if p <= n:
        gram = design.T @ design  # (p, p)
        lam = penalty + relative * gram.diagonal().mean() if relative else penalty  # 0-d, design's dtype
        gram.diagonal().add_(lam)
        return torch.linalg.solve(gram, design.T @ target)
    gram = design @ design.T  # (n, n)
    lam = penalty + relative * gram.diagonal().sum() / p if relative else penalty
    gram.diagonal().add_(lam)
    return design.T @ torch.linalg.solve(gram, target)
