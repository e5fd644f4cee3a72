"""Where our CPU goes per 100,000 rows, stage by stage, without a profiler's distortion.

Each stage of the Dagster path's hot loop runs alone over the same pages, timed by the process's
own CPU clock (the sandbox runs in its own process):
- receive: the transport's GET of every page (urllib3, the socket);
- decode: `typed_records_of` (``orjson`` for the general path);
- tables: `page_columns` gathered into Arrow tables by `ColumnBatch`;
- links: the link-table rows of the same typed pages (`LinkRows`, leads and contacts), as Arrow;
- staging: `StagedRows.append` of each 10,000-row table;
- write: `StagedRows.write` into a fresh DuckDB file.
The floor is receive plus a plain ``orjson.loads`` of every body: what any extractor pays to
have the data in Python at all. Dagster's own run (start, event log) and the client's threads
come on top; the benchmark's scenario 2 measures the whole.

Run: .venv/bin/python -m benchmarks.stages [--leads 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from kommo_dagster.kommo import KommoClient
from kommo_dagster.kommo.client import DEFAULT_BATCH_ROWS
from kommo_dagster.kommo.columns import ColumnBatch, page_columns
from kommo_dagster.kommo.decoding import typed_records_of
from kommo_dagster.kommo.link_rows import LinkRows
from kommo_dagster.kommo.records import to_columns
from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.kommo.walks import records_of
from kommo_dagster.sandbox import SandboxConfig, SandboxProcess
from kommo_dagster.warehouse.staging import StagedRows


def _cpu(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """The lowest process CPU time of ``repeat`` runs of ``fn`` (collector paused, as in the
    assets' batch loop), and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        began = time.process_time()
        result = fn()
        best = min(best, time.process_time() - began)
        gc.enable()
    return best, result


def _fetch(client: KommoClient, stream: str, pages: int) -> list[Response]:
    spec = get_stream(stream)
    params = [("with", ",".join(spec.with_))] if spec.with_ else []
    transport = client._transport
    out = []
    for page in range(1, pages + 1):
        resp = transport.get(spec.path, [*params, ("limit", spec.page_size), ("page", page)])
        if resp.body is None:
            break
        out.append(resp)
    return out


def _tables(stream: str, pages: list) -> list:
    batch = ColumnBatch(stream)
    tables = []
    for page in pages:
        batch.extend(page_columns(stream, page))
        if batch.rows >= DEFAULT_BATCH_ROWS:
            tables.append(batch.take())
    if batch.rows:
        tables.append(batch.take())
    return tables


def _links(stream: str, pages: list) -> int:
    links = LinkRows(stream)
    for page in pages:
        links.add(page)
    return sum(t.num_rows for t in links.tables().values())


def _stage(stream: str, tables: list) -> StagedRows:
    staged = StagedRows(get_stream(stream), window=None)
    for table in tables:
        staged.append(table)
    return staged


def measure(base_url: str, token: str, *, stream: str, pages: int, repeat: int) -> dict:
    spec = get_stream(stream)
    with KommoClient(base_url=base_url, token=token, requests_per_second=None) as client:
        receive, responses = _cpu(lambda: _fetch(client, stream, pages), repeat)
    bodies = [r.body for r in responses]
    parse, _ = _cpu(lambda: [orjson.loads(b) for b in bodies], repeat)
    decode, typed = _cpu(lambda: [typed_records_of(spec, r)[0] for r in responses], repeat)
    tables, batches = _cpu(lambda: _tables(stream, typed), repeat)
    links, link_rows = _cpu(lambda: _links(stream, typed), repeat)
    general, _ = _cpu(
        lambda: [to_columns(stream, records_of(spec, _fresh(r))[0]) for r in responses], repeat
    )
    staging, staged = _cpu(lambda: _stage(stream, batches), repeat)
    with tempfile.TemporaryDirectory() as tmp:
        write, _ = _cpu(lambda: staged.write(Path(tmp) / "w.duckdb", schema="kommo", timeout=60), 1)
    staged.discard()
    rows = sum(t.num_rows for t in batches)
    return {
        "rows": rows,
        "link rows": link_rows,
        "bytes": sum(len(b) for b in bodies),
        "receive": receive,
        "parse (orjson)": parse,
        "decode (typed)": decode,
        "tables (typed)": tables,
        "links (typed)": links,
        "parse + to_columns (general path)": general,
        "staging": staging,
        "write": write,
    }


def _fresh(resp: Response) -> Response:
    return Response(body=resp.body, server_time=resp.server_time, path=resp.path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--leads", type=int, default=100_000)
    p.add_argument("--stream", default="leads")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    sandbox = SandboxProcess(SandboxConfig(leads=args.leads, requests_per_second=None)).start()
    try:
        pages = -(-args.leads // get_stream(args.stream).page_size)
        result = measure(
            sandbox.base_url, sandbox.token, stream=args.stream, pages=pages, repeat=args.repeat
        )
    finally:
        sandbox.stop()
    per = 100_000 / max(result["rows"], 1)
    print(
        f"{args.stream}: {result['rows']:,} rows, {result['link rows']:,} link rows, "
        f"{result['bytes'] / 2**20:,.1f} MiB of JSON ({result['bytes'] * per / 2**20:,.1f} MiB "
        "per 100,000 rows); CPU s per 100,000 rows (lowest of the repeats):"
    )
    for name, value in result.items():
        if name not in ("rows", "link rows", "bytes"):
            print(f"  {name:36} {value * per:6.2f}")
    floor = (result["receive"] + result["parse (orjson)"]) * per
    stages = ("decode (typed)", "tables (typed)", "links (typed)", "staging", "write")
    ours = sum(result[k] for k in stages) * per
    print(f"  {'floor: receive + parse':36} {floor:6.2f}")
    print(f"  {'ours: receive + decode .. write':36} {result['receive'] * per + ours:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
