"""The InnoDB buffer pool size a benchmark runs with, set on the server for the run.

Benchmarks that fill tables of several GiB use deploy/docker-compose.yml's 1 GiB pool, so they
measure the database as deployed rather than the package default of 128 MiB.
"""

import argparse

from django.db import connection

DEPLOY_MIB = 1024


def buffer_pool_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--buffer-pool-mib",
        type=int,
        default=DEPLOY_MIB,
        help="innodb_buffer_pool_size for the run, as deploy/docker-compose.yml configures it "
        "(0: leave the server's setting)",
    )


def buffer_pool_apply(mib: int) -> None:
    if mib and connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute("SET GLOBAL innodb_buffer_pool_size = %s", [mib << 20])
