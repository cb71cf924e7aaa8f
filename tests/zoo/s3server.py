"""A real S3 API on 127.0.0.1 for the cache tests: moto in server mode, reached through fsspec/s3fs."""

from __future__ import annotations

import contextlib
import os
import uuid

import pytest

from raycluster import free_port


@contextlib.contextmanager
def moto_s3(bucket: str = "zoo-cache"):
    """Start moto's S3 server on 127.0.0.1, create ``bucket``, and point boto (and so s3fs) at it through the
    standard AWS_* variables of this process (inherited by the workers and nodes started afterwards)."""
    server_mod = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import fsspec

        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        # moto keeps its buckets in process-wide memory, shared by every server started in this process: a bucket
        # of its own per use, so an earlier test's cache entries are never seen
        bucket = f"{bucket}-{uuid.uuid4().hex[:12]}"
        fs.mkdir(bucket)
        yield f"s3://{bucket}/zoo", fs
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
