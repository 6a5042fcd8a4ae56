"""gRPC plumbing the servers and clients share; no protocol rules live here.

``status`` is the one map from domain errors to gRPC status codes, ``tls``
mutual-TLS credentials and the peer's member id, ``peer_limits`` calls in
flight per peer, ``decoding`` refusing requests that do not decode.
"""
