"""A private PgBouncer in front of the local PostgreSQL, and a sampler of its pools.

PgBouncer lets many app processes share few PostgreSQL sessions. In transaction pooling a
client's consecutive transactions may run on different server sessions, so nothing that lives
in a session (SQL PREPARE, SET without LOCAL, startup ``options``) can be relied upon. The tests
in tests/infra prove each of these against the real pooler; the concurrency and fault tests and
the benchmark's scale-out measurement put app instances behind it.

Roles with a connection limit live in harness/database.py.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from harness.database import POSTGRES_HOST, POSTGRES_PORT, POSTGRES_SUPERUSER
from harness.processes import Managed, free_port, stop_process, wait_until
from harness.sampling import PeriodicSampler

# Debian's package installs the binary into /usr/sbin, which is not on every user's PATH.
PGBOUNCER_FALLBACK = "/usr/sbin/pgbouncer"
# pgbouncer refuses to run as root; it switches to this user (-u) when started as root.
PGBOUNCER_USER = "postgres"


def pgbouncer_binary() -> str:
    """Path of the pgbouncer binary; a clear error (not a skip) when it is not installed."""
    found = shutil.which("pgbouncer") or (
        PGBOUNCER_FALLBACK if os.access(PGBOUNCER_FALLBACK, os.X_OK) else None
    )
    if found is None:
        raise FileNotFoundError(
            "pgbouncer is not installed (apt-get install pgbouncer; scripts/test.sh does it)"
        )
    return found


class PgBouncer(Managed):
    """A pgbouncer process on a free loopback port, passing any database name through.

    Clients log in without a password as any role listed in ``roles`` (``auth_type = trust``
    still wants the name in the auth file); pgbouncer logs in to PostgreSQL as that same role.
    The admin console is database ``pgbouncer``, user ``postgres``.
    """

    def __init__(
        self,
        *,
        pool_mode: str = "transaction",
        default_pool_size: int = 20,
        max_client_conn: int = 1000,
        max_db_connections: int | None = None,
        server_host: str = POSTGRES_HOST,
        server_port: int = POSTGRES_PORT,
        roles: Iterable[str] = (POSTGRES_SUPERUSER,),
        server_login_retry: int = 1,
        settings: Mapping[str, str | int] | None = None,
        port: int | None = None,
    ) -> None:
        self.binary = pgbouncer_binary()
        self.port = port or free_port()
        self.pool_mode = pool_mode
        self.default_pool_size = default_pool_size
        self.max_client_conn = max_client_conn
        self.max_db_connections = max_db_connections
        self.server_host = server_host
        self.server_port = server_port
        # The admin console needs its user in the auth file too.
        self.roles = list(dict.fromkeys([POSTGRES_SUPERUSER, *roles]))
        # Default 15 s: after one failed server login (PostgreSQL restarting, a role at its
        # connection limit) every client would be refused for that long.
        self.server_login_retry = server_login_retry
        self.settings = dict(settings or {})
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="booking-pgbouncer-"))
        self.log_path = self._dir / "pgbouncer.log"
        self._output_path = self._dir / "stdout.log"
        self._config_path = self._dir / "pgbouncer.ini"

    def _write_config(self) -> None:
        auth_file = self._dir / "users.txt"
        auth_file.write_text("".join(f'"{role}" ""\n' for role in self.roles))
        pool = {
            "pool_mode": self.pool_mode,
            "default_pool_size": self.default_pool_size,
            "max_client_conn": self.max_client_conn,
            "max_db_connections": self.max_db_connections or 0,  # 0: no limit
        }
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": self._dir,
            "logfile": self.log_path,
            "pidfile": self._dir / "pgbouncer.pid",
            "auth_type": "trust",
            "auth_file": auth_file,
            "admin_users": POSTGRES_SUPERUSER,
            "stats_users": POSTGRES_SUPERUSER,
            # Not "options": the service must work without startup options, and a pooler
            # that swallowed them would hide that they never reach PostgreSQL.
            "ignore_startup_parameters": "extra_float_digits",
            "server_login_retry": self.server_login_retry,
            **pool,
            **self.settings,
        }
        lines = [
            "[databases]",
            f"* = host={self.server_host} port={self.server_port}",
            "[pgbouncer]",
            *(f"{key} = {value}" for key, value in settings.items()),
        ]
        self._config_path.write_text("\n".join(lines) + "\n")
        if os.geteuid() == 0:
            # pgbouncer drops root for PGBOUNCER_USER, which then writes the log, the pid file
            # and the unix socket here, and rereads the config on RELOAD.
            user = pwd.getpwnam(PGBOUNCER_USER)
            for path in [self._dir, *self._dir.iterdir()]:
                os.chown(path, user.pw_uid, user.pw_gid)

    def start(self) -> PgBouncer:
        self._write_config()
        command = [self.binary, str(self._config_path)]
        if os.geteuid() == 0:
            command[1:1] = ["-u", PGBOUNCER_USER]
        output = open(self._output_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        output.close()  # the child holds its own copy
        wait_until(self._ready, timeout=10, what=f"pgbouncer on {self.port}")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited; log:\n{self.log()}")
        try:
            self.show("VERSION")
        except psycopg2.OperationalError:
            return False
        return True

    def stop(self) -> None:
        """Immediate shutdown (SIGTERM): open client connections are dropped."""
        stop_process(self.process)
        self.process = None

    def restart(self) -> PgBouncer:
        """A new pgbouncer process on the same port: every client connection drops."""
        self.stop()
        return self.start()

    def url(self, database: str, user: str = POSTGRES_SUPERUSER) -> str:
        """SQLAlchemy URL of ``database`` through this pgbouncer."""
        return f"postgresql+psycopg2://{user}@127.0.0.1:{self.port}/{database}"

    def connect(
        self, database: str, user: str = POSTGRES_SUPERUSER, **kwargs: Any
    ) -> psycopg2.extensions.connection:
        """A psycopg2 connection through this pgbouncer (keyword arguments go to connect)."""
        kwargs.setdefault("connect_timeout", 3)
        return psycopg2.connect(
            host="127.0.0.1", port=self.port, dbname=database, user=user, **kwargs
        )

    def show(self, what: str) -> list[dict[str, Any]]:
        """Rows of ``SHOW <what>`` on the admin console (POOLS, CLIENTS, SERVERS, STATS...)."""
        if not re.fullmatch(r"[A-Za-z_]+", what):
            raise ValueError(f"not a SHOW subject: {what!r}")
        connection = self.connect("pgbouncer")
        try:
            connection.autocommit = True  # the console knows no BEGIN
            with connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
                cursor.execute(f"SHOW {what}")
                return [dict(row) for row in cursor.fetchall()]
        finally:
            connection.close()

    def log(self) -> str:
        parts = [
            path.read_text(errors="replace")
            for path in (self._output_path, self.log_path)
            if path.exists()
        ]
        return "\n".join(part for part in parts if part)


@dataclass(frozen=True)
class PoolSample:
    """One look at PgBouncer's pool of one database and user."""

    clients: int  # client connections logged in (SHOW CLIENTS)
    waiting: int  # of those, waiting for a server connection (SHOW POOLS cl_waiting)
    servers: int  # server connections open or opening (SHOW POOLS sv_*)


class PoolSampler(PeriodicSampler):
    """Samples PgBouncer's pool of ``database``/``user`` every ``interval`` seconds in a thread.

    ``with PoolSampler(pgbouncer, database, user) as pool: ...``; afterwards ``pool.samples``
    and the peaks. One admin connection for the whole run: the console accepts a login per
    sample too, but a login every 100 ms would show up in the very numbers being read.
    """

    def __init__(
        self, pgbouncer: PgBouncer, database: str, user: str, *, interval: float = 0.1
    ) -> None:
        super().__init__(interval)
        self.pgbouncer = pgbouncer
        self.database = database
        self.user = user
        self.samples: list[PoolSample] = []

    @contextmanager
    def connected(self) -> Iterator[Callable[[], None]]:
        connection = self.pgbouncer.connect("pgbouncer")
        connection.autocommit = True  # the console knows no BEGIN
        try:
            with connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
                yield lambda: self.samples.append(self._sample(cursor))
        finally:
            connection.close()

    def _sample(self, cursor: psycopg2.extras.RealDictCursor) -> PoolSample:
        def ours(row: dict[str, Any]) -> bool:
            return row["database"] == self.database and row["user"] == self.user

        cursor.execute("SHOW CLIENTS")
        clients = sum(1 for row in cursor.fetchall() if ours(row))
        cursor.execute("SHOW POOLS")
        pools = [row for row in cursor.fetchall() if ours(row)]
        servers = sum(
            row[column]
            for row in pools
            for column in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")
        )
        waiting = sum(row["cl_waiting"] for row in pools)
        return PoolSample(clients=clients, waiting=waiting, servers=servers)

    @property
    def peak_clients(self) -> int:
        return max((sample.clients for sample in self.samples), default=0)

    @property
    def peak_waiting(self) -> int:
        return max((sample.waiting for sample in self.samples), default=0)

    @property
    def peak_servers(self) -> int:
        return max((sample.servers for sample in self.samples), default=0)
