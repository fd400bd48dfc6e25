"""gunicorn settings for production: `gunicorn -c cavra/gunicorn.conf.py cavra.wsgi`.

Every value can be overridden from the environment (docs/deployment.md). Metrics are
multiprocess-safe: each worker writes its samples under PROMETHEUS_MULTIPROC_DIR, emptied at
start, and a dead worker's live gauges are dropped.
"""

import os
import shutil
import tempfile
from pathlib import Path

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 30
keepalive = 5
# One JSON line per request is written by the app (closure/ops/logs.py); gunicorn's own access
# log would only repeat it without the request id.
accesslog = None
errorlog = "-"
# Requests a worker serves before it is replaced: bounds the damage of a slow leak.
max_requests = 2000
max_requests_jitter = 200
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
# No runtime control socket: its default path is shared by every gunicorn of the user, and
# workers are managed by the service manager's signals instead.
control_socket_disable = True

_metrics_dir = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", str(Path(tempfile.gettempdir()) / "cavra-prometheus")
)


def on_starting(server):
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    Path(_metrics_dir).mkdir(parents=True, exist_ok=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
