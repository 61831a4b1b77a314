"""tracer.transcoders.fit.ridge_solve: the ridge normal equations through the smaller Gram matrix."""

import pytest
import torch

from tracer.transcoders.fit import ridge_solve


@pytest.mark.parametrize("n, p", [(40, 12), (12, 40)])  # both Gram branches
def test_ridge_solve_is_the_normal_equations(n: int, p: int) -> None:
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(n, p, generator=g, dtype=torch.float64), torch.randn(n, 3, generator=g, dtype=torch.float64)
    lam = 0.5 + 0.1 * float((X * X).sum(0).mean())  # penalty + relative * mean squared column norm
    want = torch.linalg.solve(X.T @ X + lam * torch.eye(p, dtype=X.dtype), X.T @ Y)  # (p, 3)
    torch.testing.assert_close(ridge_solve(X, Y, penalty=0.5, relative=0.1), want)
    torch.testing.assert_close(ridge_solve(X, Y, penalty=lam), want)


def test_float32_ridge_is_formed_in_float32() -> None:
    """A float32 fit rounds ``relative * mean`` once in float32 (the demo world's decoder refit relies
    on it to rebuild its shipped files bit for bit); rounding it in float64 first changes this case."""
    g = torch.Generator().manual_seed(5)
    X, Y = torch.rand(300, 20, generator=g), torch.randn(300, 4, generator=g)
    X[:, ::2] *= 1e-3  # rarely active features: squared column norms near the ridge
    gram = X.T @ X  # (20, 20)
    lam = 1e-4 * gram.diagonal().mean()  # 0-d float32 tensor
    assert float(lam) != float(torch.tensor(1e-4 * float(gram.diagonal().mean()), dtype=torch.float32))
    gram.diagonal().add_(lam)
    assert torch.equal(ridge_solve(X, Y, relative=1e-4), torch.linalg.solve(gram, X.T @ Y))
