"""The benchmark's own logic: HTTP framing, figures, pass/fail checks, profiles, the CSV body, P and S."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any

import pytest

from bench.client import Connection, HttpError, parse_head, render_head
from bench.data import csv_body
from bench.interactive import ClosedLoop
from bench.jobs import Target
from bench.profile import summarise
from bench.publish import Sample, Timeline, next_version, version_share, window
from bench.report import closed_loop_figures, failures, latency, percentile, ratio, table, targets
from bench.streams import Streams, split_events


def test_head_is_parsed_with_lower_case_names() -> None:
    """A status line and headers become the status and a dict of lower-cased names."""
    head = b"HTTP/1.1 202 ACCEPTED\r\nContent-Length: 12\r\nLocation: /v1/jobs/x\r\n\r\n"
    status, headers = parse_head(head)
    assert status == 202
    assert headers == {"content-length": "12", "location": "/v1/jobs/x"}


def test_a_garbled_head_is_refused() -> None:
    """Anything but an HTTP/1.x status line raises HttpError."""
    with pytest.raises(HttpError):
        parse_head(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_a_post_always_says_its_length() -> None:
    """A POST carries Content-Length even when empty; a GET without a body carries none."""
    assert b"Content-Length: 0\r\n" in render_head("POST", "/p", "h:1", {}, 0)
    assert b"Content-Length" not in render_head("GET", "/p", "h:1", {"A": "b"}, 0)


def test_connection_reads_sized_and_chunked_bodies_on_one_keep_alive_socket() -> None:
    """Two requests on one connection: a Content-Length answer, then a chunked one streamed in pieces."""
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\na\nb\r\n2\r\n\nc\r\n0\r\n\r\n",
    ]
    accepted = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        for answer in answers:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length")), 0)  # fmt: skip
            await reader.readexactly(length)
            writer.write(answer)
            await writer.drain()
        writer.close()

    async def scenario() -> tuple[bytes, list[bytes]]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = Connection("127.0.0.1", port)
        first = await conn.request("POST", "/a", {}, b"body")
        pieces = [piece async for _, piece in conn.stream("GET", "/b")]
        await conn.close()
        server.close()
        await server.wait_closed()
        return first.body, pieces

    body, pieces = asyncio.run(scenario())
    assert body == b"ok"
    assert b"".join(pieces) == b"a\nb\nc"
    assert accepted == [1]


def test_percentiles_are_nearest_rank() -> None:
    """p50 of 1..100 is 50 and p99 is 99; no values give nan."""
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert math.isnan(percentile([], 50))
    assert latency([])["p50"] is None


def _document(**w1: object) -> dict[str, object]:
    run = ClosedLoop(clients=1, attempted=1000, succeeded=1000, seconds=2.0, latencies_ms=[3.0] * 1000)
    figures = closed_loop_figures(run)
    figures.update(w1)
    return {
        "workloads": {"W1": figures},
        "memory": {"api": [{"pid": 1, "model_libraries": []}], "api_peak_rss_mb": 50.0},
    }


def test_a_clean_run_passes_and_its_targets_are_judged() -> None:
    """No loss, no errors: no failure; the figures are set against the targets."""
    document = _document()
    assert failures(document) == []
    judged = {row["figure"]: row["met"] for row in targets(document)}
    assert judged["W1.jobs_per_s"] is False
    assert judged["W1.latency_ms.p99"] is True
    assert judged["memory.api_peak_rss_mb"] is True
    assert judged["W3.rows_per_s"] is None


def test_a_lost_job_fails_the_run() -> None:
    """One lost job is a failure whatever the speed."""
    assert failures(_document(lost=1)) == ["W1: 1 lost"]


def test_errors_fail_the_run_only_over_the_budget() -> None:
    """One error in a thousand jobs is within the budget; two are not."""
    assert failures(_document(errors=1)) == []
    assert len(failures(_document(errors=2))) == 1


def test_a_model_library_in_the_api_fails_the_run() -> None:
    """The API process must not have scikit-learn or onnxruntime mapped."""
    document = _document()
    document["memory"] = {"api": [{"pid": 7, "model_libraries": ["sklearn"]}]}
    assert failures(document) == ["API process 7 has ['sklearn'] mapped"]


def test_profile_summary_splits_self_time_packages_and_our_functions() -> None:
    """Collapsed stacks become shares of samples per process, leaf function, package and project function."""
    collapsed = "\n".join(
        [
            'process 9:"gunicorn";handle (/v/site-packages/gunicorn/workers/ggevent.py:1);'
            "submit (/repo/api/routes/jobs.py:90);send (/v/site-packages/gevent/_socketcommon.py:7) 3",
            'process 9:"gunicorn";handle (/v/site-packages/gunicorn/workers/ggevent.py:1);'
            "dumps (/usr/lib/python3.11/json/__init__.py:2) 1",
        ]
    )
    summary = summarise(collapsed)
    assert summary["samples"] == 4
    assert summary["process_pct"] == {"9": 100.0}
    assert summary["top_self_pct"][0] == ["send (gevent/_socketcommon.py)", 75.0]
    packages = dict(summary["package_inclusive_pct"])
    assert packages["gunicorn"] == 100.0
    assert packages["stdlib:json"] == 25.0
    assert summary["project_inclusive_pct"] == [["submit (api/routes/jobs.py)", 75.0]]


def test_csv_body_has_a_header_and_exactly_the_rows_asked_for() -> None:
    """The body cycles through the rows until it has as many as asked, after one header row."""
    body = csv_body(["a", "b"], [[1.5, 2.0], [3.0, 4.25]], 5)
    lines = body.decode().splitlines()
    assert lines[0] == "a,b"
    assert lines[1:] == ["1.5,2.0", "3.0,4.25", "1.5,2.0", "3.0,4.25", "1.5,2.0"]
    assert Counter(lines[1:])["1.5,2.0"] == 3


def test_the_next_version_is_the_highest_minor_plus_one() -> None:
    """The version P publishes follows the highest semantic version listed, whatever the order."""
    assert next_version(["1.0.0"]) == "1.1.0"
    assert next_version(["1.10.2", "1.9.0", "0.20.0"]) == "1.11.0"
    assert next_version(["2.0.0", "latest"]) == "2.1.0"
    assert next_version([]) == "1.0.0"


def test_rollout_windows_split_jobs_by_when_they_were_sent() -> None:
    """A job counts in the window it was sent in; the rate counts the answers that came inside it."""
    samples = [
        Sample(sent=0.5, done=0.6, latency_ms=100.0, version="1.0.0"),
        Sample(sent=1.5, done=2.5, latency_ms=1000.0, version="1.0.0"),
        Sample(sent=2.2, done=2.3, latency_ms=100.0, version="1.1.0"),
    ]
    before, during = window(samples, 0.0, 2.0), window(samples, 2.0, 4.0)
    assert (before["jobs"], before["latency_ms"]["p99"], before["jobs_per_s"]) == (2, 1000.0, 0.5)
    assert (during["jobs"], during["latency_ms"]["p99"], during["jobs_per_s"]) == (1, 100.0, 1.0)
    assert version_share(samples, 1.0) == {
        "1.0.0": {"jobs": 1, "share": 0.5},
        "1.1.0": {"jobs": 1, "share": 0.5},
    }


def test_the_timeline_marks_the_first_job_the_new_version_served() -> None:
    """Jobs of the old version are only samples; the first of the new one sets the mark once."""
    timeline = Timeline("1.1.0")
    timeline.observe({"version": "1.0.0"}, 1.0, 5.0)
    assert not timeline.first_new.is_set()
    timeline.observe({"version": "1.1.0"}, 2.0, 5.0)
    first = timeline.marks["first_served"]
    timeline.observe({"version": "1.1.0"}, 3.0, 5.0)
    assert timeline.first_new.is_set()
    assert timeline.marks["first_served"] == first
    assert [s.version for s in timeline.samples] == ["1.0.0", "1.1.0", "1.1.0"]


def test_server_sent_events_are_split_whole_and_the_rest_kept() -> None:
    """Complete events are parsed (comments skipped, data lines joined); a partial one waits for more."""
    buffer = b'id: 0-0\nevent: job\ndata: {"a":\ndata: 1}\n\n: keep-alive\n\n'
    buffer += b"retry: 1000\n\nid: 1-1\nevent: jo"
    events, rest = split_events(buffer)
    assert events == [{"id": "0-0", "event": "job", "data": '{"a":\n1}'}, {"retry": "1000"}]
    assert rest == b"id: 1-1\nevent: jo"
    more, rest = split_events(rest + b"b\ndata: {}\n\n")
    assert more == [{"id": "1-1", "event": "job", "data": "{}"}]
    assert rest == b""


def test_a_stream_that_ends_without_the_jobs_end_is_counted_dropped() -> None:
    """A stream whose server sends one event and closes opened but is dropped; a 429 never opened."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"/refused/" in head:
            writer.write(b"HTTP/1.1 429 TOO MANY\r\nContent-Length: 2\r\n\r\n{}")
        else:
            event = b'event: job\ndata: {"status": "queued"}\n\n'
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + event)
        await writer.drain()
        writer.close()

    async def scenario() -> Streams:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        target = Target("127.0.0.1", server.sockets[0].getsockname()[1], "k")
        streams = Streams(requested=2)
        tasks = await streams.open(target, ["queued", "refused"])
        await asyncio.gather(*tasks)
        server.close()
        await server.wait_closed()
        return streams

    streams = asyncio.run(scenario())
    assert (streams.opened, streams.events, streams.ended, streams.dropped) == (1, 1, 0, 2)
    assert streams.errors == {"HTTP 429": 1}


def test_a_rollout_that_failed_or_lost_a_job_fails_the_run() -> None:
    """P's error (a publish that failed) and a lost job are each a failure; the table names the figures."""
    figures = {
        "new_version": "1.1.0", "seconds_to_first_served": 3.5, "jobs": 100, "errors": 0, "lost": 1,
        "before_rollout": {"latency_ms": {"p99": 10.0}}, "during_rollout": {"latency_ms": {"p99": 12.0}},
        "error": "the publish job of 1.1.0 ended failed",
    }  # fmt: skip
    document: dict[str, Any] = {"workloads": {"P": figures}, "memory": {}}
    assert failures(document) == ["P: 1 lost", "P: the publish job of 1.1.0 ended failed"]
    document.update({"machine": {"cores": 2}, "config": {"shape": {}}, "targets": [], "failures": []})
    assert "1.1.0 first served 3.5 s after its upload began  p99 10.0 ms before, 12.0 ms" in table(document)
    assert ratio(12.0, 10.0) == 1.2
    assert ratio(None, 10.0) is None


def test_a_bulk_body_over_the_shipped_limit_is_sent_gzip_compressed(monkeypatch: pytest.MonkeyPatch) -> None:
    """W3 sends its CSV as it is while the shipped limit takes it, compressed past it (as a user must)."""
    import gzip

    from bench import bulk

    body = b"a,b\n" + b"1.5,2.5\n" * 1000
    assert bulk._encoding(body) == {"Content_Type": "text/csv"}
    assert bulk._encoded(body) is body
    monkeypatch.setattr(bulk, "BULK_LIMIT", len(body) - 1)
    assert bulk._encoding(body) == {"Content_Type": "text/csv", "Content_Encoding": "gzip"}
    assert gzip.decompress(bulk._encoded(body)) == body


def test_the_apis_memory_peaks_are_kept_by_phase_with_the_uploads_growth() -> None:
    """Each phase keeps the largest resident memory read in it; the growth is the upload's over before."""
    import os

    from bench import bulk

    peaks = bulk._RssPeaks([os.getpid()])
    peaks.sample()
    peaks.phase = "upload_and_accept"
    held = b"\1" * (64 * 1024 * 1024)  # every page written, so resident
    peaks.sample()
    del held
    figures = peaks.figures()
    assert figures["before"] > 0
    growth = figures["upload_and_accept"] - figures["before"]
    assert figures["upload_growth"] == pytest.approx(growth, abs=0.11)
    assert figures["upload_growth"] >= 60
