"""Create a bucket on the S3-protocol server the environment names, waiting for it to start.

    python examples/triage/make_bucket.py BUCKET

`make demo` runs it right after starting its embedded moto server on loopback: the endpoint is
`ARKOR_S3_ENDPOINT_URL` and the keys are the usual `AWS_*` variables (read by
:func:`arkor_ops.storage.s3_client_kwargs`, as every other S3 client of the project does).
Exit code 1 when the server does not answer within 30 s.
"""

from __future__ import annotations

import argparse
import time

import boto3
from botocore.exceptions import EndpointConnectionError

from arkor_ops.storage import s3_client_kwargs


def main() -> int:
    """Create the bucket once the server answers; 1 if it never does."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bucket")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    args = parser.parse_args()
    client = boto3.client("s3", **s3_client_kwargs())
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            client.create_bucket(Bucket=args.bucket)
            break
        except EndpointConnectionError:
            if time.monotonic() > deadline:
                print(f"the S3-protocol server at {client.meta.endpoint_url} did not start")
                return 1
            time.sleep(0.2)
    print(f"bucket s3://{args.bucket} ready at {client.meta.endpoint_url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
