"""Every repository path and every ``module.symbol`` that the docs and code comments name in
backticks exists: README.md, docs/*.md, and the comments and docstrings of the Python code.

A name that moved or was renamed fails here with the place that still cites it.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import io
import pkgutil
import re
import subprocess
import tokenize
from functools import lru_cache
from pathlib import Path

import pytest

import booking_service
from booking_service.services.outbox import EVENT_TYPES

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("booking_service", "tests", "bench", "harness", "migrations")
# `x` in Markdown, ``x`` in docstrings; a span never crosses a line.
SPAN = re.compile(r"``([^`\n]+)``|`([^`\n]+)`")
DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
# The resources webhook event types are named after (`booking.created`, `waitlist.offered`).
WEBHOOK_RESOURCES = frozenset(event_type.split(".")[0] for event_type in EVENT_TYPES)
PATH_SUFFIXES = (".py", ".md", ".yml", ".yaml", ".json", ".sh", ".cfg", ".txt", ".ini", ".lua")


@lru_cache(maxsize=1)
def tracked_files() -> frozenset[str]:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return frozenset(listed.split())


@lru_cache(maxsize=1)
def modules_by_short_name() -> dict[str, list[str]]:
    """``ledger`` -> ``booking_service.services.ledger``; ``ops.lock_table`` likewise."""
    found: dict[str, list[str]] = {"booking_service": ["booking_service"]}
    for info in pkgutil.walk_packages(booking_service.__path__, "booking_service."):
        parts = info.name.split(".")[1:]
        for start in range(len(parts)):
            found.setdefault(".".join(parts[start:]), []).append(info.name)
        found.setdefault(info.name, []).append(info.name)
    return found


def documents() -> list[tuple[str, int, str]]:
    """(file, line, text) of every Markdown line and every Python comment and docstring."""
    texts: list[tuple[str, int, str]] = []
    for name in sorted(tracked_files()):
        if name == "README.md" or (name.startswith("docs/") and name.endswith(".md")):
            for number, line in enumerate((ROOT / name).read_text().splitlines(), start=1):
                texts.append((name, number, line))
        elif name.endswith(".py") and name.split("/")[0] in CODE_DIRS:
            texts.extend(_python_prose(name))
    return texts


def _python_prose(name: str) -> list[tuple[str, int, str]]:
    source = (ROOT / name).read_text()
    found = [
        (name, token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc and node.body:
                first = node.body[0].lineno
                found.extend((name, first + i, line) for i, line in enumerate(doc.splitlines()))
    return found


def references() -> list[tuple[str, str]]:
    """(where, name) for every backticked path or module.symbol."""
    refs = []
    for name, line, text in documents():
        for match in SPAN.finditer(text):
            span = (match.group(1) or match.group(2)).strip()
            if _is_path(span) or _is_dotted(span):
                refs.append((f"{name}:{line}", span))
    return refs


def _is_path(span: str) -> bool:
    if any(c in span for c in " <>{}*$:?=,()[]") or span.startswith(("/", ".", "~", "http")):
        return False
    return span.endswith(PATH_SUFFIXES) or (
        "/" in span and span.split("/")[0] in {*CODE_DIRS, "docs", "deploy", "scripts", ".ci"}
    )


def _is_dotted(span: str) -> bool:
    return bool(DOTTED.fullmatch(span)) and not span.endswith(PATH_SUFFIXES)


@lru_cache(maxsize=1)
def table_columns() -> dict[str, set[str]]:
    """``events`` -> its columns: ``events.booked_count`` names a column, not a module."""
    from booking_service.models import Base

    return {name: set(table.columns.keys()) for name, table in Base.metadata.tables.items()}


def path_exists(span: str) -> bool:
    span = span.rstrip("/")
    files = tracked_files()
    if "/" not in span:  # a bare file name anywhere in the repository, or a top folder
        return any(f == span or f.endswith("/" + span) or f.startswith(span + "/") for f in files)
    for base in ("", "booking_service/", "tests/"):
        candidate = base + span
        if candidate in files or any(f.startswith(candidate + "/") for f in files):
            return True
    return False


def dotted_exists(span: str) -> bool:
    """Whether ``span`` names something that exists; a local variable's attribute (``self.x``,
    ``pool.samples``) cannot be checked and counts as existing, a module that was removed does
    not."""
    parts = span.split(".")
    if len(parts) == 2 and parts[1] in table_columns().get(parts[0], ()):
        return True
    if span in EVENT_TYPES:  # a webhook event type, `booking.created`
        return True
    for cut in range(len(parts), 0, -1):  # the longest module name first: services.ledger
        for module_name in modules_by_short_name().get(".".join(parts[:cut]), []):
            if _has_chain(importlib.import_module(module_name), parts[cut:]):
                return True
    if parts[0] in {short.split(".")[0] for short in modules_by_short_name()}:
        return False
    owners = _package_globals().get(parts[0])
    if owners is not None:  # a class or a module-level object: Event.seats_held, locks.locked
        return any(_has_chain(owner, parts[1:]) for owner in owners)
    if parts[0] in dir(builtins):
        return _has_chain(getattr(builtins, parts[0]), parts[1:])
    if parts[0][0].isupper() or parts[0] in removed_modules() | WEBHOOK_RESOURCES:
        # A class or module the package no longer has; an event type it does not send.
        return False
    try:
        importlib.import_module(parts[0])
    except ImportError:
        return True  # a local variable in prose (self.x, pool.samples): nothing to check
    return _third_party_exists(parts)


@lru_cache(maxsize=1)
def _package_globals() -> dict[str, list[object]]:
    found: dict[str, list[object]] = {}
    for names in modules_by_short_name().values():
        for module_name in names:
            module = importlib.import_module(module_name)
            for name, value in vars(module).items():
                if not name.startswith("_") and getattr(value, "__module__", module_name) in (
                    module_name,
                    None,
                ):
                    found.setdefault(name, []).append(value)
    return found


@lru_cache(maxsize=1)
def removed_modules() -> frozenset[str]:
    """Names of the package's modules that history deleted or renamed (``extensions``)."""
    log = subprocess.run(
        [
            "git",
            "log",
            "--no-renames",
            "--diff-filter=D",
            "--name-only",
            "--format=",
            "--",
            "booking_service",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    gone = {Path(name).stem for name in log.split() if name.endswith(".py")}
    return frozenset(gone - {short.split(".")[-1] for short in modules_by_short_name()})


def _third_party_exists(parts: list[str]) -> bool:
    for cut in range(len(parts), 0, -1):  # the longest importable module first
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        return _has_chain(target, parts[cut:])
    return False


def _has_chain(target: object, attributes: list[str]) -> bool:
    for attribute in attributes:
        if not hasattr(target, attribute):
            return False
        target = getattr(target, attribute)
    return True


REFERENCES = references()


def test_the_scan_finds_references() -> None:
    # Guards the scan: no references found would pass every check below.
    spans = {span for _, span in REFERENCES}
    assert "docs/architecture.md" in spans
    assert len(REFERENCES) > 100


def test_every_named_path_exists() -> None:
    missing = [f"{where}: {span}" for where, span in REFERENCES if _is_path(span)]
    missing = [m for m in missing if not path_exists(m.split(": ", 1)[1])]
    assert missing == [], "\n".join(missing)


def test_every_named_module_symbol_exists() -> None:
    missing = [
        f"{where}: {span}"
        for where, span in REFERENCES
        if not _is_path(span) and _is_dotted(span) and not dotted_exists(span)
    ]
    assert missing == [], "\n".join(missing)


@pytest.mark.parametrize(
    ("span", "exists"),
    [
        ("services/ledger.py", True),
        ("services/seats.py", False),
        ("ledger.applied_outcome", True),
        ("ledger.no_such_function", False),
        ("extensions.round_trip", False),
        ("waitlist.offered", True),
        ("waitlist.offer_taken", False),
        ("booking.expired", False),
    ],
)
def test_the_checks_tell_present_from_absent(span: str, exists: bool) -> None:
    check = path_exists if _is_path(span) else dotted_exists
    assert check(span) is exists


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_alert_runbook_link_reaches_its_heading() -> None:
    links = re.findall(r'runbook: "([^"#]+)#([^"]+)"', (ROOT / "deploy/alerts.yml").read_text())
    assert len(links) >= 7
    for path, anchor in links:
        assert path in tracked_files(), path
        assert anchor in _anchors((ROOT / path).read_text()), f"{path}#{anchor}"
