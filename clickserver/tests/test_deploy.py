"""Production settings pass Django's deployment checklist; deploy/ configs pass their own tools."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
        "True ('HTTP_X_FORWARDED_PROTO', 'https') 31536000 True True True True "
        "['^health/', '^metrics$']\n"
    ), result.stderr
    assert local.stdout == (
        "False ('HTTP_X_FORWARDED_PROTO', 'https') 0 True False False True "
        "['^health/', '^metrics$']\n"
    ), local.stderr


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NGINX_TEMPLATE = BASE_DIR / "deploy" / "nginx.conf"
TEMPLATE_VARIABLES = (
    "CLICKSERVER_SERVER_NAME",
    "CLICKSERVER_UPSTREAM",
    "TLS_CERTIFICATE",
    "TLS_CERTIFICATE_KEY",
)


def envsubst(template: str, values: dict[str, str]) -> str:
    """What the nginx image's entrypoint does: only the named variables, nginx's own untouched."""
    return re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    certificate, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=analytics.example.com", "-keyout", str(key), "-out", str(certificate)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return certificate, key


def test_nginx_template_names_only_the_documented_variables():
    template = NGINX_TEMPLATE.read_text()

    assert set(re.findall(r"\$\{(\w+)\}", template)) == set(TEMPLATE_VARIABLES)


def test_nginx_config_passes_nginx_t_with_tls_and_redirects_port_80(tmp_path):
    if not os.path.exists(NGINX):
        pytest.skip(f"no nginx at {NGINX} (scripts/system_deps.sh --dev installs it)")
    certificate, key = self_signed_certificate(tmp_path)
    values = {
        "CLICKSERVER_SERVER_NAME": "analytics.example.com",
        "CLICKSERVER_UPSTREAM": "127.0.0.1:8000",
        "TLS_CERTIFICATE": str(certificate),
        "TLS_CERTIFICATE_KEY": str(key),
    }
    site = tmp_path / "clickserver.conf"
    site.write_text(envsubst(NGINX_TEMPLATE.read_text(), values))
    # The main file the nginx image (and Debian) wrap conf.d/ in, with every path under tmp_path.
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nevents {{}}\nhttp {{\n"
        + "".join(
            f"  {kind}_temp_path {tmp_path}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"  access_log off;\n  include {site};\n}}\n"
    )

    result = subprocess.run(
        [NGINX, "-t", "-e", "stderr", "-p", str(tmp_path), "-c", str(main)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"nginx: the configuration file {main} syntax is ok",
        f"nginx: configuration file {main} test is successful",
    ]
    servers = site.read_text().split("\nserver {")[1:]
    assert [
        ("listen 443 ssl;" in s, "return 308 https://$host$request_uri;" in s) for s in servers
    ] == [
        (False, True),
        (True, False),
    ]


SYSTEMD_UNITS = sorted((BASE_DIR / "deploy" / "systemd").glob("*.service"))


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze (Debian's systemd package; scripts/system_deps.sh --dev)")
    # The units run programs from the install directory, /opt/clickserver, which verify checks
    # for; a copy of that layout under tmp_path holds executables in their place.
    install = tmp_path / "opt" / "clickserver"
    (install / ".venv" / "bin").mkdir(parents=True)
    for program in ("gunicorn", "celery"):
        path = install / ".venv" / "bin" / program
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    units = []
    for unit in SYSTEMD_UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/clickserver", str(install)))
        units.append(str(copy))

    result = subprocess.run(
        [analyze, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60
    )

    assert [unit.name for unit in SYSTEMD_UNITS] == [
        "clickserver-beat.service",
        "clickserver-web.service",
        "clickserver-worker-live.service",
        "clickserver-worker.service",
    ]
    # Any warning (an unknown key, a bad value) counts: verify itself exits 0 on those.
    assert (result.returncode, result.stderr) == (0, "")


def test_a_former_secret_key_still_verifies_what_it_signed(tmp_path):
    # docs/operations.md: rotate DJANGO_SECRET_KEY, keep the old one as a fallback for a while.
    sign = "from django.core import signing; print(signing.dumps('session-of-alice'))"
    signed = manage(
        production_env(tmp_path, DJANGO_SECRET_KEY="old-" + "o" * 50),
        "shell", "--no-imports", "-c", sign,
    ).stdout.strip()  # fmt: skip
    check = f"from django.core import signing; print(signing.loads({signed!r}))"

    rotated = manage(
        production_env(
            tmp_path,
            DJANGO_SECRET_KEY="new-" + "n" * 50,
            DJANGO_SECRET_KEY_FALLBACKS="old-" + "o" * 50,
        ),
        "shell", "--no-imports", "-c", check,
    )  # fmt: skip

    assert rotated.stdout == "session-of-alice\n", rotated.stderr
