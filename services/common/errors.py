"""Typed errors shared by every stage, mapped once to gRPC status codes.

Each subclass carries a stable machine-readable ``reason`` (it travels in gRPC ``ErrorInfo`` and
in rejection records), the gRPC status name it maps to, and whether a retry may succeed.
A verdict that is a normal outcome (too few frames with a person) is not an error: it is a
result field that still becomes a record.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ConfigError",
    "DeadlineExceeded",
    "DownloadFailed",
    "FilteredOut",
    "FrameTooLarge",
    "H2AError",
    "IntegrityError",
    "InvalidKey",
    "InvalidRequest",
    "InvalidSource",
    "NoVideoStream",
    "ObjectNotFound",
    "QuotaExceeded",
    "ServiceUnavailable",
    "SourceNotAllowed",
    "SourceNotFound",
    "SourceTooLarge",
    "StoreUnavailable",
    "TooLong",
    "TooShort",
    "UnreadableVideo",
    "error_from_reason",
]


class H2AError(Exception):
    """Root of every expected failure; ``reason`` is stable and machine-readable."""

    reason: ClassVar[str] = "H2A_ERROR"
    grpc_status: ClassVar[str] = "INTERNAL"
    retryable: ClassVar[bool] = False

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class ConfigError(H2AError):
    reason = "INVALID_CONFIG"
    grpc_status = "INVALID_ARGUMENT"


class InvalidRequest(H2AError):
    """A gRPC request whose fields do not form a valid record (a segment past its end, ...)."""

    reason = "INVALID_REQUEST"
    grpc_status = "INVALID_ARGUMENT"


class InvalidSource(H2AError):
    """Bad URL, private-network target, path traversal, unsupported scheme."""

    reason = "INVALID_SOURCE"
    grpc_status = "INVALID_ARGUMENT"


class SourceNotAllowed(H2AError):
    """A local path a remote caller named outside the ingestion service's allowed roots."""

    reason = "SOURCE_NOT_ALLOWED"
    grpc_status = "PERMISSION_DENIED"


class SourceNotFound(H2AError):
    reason = "SOURCE_NOT_FOUND"
    grpc_status = "NOT_FOUND"


class DownloadFailed(H2AError):
    """The source could not be fetched (HTTP error, refused connection, time limit)."""

    reason = "DOWNLOAD_FAILED"
    grpc_status = "UNAVAILABLE"
    retryable = True


class SourceTooLarge(H2AError):
    reason = "SOURCE_TOO_LARGE"
    grpc_status = "INVALID_ARGUMENT"


class FrameTooLarge(H2AError):
    """Frames over the pixel limit, or of a size the stream header does not give: decoding even
    one would take memory the file's size does not suggest (a 16000x16000 image in 250 KB)."""

    reason = "FRAME_TOO_LARGE"
    grpc_status = "INVALID_ARGUMENT"


class UnreadableVideo(H2AError):
    """Empty, truncated or not a video container at all."""

    reason = "UNREADABLE_VIDEO"
    grpc_status = "INVALID_ARGUMENT"


class NoVideoStream(H2AError):
    reason = "NO_VIDEO_STREAM"
    grpc_status = "INVALID_ARGUMENT"


class FilteredOut(H2AError):
    """A metadata filter (duration, resolution, download permission, views) rejected it."""

    reason = "FILTERED_OUT"
    grpc_status = "FAILED_PRECONDITION"


class TooShort(H2AError):
    """A scene or clip covering less source time than the clip minimum."""

    reason = "TOO_SHORT"
    grpc_status = "FAILED_PRECONDITION"


class TooLong(H2AError):
    """A clip covering more source time than the clip maximum."""

    reason = "TOO_LONG"
    grpc_status = "FAILED_PRECONDITION"


class InvalidKey(H2AError):
    reason = "INVALID_KEY"
    grpc_status = "INVALID_ARGUMENT"


class ObjectNotFound(H2AError):
    reason = "OBJECT_NOT_FOUND"
    grpc_status = "NOT_FOUND"


class IntegrityError(H2AError):
    """Stored bytes do not match the sha256 they were referenced with."""

    reason = "INTEGRITY_ERROR"
    grpc_status = "DATA_LOSS"


class StoreUnavailable(H2AError):
    reason = "STORE_UNAVAILABLE"
    grpc_status = "UNAVAILABLE"
    retryable = True


class ServiceUnavailable(H2AError):
    """A stage service could not be reached or failed without saying why (down, restarting)."""

    reason = "SERVICE_UNAVAILABLE"
    grpc_status = "UNAVAILABLE"
    retryable = True


class DeadlineExceeded(H2AError):
    """A stage service did not answer within the call's deadline."""

    reason = "DEADLINE_EXCEEDED"
    grpc_status = "DEADLINE_EXCEEDED"
    retryable = True


class QuotaExceeded(H2AError):
    """An external API's request quota is spent; state is saved so the run can resume."""

    reason = "QUOTA_EXCEEDED"
    grpc_status = "RESOURCE_EXHAUSTED"
    retryable = True


def _all_subclasses(cls: type[H2AError]) -> list[type[H2AError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


def error_from_reason(reason: str, detail: str) -> H2AError:
    """Rebuild the typed error a remote service raised, from its ``reason``."""
    for cls in _all_subclasses(H2AError):
        if cls.reason == reason:
            return cls(detail)
    error = H2AError(detail)
    error.reason = reason  # type: ignore[misc]  # unknown reason: keep it verbatim
    return error
