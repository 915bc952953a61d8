"""The HTTP(S) proxy an S3 request goes through, chosen as boto3 chooses it, for pyarrow's S3 client too.

boto3 (listings, heads, the lease) takes `HTTPS_PROXY` / `HTTP_PROXY` (either case) and `NO_PROXY` from the
environment: the proxy of the request's scheme, unless NO_PROXY names its host (urllib's getproxies and proxy_bypass,
botocore.utils.get_environ_proxies). pyarrow's S3 client (every read and write; the AWS SDK's curl handle) ignores
every proxy variable. On a node that reaches the store only through a proxy the listing worked and every read failed
(`Could not resolve host`, or a connection that timed out); with a store on the local network and a NO_PROXY that
does not name it, the reads went direct and the listing through the proxy. pipeline.storage gives pyarrow the proxy
proxy_for chooses from the environment of the process that makes the client. A pyarrow filesystem made on the driver
and sent to a task (the embed job's reads and writes) keeps the driver's choice on the worker (its proxy_options are
pickled with it), while boto3 and filesystems made on a worker choose from the worker's: on a cluster every node needs
the same proxy variables (infra/README.md).

`ALL_PROXY` is read by neither client (botocore looks the proxy up by scheme only). Pure Python.
"""

from __future__ import annotations

from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass


def proxy_for(endpoint_url: str | None, region: str | None) -> str | None:
    """The proxy URL (`http://[user:pass@]host:port`) boto3 would send a request to `endpoint_url` through, from
    this process's environment; None for a direct connection. With no endpoint, AWS's regional S3 host (a NO_PROXY
    entry `.amazonaws.com` matches it; one naming a single bucket's virtual host does not).

    Args:
        endpoint_url: storage.endpoint_url (`scheme://host[:port]`), or None for AWS.
        region: storage.region, for AWS's host name (None: us-east-1).
    """
    url = endpoint_url or f"https://s3.{region or 'us-east-1'}.amazonaws.com"
    parts = urlsplit(url if "://" in url else f"https://{url}")
    proxy = getproxies().get(parts.scheme)
    if not proxy or proxy_bypass(parts.netloc):
        return None
    # botocore's _fix_proxy_url: a proxy given without a scheme is an HTTP proxy
    if proxy.startswith(("http:", "https:")):
        return proxy
    return "http:" + proxy if proxy.startswith("//") else "http://" + proxy
