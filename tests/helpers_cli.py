"""Command lines for CLI tests: a base argv with some options set to other values (the CLI refuses an
option given twice, so an override must replace the base's value, not follow it)."""

from collections.abc import Sequence


def with_flags(argv: Sequence[str], extra: Sequence[str]) -> list[str]:
    """``argv`` with every ``--option value`` of ``extra`` replacing that option's value in ``argv``
    (appended where ``argv`` lacks it); switches (an option not followed by a value) are appended."""
    out, i = list(argv), 0
    while i < len(extra):
        opt = extra[i]
        has_value = opt.startswith("-") and i + 1 < len(extra) and not extra[i + 1].startswith("--")
        if has_value and opt in out and out.index(opt) + 1 < len(out):
            out[out.index(opt) + 1] = extra[i + 1]
        else:
            out += list(extra[i:i + 1 + has_value])
        i += 1 + has_value
    return out


def one_line_error(err: str, command: str, match: str = "") -> None:
    """``err`` is one line, ``workbench COMMAND: error: ...`` containing ``match``, and no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"workbench {command}: error: "), err
    assert match in lines[0], lines[0]
    assert "Traceback" not in err
