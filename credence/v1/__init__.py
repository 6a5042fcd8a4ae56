"""Generated protobuf and gRPC stubs of proto/credence/v1 (do not edit)."""
