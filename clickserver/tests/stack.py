"""A private, killable clickserver stack for the fault-injection suite.

Everything here listens on 127.0.0.1 only, on free ports, with data in a temporary directory: a
MariaDB (`mariadb-install-db` + `mariadbd`), a Redis and a RabbitMQ node of their own, then
gunicorn with deploy's config, a Celery worker and beat, as production runs them. The shared
services on 3306/6379/5672 are never touched: other test runs on the same machine use them, so
the suite kills and restarts only what it started.

Every process runs in its own process group (RabbitMQ's node daemonises, so it is stopped through
`rabbitmqctl` and its pid file) and every one is registered for cleanup, by the fixture's
finaliser and by `atexit`, whatever happens to the test.
"""

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from celery.beat import PersistentScheduler

ROOT = Path(__file__).resolve().parent.parent.parent
BINARIES = ("mariadb-install-db", "mariadbd", "redis-server", "rabbitmq-server", "rabbitmqctl")
# MariaDB users: the worker connects as its own user, so that a transaction it has open can be
# told apart from the web's (information_schema.PROCESSLIST.USER).
WEB_USER = "root"
WORKER_USER = "worker"
DATABASE = "clickserver"

# What beat runs here: the pipeline's safety-net sweeps. The daily and weekly jobs (model
# training, affinity rebuild, pruning) would make the run's length depend on the wall clock: a
# run at 04:07 on a Sunday would train a model on the worker mid-stream.
BEAT_ENTRIES = ("events-process-sweep", "analytics-rollups-sweep", "shopify-webhooks-sweep")

_cleanups: list[Callable[[], None]] = []


class SweepsOnlyScheduler(PersistentScheduler):
    """Celery beat's file scheduler with only `BEAT_ENTRIES` of CELERY_BEAT_SCHEDULE."""

    def setup_schedule(self) -> None:
        self.app.conf.beat_schedule = {
            name: entry
            for name, entry in self.app.conf.beat_schedule.items()
            if name in BEAT_ENTRIES
        }
        super().setup_schedule()


def unavailable_reason() -> str | None:
    """Why the private stack cannot run here, or None."""
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        return (
            f"the fault suite needs {', '.join(missing)} (Debian: mariadb-server, "
            "redis-server, rabbitmq-server)"
        )
    if os.geteuid() != 0:
        # Debian's rabbitmq-server wrapper runs a node only as root (dropping to rabbitmq).
        return "the fault suite starts a private RabbitMQ node, which needs root here"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool], *, timeout: float, what: str, every: float = 0.1
) -> float:
    """Poll `condition` until true; the seconds it took. Raises after `timeout` seconds."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(every)
    return time.monotonic() - started


def cleanup_all() -> None:
    while _cleanups:
        _cleanups.pop()()


atexit.register(cleanup_all)


class Process:
    """One command in its own process group; `kill()` is kill -9 of the whole group."""

    def __init__(self, name: str, command: list[str], *, env: dict[str, str], log_dir: Path):
        self.name, self.command, self.env = name, command, env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen | None = None
        _cleanups.append(self.kill)

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal_group(self, number: int) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, number)

    def kill(self) -> None:
        if self.popen is None:
            return
        self.signal_group(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, *, timeout: float = 20) -> None:
        if self.popen is None:
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        # Children left in the group (a prefork pool after a warm shutdown) go too.
        self.signal_group(signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class PrivateRedis:
    name = "redis"

    def __init__(self, base: Path) -> None:
        self.port = free_port()
        self.process = Process(
            "redis",
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(base),
            ],
            env=dict(os.environ),
            log_dir=base,
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process.start()
        wait_until(lambda: port_open(self.port), timeout=20, what="private redis")

    def kill(self) -> None:
        self.process.kill()


class PrivateMariaDB:
    name = "mariadb"

    def __init__(self, base: Path) -> None:
        self.base = base / "mariadb"
        self.base.mkdir()
        self.port = free_port()
        self.process = Process(
            "mariadbd",
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={self.base / 'data'}",
                f"--socket={self.base / 'sock'}",
                f"--pid-file={self.base / 'pid'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=128M",
                # Durable at commit, as in production: a kill -9 must not lose an acknowledged row.
                "--innodb-flush-log-at-trx-commit=1",
                "--max-connections=200",
            ],
            env=dict(os.environ),
            log_dir=base,
        )

    def install(self) -> None:
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.base / 'data'}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def url(self, user: str = WEB_USER) -> str:
        return f"mysql://{user}@127.0.0.1:{self.port}/{DATABASE}"

    def connect(self, *, autocommit: bool = True):
        import MySQLdb

        return MySQLdb.connect(
            host="127.0.0.1",
            port=self.port,
            user="root",
            database=DATABASE,
            autocommit=autocommit,
        )

    def start(self) -> None:
        self.process.start()
        wait_until(lambda: port_open(self.port), timeout=60, what="private mariadb")

    def create_database(self) -> None:
        import MySQLdb

        connection = MySQLdb.connect(host="127.0.0.1", port=self.port, user="root")
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            cursor.execute(f"CREATE USER '{WORKER_USER}'@'127.0.0.1'")
            cursor.execute(f"GRANT ALL ON {DATABASE}.* TO '{WORKER_USER}'@'127.0.0.1'")
        connection.close()

    def kill(self) -> None:
        self.process.kill()


class PrivateRabbitMQ:
    """A second RabbitMQ node beside the shared one: its own name, ports, data and config.

    The node daemonises (and drops to the rabbitmq user), so it is stopped with `rabbitmqctl
    stop` and, should that fail, by the pid in its pid file. Its directory is world-writable
    because the node does not run as root.
    """

    name = "rabbitmq"

    def __init__(self, base: Path) -> None:
        self.base = base / "rabbitmq"
        self.base.mkdir()
        self.base.chmod(0o777)
        self.port, self.dist_port = free_port(), free_port()
        self.node = f"cs-faults-{os.getpid()}@localhost"
        (self.base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (self.base / "enabled_plugins").write_text("[].\n")
        for path in self.base.iterdir():
            path.chmod(0o644)
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "pid"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
        }
        _cleanups.append(self.kill)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self) -> None:
        subprocess.run(
            ["rabbitmq-server", "-detached"],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=30,
        )
        wait_until(lambda: port_open(self.port), timeout=60, what="private rabbitmq", every=0.2)

    def stop(self) -> None:
        subprocess.run(
            ["rabbitmqctl", "-n", self.node, "stop", str(self.base / "pid")],
            env=self.env,
            capture_output=True,
            timeout=60,
        )
        wait_until(lambda: not port_open(self.port), timeout=30, what="rabbitmq stop")

    def kill(self) -> None:
        try:
            pid = int((self.base / "pid").read_text().strip())
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass


class Stack:
    """The private services and the three clickserver processes on them."""

    def __init__(self) -> None:
        # tmpfs where there is one: fsync at every commit stays cheap, durability across a
        # process kill is the same.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.base = Path(tempfile.mkdtemp(prefix="cs-faults-", dir=shm))
        self.base.chmod(0o755)
        _cleanups.append(lambda: shutil.rmtree(self.base, ignore_errors=True))
        self.redis = PrivateRedis(self.base)
        self.mariadb = PrivateMariaDB(self.base)
        self.rabbitmq = PrivateRabbitMQ(self.base)
        self.web_port = free_port()
        self.queue = f"cs-faults-{os.getpid()}"
        self.web: Process | None = None
        self.worker: Process | None = None
        self.beat: Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def env(self, *, database_user: str = WEB_USER) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.mariadb.url(database_user),
            "REDIS_URL": self.redis.url,
            "CELERY_BROKER_URL": self.rabbitmq.url,
            "CELERY_DEFAULT_QUEUE": self.queue,
            "CACHE_KEY_PREFIX": self.queue,
            "DJANGO_SECRET_KEY": "faults",
            "DJANGO_DEBUG": "0",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "DJANGO_STATIC_MANIFEST": "0",
            "CLICKSERVER_VAR_DIR": str(self.base / "var"),
            # Production's value (the test run sets 0 for its own in-process pipeline tests).
            "PIPELINE_SETTLE_SECONDS": "2.0",
            # The sweep is the safety net for messages lost with a broker or a killed worker.
            "PIPELINE_SWEEP_SECONDS": "3",
            "DATABASE_CONN_MAX_AGE": "60",
            "GUNICORN_BIND": f"127.0.0.1:{self.web_port}",
            "GUNICORN_WORKERS": "2",
            "GUNICORN_THREADS": "4",
            "GUNICORN_ACCESS_LOG": "",
            "PYTHONUNBUFFERED": "1",
        }

    def start_services(self) -> None:
        self.mariadb.install()
        self.mariadb.start()
        self.redis.start()
        self.rabbitmq.start()
        self.mariadb.create_database()

    def manage(self, *args: str) -> str:
        return self.python("manage.py", *args)

    def python(self, *args: str) -> str:
        """Run a Python script or `-m module` on the private services; its standard output."""
        return subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=self.env(),
            check=True,
            capture_output=True,
            text=True,
            timeout=180,
        ).stdout

    def start_processes(self) -> None:
        python = sys.executable
        celery = [python, "-m", "celery", "-A", "clickserver"]
        self.web = Process(
            "gunicorn",
            [python, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "clickserver.wsgi"],
            env=self.env(),
            log_dir=self.base,
        )
        self.worker = Process(
            "worker",
            [
                *celery,
                "worker",
                "--concurrency",
                "2",
                "--queues",
                f"{self.queue},{self.queue}.live",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env=self.env(database_user=WORKER_USER),
            log_dir=self.base,
        )
        self.beat = Process(
            "beat",
            [
                *celery,
                "beat",
                "--scheduler",
                "clickserver.tests.stack:SweepsOnlyScheduler",
                "--loglevel",
                "WARNING",
            ],
            env=self.env(),
            log_dir=self.base,
        )
        for process in (self.web, self.worker, self.beat):
            process.start()
        wait_until(lambda: port_open(self.web_port), timeout=60, what="gunicorn")

    def logs(self) -> str:
        processes = [self.web, self.worker, self.beat, self.mariadb.process, self.redis.process]
        return "\n".join(
            f"--- {process.name}\n{process.log_tail()}" for process in processes if process
        )

    def close(self) -> None:
        for process in (self.web, self.worker, self.beat):
            if process is not None:
                process.stop(timeout=10)
        try:
            self.rabbitmq.stop()
        except (subprocess.SubprocessError, TimeoutError):
            self.rabbitmq.kill()
        self.redis.kill()
        self.mariadb.process.stop(timeout=20)
        cleanup_all()
