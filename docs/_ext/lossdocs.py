"""Sphinx glue for lossbackends' API reference.

- The losses are ``lossbackends.Loss`` instances, not functions: their pages show the
  signature a user calls, with the loss's own keyword options in place of ``**options``
  (read from the option checks in ``_prepare.py``, so they cannot drift).
- Every public name must have a reference page: a name in ``lossbackends.__all__`` or in
  a public submodule's API that no page documents is a warning (an error under ``-W``).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

# the public modules whose names the reference must cover (their __all__, or else the
# functions and classes they define)
PUBLIC_MODULES = ("lossbackends", "lossbackends.torch", "lossbackends.jax",
                  "lossbackends.xgboost", "lossbackends.lightgbm")
_METHODS = {"grad": "out=None", "value_and_grad": "out=None", "grad_and_hess": "out=None"}


def _loss_of(obj: Any) -> tuple[Any, str | None]:
    """The Loss behind ``obj`` (the loss itself or one of its bound methods), and the
    method's name."""
    from lossbackends import Loss

    if isinstance(obj, Loss):
        return obj, None
    owner = getattr(obj, "__self__", None)
    if isinstance(owner, Loss):
        return owner, obj.__name__
    return None, None


def _options(loss: Any) -> list[str]:
    """The loss's own keyword options, as its checks in ``_prepare.py`` take them (every loss
    has some, ``weight`` at least: none found means this reads the wrong function, which
    once left every loss page without its options)."""
    found = [str(p) for p in inspect.signature(loss._prepare_options).parameters.values()
             if p.kind is inspect.Parameter.KEYWORD_ONLY]
    if not found:
        raise RuntimeError(f"lossdocs found no options of {loss.name} in its checks "
                           "(Loss._prepare_options)")
    return found


def _loss_signature(app: Sphinx, what: str, name: str, obj: Any, options: Any,
                    signature: str | None, return_annotation: str | None):
    from lossbackends import Loss
    from lossbackends.losses import LOSSES

    if obj is Loss:  # built by the library, never by users: no constructor to show
        return "", None
    if (signature is not None and getattr(obj, "__module__", None) == "lossbackends.jax"
            and getattr(obj, "__name__", None) in LOSSES):  # lossbackends.jax's **options
        own = _options(LOSSES[obj.__name__])
        return f"(y_true, y_pred, *, reduction='mean', {', '.join(own)})", return_annotation
    loss, method = _loss_of(obj)
    if signature is None or loss is None or (method is not None and method not in _METHODS):
        return None
    own = _options(loss)
    common = ["reduction='mean'", "backend=None"] + (["out=None"] if method else [])
    returns = {None: "value", "grad": "grad", "value_and_grad": "tuple[value, grad]",
               "grad_and_hess": "tuple[grad, hess]"}[method]
    return f"(y_true, y_pred, *, {', '.join(common + own)})", returns


def _public_names() -> set[str]:
    names: set[str] = set()
    for modname in PUBLIC_MODULES:
        try:
            module = importlib.import_module(modname)
        except ImportError as exc:  # torch or jax missing: their pages cannot be built
            logger.warning("cannot import %s to document it (%s); install the docs' "
                           "extras: bash ci/docs does", modname, exc)
            continue
        public = getattr(module, "__all__", None)
        if public is None:
            public = [n for n, v in vars(module).items() if not n.startswith("_")
                      and (inspect.isfunction(v) or inspect.isclass(v))
                      and v.__module__ == modname]
        names.update(f"{modname}.{n}" for n in public)
        if modname != "lossbackends":
            names.add(modname)
    return names


def _check_every_public_name(app: Sphinx, env) -> None:
    documented = set(env.domains["py"].objects)
    missing = sorted(_public_names() - documented)
    for name in missing:
        logger.warning("%s is public but has no reference page: add it to "
                       "docs/reference/index.rst", name)


def setup(app: Sphinx) -> dict:
    app.connect("autodoc-process-signature", _loss_signature)
    app.connect("env-check-consistency", _check_every_public_name)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
