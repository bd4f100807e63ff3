"""The journey and history routes' fast path: JSON serialised once (orjson) yet exactly the
documented shape, the run's row and the key's read in one round trip from a remembered
guess that a deleted and re-posted run cannot fool, and history in one query for all runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from api.schemas import HistoryPageSchema, JourneySchema
from tests.openapi_check import CheckedClient
from tests.pipelines import RunBuilder
from tracer.queries.journey import history, journey
from tracer.store import delete_run

TRACE = {"reported": True, "stage": "b", "reason_column": "reason"}


def two_stage(build: RunBuilder, run_id: str, clients: list[Any], dropped: list[Any]) -> str:
    kept = [c for c in clients if c not in dropped]
    return build.run(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": [{"client_id": c} for c in clients], "b": [{"client_id": c} for c in kept]},
        trace={"t": (TRACE, [{"client_id": c, "reason": "opt_out"} for c in dropped])},
        run_id=run_id,
    )


def test_served_json_is_exactly_the_documented_shape(
    app: Any, build: RunBuilder, engine: Engine
) -> None:
    run = two_stage(build, "hot-shape", [1, 2, 3], dropped=[2])
    client = CheckedClient(app)  # every response validated against the served document
    for key in (1, 2):
        served = client.get(f"/api/v1/runs/{run}/journeys/{key}").get_json()
        with engine.connect() as conn:
            core = journey(conn, run, [str(key)])
        # What marshmallow would have written, field for field (no extra, none missing).
        assert served == JourneySchema().dump(core) == core
        assert set(served) == set(JourneySchema().fields)
    dropped = client.get(f"/api/v1/runs/{run}/journeys?client_id=2").get_json()
    assert dropped["final_outcome"] == "dropped" and dropped["stages"][1]["reasons"]
    page = client.get("/api/v1/history/2").get_json()
    assert page == HistoryPageSchema().dump(page)
    assert set(page) == set(HistoryPageSchema().fields)


def test_a_run_posted_again_under_its_id_is_read_afresh(
    app: Any, build: RunBuilder, engine: Engine
) -> None:
    """The remembered guess (pk, key types) is checked by the statement it serves."""
    client = CheckedClient(app)
    two_stage(build, "hot-again", [1, 2, 3], dropped=[2])
    first = client.get("/api/v1/runs/hot-again/journeys/2").get_json()
    assert first["final_outcome"] == "dropped"
    # Classified again (another pk? the same one): 2 now passes.
    two_stage(build, "hot-again", [1, 2, 3], dropped=[3])
    assert client.get("/api/v1/runs/hot-again/journeys/2").get_json()["final_outcome"] == (
        "targeted"
    )
    # Deleted, then posted again with string keys: a new pk, new key types. "007" encodes
    # under the old guess as the integer 7 and reads the old pk: the statement says so.
    delete_run(engine, "hot-again")
    build.run(
        stages=[{"name": "a"}],
        outputs={"a": [{"client_id": "x-1"}, {"client_id": "007"}]},
        run_id="hot-again",
    )
    assert client.get("/api/v1/runs/hot-again/journeys/007").get_json()["key"] == {
        "client_id": "007"
    }
    delete_run(engine, "hot-again")  # and again: "x-1" cannot even encode under the guess
    build.run(stages=[{"name": "a"}], outputs={"a": [{"client_id": 5}]}, run_id="hot-again")
    assert client.get("/api/v1/runs/hot-again/journeys/5").get_json()["key"] == {"client_id": 5}
    delete_run(engine, "hot-again")
    build.run(stages=[{"name": "a"}], outputs={"a": [{"client_id": "x-1"}]}, run_id="hot-again")
    answer = client.get("/api/v1/runs/hot-again/journeys/x-1")
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["key"] == {"client_id": "x-1"}
    delete_run(engine, "hot-again")
    gone = client.get("/api/v1/runs/hot-again/journeys/x-1")
    assert gone.status_code == 404 and "run 'hot-again' not found" in gone.get_json()["error"]


def test_errors_name_the_client_in_words(app: Any, build: RunBuilder) -> None:
    client = CheckedClient(app)
    run = two_stage(build, "hot-words", [1, 2], dropped=[2])
    missing = client.get(f"/api/v1/runs/{run}/journeys/999")
    assert missing.status_code == 404
    assert missing.get_json()["error"] == f"client client_id=999 has no record in run '{run}'"
    bad = client.get(f"/api/v1/runs/{run}/journeys/abc")
    assert bad.status_code == 400 and "'client_id' is an integer" in bad.get_json()["error"]
    nowhere = client.get("/api/v1/history/987654321").get_json()
    assert nowhere["error"] == "client 987654321 appears in no classified run"


def test_history_reads_every_run_at_once_and_pages(build: RunBuilder, engine: Engine) -> None:
    """Newest first, one item per run holding the key, a run without it skipped, a string-keyed
    run that cannot hold it skipped, and the pages of a limit joining up."""
    ids = [
        two_stage(build, f"hot-hist-{i}", [41, 42], dropped=[42] if i % 2 else [41])
        for i in range(4)
    ]
    two_stage(build, "hot-hist-without", [1, 2], dropped=[1])
    build.run(stages=[{"name": "a"}], outputs={"a": [{"client_id": "42x"}]}, run_id="hot-hist-s")
    with engine.connect() as conn:
        whole = history(conn, ["42"], limit=100)
        runs = [item["run"]["run_id"] for item in whole["items"]]
        assert [r for r in runs if r.startswith("hot-hist")] == list(reversed(ids))
        for item in whole["items"]:
            expected = journey(conn, item["run"]["run_id"], ["42"])
            assert item["final_outcome"] == expected["final_outcome"]
            leaving = [s for s in expected["stages"] if s["rows_in"] >= 1 and s["rows_out"] == 0]
            assert item["left_at"] == (
                {"stage": leaving[-1]["stage"], "outcome": leaving[-1]["outcome"]}
                if leaving
                else None
            )
        paged, token = [], None
        while True:
            page = history(conn, ["42"], limit=2, after=token)
            paged += page["items"]
            if (token := page["next"]) is None:
                break
        assert paged == whole["items"]
