# booking-service image: gunicorn (gthread workers) serving wsgi:app on :8000, as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first: this layer is reused until requirements.txt changes.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN useradd --system --uid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin app
USER app

# All interfaces of the container: run it behind a buffering proxy (nginx), never exposed
# directly (README, Security).
ENV BIND=0.0.0.0:8000
EXPOSE 8000

# Liveness only: /readyz depends on PostgreSQL and Redis, and a dependency outage must not
# get every instance restarted.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2).status != 200)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
