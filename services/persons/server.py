"""The PersonDetection gRPC service: ``detect_persons`` behind a stub.

Too few person frames is a verdict in the response (``passed`` false, with the scores), not an
error status: the caller files it in the review list.
"""

from __future__ import annotations

import grpc
from hashtag2action.v1 import persons_pb2, persons_pb2_grpc
from pydantic import Field

from services.common.grpc_runtime import ServiceSettings, serve
from services.common.messages import from_message, require, stored_ref
from services.common.records import Segment
from services.common.store import ClipStore
from services.persons.detect import PersonResult, PersonSettings, detect_persons, load_model

__all__ = [
    "SERVICE",
    "PersonsServer",
    "PersonsServicer",
    "main",
    "person_result_from_proto",
    "person_result_to_proto",
]

SERVICE = persons_pb2.DESCRIPTOR.services_by_name["PersonDetection"]


class PersonsServer(ServiceSettings):
    """Settings of the persons service: the shared sections plus ``H2A_PERSONS_*``."""

    persons: PersonSettings = Field(default_factory=PersonSettings)


def person_result_to_proto(result: PersonResult) -> persons_pb2.DetectPersonsResponse:
    return persons_pb2.DetectPersonsResponse(
        frame_indices=result.frame_indices,
        scores=result.scores,
        positive_frames=result.positive_frames,
        passed=result.passed,
    )


def person_result_from_proto(message: persons_pb2.DetectPersonsResponse) -> PersonResult:
    return PersonResult(
        frame_indices=tuple(message.frame_indices),
        scores=tuple(message.scores),
        positive_frames=message.positive_frames,
        passed=message.passed,
    )


class PersonsServicer(persons_pb2_grpc.PersonDetectionServicer):
    def __init__(self, settings: PersonSettings, store: ClipStore) -> None:
        self._settings = settings
        self._store = store

    def DetectPersons(
        self, request: persons_pb2.DetectPersonsRequest, context: grpc.ServicerContext
    ) -> persons_pb2.DetectPersonsResponse:
        require(request, "video", "scene")
        ref = stored_ref(request.video, self._store)
        scene = from_message(request.scene, Segment)
        with self._store.open_local(ref) as path:
            result = detect_persons(path, scene, self._settings, self._store)
        return person_result_to_proto(result)


def main() -> None:
    settings = PersonsServer()
    store = ClipStore.from_settings(settings.store)
    # Load the weights before reporting SERVING: the first call should not pay for it.
    load_model(settings.persons, store)
    servicer = PersonsServicer(settings.persons, store)
    serve(servicer, persons_pb2_grpc.add_PersonDetectionServicer_to_server, SERVICE, settings)
