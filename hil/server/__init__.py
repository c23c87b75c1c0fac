"""The remote model server of AgileNN: receives a device's compressed remote-channel codes over TCP, decodes
and dequantizes them to the centroids, runs the Remote NN and returns its logits (hil/server/PROTOCOL.md).

    hil serve --model models/agilenn-cifar10            # command line
    pytest --hil-model models/agilenn-cifar10           # the `remote_model` fixture starts one in-process
    pytest --hil-server 192.0.2.5:7070                  # ... or uses a running one

The protocol does not depend on who sends the payload: the harness forwarding what the device sent over the
serial link, or (on a bench, later) the ESP32-S3 itself over WiFi.
"""

from hil.server.client import ModelInfo, RemoteClient, RemoteError, RemoteResult, ServerInfo, parse_address
from hil.server.protocol import MsgType, ProtocolError, Status
from hil.server.remote_model import RemoteModel, RemoteModelError, RemoteSpec, has_remote_model, read_spec
from hil.server.service import RemoteServer, ServerConfig, ServerStats, serve_models

__all__ = [
    "ModelInfo", "MsgType", "ProtocolError", "RemoteClient", "RemoteError", "RemoteModel", "RemoteModelError",
    "RemoteResult", "RemoteServer", "RemoteSpec", "ServerConfig", "ServerInfo", "ServerStats", "Status",
    "has_remote_model", "parse_address", "read_spec", "serve_models",
]
