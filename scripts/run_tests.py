"""Run the test suite on the real services when they answer, else on the embedded backends.

MariaDB, Redis and RabbitMQ are looked for at DATABASE_URL / REDIS_URL / CELERY_BROKER_URL or
their local defaults. With REQUIRE_SERVICES=1 (CI) a missing service is an error, not a fallback.
Arguments are passed to pytest.
"""

import os
import socket
import sys
from urllib.parse import urlsplit

DEFAULTS = {
    "DATABASE_URL": "mysql://root@127.0.0.1:3306/clickserver",
    "REDIS_URL": "redis://127.0.0.1:6379/1",
    "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
}
PORTS = {"mysql": 3306, "redis": 6379, "amqp": 5672}


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or PORTS[parts.scheme]), timeout=2
        ):
            return True
    except OSError:
        return False


def main() -> int:
    env = dict(os.environ)
    require = env.get("REQUIRE_SERVICES") == "1"
    missing = []
    for name, default in DEFAULTS.items():
        url = env.get(name) or default
        if reachable(url):
            env[name] = url
            print(f"tests: {name} = {url}")
        else:
            missing.append(f"{name} ({url})")
            env.pop(name, None)
    if missing and require:
        print("tests: REQUIRE_SERVICES=1 but unreachable: " + ", ".join(missing), file=sys.stderr)
        return 2
    if missing:
        print("tests: embedded backends for " + ", ".join(missing) + " (service tests skip)")
    env.setdefault("DJANGO_SECRET_KEY", "test-only-secret")
    env.setdefault("CLICKSERVER_VAR_DIR", os.path.abspath("var/test"))
    env.setdefault("CELERY_DEFAULT_QUEUE", "clickserver-test")
    env.setdefault("CACHE_KEY_PREFIX", "cs-test")
    env.setdefault("PIPELINE_SETTLE_SECONDS", "0")
    env.setdefault("DJANGO_STATIC_MANIFEST", "0")
    # The test client and live servers speak plain HTTP; production redirects to HTTPS.
    env.setdefault("DJANGO_SECURE_SSL_REDIRECT", "0")
    args = [sys.executable, "-m", "pytest", *sys.argv[1:]]
    os.execve(sys.executable, args, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
