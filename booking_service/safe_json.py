"""Reading JSON a client sent, so that whatever the parser cannot take is invalid JSON (400),
never a 500: used by every reader of a request body."""

from __future__ import annotations

import json
from typing import Any


def loads_json(data: str | bytes, **kwargs: Any) -> Any:
    """``json.loads`` for request bodies: whatever it cannot take fails as invalid JSON.

    A small body can still break the parser: arrays nested a thousand deep exhaust the
    recursion limit (RecursionError), and a number of more than 4,300 digits is over Python's
    int conversion limit (a bare ValueError). Both become a JSONDecodeError, which every reader
    of a body (Flask's ``get_json``, webargs, the idempotency fingerprint) already answers as
    400 ``bad_request``, instead of a 500 with a traceback.
    """
    try:
        return json.loads(data, **kwargs)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except RecursionError:
        raise _undecodable(data, "JSON nested too deeply") from None
    except ValueError as error:  # int conversion limit
        raise _undecodable(data, str(error)) from None


def _undecodable(data: str | bytes, reason: str) -> json.JSONDecodeError:
    # A non-empty document: webargs reads an empty one as "no body sent".
    document = data if isinstance(data, str) else data.decode("utf-8", "replace")
    return json.JSONDecodeError(reason, document or " ", 0)
