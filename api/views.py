"""How jobs and models look in HTTP answers."""

from __future__ import annotations

from typing import Any

# The Job view is shared with the workers, whose webhook deliveries carry it.
from shared.job_view import job_urls as job_urls
from shared.job_view import job_view as job_view
from shared.job_view import rfc3339 as rfc3339
from shared.registry import Manifest


def model_summary(manifest: Manifest, versions: list[str]) -> dict[str, Any]:
    """Return the short description of a model listed by GET /v1/models."""
    return {
        "name": manifest.name,
        "version": manifest.version,
        "versions": versions,
        "description": manifest.description,
        "task": manifest.task,
        "runtime": manifest.runtime,
    }


def model_view(manifest: Manifest, versions: list[str]) -> dict[str, Any]:
    """Return the Model of the HTTP contract for one version."""
    return {
        **model_summary(manifest, versions),
        "features": manifest.features,
        "input_schema": manifest.input_schema,
        "output_schema": manifest.output_schema,
        "labels": manifest.labels,
        "deterministic": manifest.deterministic,
        "created_at": manifest.created_at,
        "sha256": manifest.sha256,
        "artifact_format": manifest.artifact_format,
        "metrics": manifest.metrics,
    }
