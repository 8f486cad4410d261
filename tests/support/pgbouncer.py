"""A private PgBouncer in front of the local PostgreSQL, and roles with a connection limit.

PgBouncer lets many app processes share few PostgreSQL sessions. In transaction pooling a
client's consecutive transactions may run on different server sessions, so nothing that lives
in a session (SQL PREPARE, SET without LOCAL, startup ``options``) can be relied upon. The tests
in tests/infra prove each of these against the real pooler.

Everything binds to 127.0.0.1 on free ports, writes its log to a temporary directory and is
stopped by the caller (use them as context managers).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from tests.support.servers import Managed, free_port, stop_process, wait_until

# Debian's package installs the binary into /usr/sbin, which is not on every user's PATH.
PGBOUNCER_FALLBACK = "/usr/sbin/pgbouncer"
# pgbouncer refuses to run as root; it switches to this user (-u) when started as root.
PGBOUNCER_USER = "postgres"
POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_SUPERUSER = "postgres"


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


class PoolSampler:
    """Samples PgBouncer's pool of ``database``/``user`` every ``interval`` seconds in a thread.

    ``with PoolSampler(pgbouncer, database, user) as pool: ...``; afterwards ``pool.samples``
    and the peaks. One admin connection for the whole run: the console accepts a login per
    sample too, but a login every 100 ms would show up in the very numbers being read.
    """

    def __init__(
        self, pgbouncer: PgBouncer, database: str, user: str, *, interval: float = 0.1
    ) -> None:
        self.pgbouncer = pgbouncer
        self.database = database
        self.user = user
        self.interval = interval
        self.samples: list[PoolSample] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PoolSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            connection = self.pgbouncer.connect("pgbouncer")
        except psycopg2.Error as error:
            self.error = f"{type(error).__name__}: {error}"
            return
        connection.autocommit = True  # the console knows no BEGIN
        try:
            with connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
                while True:
                    self.samples.append(self._sample(cursor))
                    if self._stop.wait(self.interval):
                        return
        except psycopg2.Error as error:  # pgbouncer went away: keep what was sampled
            self.error = f"{type(error).__name__}: {error}"
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


def superuser_connection(database: str = "postgres") -> psycopg2.extensions.connection:
    """A direct autocommit connection to the local PostgreSQL as the superuser."""
    connection = psycopg2.connect(
        host=POSTGRES_HOST,
        port=POSTGRES_PORT,
        dbname=database,
        user=POSTGRES_SUPERUSER,
        connect_timeout=3,
    )
    connection.autocommit = True
    return connection


@contextmanager
def limited_role(name: str, connection_limit: int, database: str) -> Iterator[str]:
    """A login role allowed at most ``connection_limit`` sessions, with full rights on the
    ``public`` schema of ``database`` (now and for objects created later); dropped afterwards.

    Stands in for a production database user whose sessions are scarce: app instances going
    through a pooler must stay within the limit however many of them there are.
    """
    role = sql.Identifier(name)
    _drop_role(name, database)  # a leftover of an interrupted run
    server = superuser_connection()
    try:
        with server.cursor() as cursor:
            cursor.execute(
                sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT {}").format(
                    role, sql.Literal(connection_limit)
                )
            )
    finally:
        server.close()
    try:
        connection = superuser_connection(database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    sql.SQL("GRANT ALL ON DATABASE {} TO {}").format(sql.Identifier(database), role)
                )
                for statement in (
                    "GRANT ALL ON SCHEMA public TO {}",
                    "GRANT ALL ON ALL TABLES IN SCHEMA public TO {}",
                    "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {}",
                    "GRANT ALL ON ALL FUNCTIONS IN SCHEMA public TO {}",
                    # Tables the superuser creates later (migrations, a recreated schema).
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {}",
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO {}",
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO {}",
                ):
                    cursor.execute(sql.SQL(statement).format(role))
        finally:
            connection.close()
        yield name
    finally:
        _drop_role(name, database)


def _drop_role(name: str, database: str) -> None:
    """Drop the role if it exists: end its sessions, hand over what it owns, drop its grants."""
    role = sql.Identifier(name)
    server = superuser_connection()
    try:
        with server.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            if cursor.fetchone() is None:
                return
            # No new sessions while its old ones are ended (a pooler may reconnect).
            cursor.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (name,),
            )
            wait_until(
                lambda: _sessions_of(cursor, name) == 0, timeout=10, what=f"{name}'s sessions"
            )
            # Privileges and default privileges live per database: clean up where they were
            # granted; REASSIGN/DROP OWNED also revoke its rights on shared objects.
            connection = superuser_connection(database)
            try:
                with connection.cursor() as in_database:
                    in_database.execute(
                        sql.SQL("REASSIGN OWNED BY {} TO {}").format(
                            role, sql.Identifier(POSTGRES_SUPERUSER)
                        )
                    )
                    in_database.execute(sql.SQL("DROP OWNED BY {}").format(role))
            finally:
                connection.close()
            cursor.execute(sql.SQL("DROP ROLE {}").format(role))
    finally:
        server.close()


def _sessions_of(cursor: psycopg2.extensions.cursor, name: str) -> int:
    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (name,))
    row = cursor.fetchone()
    return int(row[0]) if row else 0
