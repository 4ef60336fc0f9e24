"""A typed Python client of the inference service's HTTP API, sync (`Client`) and asyncio (`AsyncClient`).

```python
from inference_client import Client
client = Client("http://127.0.0.1:8000", api_key)
client.predict("iris", [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}])
```
"""

from inference_client._admin import Routing, Shadow, ShadowReport
from inference_client._core import Model, Progress, Retry
from inference_client.aio import AsyncClient, AsyncJob, AsyncOutputs
from inference_client.client import Client, Job, Outputs
from inference_client.errors import (
    ApiError,
    Conflict,
    Forbidden,
    InferenceError,
    InvalidInput,
    JobFailed,
    NotFound,
    QueueFull,
    RateLimited,
    ServiceUnreachable,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncJob",
    "AsyncOutputs",
    "Client",
    "Conflict",
    "Forbidden",
    "InferenceError",
    "InvalidInput",
    "Job",
    "JobFailed",
    "Model",
    "NotFound",
    "Outputs",
    "Progress",
    "QueueFull",
    "RateLimited",
    "Retry",
    "Routing",
    "ServiceUnreachable",
    "Shadow",
    "ShadowReport",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
]
