"""The ``mixrec`` command. Each module in this package adds its commands via ``register(app)``."""

from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(help="mixrec: multimodal recommendations on BentoML", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)


def _register_all() -> None:
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


def main() -> None:
    app()
