"""Plots of fitted and discovered manifolds (``*Display`` objects: data in, matplotlib out).

* :class:`ManifoldCircleDisplay` -- class means (and points) in two principal components of the
  fitted subspace, with the fitted curve and the value labels;
* :class:`TuningCurvesDisplay` -- the family's tuning curves around the manifold;
* :class:`FrequencyR2Display` -- R² of the fundamental per candidate frequency, with the Fourier spectrum;
* :class:`DecoderMapDisplay` -- a 2-D map (UMAP, imported lazily; or PCA) of a layer's decoder
  directions, coloured by family or by preferred value;
* :class:`DiscoveryRankingDisplay` -- discovery's ranking: each family's ring score, its score
  without persistence and its persistent H1;
* :class:`FamilyCloudDisplay` -- a discovered family's direction cloud in its loop plane, coloured
  by the closed principal curve's angle, with that curve.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from analyses.base import as_indices, check_real
from analyses.display import Display
from analyses.manifolds import curves
from analyses.manifolds.discovery import DiscoveryResult, FamilyManifold, reconstruction_cloud
from analyses.manifolds.fit import ManifoldFit, ManifoldFitResult
from analyses.manifolds.tiling import TilingResult

CYCLIC_CMAP = "twilight"


class ManifoldCircleDisplay(Display):
    """Class means, the fitted curve and (optionally) the points, in two subspace components."""

    figsize = (5.5, 5.0)

    def __init__(self, *, means_2d: np.ndarray, curve_2d: np.ndarray, value_names: list[str],
                 points_2d: np.ndarray | None = None, point_values: np.ndarray | None = None,
                 components: tuple[int, int] = (0, 1), title: str = "") -> None:
        self.means_2d = means_2d
        self.curve_2d = curve_2d
        self.value_names = value_names
        self.points_2d = points_2d
        self.point_values = point_values
        self.components = components
        self.title = title

    @classmethod
    def from_fit(cls, fit: ManifoldFitResult | ManifoldFit, X: np.ndarray | None = None, y: np.ndarray | None = None, *,
                 components: tuple[int, int] = (0, 1), n_curve: int = 400) -> "ManifoldCircleDisplay":
        """From a fit result (or a fitted ManifoldFit); ``X`` (n, d_model) and ``y`` (n,) value indices in
        [0, period) add the individual points."""
        if isinstance(fit, ManifoldFit):
            fit = fit.result_  # not fitted: NotFittedError
        if not isinstance(fit, ManifoldFitResult):
            raise TypeError(f"fit must be a ManifoldFitResult or a fitted ManifoldFit; got {type(fit).__name__}.")
        i, j = components
        line = fit.n_components == 1 and components == (0, 1)  # a one-component (interval) fit: on its line
        if not line and (min(i, j) < 0 or max(i, j) >= fit.n_components):  # -1 would wrap to the last one
            raise ValueError(f"components must be in [0, {fit.n_components}) (the fit's subspace); got {components}.")

        def plane(Z: np.ndarray) -> np.ndarray:  # (n, m) -> (n, 2)
            return np.column_stack([Z[:, 0], np.zeros(len(Z))]) if line else Z[:, [i, j]]

        means = plane(fit.project(fit.class_means))  # (p, 2)
        if fit.shape == "circle":
            u = np.linspace(0, 2 * np.pi, n_curve)
        else:
            u = np.linspace(0, 1, n_curve)
        curve = plane(fit.project(fit.curve(u)))  # (n_curve, 2)
        pts = None if X is None else plane(fit.project(X))
        if y is not None and (pts is None or np.shape(y) != (len(pts),)):
            raise ValueError(f"y must give one value per row of X ({'no X' if pts is None else len(pts)}); got shape "
                             f"{np.shape(y)}. Pass X with y, or neither.")
        if y is not None:  # value indices, as ManifoldFit.fit takes them
            y = as_indices("y", y, fit.period, what="hold value indices", note=" (map value names to their index)")
        where = f"layer {fit.layer}" if fit.layer is not None else ""
        title = f"{fit.source} {where} pos {fit.position}: k={fit.frequency}, R²={fit.r2:.2f}".strip()
        return cls(means_2d=means, curve_2d=curve, value_names=list(fit.value_names), points_2d=pts,
                   point_values=None if y is None else np.asarray(y), components=(i, j), title=title)

    def _draw(self, ax: Any, **kwargs: Any) -> None:
        p = len(self.value_names)
        if self.points_2d is not None:
            colours = self.point_values if self.point_values is not None else np.zeros(len(self.points_2d))
            ax.scatter(self.points_2d[:, 0], self.points_2d[:, 1], c=colours, cmap=CYCLIC_CMAP, vmin=0, vmax=p,
                       s=8, alpha=0.35, linewidths=0)
        ax.plot(self.curve_2d[:, 0], self.curve_2d[:, 1], color="0.3", lw=1.2, **kwargs)
        ax.scatter(self.means_2d[:, 0], self.means_2d[:, 1], c=np.arange(p), cmap=CYCLIC_CMAP, vmin=0, vmax=p,
                   s=60, edgecolors="k", zorder=3)
        for (x, y), name in zip(self.means_2d, self.value_names):
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel(f"PC{self.components[0] + 1}")
        ax.set_ylabel(f"PC{self.components[1] + 1}")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(self.title, fontsize=9)


class TuningCurvesDisplay(Display):
    """Tuning curves of a family's live features around the manifold, coloured by preferred value.

    Two styles: ``"lines"`` (one curve per feature over the coordinate bins) and ``"heatmap"`` (one row
    per feature, sorted by preferred coordinate, each scaled to its peak: place cells tiling the
    manifold show as a diagonal band). The heatmap's columns are the values in fitted order when the
    tiling has per-value tuning and a fit names them, else the coordinate bins."""

    figsize = (7.0, 3.8)
    HEATMAP_ABOVE = 12
    """``style="auto"`` draws a heatmap above this many live features."""

    def __init__(self, *, bin_centres: np.ndarray, tuning: np.ndarray, preferred: np.ndarray, closed: bool,
                 value_ticks: dict[str, float] | None = None, title: str = "", style: str = "lines",
                 heat: np.ndarray | None = None, heat_columns: list[str] | None = None) -> None:
        if style not in ("lines", "heatmap"):
            raise ValueError(f"style must be 'lines' or 'heatmap'; got {style!r}.")
        self.bin_centres = bin_centres
        self.tuning = tuning
        self.preferred = preferred
        self.closed = closed
        self.value_ticks = value_ticks
        self.title = title
        self.style = style
        self.heat = heat
        """(n_live, n_columns) each feature's tuning scaled to its peak, rows sorted by preferred coordinate"""
        self.heat_columns = heat_columns
        """column names (values in fitted order), or None for coordinate bins"""

    @classmethod
    def from_tiling(cls, tiling: TilingResult, fit: ManifoldFitResult | None = None,
                    title: str = "", style: str = "auto") -> "TuningCurvesDisplay":
        """Live features only; with ``fit`` the x axis is labelled with the values at their coordinates.
        ``style``: "lines", "heatmap" or "auto" (a heatmap above ``HEATMAP_ABOVE`` live features)."""
        if style not in ("auto", "lines", "heatmap"):
            raise ValueError(f"style must be 'auto', 'lines' or 'heatmap'; got {style!r}.")
        live = np.flatnonzero(tiling.live)
        ticks = None
        if fit is not None and tiling.value_tuning is not None and tiling.value_tuning.shape[1] != fit.period:
            raise ValueError(f"fit must have the tiling's period {tiling.value_tuning.shape[1]} (its value tuning "
                             f"{tiling.value_tuning.shape}); got a fit of period {fit.period}. Pass the fit the "
                             "tiling's values came from.")
        if fit is not None:
            ticks = {name: float(u) for name, u in zip(fit.value_names, fit.value_coords)}
        if style == "auto":
            style = "heatmap" if len(live) > cls.HEATMAP_ABOVE else "lines"
        heat, columns = None, None
        if style == "heatmap":
            heat, columns = _heat(tiling, live, fit)
        return cls(bin_centres=tiling.bin_centres, tuning=tiling.tuning[live], preferred=tiling.preferred[live],
                   closed=tiling.closed, value_ticks=ticks, title=title, style=style, heat=heat,
                   heat_columns=columns)

    def _draw(self, ax: Any, **kwargs: Any) -> None:
        if self.style == "heatmap":
            self._draw_heat(ax, **kwargs)
            return
        from matplotlib import colormaps

        cmap = colormaps[CYCLIC_CMAP if self.closed else "viridis"]
        span = 2 * np.pi if self.closed else 1.0
        for curve, pref in zip(self.tuning, self.preferred):
            ok = np.isfinite(curve)  # empty bins (no row there) are skipped, not drawn as zero
            ax.plot(self.bin_centres[ok], curve[ok], color=cmap(float(pref) / span), lw=1, **kwargs)
        if self.value_ticks:
            ax.set_xticks(list(self.value_ticks.values()), list(self.value_ticks), rotation=45, fontsize=7)
        ax.set_xlim(0, span)
        ax.set_xlabel("angle on the manifold" if self.closed else "position on the manifold")
        ax.set_ylabel("mean activation")
        ax.set_title(self.title or f"{len(self.tuning)} features", fontsize=9)

    def _draw_heat(self, ax: Any, **kwargs: Any) -> None:
        heat = np.ma.masked_invalid(np.asarray(self.heat))
        n_rows, n_cols = heat.shape
        image = ax.imshow(heat, aspect="auto", origin="lower", cmap="magma", vmin=0.0, vmax=1.0,
                          interpolation="nearest", **kwargs)
        self._colorbar(image, ax, label="share of the feature's peak", fraction=0.05)
        if self.heat_columns is not None:
            ax.set_xticks(range(n_cols), self.heat_columns, rotation=45, fontsize=7)
            ax.set_xlabel("value (fitted order)")
        else:
            ax.set_xticks([-0.5, n_cols - 0.5], ["0", "2π" if self.closed else "1"])
            ax.set_xlabel("angle on the manifold" if self.closed else "position on the manifold")
        ax.set_ylabel(f"feature (by preferred {'angle' if self.closed else 'position'})")
        ax.set_yticks([])
        ax.set_title(self.title or f"{n_rows} features", fontsize=9)


def _heat(tiling: TilingResult, live: np.ndarray, fit: ManifoldFitResult | None) -> tuple[np.ndarray, list[str] | None]:
    """(n_live, n_columns) rows scaled to their peak and sorted by preferred coordinate; column names."""
    order = live[np.argsort(tiling.preferred[live], kind="stable")]  # NaN (none live here) would sort last
    columns: list[str] | None = None
    if tiling.value_tuning is not None and fit is not None and fit.value_names is not None:
        by_coord = np.argsort(np.asarray(fit.value_coords), kind="stable")  # (period,)
        M = tiling.value_tuning[order][:, by_coord]  # (n_live, period)
        columns = [fit.value_names[int(v)] for v in by_coord]
    else:
        M = tiling.tuning[order]  # (n_live, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        peak = np.nanmax(np.where(np.isfinite(M), M, -np.inf), axis=1, keepdims=True)  # (n_live, 1)
        return np.where(peak > 0, M / peak, 0.0), columns


class FrequencyR2Display(Display):
    """R² of the fundamental per frequency k and the class means' Fourier spectrum."""

    figsize = (5.0, 3.5)

    def __init__(self, *, frequencies: list[int], r2: list[float], spectrum: np.ndarray, chosen: int) -> None:
        self.frequencies = frequencies
        self.r2 = r2
        self.spectrum = spectrum
        self.chosen = chosen

    @classmethod
    def from_fit(cls, fit: ManifoldFitResult) -> "FrequencyR2Display":
        ks = sorted(int(k) for k in fit.r2_per_frequency)
        return cls(frequencies=ks, r2=[fit.r2_per_frequency[str(k)] for k in ks], spectrum=fit.fourier_spectrum,
                   chosen=fit.frequency)

    def _draw(self, ax: Any, **kwargs: Any) -> None:
        ks = np.arange(1, len(self.spectrum))
        ax.bar(ks + 0.2, self.spectrum[1:], width=0.4, color="0.7", label="energy share (full space)")
        colours = ["C3" if k == self.chosen else "C0" for k in self.frequencies]
        ax.bar(np.array(self.frequencies) - 0.2, self.r2, width=0.4, color=colours, label="R² (subspace)", **kwargs)
        ax.set_xticks(ks)
        ax.set_xlabel("frequency k")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
        ax.set_title(f"best k = {self.chosen}", fontsize=9)


def embed_2d(W: np.ndarray, *, method: str = "umap", n_neighbors: int = 15, min_dist: float = 0.1,
             random_state: int = 0) -> np.ndarray:
    """(n, 2) map of unit-normalised rows of ``W`` (n, d): UMAP (cosine metric; lazily imported) or PCA."""
    Wn = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
    if method == "pca":
        Wc = Wn - Wn.mean(0)
        _, _, Vt = np.linalg.svd(Wc, full_matrices=False)
        out = np.zeros((len(W), 2))  # fewer than two components (one row, one column): the rest stays 0
        k = min(2, Vt.shape[0])
        out[:, :k] = Wc @ Vt[:k].T  # (n, k)
        return out
    if method != "umap":
        raise ValueError(f"method must be 'umap' or 'pca'; got {method!r}.")
    if len(W) < 3:
        raise ValueError(f"W must have at least 3 rows for method='umap'; got {len(W)}. Use method='pca'.")
    try:
        import umap  # optional dependency (extra "maps"): heavy, numba-compiled
    except ImportError as err:
        raise ImportError("method='umap' needs umap-learn (pip install 'manifold-workbench[maps]'); "
                          "or use method='pca'.") from err
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(W) - 1), min_dist=min_dist, metric="cosine",
                        random_state=random_state, init="spectral" if len(W) > 3 else "random",  # spectral: > 3 rows
                        n_jobs=1)  # seeded runs are single-threaded anyway; saying so spares umap's warning
    return np.asarray(reducer.fit_transform(Wn))


def _feature_indices(name: str, idx: object, n_features: int) -> list[int]:
    """Indices of rows of W_dec, refusing non-integers and any outside [0, n_features) (-1 would wrap)."""
    return as_indices(name, idx, n_features, what="list rows of W_dec").tolist()


class DecoderMapDisplay(Display):
    """A layer's decoder directions in 2-D, coloured by family or by preferred value."""

    figsize = (6.0, 5.0)

    def __init__(self, *, embedding: np.ndarray, family_of: list[str | None],
                 preferred: np.ndarray | None = None, title: str = "") -> None:
        self.embedding = embedding
        self.family_of = family_of
        self.preferred = preferred
        self.title = title

    @classmethod
    def from_decoders(cls, W_dec: np.ndarray, families: Mapping[str, Sequence[int]] | None = None,
                      preferred: Mapping[int, float] | None = None, *, method: str = "umap",
                      random_state: int = 0, title: str = "") -> "DecoderMapDisplay":
        """W_dec (n_features, d_model); families name -> feature indices; preferred feature -> angle."""
        W = np.asarray(W_dec)
        if W.ndim != 2 or len(W) < 1:
            raise ValueError(f"W_dec must have shape (n_features, d_model) with n_features >= 1; got {W.shape}.")
        check_real("W_dec", W)
        family_of: list[str | None] = [None] * len(W)
        for name, idx in (families or {}).items():
            for i in _feature_indices(f"family {name!r}", idx, len(W)):
                family_of[i] = str(name)  # names are shown (and sorted) as text, as discovery does
        pref = None
        if preferred:
            pref = np.full(len(W), np.nan)
            rows = _feature_indices("preferred", list(preferred), len(W))
            pref[rows] = [float(a) for a in preferred.values()]
        embedding = embed_2d(W.astype(np.float64), method=method, random_state=random_state)
        return cls(embedding=embedding, family_of=family_of, preferred=pref, title=title)

    def _draw(self, ax: Any, color_by: str = "family", **kwargs: Any) -> None:
        E = self.embedding
        ax.scatter(E[:, 0], E[:, 1], s=6, color="0.85", linewidths=0)
        if color_by == "value":
            if self.preferred is None:
                raise ValueError("color_by='value' needs preferred values; got none. Pass preferred= to from_decoders.")
            has = ~np.isnan(self.preferred)
            sc = ax.scatter(E[has, 0], E[has, 1], c=self.preferred[has], cmap=CYCLIC_CMAP, vmin=0, vmax=2 * np.pi,
                            s=14, **kwargs)
            self._colorbar(sc, ax, label="preferred angle")
        elif color_by == "family":
            names = sorted({f for f in self.family_of if f is not None})
            for c, name in enumerate(names):
                idx = [i for i, f in enumerate(self.family_of) if f == name]
                ax.scatter(E[idx, 0], E[idx, 1], s=14, color=f"C{c % 10}", label=name, **kwargs)
            if names:
                ax.legend(fontsize=7, markerscale=1.5)
        else:
            raise ValueError(f"color_by must be 'family' or 'value'; got {color_by!r}.")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(self.title, fontsize=9)


class DiscoveryRankingDisplay(Display):
    """Families in ranked order: ring score (dark), score without persistence (light), H1 annotated."""

    figsize = (6.0, 3.5)

    def __init__(self, *, names: list[str], scores: np.ndarray, loop_scores: np.ndarray,
                 h1: list[float | None], title: str = "") -> None:
        self.names = names
        self.scores = scores
        self.loop_scores = loop_scores
        self.h1 = h1
        self.title = title

    @classmethod
    def from_result(cls, result: DiscoveryResult, title: str = "") -> "DiscoveryRankingDisplay":
        """Scored families only, best first (unscored ones have no score to draw)."""
        fams = [f for f in result.families if f.scored]
        where = f"transcoder layer {result.feature_layer}: " if result.feature_layer is not None else ""
        rule = "loop x irreducibility x persistent H1" if result.persistence else "loop x irreducibility"
        return cls(names=[f.name for f in fams], scores=np.array([f.score for f in fams]),
                   loop_scores=np.array([f.loop_score for f in fams]), h1=[f.h1_persistence for f in fams],
                   title=title or f"{where}ring score ({rule})")

    def _draw(self, ax: Any, **kwargs: Any) -> None:
        y = np.arange(len(self.names))[::-1]  # best at the top
        ax.barh(y, self.loop_scores, color="0.85", label="without persistence", **kwargs)
        ax.barh(y, self.scores, color="C0", height=0.5, label="ring score")
        for yi, s, h in zip(y, np.maximum(self.scores, self.loop_scores), self.h1):
            if h is not None:
                ax.annotate(f"H1 {h:.2f}", (s, yi), textcoords="offset points", xytext=(4, -3), fontsize=7)
        ax.set_yticks(y, self.names, fontsize=8)
        ax.set_xlim(0, max(1e-9, float(np.max(self.loop_scores, initial=0.0))) * 1.25)
        ax.set_xlabel("score")
        if self.names:
            ax.legend(fontsize=7, loc="lower right")
        ax.set_title(self.title, fontsize=9)


class FamilyCloudDisplay(Display):
    """A discovered family's unit reconstructions in the loop plane (PC pair of its best loop)."""

    figsize = (5.0, 5.0)

    def __init__(self, *, points_2d: np.ndarray, angles: np.ndarray, curve_2d: np.ndarray,
                 components: tuple[int, int], title: str = "") -> None:
        self.points_2d = points_2d
        self.angles = angles
        self.curve_2d = curve_2d
        self.components = components
        self.title = title

    @classmethod
    def from_family(cls, family: FamilyManifold, A: Any, W_dec: np.ndarray, *, activation_threshold: float = 0.0,
                    n_curve: int = 400) -> "FamilyCloudDisplay":
        """``A`` (n_tokens, n_features), ``W_dec`` (n_features, d_model) and ``activation_threshold``: what
        discovery was fitted with (the family's direction cloud is recomputed on its stored rows)."""
        if not family.scored:
            raise ValueError(f"family must be scored to be drawn; got {family.name!r}, unscored because "
                             f"{family.unscored_reason or 'it fired on too few rows'}.")
        A_csr = sp.csr_matrix(A) if not sp.issparse(A) else A.tocsr()
        W_all = np.asarray(W_dec, dtype=np.float64)
        if A_csr.shape[1] != W_all.shape[0] or max(family.members) >= W_all.shape[0] or \
                (family.rows.size and int(family.rows.max()) >= A_csr.shape[0]):
            raise ValueError(f"A and W_dec must be what discovery was fitted on (rows up to {int(family.rows.max())}, "
                             f"features up to {max(family.members)}); got A {A_csr.shape} and W_dec {W_all.shape}.")
        W = W_all[family.members]  # (F, d)
        sub = A_csr[family.rows][:, family.members]  # (n_strong, F)
        rows, R = reconstruction_cloud(sub, W, activation_threshold, len(family.rows), np.random.default_rng(0))
        if len(rows) != len(family.rows):
            raise ValueError(f"A must be the activations discovery was fitted on; the family's {len(family.rows)} "
                             f"rows hold {len(rows)} with activity.")
        unit = R / np.maximum(np.linalg.norm(R, axis=1, keepdims=True), 1e-30)  # (n_strong, d)
        i, j = family.loop_pair, family.loop_pair + 1
        Z = (unit - family.direction_mean) @ family.direction_components[:, [i, j]]  # (n_strong, 2)
        n_harm = (family.curve_coefficients.shape[0] - 1) // 2
        u = np.linspace(0, 2 * np.pi, n_curve)
        curve = curves.design_matrix(u, "circle", 1, n_harm) @ family.curve_coefficients[:, [i, j]]  # (n_curve, 2)
        h1 = "" if family.h1_persistence is None else f", H1 {family.h1_persistence:.2f}"
        return cls(points_2d=Z, angles=np.mod(family.coordinate, 2 * np.pi), curve_2d=curve, components=(i, j),
                   title=f"{family.name}: ring score {family.score:.2f} (loop {family.loop_quality:.2f}{h1})")

    def _draw(self, ax: Any, **kwargs: Any) -> None:
        ax.plot(self.curve_2d[:, 0], self.curve_2d[:, 1], color="0.2", lw=0.8, zorder=1)
        ax.scatter(self.points_2d[:, 0], self.points_2d[:, 1], c=self.angles, cmap=CYCLIC_CMAP, vmin=0,
                   vmax=2 * np.pi, s=8, alpha=0.6, linewidths=0, zorder=2, **kwargs)
        ax.set_xlabel(f"PC{self.components[0] + 1}")
        ax.set_ylabel(f"PC{self.components[1] + 1}")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(self.title, fontsize=9)
