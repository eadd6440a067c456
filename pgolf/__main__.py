"""Entry point for ``python -m pgolf``: the same as the ``pgolf`` console script."""

from pgolf.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
