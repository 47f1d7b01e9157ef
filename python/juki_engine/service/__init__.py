"""The gRPC edge: everything a remote caller can reach (protos/juki/v1).

- `identity`: certificate → agency or municipality, the trust boundary (issuing CA, subject,
  key pins, CRL);
- `wire`: message and string limits, Arrow IPC decoding and validation, result framing;
- `frontend`: what every call shares and the one discipline that closes every call;
- `verification`: the typed per-record API; `bulk`: the columnar streaming API;
- `changes`: municipalities' change submissions; `notices`: their 転入通知 streams;
  `subscriptions`: agencies told of watched residents' changes; `acknowledgements`: the durable
  cursors and watch lists of both;
- `app`: building and running the server (ports, TLS, health, reflection, signals).
"""

from juki_engine.service.app import RPC_WORKERS, Server, ServerTLS, serve_forever, start
from juki_engine.service.bulk import MAX_BULK_JOBS
from juki_engine.service.frontend import Frontend, ServerBusy, status_code
from juki_engine.service.identity import PeerCertificate, TrustStore

__all__ = [
    "MAX_BULK_JOBS",
    "RPC_WORKERS",
    "Frontend",
    "PeerCertificate",
    "Server",
    "ServerBusy",
    "ServerTLS",
    "TrustStore",
    "serve_forever",
    "start",
    "status_code",
]
