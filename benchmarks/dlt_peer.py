"""The peer: dlt's REST API source reading the same Kommo account into DuckDB.

Configured the way public Kommo setups built on dlt's ``rest_api`` do it (for example the Kommo
source of PostHog's data warehouse, which is a dlt ``rest_api`` configuration): Bearer auth, a
page-number paginator on ``page`` starting at 1, ``limit=250`` on every paged endpoint, the list
at ``_embedded.<stream>``, ``order[updated_at]=asc`` where Kommo documents it, an incremental
cursor sent as ``filter[updated_at][from]``, merge (upsert) on ``id``, dlt's default retries and
no request budget of its own. Two adjustments keep the comparison fair and working on stock dlt:

* The window is bounded on both sides (``filter[<cursor>][from]`` and ``[to]``, dlt's
  ``initial_value``/``end_value``), so the peer reads exactly the window our run reads.
* Kommo answers a page past the end with ``204 No Content``; stock dlt cannot parse an empty
  body, so a response action ignores 204 (which ends the paging), as dlt's docs advise.

Leads ask for what our leads walk asks (``with=source_id,is_price_modified_by_robot,contacts,
catalog_elements,source``, read from the stream declaration) so both extractors fetch the same
pages. Deleted records (``with=only_deleted``) are not read: public setups do not.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kommo_dagster.kommo.streams import get_stream

# Query parameters of each stream in the public configurations.
_PARAMS: dict[str, dict[str, Any]] = {
    "leads": {"order[updated_at]": "asc", "with": ",".join(get_stream("leads").with_)},
    "contacts": {"order[updated_at]": "asc"},
    "companies": {"order[updated_at]": "asc"},
    "tasks": {"order[created_at]": "asc"},
    "events": {},
}
PUBLIC_PAGE_LIMIT = 250
DATASET = "kommo_peer"


def rest_api_config(
    *, base_url: str, token: str, streams: list[str], start: int, end: int
) -> dict[str, Any]:
    """The ``RESTAPIConfig`` of the peer for cursor window ``[start, end)`` (Unix seconds)."""
    resources = []
    for name in streams:
        stream = get_stream(name)
        cursor = stream.cursor or "updated_at"
        resources.append(
            {
                "name": name,
                "endpoint": {
                    "path": stream.path.lstrip("/"),
                    "data_selector": f"_embedded.{stream.list_key}",
                    "params": {"limit": PUBLIC_PAGE_LIMIT, **_PARAMS.get(name, {})},
                    "incremental": {
                        "start_param": f"filter[{cursor}][from]",
                        "end_param": f"filter[{cursor}][to]",
                        "cursor_path": cursor,
                        "initial_value": start,
                        "end_value": end,
                    },
                },
            }
        )
    return {
        "client": {
            "base_url": base_url.rstrip("/") + "/",
            "auth": {"type": "bearer", "token": token},
            "paginator": {
                "type": "page_number",
                "base_page": 1,
                "page_param": "page",
                "total_path": None,
            },
        },
        "resource_defaults": {
            "primary_key": "id",
            "write_disposition": {"disposition": "merge", "strategy": "upsert"},
            "endpoint": {"response_actions": [{"status_code": 204, "action": "ignore"}]},
        },
        "resources": resources,
    }


def run_stream(
    *,
    base_url: str,
    token: str,
    stream: str,
    start: int,
    end: int,
    workdir: Path,
    extract_only: bool = False,
) -> dict[str, Any]:
    """Extract one stream's window with dlt into ``workdir/peer.duckdb``.

    Returns the extract step's seconds (from dlt's trace). With ``extract_only`` only dlt's
    extract step runs (the one that talks to the API) and the rows it extracted are returned
    too (dlt's own metrics); nothing reaches DuckDB. Otherwise `window_rows` counts them
    afterwards, outside what the caller measures.
    """
    import dlt
    from dlt.sources.rest_api import rest_api_source

    database = workdir / "peer.duckdb"
    pipeline = dlt.pipeline(
        pipeline_name="kommo_peer",
        pipelines_dir=str(workdir / "dlt_pipelines"),
        destination=dlt.destinations.duckdb(str(database)),
        dataset_name=DATASET,
    )
    source = rest_api_source(
        rest_api_config(base_url=base_url, token=token, streams=[stream], start=start, end=end)
    )
    began = time.perf_counter()
    if extract_only:
        info = pipeline.extract(source)
        wall = time.perf_counter() - began
        rows = _extracted_rows(info, stream)
        return {"extract_seconds": wall, "lists": {"live": rows}, "extract_only": True}
    pipeline.run(source)
    wall = time.perf_counter() - began
    extract = _step_seconds(pipeline, "extract")
    return {"extract_seconds": extract if extract is not None else wall}


def _extracted_rows(info: Any, stream: str) -> int:
    """Rows of ``stream``'s own table in an extract step (dlt's metrics per job file)."""
    total = 0
    for metrics in info.metrics.values():
        for m in metrics:
            for job, job_metrics in m.get("job_metrics", {}).items():
                if job.split(".", 1)[0] == stream:
                    total += job_metrics.items_count
    return total


def _step_seconds(pipeline: Any, step: str) -> float | None:
    trace = pipeline.last_trace
    if trace is None:
        return None
    for s in trace.steps:
        if s.step == step and s.started_at and s.finished_at:
            return (s.finished_at - s.started_at).total_seconds()
    return None


def window_rows(workdir: Path, stream: str, start: int, end: int) -> int:
    """Rows `run_stream` loaded into ``workdir``'s DuckDB file for the window."""
    import duckdb

    database = workdir / "peer.duckdb"
    cursor = get_stream(stream).cursor or "updated_at"
    with duckdb.connect(str(database), read_only=True) as con:
        exists = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? "
            "AND table_name = ?",
            [DATASET, stream],
        ).fetchone()
        if not exists or not exists[0]:
            return 0
        row = con.execute(
            f'SELECT count(*) FROM {DATASET}."{stream}" WHERE {cursor} >= ? AND {cursor} < ?',
            [start, end],
        ).fetchone()
    return int(row[0]) if row else 0
