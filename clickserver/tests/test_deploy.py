"""Production settings pass Django's deployment checklist; deploy/ configs pass their own tools."""

import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """What a production host sets: no DEBUG, a real secret, its host name, nothing else."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "clickserver.settings",
        "DJANGO_SECRET_KEY": "x7Jq2-long-random-production-secret-" + "k" * 40,
        "DJANGO_ALLOWED_HOSTS": "analytics.example.com",
        "CLICKSERVER_VAR_DIR": str(tmp_path / "var"),
        **overrides,
    }


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_has_no_security_warning_in_production_settings(tmp_path):
    # --tag security: the deployment checklist itself (drf-spectacular's schema warnings are not
    # deployment settings).
    args = ["check", "--deploy", "--tag", "security", "--fail-level", "WARNING"]

    result = manage(production_env(tmp_path), *args)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "System check identified no issues (1 silenced).\n"


def test_production_settings_redirect_to_https_behind_the_proxy_with_hsts(tmp_path):
    code = (
        "from django.conf import settings as s; print(s.SECURE_SSL_REDIRECT, "
        "s.SECURE_PROXY_SSL_HEADER, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
        "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, "
        "s.SECURE_REDIRECT_EXEMPT)"
    )

    result = manage(production_env(tmp_path), "shell", "--no-imports", "-c", code)
    local = manage(production_env(tmp_path, DJANGO_DEBUG="1"), "shell", "--no-imports", "-c", code)

    assert result.stdout == (
        "True ('HTTP_X_FORWARDED_PROTO', 'https') 31536000 True True True True ['^health/']\n"
    ), result.stderr
    assert local.stdout == (
        "False ('HTTP_X_FORWARDED_PROTO', 'https') 0 True False False True ['^health/']\n"
    ), local.stderr
