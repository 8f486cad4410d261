"""WSGI entry point of gunicorn (``wsgi:app``), also what ``flask --app wsgi`` loads."""

import sys

from booking_service import create_app
from booking_service.config import ConfigError

try:
    app = create_app()
except ConfigError as error:
    # What is wrong, in one line and without a traceback, for the flask command as for
    # gunicorn (whose master checks the same settings before any worker boots).
    sys.exit(f"booking-service: configuration error: {error}")
