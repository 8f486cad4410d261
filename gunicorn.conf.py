"""gunicorn settings, each overridable by environment variable.

Workers are threaded (gthread): a request waiting for an event lock blocks one thread, not a
whole process, so unrelated requests keep flowing while a hot event queues.
"""

import os
import shutil
import sys
import tempfile

# gunicorn reads this file before it changes into --chdir and puts that on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from booking_service.config import ConfigError, from_environment, validate

# A setting the app cannot use stops gunicorn here, in one line, before any worker boots (in
# a worker it would be a traceback per worker and a restart loop).
try:
    validate(from_environment())
except ConfigError as error:
    sys.exit(f"booking-service: configuration error: {error}")

# Loopback unless BIND says otherwise: a client trickling a body holds a thread for as long as
# it likes, so an instance reachable from outside needs a buffering proxy in front (nginx,
# deploy/nginx.conf). The image and compose set BIND=0.0.0.0:8000 behind theirs. PORT alone
# moves the loopback port.
bind = os.environ.get("BIND") or f"127.0.0.1:{os.environ.get('PORT') or 8000}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# Keep-alive connections stay with the worker that accepted them; a cap per worker spreads a
# burst of new connections over all workers (gunicorn's default is 1000).
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 10
# An idle keep-alive connection is closed after this. Behind a proxy that keeps connections to
# the app open, keep it above the proxy's idle timeout, or the proxy reuses a connection just
# as the app closes it and the client gets a 502.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE_SECONDS", "5"))
accesslog = os.environ.get("ACCESS_LOG") or None
# Spelled out so that no header can creep in: no Authorization, no cookies, no query string
# (%(U)s is the path alone). Client address, time, method, path, status, size, duration (µs).
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(D)s'
errorlog = "-"
# Several instances may run on one host (tests, benchmarks); a shared control socket would clash.
control_socket_disable = True

# Prometheus multiprocess mode: every worker writes samples here; /metrics sums them.
# Set before the app (and prometheus_client) is imported by the workers.
_default_dir = os.path.join(tempfile.gettempdir(), f"booking-service-metrics-{os.getpid()}")
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", _default_dir)


def on_starting(server):
    """Start each run with an empty metrics directory (stale files would add old counts)."""
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)


def child_exit(server, worker):
    """Drop a dead worker's live gauges (lock waiters) from the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """Sweep expired holds, pace the waiting rooms and relay webhooks from every worker; a
    lease in Redis each lets one sweep, one pace and one send at a time
    (WEBHOOK_RELAY_ENABLED=false: no relay here)."""
    from booking_service.services.pacer import pacer
    from booking_service.services.relay import relay
    from booking_service.services.sweeper import sweeper

    sweeper.start()
    pacer.start()
    relay.start()


def worker_exit(server, worker):
    """Hand the leases back, so another worker need not wait for them to run out."""
    from booking_service.services.pacer import pacer
    from booking_service.services.relay import relay
    from booking_service.services.sweeper import sweeper

    sweeper.stop()
    pacer.stop()
    relay.stop()
