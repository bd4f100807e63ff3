"""Batch lookup (`POST /runs/{id}/clients/lookup`, `tracer where RUN --keys FILE`): every key
answered as its journey says, unknown keys `not_found`, JSON and CSV in and out, composite
keys, the limit, and malformed input refused with its fault named."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.openapi_check import CheckedClient
from tests.pipelines import RunBuilder
from tracer.cli import main
from tracer.config import parse_tokens
from tracer.queries import lookup as core
from tracer.queries.csv_lists import header

REPORTED = {"reported": True, "stage_column": "stage", "reason_column": "reason"}
OPERATIONAL = {"reported": False, "stage_column": "stage", "reason_column": "reason"}
UNKNOWN = 555
HUGE_FIELD = "client_id\n" + "9" * 200_000  # over the csv module's field size limit


@pytest.fixture
def one_column(build: RunBuilder) -> str:
    """Clients 1-12 through a -> b -> c: 10 dropped at b (reported), 11 dropped_unreported,
    12 orphaned; at c, 7 dropped with two reasons, 8 orphaned, 9 dropped; 99 only traced."""
    main_rows = [
        {"client_id": 10, "stage": "b", "reason": "opt_out"},
        {"client_id": 7, "stage": "c", "reason": "blacklist"},
        {"client_id": 9, "stage": "c", "reason": "too_young"},
        {"client_id": 99, "stage": "c", "reason": "ghost"},
    ]
    ops_rows = [
        {"client_id": 11, "stage": "b", "reason": "buffer"},
        {"client_id": 7, "stage": "c", "reason": "bad_address"},
    ]
    return build.run(
        stages=[{"name": "a"}, {"name": "b"}, {"name": "c"}],
        outputs={
            "a": [{"client_id": i} for i in range(1, 13)],
            "b": [{"client_id": i} for i in range(1, 10)],
            "c": [{"client_id": i} for i in range(1, 7)],
        },
        trace={"t_main": (REPORTED, main_rows), "t_ops": (OPERATIONAL, ops_rows)},
        run_id="lookup-one",
    )


@pytest.fixture
def composite(build: RunBuilder) -> str:
    """Key (branch, client_no): (LIS, 1) targeted, (LIS, 2) dropped, (OPO, 1) orphaned."""
    rows = [{"branch": "LIS", "client_no": 1}, {"branch": "LIS", "client_no": 2},
            {"branch": "OPO", "client_no": 1}]  # fmt: skip
    return build.run(
        stages=[{"name": "a"}, {"name": "b"}],
        outputs={"a": rows, "b": rows[:1]},
        trace={"t": (REPORTED, [{"branch": "LIS", "client_no": 2, "stage": "b", "reason": "x"}])},
        key=["branch", "client_no"],
        key_types={"branch": "string", "client_no": "int64"},
        run_id="lookup-two",
    )


def expected(build: RunBuilder, run_id: str, *key: object) -> dict[str, Any]:
    """What the lookup must say of a key: its journey's final outcome, the last stage it
    left (in >= 1, out = 0) with its outcome there, and the reasons logged at that stage."""
    data = build.journey(run_id, *key)
    leaving = [s for s in data["stages"] if s["rows_in"] >= 1 and s["rows_out"] == 0]
    last = leaving[-1] if leaving else None
    return {
        "key": data["key"],
        "final_outcome": data["final_outcome"],
        "left_at": {"stage": last["stage"], "outcome": last["outcome"]} if last else None,
        "reasons": last["reasons"] if last else [],
    }


def lookup(client: CheckedClient, run_id: str, **kwargs: Any) -> Any:
    return client.post(f"/api/v1/runs/{run_id}/clients/lookup", **kwargs)


def test_every_key_answers_as_its_journey_says(
    app: Any, build: RunBuilder, one_column: str
) -> None:
    client = CheckedClient(app)
    asked: list[object] = [*range(1, 13), 99, UNKNOWN, "7", 7]  # "7" and 7: one client, twice
    response = lookup(client, one_column, json={"keys": asked})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["run"]["run_id"] == one_column and body["total"] == len(asked)
    items = body["items"]
    assert [item["key"] for item in items] == [{"client_id": int(k)} for k in asked]
    for item in items:
        client_id = item["key"]["client_id"]
        if client_id == UNKNOWN:
            assert item == {"key": {"client_id": UNKNOWN}, "final_outcome": "not_found",
                            "left_at": None, "reasons": [], "journey_url": None}  # fmt: skip
            continue
        url = item.pop("journey_url")
        assert item == expected(build, one_column, client_id), client_id
        journey = client.get(url.removeprefix("http://localhost"))
        assert journey.status_code == 200 and journey.get_json()["key"] == item["key"]
    finals = [item["final_outcome"] for item in items]
    assert finals.count("not_found") == 1 and "dropped_unreported" in finals
    assert body["counts"] == {label: finals.count(label) for label in dict.fromkeys(finals)}
    # The case worth a second look: two reasons, from two sources, at the stage it left.
    seven = next(i for i in items if i["key"] == {"client_id": 7})
    assert seven["left_at"] == {"stage": "c", "outcome": "dropped"}
    assert {(r["source"], r["reason"], r["reported"]) for r in seven["reasons"]} == {
        ("t_main", "blacklist", True), ("t_ops", "bad_address", False)
    }  # fmt: skip


def test_csv_upload_and_csv_answer(app: Any, build: RunBuilder, one_column: str) -> None:
    """A contact list as exported: other columns, any order; answered as CSV in its order."""
    client = CheckedClient(app)
    upload = "email,client_id\na@x.pt,10\n\nb@x.pt, 3 \nc@x.pt,555\nd@x.pt,7\n"
    response = lookup(
        client, one_column, data=upload, content_type="text/csv", query_string={"format": "csv"}
    )
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "lookup-one-lookup.csv" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert list(rows[0]) == header("lookup", ["client_id"])
    assert [r["client_id"] for r in rows] == ["10", "3", "555", "7"]
    assert [r["final_outcome"] for r in rows] == [
        expected(build, one_column, 10)["final_outcome"], "targeted", "not_found", "dropped"
    ]  # fmt: skip
    assert (rows[0]["left_stage"], rows[0]["left_outcome"]) == ("b", "dropped")
    assert rows[0]["reasons"] == "t_main: opt_out (1 row, reported)"
    assert rows[3]["reasons"].count(";") == 1  # both of 7's reasons in one cell
    # The same upload answered as JSON: the same answers.
    as_json = lookup(client, one_column, data=upload, content_type="text/csv").get_json()
    assert [i["final_outcome"] for i in as_json["items"]] == [r["final_outcome"] for r in rows]
    # A list without a header: one key a line.
    plain = lookup(client, one_column, data="10\n3\n", content_type="text/csv").get_json()
    assert [i["key"]["client_id"] for i in plain["items"]] == [10, 3]


def test_composite_keys_by_position_by_name_and_csv(
    app: Any, build: RunBuilder, composite: str
) -> None:
    client = CheckedClient(app)
    keys = [["LIS", 1], {"client_no": "2", "branch": " LIS "}, ["OPO", "1"], ["LIS", 3]]
    body = lookup(client, composite, json={"keys": keys}).get_json()
    finals = [item["final_outcome"] for item in body["items"]]
    assert finals == ["targeted", "dropped", "orphaned", "not_found"]
    for item, key in zip(body["items"][:3], (("LIS", 1), ("LIS", 2), ("OPO", 1)), strict=True):
        url = item.pop("journey_url")
        assert item == expected(build, composite, *key)
        assert url.endswith(f"/journeys?branch={key[0]}&client_no={key[1]}")
    assert body["items"][1]["reasons"][0]["reason"] == "x"
    upload = "client_no,branch\n2,LIS\n1,OPO\n"
    rows = lookup(client, composite, data=upload, content_type="text/csv").get_json()["items"]
    assert [(r["key"], r["final_outcome"]) for r in rows] == [
        ({"branch": "LIS", "client_no": 2}, "dropped"),
        ({"branch": "OPO", "client_no": 1}, "orphaned"),
    ]


def test_the_limit(app: Any, one_column: str, monkeypatch: pytest.MonkeyPatch) -> None:
    client = CheckedClient(app)
    too_many = lookup(client, one_column, json={"keys": list(range(core.MAX_KEYS + 1))})
    assert too_many.status_code == 413
    assert "10,001 keys" in too_many.get_json()["error"]
    assert "at most 10,000" in too_many.get_json()["error"]
    exactly = lookup(client, one_column, json={"keys": list(range(1, core.MAX_KEYS + 1))})
    assert exactly.status_code == 200 and exactly.get_json()["total"] == core.MAX_KEYS
    monkeypatch.setattr(core, "MAX_KEYS", 2)  # the CSV path counts rows, not lines
    upload = "client_id\n1\n2\n3\n"
    assert lookup(client, one_column, data=upload, content_type="text/csv").status_code == 413


@pytest.mark.parametrize(
    ("kwargs", "status", "named"),
    [
        ({"data": "{not json", "content_type": "application/json"}, 400, "not valid JSON"),
        ({"json": ["1"]}, 400, '{"keys": [...]}'),
        ({"json": {"keys": "1"}}, 400, '{"keys": [...]}'),
        ({"json": {"keys": ["1"], "limit": 3}}, 400, "unknown field(s) limit"),
        ({"json": {"keys": ["1", "abc"]}}, 400, "keys[1]: key column 'client_id' is an integer"),
        ({"json": {"keys": [[1, 2]]}}, 400, "keys[0]: the lineage key has 1 column(s)"),
        ({"json": {"keys": [None]}}, 400, "keys[0]: a key value is a string or an integer"),
        ({"json": {"keys": [None]}}, 400, "got null"),
        ({"json": {"keys": [True]}}, 400, "got true"),
        ({"json": {"keys": [{"id": 1}]}}, 400, "keys[0]: 'id' is not a key column"),
        ({"json": {"keys": [" "]}}, 400, "keys[0]: key column 'client_id' is empty"),
        ({"data": "client_id\n1\nx\n", "content_type": "text/csv"}, 400, "line 3: key column"),
        ({"data": "a,b\n1,2\n", "content_type": "text/csv"}, 400, "line 1: the first row neither"),
        ({"data": b"client_id\n\xff\n", "content_type": "text/csv"}, 400, "not UTF-8"),
        ({"data": "1\n2\n", "content_type": "text/plain"}, 415, "text/plain"),
        ({"json": {"keys": ["1\u0000"]}}, 400, "keys[0]: a key value holds a NUL character"),
        ({"data": HUGE_FIELD, "content_type": "text/csv"}, 400, "line 2: not CSV"),
    ],
)  # fmt: skip
def test_malformed_bodies_name_their_fault(
    app: Any, one_column: str, kwargs: dict[str, Any], status: int, named: str
) -> None:
    response = lookup(CheckedClient(app), one_column, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["ok"] is False and body["status"] == status
    assert named in body["error"] or any(named in e for e in body["errors"]), body


def test_every_malformed_key_is_listed(app: Any, one_column: str) -> None:
    body = lookup(CheckedClient(app), one_column, json={"keys": ["x", 1, "", "y"]}).get_json()
    assert body["error"].startswith("3 malformed key(s), nothing looked up")
    assert [e.split(":")[0] for e in body["errors"]] == ["keys[0]", "keys[2]", "keys[3]"]


def test_unknown_run_get_and_read_scope(app: Any, api_config: Any, one_column: str) -> None:
    client = CheckedClient(app)
    missing = lookup(client, "no-such-run", json={"keys": [1]})
    assert missing.status_code == 404 and "no-such-run" in missing.get_json()["error"]
    get = client.client.get(f"/api/v1/runs/{one_column}/clients/lookup")
    assert get.status_code == 405 and get.headers["Allow"].split(", ").count("POST") == 1
    assert get.get_json()["status"] == 405
    # A lookup only reads: a read token may, though it is a POST; posting a run it may not.
    from api import create_app

    tokens = parse_tokens("read:crm:r-secret,ingest:ci:i-secret")
    secured = create_app(dataclasses.replace(api_config, api_tokens=tokens))
    reader = CheckedClient(secured, token="r-secret")
    assert lookup(reader, one_column, json={"keys": [1]}).status_code == 200
    assert reader.post("/api/v1/runs", json={}).status_code == 403
    assert lookup(CheckedClient(secured), one_column, json={"keys": [1]}).status_code == 401


def test_openapi_documents_both_bodies(app: Any) -> None:
    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    operation = spec["paths"]["/api/v1/runs/{run_id}/clients/lookup"]["post"]
    assert set(operation["requestBody"]["content"]) == {"application/json", "text/csv"}
    keys = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]["keys"]
    assert keys["maxItems"] == core.MAX_KEYS
    assert {"200", "400", "404", "413", "415"} <= set(operation["responses"])
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def where(database_url: str) -> Any:
    def invoke(*args: str, stdin: str | None = None) -> Any:
        env = {"DATABASE_URL": database_url, "COLUMNS": "120"}
        return CliRunner().invoke(main, ["where", *args], env=env, input=stdin)

    return invoke


def test_cli_answers_as_the_api_in_batches(
    app: Any,
    where: Any,
    one_column: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = [*range(1, 13), 99, UNKNOWN]
    listed = tmp_path / "keys.txt"
    listed.write_text("".join(f"{k}\n" for k in keys))
    api = lookup(CheckedClient(app), one_column, json={"keys": keys}).get_json()
    monkeypatch.setattr(core, "MAX_KEYS", 4)  # four batches, four transactions
    result = where(one_column, "--keys", str(listed), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for item in api["items"]:
        item.pop("journey_url")
    assert data == api  # the API's object, less the URLs
    table = where(one_column, "--keys", str(listed))
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0] == f"run {one_column} ({'p-' + one_column}): 14 key(s)"
    assert lines[1].split() == ["client_id", "final", "outcome", "left", "at", "reasons", "there"]
    assert sum(line.startswith("client_id") for line in lines) == 1  # one heading
    seven = next(line for line in lines if line.startswith("7 "))
    assert "c (dropped)" in seven and "blacklist and bad_address" in seven
    assert lines[-1].startswith("targeted 6") and "not_found 1" in lines[-1]
    as_csv = where(one_column, "--keys", "-", "--csv", stdin="client_id,x\n10,a\n555,b\n")
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[0] == header("lookup", ["client_id"])
    assert [r[:3] for r in rows[1:]] == [["10", "dropped", "b"], ["555", "not_found", ""]]


def test_cli_refuses_malformed_keys_before_printing(where: Any, one_column: str) -> None:
    result = where(one_column, "--keys", "-", stdin="client_id\n1\nabc\n2\n\n-4x\n")
    assert result.exit_code == 2 and result.stdout == ""
    assert "2 malformed key(s), nothing looked up; first line 3" in result.stderr
    assert "line 6" in result.stderr
    both = where(one_column, "--keys", "-", "--json", "--csv", stdin="1\n")
    assert both.exit_code == 2 and "choose one" in both.stderr
    missing = where("no-such-run", "--keys", "-", stdin="1\n")
    assert missing.exit_code == 2 and "no-such-run" in missing.stderr
