"""The host name Airflow records for a task instance, per Celery worker of the test cluster.

Both workers run on one machine, so Airflow's default (``socket.getfqdn``) would give them the same
name. Each worker is started with ``QMATIC_CLUSTER_HOST`` set and with
``AIRFLOW__CORE__HOSTNAME_CALLABLE=cluster_host.hostname`` (this directory is on its PYTHONPATH), so
``task_instance.hostname`` tells the two "hosts" apart as it would on a real cluster.
"""

from __future__ import annotations

import os


def hostname() -> str:
    return os.environ["QMATIC_CLUSTER_HOST"]
