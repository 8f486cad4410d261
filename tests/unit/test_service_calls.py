"""The views call services by keyword: every service function a view calls takes keyword-only
arguments (docs/architecture.md, "Code layout and its rules")."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[2] / "booking_service" / "api"


def _service_calls() -> set[tuple[str, str]]:
    """(service module, function) for every ``<service module>.<function>(...)`` in the views."""
    calls: set[tuple[str, str]] = set()
    for path in sorted(API.glob("*.py")):
        tree = ast.parse(path.read_text())
        services = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "booking_service.services"
            for alias in node.names
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in services
            ):
                calls.add((node.func.value.id, node.func.attr))
    return calls


def _service(module: str, function: str) -> object:
    return getattr(importlib.import_module(f"booking_service.services.{module}"), function)


# Classes the views build to pass on (a rate limit, a stored response) are values, not calls.
CALLS = sorted(call for call in _service_calls() if not inspect.isclass(_service(*call)))


def test_the_views_call_services() -> None:
    # Guards the scan itself: an empty list would pass every case below.
    assert ("bookings", "create_booking") in CALLS
    assert len(CALLS) >= 20


@pytest.mark.parametrize(("module", "function"), CALLS, ids=[f"{m}.{f}" for m, f in CALLS])
def test_service_functions_take_keyword_arguments_only(module: str, function: str) -> None:
    target = _service(module, function)
    assert inspect.isfunction(target), f"services.{module}.{function} is not a function"
    positional = [
        name
        for name, parameter in inspect.signature(target).parameters.items()
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]
    assert positional == [], f"services.{module}.{function} takes {positional} by position"
