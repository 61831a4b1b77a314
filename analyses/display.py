"""Display objects: computed data in, a matplotlib drawing out (scikit-learn's plotting API).

A ``*Display`` holds only data. ``plot(ax=None)`` draws it (on a new figure when ``ax`` is None),
stores ``figure_`` and ``ax_`` and returns ``self``. Figures are ``matplotlib.figure.Figure``
objects made without pyplot, so nothing touches a global backend or opens a window; save them with
``display.figure_.savefig(path)`` or :meth:`Display.savefig`. ``from_<thing>`` class methods do
any computing.
"""

from pathlib import Path
from typing import Any, TypeVar

from tracer.io import atomic_path

NODE_COLOURS: dict[str, str] = {"supernode": "#ff7f0e", "feature": "#bcbd22", "error": "#7f7f7f", "token": "#2ca02c",
                                 "logit": "#9467bd", "manifold": "#17becf"}
"""Node colours of every graph figure (matplotlib's tab10: orange, olive, gray, green, purple, cyan); no node
kind is blue or red, the :data:`EDGE_COLOURS`."""
EDGE_COLOURS: dict[str, str] = {"excite": "#1f77b4", "inhibit": "#d62728"}
"""Edge colours of every graph figure by sign (tab10 blue and red)."""

_D = TypeVar("_D", bound="Display")


class Display:
    """Base class: figure handling. Subclasses implement :meth:`_draw`."""

    figsize: tuple[float, float] = (6.0, 4.5)

    def _draw(self, ax: Any, **kwargs: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def plot(self: _D, ax: Any = None, **kwargs: Any) -> _D:
        """Draw on ``ax`` (a matplotlib Axes) or on a new figure; returns self. Drawing again on the Axes this
        display drew on last clears that Axes (whatever else was drawn on it too) and removes the colorbar it
        added, so the drawing is replaced instead of stacking a second one."""
        previous = vars(self).get("ax_")
        if ax is None:
            from matplotlib.figure import Figure

            fig = Figure(figsize=self.figsize, layout="constrained")
            ax = fig.add_subplot()
        elif previous is not None and ax is previous:
            for bar in vars(self).get("colorbars_", []):
                bar.remove()
            ax.cla()
        self.colorbars_: list[Any] = []
        self._draw(ax, **kwargs)
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    def _colorbar(self, mappable: Any, ax: Any, **kwargs: Any) -> Any:
        """A colorbar beside ``ax``, remembered so that drawing again on ``ax`` removes it."""
        bar = ax.figure.colorbar(mappable, ax=ax, **kwargs)
        self.colorbars_.append(bar)
        return bar

    def savefig(self, path: str | Path, **kwargs: Any) -> Path:
        """Write the figure (PNG, SVG, PDF... by suffix) atomically; plots first if needed. The same
        figure gives the same bytes (see :meth:`_save_deterministic`)."""
        target = Path(path)
        with atomic_path(target) as tmp:
            self._save_deterministic(tmp, target.suffix.lstrip(".") or "png", **kwargs)
        return target

    def _save_deterministic(self, where: Any, fmt: str, **kwargs: Any) -> None:
        """matplotlib's savefig without what changes from run to run: SVG element ids come from a fixed
        salt and the element's content (not a random salt), and no creation date is written."""
        from matplotlib import rc_context

        if not hasattr(self, "figure_"):
            self.plot()
        dated = {"svg": "Date", "pdf": "CreationDate", "eps": "CreationDate", "ps": "CreationDate"}
        if fmt in dated and "metadata" not in kwargs:
            kwargs["metadata"] = {dated[fmt]: None}
        with rc_context({"svg.hashsalt": "manifold-workbench"}):
            self.figure_.savefig(where, format=fmt, **kwargs)

    def to_svg(self, **kwargs: Any) -> str:
        """The figure as an SVG element to inline in HTML (no XML prolog, no date; plots first if needed).

        The output is deterministic: matplotlib derives element ids from a fixed salt and the element's
        content, so ids shared by several inlined figures name identical definitions.
        """
        import io

        buf = io.StringIO()
        self._save_deterministic(buf, "svg", **kwargs)
        text = buf.getvalue()
        return text[text.index("<svg"):]
