"""A local S3 server for tests: moto's server mode on loopback, a bucket, and the environment that points
fsspec (s3fs) and any child process at it."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from moto.server import ThreadedMotoServer


@contextmanager
def local_s3() -> Iterator[tuple[str, dict[str, str]]]:
    """Yields (bucket, env): env holds the AWS_* variables that point at the server; they are also set in
    this process while the block runs."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server._server.server_port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # fsspec reuses filesystems: none may point at another server
    try:
        bucket = f"runs-{secrets.token_hex(4)}"
        s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
        yield bucket, env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
