"""The proxy face of the decision core: `gateway serve`'s HTTP/1.1 data path (SPEC §7).

- `client.py`: the client side, an `asyncio.Protocol` fed to httptools (llhttp); edge
  limits, timeouts, pipelining, 100-continue, the request head rewritten for upstream.
- `upstream.py`: the upstream side, keep-alive connections parsed by httptools, the pool.
- `http.py`: header sets, status lines and chunk framing shared by both sides.
- `server.py`: the listener (TLS when configured) and its graceful stop.
"""

from gateway.faces.proxy.server import Proxy

__all__ = ["Proxy"]
