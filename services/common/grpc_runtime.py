"""The gRPC server every data-engine service runs, and the error mapping both sides share.

A service's ``server.py`` holds only its servicer and message conversions; this module owns the
rest: the thread pool (``H2A_GRPC_MAX_WORKERS``), message-size limits, the standard
``grpc.health.v1`` health service with a status per service, server reflection, one interceptor
that refuses calls whose deadline is nearly spent and maps ``H2AError`` to a status code with the
reason in a ``google.rpc.ErrorInfo`` detail (cut to a bounded size: a status travels in headers),
and SIGTERM → NOT_SERVING → graceful stop so in-flight calls finish while health checks keep
answering NOT_SERVING. ``error_from_rpc`` turns such a status back into the typed error.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from types import FrameType
from typing import Any

import grpc
from google.protobuf import descriptor
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from pydantic import BaseModel, ConfigDict, Field

from services.common.config import GrpcSettings, LoggingSettings, StoreSettings
from services.common.errors import H2AError, error_from_reason
from services.common.logs import bounded, configure_logging

__all__ = [
    "ERROR_DOMAIN",
    "GrpcServer",
    "ServiceSettings",
    "error_from_rpc",
    "serve",
    "start_server",
]

_logger = logging.getLogger(__name__)

ERROR_DOMAIN = "hashtag2action"
"""``ErrorInfo.domain`` of our errors; a detail from another domain is not ours to rebuild."""

Register = Callable[[Any, grpc.Server], None]
"""A generated ``add_<Service>Servicer_to_server`` function."""

# A status travels in the grpc-message and grpc-status-details-bin trailers, which a client
# refuses beyond 8 KiB; the message is in both, percent-encoded in the first. Budgets in bytes.
_DETAIL_BYTES = 768
_CONTEXT_ENTRIES = 8
_CONTEXT_KEY_BYTES = 64
_CONTEXT_VALUE_BYTES = 192


class ServiceSettings(BaseModel):
    """The sections every service reads; each service adds its stage section.

    A plain model, not a settings source itself: each section reads its own ``H2A_*`` prefix,
    so the stores of all services agree whenever their ``H2A_STORE_*`` do.
    """

    model_config = ConfigDict(extra="forbid")

    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    log: LoggingSettings = Field(default_factory=LoggingSettings)


def _abort(context: grpc.ServicerContext, error: H2AError) -> None:
    entries = list(error.context.items())[:_CONTEXT_ENTRIES]
    info = error_details_pb2.ErrorInfo(
        reason=error.reason,
        domain=ERROR_DOMAIN,
        metadata={
            bounded(str(key), _CONTEXT_KEY_BYTES): bounded(str(value), _CONTEXT_VALUE_BYTES)
            for key, value in entries
        },
    )
    status = status_pb2.Status(
        code=grpc.StatusCode[error.grpc_status].value[0],
        message=bounded(error.detail, _DETAIL_BYTES),
    )
    status.details.add().Pack(info)
    context.abort_with_status(rpc_status.to_status(status))


def error_from_rpc(error: grpc.RpcError) -> H2AError | None:
    """The typed error a service raised, or None when the failure is not one of ours.

    None means the channel, a deadline or a bug failed rather than the input (UNAVAILABLE from a
    refused connection, DEADLINE_EXCEEDED, INTERNAL without a reason): callers re-raise the
    ``RpcError`` so it fails loudly instead of becoming a rejection record.
    """
    status = rpc_status.from_call(error)  # type: ignore[arg-type]  # RpcError raised by a call
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            rebuilt = error_from_reason(info.reason, status.message)
            rebuilt.context.update(info.metadata)
            return rebuilt
    return None


class _StageInterceptor(grpc.ServerInterceptor):
    """Deadline floor, error mapping, one log line per call and the count of calls in flight,
    for the stage services only.

    Health and reflection are left alone: a kubelet gRPC probe carries a 1 s deadline by
    default and must not be refused by the floor meant for minutes-long stage calls, and health
    keeps answering (NOT_SERVING) while ``drain`` waits for the stage calls.
    """

    def __init__(self, services: set[str], min_deadline_s: float) -> None:
        self._services = services
        self._min_deadline_s = min_deadline_s
        self._calls = threading.Condition()
        self._in_flight = 0
        self._draining = False

    def drain(self, timeout_s: float) -> bool:
        """Refuse new stage calls and wait up to ``timeout_s`` for those in flight to finish.

        Returns:
            True when none is left.
        """
        with self._calls:
            self._draining = True
            return self._calls.wait_for(lambda: self._in_flight == 0, timeout_s)

    def _enter(self) -> bool:
        with self._calls:
            if self._draining:
                return False
            self._in_flight += 1
            return True

    def _leave(self) -> None:
        with self._calls:
            self._in_flight -= 1
            self._calls.notify_all()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method  # "/package.Service/Method"
        if handler is None or handler.unary_unary is None:
            return handler
        if method.split("/")[1] not in self._services:
            return handler
        behaviour = handler.unary_unary

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            remaining = context.time_remaining()
            if remaining is not None and remaining < self._min_deadline_s:
                _logger.warning("deadline too short", extra={"method": method, "left_s": remaining})
                context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{remaining:.3f} s left of the deadline, the minimum is "
                    f"{self._min_deadline_s} s",
                )
            if not self._enter():
                context.abort(grpc.StatusCode.UNAVAILABLE, "the service is shutting down")
            started = time.perf_counter()
            try:
                response = behaviour(request, context)
            except H2AError as error:
                _logger.warning(
                    "call rejected",
                    extra={"method": method, "reason": error.reason, "detail": error.detail},
                )
                _abort(context, error)
            finally:
                self._leave()
            _logger.info(
                "call served",
                extra={"method": method, "ms": round((time.perf_counter() - started) * 1e3, 1)},
            )
            return response

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class GrpcServer:
    """A started server: one stage service plus health and reflection."""

    def __init__(
        self,
        server: grpc.Server,
        health_servicer: health.HealthServicer,
        calls: _StageInterceptor,
        port: int,
        grace_s: float,
    ) -> None:
        self._server = server
        self.health = health_servicer
        self._calls = calls
        self.port = port
        self.grace_s = grace_s

    def stop(self, grace_s: float | None = None) -> None:
        """Stop gracefully: the path SIGTERM takes.

        Health turns NOT_SERVING at once, so probes and load balancers stop routing here, and
        keeps answering so until the process exits; new stage calls are refused (UNAVAILABLE)
        while those in flight get ``grace_s`` to finish. Then the server stops, cancelling any
        still running. Blocks until done.
        """
        grace = self.grace_s if grace_s is None else grace_s
        _logger.info("stopping", extra={"grace_s": grace})
        self.health.enter_graceful_shutdown()
        if not self._calls.drain(grace):
            _logger.warning("grace period over: cancelling the calls in flight")
        self._server.stop(0).wait()
        _logger.info("stopped")

    def stop_on_signals(self) -> None:
        """Stop gracefully on SIGTERM (the kubelet's) or SIGINT; call from the main thread."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            _logger.info("signal received", extra={"signal": signal.Signals(signum).name})
            # Off the signal handler: stop() blocks for up to the grace period.
            threading.Thread(target=self.stop, name="graceful-stop").start()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the server has stopped, or ``timeout_s`` passed; True when it stopped."""
        return not self._server.wait_for_termination(timeout_s)


def start_server(
    servicer: Any, register: Register, service: descriptor.ServiceDescriptor, settings: GrpcSettings
) -> GrpcServer:
    """Build, bind and start a server for one service.

    Args:
        servicer: the service implementation.
        register: the generated ``add_<Service>Servicer_to_server``.
        service: the service's descriptor (``<name>_pb2.DESCRIPTOR.services_by_name[...]``),
            which names it for health checks and reflection.
        settings: host, port (0 picks a free one), workers, message size, grace, deadline floor.

    Returns:
        The running server; ``port`` is the port actually bound.
    """
    limit = settings.max_message_mb * 1024 * 1024
    calls = _StageInterceptor({service.full_name}, settings.min_deadline_s)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers),
        interceptors=[calls],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
    )
    register(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (service.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot bind {settings.host}:{settings.port}")
    server.start()
    # "" is the whole server, the name a kubelet probe asks for when none is configured.
    for name in (service.full_name, ""):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    _logger.info(
        "serving",
        extra={"grpc_service": service.full_name, "port": port, "workers": settings.max_workers},
    )
    return GrpcServer(server, health_servicer, calls, port, settings.grace_s)


def serve(
    servicer: Any,
    register: Register,
    service: descriptor.ServiceDescriptor,
    settings: ServiceSettings,
) -> None:
    """A service process: log set-up, serve until SIGTERM or SIGINT, then stop gracefully."""
    configure_logging(service.name, settings.log.level, settings.log.json_lines)
    # Secrets are SecretStr: they dump masked, so the whole configuration can be logged.
    _logger.info("settings", extra={"settings": settings.model_dump(mode="json")})
    running = start_server(servicer, register, service, settings.grpc)
    running.stop_on_signals()
    running.wait()
