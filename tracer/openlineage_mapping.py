"""How a pipeline definition names the OpenLineage job that writes a stage's or source's data.

A stage (or traceability source) with `openlineage: {namespace: airflow-prod, job:
campaign.exclusions}` takes its dataset from the COMPLETE events of that job
(tracer.openlineage_in). Apart from the receiver so the manifest models can use
it without importing the store.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer


class OpenLineageJob(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field(min_length=1, description="The job's OpenLineage namespace")
    job: str = Field(min_length=1, description="The job's name, e.g. `dag_id.task_id`")
    output: str | None = Field(
        default=None,
        min_length=1,
        description="Which of the job's output datasets this is, when it writes several: "
        "the dataset's name or a glob on it (`*/exclusions`)",
    )


def _omit_unmapped(self: Any, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
    data = handler(self)
    if data.get("openlineage") is None:
        data.pop("openlineage", None)
    return data


omit_unmapped = model_serializer(mode="wrap")(_omit_unmapped)
"""For a model with an `openlineage` field: left out of dumps when unset, so the stored spec
of every pipeline that maps no job stays what it was (runs compare it on re-ingestion)."""
