"""A real gRPC server for veer-node's tests: grpc.health.v1 (grpcio-health-checking) and one
method, /veer.test.Echo/Who, that answers with its name in the `x-backend` initial metadata.

Usage: grpc_health_server.py NAME ADDRESS SERVICE
Prints `PORT <n>` once serving on ADDRESS:<n>. Each line on stdin sets the health of SERVICE
(and of the server as a whole): SERVING or NOT_SERVING, acknowledged with `OK <status>`. It
stops when stdin closes (the test dropped it) or after 10 minutes, whichever comes first.
"""

import os
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main():
    name, address, service = sys.argv[1], sys.argv[2], sys.argv[3]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)

    def who(request, context):
        context.send_initial_metadata((("x-backend", name),))
        return name.encode()

    handler = grpc.method_handlers_generic_handler(
        "veer.test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{address}:0")
    for s in (service, ""):
        checker.set(s, health_pb2.HealthCheckResponse.SERVING)
    server.start()
    print(f"PORT {port}", flush=True)
    deadline = threading.Timer(600, lambda: os._exit(0))
    deadline.daemon = True
    deadline.start()
    for line in sys.stdin:
        status = line.strip()
        if status not in ("SERVING", "NOT_SERVING"):
            continue
        for s in (service, ""):
            checker.set(s, getattr(health_pb2.HealthCheckResponse, status))
        print(f"OK {status}", flush=True)
    server.stop(0)
    sys.exit(0)


if __name__ == "__main__":
    main()
