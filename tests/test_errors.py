"""The error tree: every exception class of the product is a `GouacheError`, drawn in errors.py."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import gouache
from gouache import errors
from gouache.errors import ErrorCode, GouacheError

#: Stand-ins for services we cannot reach, not the product (DESIGN.md).
NOT_PRODUCT = ("gouache_sandbox", "gouache.demo", "gouache.__main__")


def product_exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in a product module, by name."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(gouache.__path__, "gouache."):
        if info.name.startswith(NOT_PRODUCT):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
            ):
                found[name] = obj
    return found


def drawn_tree() -> dict[str, str]:
    """The classes drawn in errors.py's docstring: name → its parent's name."""
    parents: dict[str, str] = {}
    stack: list[str] = []
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^    ((?:[│ ]   )*)(?:[├└]── )?([A-Z]\w+)\s{2,}", line)
        if match is None:
            continue
        depth = len(match.group(1)) // 4 + (1 if "──" in line else 0)
        name = match.group(2)
        del stack[depth:]
        if stack:
            parents[name] = stack[-1]
        stack.append(name)
    return parents


def test_the_walk_finds_the_known_errors() -> None:
    classes = product_exception_classes()
    # A walk that found nothing would pass the next test: make sure it sees deep modules too.
    for name in ("GouacheError", "GatewayDisabled", "ComfyUITooLarge", "TokenExpired", "ApiError"):
        assert name in classes


def test_every_product_exception_is_a_gouache_error() -> None:
    strays = [
        f"{cls.__module__}.{name}"
        for name, cls in product_exception_classes().items()
        if not issubclass(cls, GouacheError)
    ]
    assert strays == []


def test_every_error_carries_an_error_code() -> None:
    for name, cls in product_exception_classes().items():
        assert isinstance(cls.code, ErrorCode), name  # type: ignore[attr-defined]


def test_the_docstring_draws_the_whole_tree_as_it_is() -> None:
    classes = product_exception_classes()
    parents = drawn_tree()
    assert set(parents) | {"GouacheError"} == set(classes)
    for name, parent in parents.items():
        assert classes[name].__bases__ == (classes[parent],), name
