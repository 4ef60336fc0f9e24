"""The asyncio twin against the real service: the same calls, awaited."""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd
import pytest
from inference_client import AsyncClient, AsyncJob, InvalidInput, NotFound

from tests.client.conftest import KEY, breast_cancer_csv
from tests.client.test_client import IRIS


def test_async_client_predicts_submits_streams_lists_and_cancels(api_base: str, clean_redis: Any) -> None:
    """AsyncClient predicts, submits, waits, streams outputs, lists jobs, cancels and raises typed errors."""

    async def scenario() -> None:
        async with AsyncClient(api_base, KEY) as client:
            assert "iris" in {m.name for m in await client.models()}
            outputs = await client.predict("iris", IRIS, timeout=30)
            assert [o["label"] for o in outputs] == ["setosa", "versicolor"]
            frame = await client.predict("iris", pd.DataFrame(IRIS), timeout=30)
            assert list(frame["label"]) == ["setosa", "versicolor"]

            jobs = await asyncio.gather(*(client.submit("iris", IRIS) for _ in range(3)))
            await asyncio.gather(*(job.wait(30) for job in jobs))
            assert {job.status for job in jobs} == {"succeeded"}

            bulk = await client.submit_csv("breast-cancer", breast_cancer_csv(5000))
            await bulk.wait(30)
            streamed = [o async for o in bulk.outputs()]
            assert len(streamed) == 5000

            listed = [job async for job in client.jobs(page=2)]
            assert len(listed) == 6
            assert all(isinstance(job, AsyncJob) for job in listed)

            with pytest.raises(InvalidInput) as caught:
                await client.submit("iris", [{**IRIS[0], "petal_width": None}])
            assert caught.value.details[0]["index"] == 0
            with pytest.raises(NotFound):
                await client.job("0" * 32)

    asyncio.run(scenario())
