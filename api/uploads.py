"""A publish upload: a multipart body read as it arrives, its files written to a folder, its metadata checked.

The body is read through the upload limit (413 as soon as it is passed, unread past it), and each
part is judged as soon as it can be: a file type that may never be published when the artifact's
headers arrive, the metadata (and what the route checks of it) as soon as its part ends, so a
refusal comes before a large artifact has been read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from flask import Request
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from api.bodies import READ_BYTES, request_body
from shared.errors import InvalidInput, InvalidJson, PayloadTooLarge
from shared.publishing import (
    ARTIFACT,
    MAX_METADATA_BYTES,
    METADATA,
    REFERENCE,
    PublishMetadata,
    artifact_extension,
    parse_metadata,
)

PARTS = ("artifact", "metadata", "reference")
# What part headers (or a preamble) may take before the body is judged malformed: they are kept
# in memory until they end.
MAX_HEADER_BYTES = 64 * 1024
# The longest header row of a reference CSV that is read to check it names the features.
MAX_HEADER_ROW_BYTES = 1 << 20


@dataclass
class Upload:
    """A received upload: its metadata and its files (by their names in the registry's upload area)."""

    metadata: PublishMetadata
    files: dict[str, Path]


@dataclass
class _Reading:
    """Where the parts being read go, and what has arrived so far."""

    folder: Path
    on_metadata: Callable[[PublishMetadata], None]
    files: dict[str, Path] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    metadata: PublishMetadata | None = None
    extension: str = ""
    part: str = ""
    sink: BinaryIO | None = None
    text: bytearray = field(default_factory=bytearray)


def read_upload(
    request: Request, limit: int, folder: Path, on_metadata: Callable[[PublishMetadata], None]
) -> Upload:
    """Read a multipart publish upload into the folder, calling on_metadata once the metadata is read."""
    _, options = parse_options_header(request.headers.get("Content-Type", ""))
    boundary = options.get("boundary", "")
    if not boundary:
        raise InvalidJson("The multipart body has no boundary: send it as multipart/form-data with one.")
    body = request_body(request, limit)
    decoder = MultipartDecoder(boundary.encode("latin-1"))
    reading = _Reading(folder, on_metadata)
    try:
        while True:
            block = body.read(READ_BYTES)
            decoder.receive_data(block or None)
            if _drain(decoder, reading) or not block:
                break
    except ValueError as exc:  # the decoder's word for a malformed body, a bad header's too
        raise InvalidJson(
            f"The multipart body is malformed ({exc}); send it again as multipart/form-data."
        ) from None
    finally:
        _close(reading)
    return _complete(reading)


def _drain(decoder: MultipartDecoder, reading: _Reading) -> bool:
    """Hand every event the decoder has to the reading; tell whether the body has ended."""
    while True:
        event = decoder.next_event()
        if isinstance(event, NeedData):
            if len(decoder.buffer) > MAX_HEADER_BYTES and reading.sink is None and not reading.part:
                raise InvalidJson("A part's headers are too long, or the body is not multipart/form-data.")
            return False
        if isinstance(event, Epilogue):
            return True
        if isinstance(event, Field | File):
            _start(reading, event)
        elif isinstance(event, Data):
            _take(reading, event.data)
            if not event.more_data:
                _end(reading)


def _start(reading: _Reading, event: Field | File) -> None:
    name = event.name
    if name not in PARTS:
        raise InvalidInput(
            "The upload has a part this route does not take.",
            [{"field": str(name)[:64], "reason": f"not a part: send only {', '.join(PARTS)}"}],
        )
    if name in reading.seen:
        raise InvalidInput("The upload has a part twice.", [{"field": name, "reason": "sent more than once"}])
    reading.seen.add(name)
    reading.part = name
    if name == "artifact":
        if not isinstance(event, File) or not event.filename:
            raise InvalidInput(
                "The artifact must be a file part.",
                [{"field": "artifact", "reason": "send it as a file, with its file name"}],
            )
        allow = reading.metadata.allow_pickle if reading.metadata else None
        reading.extension = artifact_extension(event.filename, allow)
        path = reading.folder / f"{ARTIFACT}{reading.extension}"
    elif name == "reference":
        path = reading.folder / REFERENCE
    else:
        return  # the metadata is kept in memory
    reading.files[path.name] = path
    reading.sink = path.open("wb")


def _take(reading: _Reading, data: bytes) -> None:
    if reading.sink is not None:
        reading.sink.write(data)
        return
    reading.text += data
    if len(reading.text) > MAX_METADATA_BYTES:
        raise PayloadTooLarge(
            f"The metadata part is over {MAX_METADATA_BYTES:,} bytes.",
            [{"field": "metadata", "reason": f"more than {MAX_METADATA_BYTES} bytes"}],
        )


def _end(reading: _Reading) -> None:
    if reading.part == "metadata":
        reading.metadata = parse_metadata(bytes(reading.text))
        reading.on_metadata(reading.metadata)
    _close(reading)
    reading.part = ""


def _close(reading: _Reading) -> None:
    if reading.sink is not None:
        reading.sink.close()
        reading.sink = None


def _complete(reading: _Reading) -> Upload:
    """Check every part needed arrived and agrees with the metadata; return the upload."""
    missing = [
        {"field": name, "reason": "missing: send it as a part of the upload"}
        for name in ("artifact", "metadata")
        if name not in reading.seen
    ]
    if missing:
        raise InvalidInput("The upload lacks a part it needs.", missing)
    metadata = reading.metadata
    assert metadata is not None
    artifact = reading.files[f"{ARTIFACT}{reading.extension}"]
    # The metadata may have come after the artifact: a pickle's extension is judged again with it.
    artifact_extension(artifact.name, metadata.allow_pickle)
    if artifact.stat().st_size == 0:
        raise InvalidInput("The artifact is empty.", [{"field": "artifact", "reason": "a file of 0 bytes"}])
    reference = reading.files.get(REFERENCE)
    if reference is not None:
        _check_reference_header(reference, metadata)
    files = dict(reading.files)
    path = reading.folder / METADATA
    path.write_bytes(metadata.model_dump_json().encode())
    files[METADATA] = path
    return Upload(metadata, files)


def _check_reference_header(path: Path, metadata: PublishMetadata) -> None:
    """Raise InvalidInput unless the reference CSV's header row names the features, in order."""
    with path.open("rb") as handle:
        first = handle.readline(MAX_HEADER_ROW_BYTES)
    try:
        header = next(csv.reader(io.StringIO(first.decode("utf-8-sig"))), [])
    except (UnicodeDecodeError, csv.Error):
        header = []
    names = [name.strip() for name in header]
    if names != metadata.names:
        shown = ", ".join(names[:10]) or "nothing"
        raise InvalidInput(
            "The reference CSV's header row must name the features, in order.",
            [
                {
                    "field": "reference",
                    "reason": f"header names {shown}; expected {', '.join(metadata.names[:10])}",
                }
            ],
        )
