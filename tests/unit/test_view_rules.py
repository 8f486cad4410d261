"""Rules of the views, checked on every registered view rather than left to comments.

1. Decorator order (``api.blueprint.VIEW_STAGES``): authentication, then rate limit, then
   idempotency, then ``blp.arguments``.
2. Documented problems: what a view documents (``problems``) is exactly what its code can
   raise, found by following its calls through the package's source.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import textwrap
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from booking_service.api.blueprint import VIEW_STAGES, stage_of
from booking_service.api.problems import documented_problems
from booking_service.errors import DomainError, UnsupportedMediaType, ValidationFailed
from booking_service.services import ledger

PACKAGE = "booking_service"


def registered_views(app: Flask) -> Iterator[tuple[str, Callable[..., Any]]]:
    """(``METHOD endpoint``, outermost function) of every MethodView method of the app."""
    for endpoint, view in sorted(app.view_functions.items()):
        view_class = getattr(view, "view_class", None)
        for method in sorted(getattr(view_class, "methods", None) or ()):
            yield f"{method} {endpoint}", getattr(view_class, method.lower())


def layers(view: Callable[..., Any]) -> list[Callable[..., Any]]:
    """The view's decorator wrappers from the outermost in, ending with the view's own code."""
    chain = [view]
    while hasattr(chain[-1], "__wrapped__"):
        chain.append(chain[-1].__wrapped__)
    return chain


def stage(layer: Callable[..., Any]) -> str | None:
    if stage_of(layer):
        return stage_of(layer)
    # flask-smorest's arguments hand the function to webargs' use_args, whose wrapper is outermost.
    code = getattr(layer, "__code__", None)
    return "arguments" if code is not None and "webargs" in code.co_filename else None


def test_every_view_orders_its_decorators(app: Flask) -> None:
    checked = 0
    for name, view in registered_views(app):
        stages = [s for layer in layers(view) if (s := stage(layer))]
        assert stages == sorted(stages, key=VIEW_STAGES.index), f"{name}: {stages}"
        assert len(stages) == len(set(stages)), f"{name} repeats a stage: {stages}"
        checked += 1
    assert checked >= 20


# --- what a function can raise ----------------------------------------------------------------


def _is_own_code(func: types.FunctionType) -> bool:
    # By the code's module, not __module__, which functools.wraps copies onto wrappers made
    # elsewhere (contextlib's, webargs').
    module = inspect.getmodule(func.__code__)
    return module is not None and module.__name__.startswith(PACKAGE)


def _own(obj: Any) -> Callable[..., Any] | None:
    """The function of this package that calling ``obj`` runs first, if any."""
    if isinstance(obj, types.MethodType | staticmethod | classmethod):
        obj = obj.__func__
    while isinstance(obj, types.FunctionType) and not _is_own_code(obj):
        obj = getattr(obj, "__wrapped__", None)  # a foreign wrapper, e.g. @contextmanager
    return obj if isinstance(obj, types.FunctionType) else None


class Raises:
    """Domain errors a function of this package can let out, following calls it makes."""

    def __init__(self) -> None:
        self._done: dict[Callable[..., Any], set[type[DomainError]]] = {}

    def of(self, func: Callable[..., Any]) -> set[type[DomainError]]:
        if func in self._done:
            return self._done[func]
        self._done[func] = set()  # recursion ends here
        tree = ast.parse(textwrap.dedent(inspect.getsource(func.__code__)))
        body = tree.body[0]
        assert isinstance(body, ast.FunctionDef | ast.AsyncFunctionDef)
        scope = _Scope(func)
        found = self._statements(body.body, scope)
        self._done[func] = found
        return found

    def _statements(self, statements: list[ast.stmt], scope: _Scope) -> set[type[DomainError]]:
        found: set[type[DomainError]] = set()
        for statement in statements:
            if isinstance(statement, ast.FunctionDef | ast.ClassDef):
                continue  # a nested definition runs only when called (layers are walked apart)
            if isinstance(statement, ast.Try):
                inside = self._statements(statement.body, scope)
                for handler in statement.handlers:
                    caught = scope.exception_types(handler.type)
                    reraises = any(
                        isinstance(node, ast.Raise) and node.exc is None
                        for node in ast.walk(handler)
                    )
                    if not reraises:
                        inside = {e for e in inside if not issubclass(e, caught)}
                    found |= self._statements(handler.body, scope)
                found |= inside
                for block in (statement.orelse, statement.finalbody):
                    found |= self._statements(block, scope)
                continue
            found |= self._expressions(statement, scope)
            for field in ("body", "orelse", "finalbody"):
                nested = getattr(statement, field, None)
                if isinstance(nested, list) and nested and isinstance(nested[0], ast.stmt):
                    found |= self._statements(nested, scope)
            if isinstance(statement, ast.Match):
                for case in statement.cases:
                    found |= self._statements(case.body, scope)
        return found

    def _expressions(self, statement: ast.stmt, scope: _Scope) -> set[type[DomainError]]:
        """Raises and calls in the statement itself, not in its nested blocks."""
        found: set[type[DomainError]] = set()
        for node in _walk_shallow(statement):
            if isinstance(node, ast.Raise) and node.exc is not None:
                raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                target = scope.resolve(raised)
                if isinstance(target, types.FunctionType):  # raise make_error(...)
                    target = typing.get_type_hints(target).get("return")
                if isinstance(target, type) and issubclass(target, DomainError):
                    found.add(target)
            elif isinstance(node, ast.Call):
                found |= _ledger_refusals(node, scope)
                callee = _own(scope.resolve(node.func))
                if callee is not None:
                    found |= self.of(callee)
        return found


def _ledger_refusals(call: ast.Call, scope: _Scope) -> set[type[DomainError]]:
    """``ledger.intent("kind", ...)``: what the seat ledger can refuse that kind of intent with
    (its outcome is data, decided in SQL, so the table stands for the raises)."""
    if scope.resolve(call.func) is not _own(ledger.intent) or not call.args:
        return set()
    kind = call.args[0]
    assert isinstance(kind, ast.Constant), "name the intent's kind where it is made"
    return set(ledger.REFUSALS_BY_KIND[kind.value])


def _walk_shallow(statement: ast.stmt) -> Iterator[ast.AST]:
    """Nodes of one statement, without descending into the statements nested in it."""
    pending: list[ast.AST] = [statement]
    while pending:
        node = pending.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.stmt):
                pending.append(child)


class _Scope:
    """Resolves names in a function's source to the objects they are at run time."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        closure = inspect.getclosurevars(func)
        self.names: dict[str, Any] = {**vars(builtins), **func.__globals__, **closure.nonlocals}
        # For methods: the class named in the qualified name, for ``self.x`` and ``cls.x``.
        owner_name = func.__qualname__.split(".<locals>")[0].rpartition(".")[0]
        self.owner = func.__globals__.get(owner_name) if owner_name else None
        # ``request = SeatRequest(...)``: a local made from one of our classes stands for it,
        # so that ``request.outcome()`` resolves to the method.
        source = ast.parse(textwrap.dedent(inspect.getsource(func.__code__)))
        for node in ast.walk(source):
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Call)
            ):
                made_by = self.resolve(node.value.func)
                if isinstance(made_by, type) and made_by.__module__.startswith(PACKAGE):
                    self.names[node.targets[0].id] = made_by

    def resolve(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Name):
            if node.id in ("self", "cls"):
                return self.owner
            return self.names.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return inspect.getattr_static(base, node.attr, None) if base is not None else None
        return None

    def exception_types(self, node: ast.expr | None) -> tuple[type[BaseException], ...]:
        if node is None:
            return (BaseException,)
        nodes = node.elts if isinstance(node, ast.Tuple) else [node]
        resolved = [self.resolve(n) for n in nodes]
        return tuple(t for t in resolved if isinstance(t, type) and issubclass(t, BaseException))


def reads_json_body(layer: Callable[..., Any]) -> bool:
    """Whether this ``blp.arguments`` layer parses the JSON body (as flask-smorest notes it)."""
    parameters = getattr(layer, "_apidoc", {}).get("arguments", {}).get("parameters", [])
    return any(parameter.get("in") == "json" for parameter in parameters)


def can_raise(view: Callable[..., Any], raises: Raises) -> set[type[DomainError]]:
    found: set[type[DomainError]] = set()
    for layer in layers(view):
        if stage(layer) == "arguments":
            found.add(ValidationFailed)  # an invalid body or query is a 422 validation_error
            if reads_json_body(layer):
                # Raised by the body parser (api.blueprint), which webargs calls.
                found.add(UnsupportedMediaType)  # a body that is not JSON
        if isinstance(layer, types.FunctionType) and _is_own_code(layer):
            found |= raises.of(layer)
    return found


def test_every_view_documents_exactly_what_it_can_raise(app: Flask) -> None:
    raises = Raises()
    mismatches = []
    for name, view in registered_views(app):
        documented: set[type[DomainError]] = set()
        for layer in layers(view):
            documented |= documented_problems(layer)
        possible = can_raise(view, raises)
        if documented != possible:
            missing = sorted(e.code for e in possible - documented)
            extra = sorted(e.code for e in documented - possible)
            mismatches.append(f"{name}: undocumented {missing}, never raised {extra}")
    assert not mismatches, "\n".join(mismatches)


# --- the checker itself ------------------------------------------------------------------------


class _Missing(DomainError):
    code = "test_missing"


def _helper_that_raises() -> None:
    raise _Missing()


def _view_that_calls_helper() -> None:
    _helper_that_raises()


def _view_that_catches() -> None:
    try:
        _helper_that_raises()
    except DomainError:
        return


@pytest.mark.parametrize(
    ("func", "expected"),
    [(_view_that_calls_helper, {_Missing}), (_view_that_catches, set())],
)
def test_the_checker_follows_calls_and_handlers(
    func: Callable[..., Any], expected: set[type[DomainError]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # These helpers live in the test module; count it as package code for this check.
    monkeypatch.setattr(f"{__name__}.PACKAGE", __name__)
    assert Raises().of(func) == expected


def test_the_checker_sees_a_service_error(app: Flask) -> None:
    from booking_service.errors import EventFull
    from booking_service.services import bookings

    assert EventFull in Raises().of(bookings.create_booking)
