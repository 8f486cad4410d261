"""The Blueprint every API module uses (its JSON body parser, documentation without run-time
wrappers), the id path rule, and the order a view's own decorators run in."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import flask_smorest
from webargs import missing
from webargs.flaskparser import FlaskParser, is_json_request

from booking_service.api.problems import problems
from booking_service.errors import UnsupportedMediaType
from booking_service.safe_json import loads_json
from booking_service.services import MAX_ID

# Path rule for ids: out-of-range ids are simply "not found", never a database error.
ID = f"int(min=1, max={MAX_ID})"


# A view's own decorators run top to bottom in this order: who is asking (401/403 before
# anything is counted or remembered), how often (429), whether it ran before (an
# Idempotency-Key replay), then what it sent (``blp.arguments``; an invalid body is counted
# and remembered like any other answer). tests/unit/test_view_rules.py checks every view.
VIEW_STAGES = ("auth", "rate_limit", "idempotency", "arguments")


# Kept beside the functions, not on them: functools.wraps copies a function's attributes onto
# every wrapper above it, which would blur which layer is which.
_STAGE_OF_WRAPPER: weakref.WeakKeyDictionary[Callable[..., Any], str] = weakref.WeakKeyDictionary()


def view_stage(stage: str) -> Callable[[Any], Any]:
    """Mark a view decorator's wrapper with its place in ``VIEW_STAGES``."""
    if stage not in VIEW_STAGES:
        raise ValueError(f"unknown view stage {stage!r}")

    def mark(wrapper: Any) -> Any:
        _STAGE_OF_WRAPPER[wrapper] = stage
        return wrapper

    return mark


def stage_of(wrapper: Callable[..., Any]) -> str | None:
    """The stage a view decorator marked this wrapper with, if any."""
    return _STAGE_OF_WRAPPER.get(wrapper)


class _BodyParser(FlaskParser):
    """webargs' parser, reading JSON bodies with ``safe_json.loads_json``.

    webargs calls ``json.loads`` itself, so a body nested too deeply, or a number too long,
    would otherwise escape as a 500 instead of its 400 "Invalid JSON body".
    """

    def _raw_load_json(self, req: Any) -> Any:
        if not is_json_request(req):
            # webargs would read any other body as no body at all, and answer a JSON body sent
            # as text/plain with "Missing data for required field".
            if req.get_data(cache=True):
                sent = f"as {req.mimetype}" if req.mimetype else "without a Content-Type"
                raise UnsupportedMediaType(
                    f"Send the body as application/json; this one was sent {sent}."
                )
            return missing
        # Decoded as webargs does; a UnicodeDecodeError is its 400 as well.
        return loads_json(req.get_data(cache=True).decode("utf-8"))


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint with the body parser above; every API blueprint is one."""

    ARGUMENTS_PARSER = _BodyParser()

    def arguments(self, schema: Any, *, location: str = "json", **kwargs: Any) -> Any:
        """``flask_smorest.Blueprint.arguments``; a JSON body also documents its 415.

        A schema class is instantiated here, once: webargs would build one per request.
        """
        if isinstance(schema, type):
            schema = schema()
        parse = super().arguments(schema, location=location, **kwargs)
        if location != "json":
            return parse
        return lambda func: problems(self, UnsupportedMediaType)(parse(func))

    # flask-smorest's alt_response and doc wrap the view in a function that only calls it
    # again, through ensure_sync. An endpoint collects a dozen of them (every ``problems``
    # status is one), each a few calls on every request; these put the same documentation
    # on the function itself, which costs nothing at run time.

    def alt_response(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        """``flask_smorest.Blueprint.alt_response``, documenting without a wrapper."""
        return _documentation_only(super().alt_response(*args, **kwargs))

    @staticmethod
    def doc(**kwargs: Any) -> Callable[[Any], Any]:
        """``flask_smorest.Blueprint.doc``, documenting without a wrapper."""
        return _documentation_only(flask_smorest.Blueprint.doc(**kwargs))


def _documentation_only(doc_decorator: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def apply(func: Any) -> Any:
        func._apidoc = doc_decorator(func)._apidoc
        return func

    return apply
