"""``python -m workbench ...``: the `workbench` command (same parser, errors and exit codes)."""

from workbench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
