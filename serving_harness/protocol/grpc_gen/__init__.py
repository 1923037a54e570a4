"""Generated gRPC stubs (do not edit): the OIP v2 ``inference.GRPCInferenceService`` and ``grpc.health.v1``.

``regenerate.py`` rebuilds them from the ``.proto`` files beside it.
"""
