"""The README's tables of streams, settings and derived relations, rendered from their
declarations.

The README holds each table between ``<!-- generated:<name> -->`` and ``<!-- /generated -->``;
`update_readme` rewrites them and a test fails when the README differs from what the declaration
renders, so the documentation lists every stream, and only the declared ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from kommo_dagster.kommo.links import LINK_TABLES
from kommo_dagster.kommo.streams import STREAMS, Stream
from kommo_dagster.settings import ENV_ACCOUNTS, SETTINGS
from kommo_dagster.warehouse.registry import derived_relations

_BLOCK = re.compile(
    r"(<!-- generated:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S
)


def _code(names: Iterable[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _source(stream: Stream) -> str:
    query = f"?with={','.join(stream.with_)}" if stream.with_ else ""
    where = "the body" if stream.list_key is None else f"`_embedded.{stream.list_key}`"
    path = f"`GET {stream.path}{query}`"
    if stream.parent is not None:
        return f"{path} per `{stream.parent}.id`, {where}"
    return f"{path}, {where}"


def _sync(stream: Stream) -> str:
    if stream.is_incremental:
        return f"daily by `{stream.cursor}`"
    return "full table"


def _references(stream: Stream) -> str:
    return "<br>".join(
        f"`{', '.join(r.columns)}` → `{r.stream}.{', '.join(r.keys)}`"
        for r in stream.all_references
    )


def streams_table() -> str:
    lines = [
        "| table | holds | sync | read from | references |",
        "|---|---|---|---|---|",
    ]
    for s in STREAMS.values():
        lines.append(
            f"| `kommo.{s.name}` | {s.holds} | {_sync(s)} | {_source(s)} | {_references(s)} |"
        )
    return "\n".join(lines)


def partitions_table() -> str:
    by_cursor: dict[str, list[str]] = {}
    for s in STREAMS.values():
        if s.is_incremental and s.cursor is not None:
            by_cursor.setdefault(s.cursor, []).append(f"kommo/{s.name}")
    lines = ["| asset | partitions | a partition (or range) holds |", "|---|---|---|"]
    for cursor, assets in by_cursor.items():
        lines.append(
            f"| {_code(assets)} | daily, UTC | the records whose `{cursor}` was in "
            "[D 00:00, D+1 00:00) UTC when they were extracted |"
        )
    full = [f"kommo/{s.name}" for s in STREAMS.values() if not s.is_incremental]
    lines.append(f"| {_code(full)} | none | the whole table, replaced by each run |")
    return "\n".join(lines)


def stream_settings_table() -> str:
    incremental = [s.name for s in STREAMS.values() if s.is_incremental]
    children = [f"{s.name} needs {s.parent}" for s in STREAMS.values() if s.parent]
    return "\n".join(
        [
            "| variable | default | choices |",
            "|---|---|---|",
            f"| `KOMMO_STREAMS` | all {len(STREAMS)} | {_code(STREAMS)} ({'; '.join(children)}) |",
            f"| `KOMMO_FULL_TABLE_STREAMS` | none | {_code(incremental)} |",
        ]
    )


def derived_table() -> str:
    """The derived tables and views as declared: what each reads, its key, its slices, and
    the writes that rebuild it."""
    lines = [
        "| relation | kind | reads | key | slices | rebuilt by writes of |",
        "|---|---|---|---|---|---|",
    ]
    for t in derived_relations():
        slices = (
            f"as `{t.parent}`, by `{t.cursor}`"
            if t.sliced
            else "none (rebuilt whole)"
            if t.rebuilt_whole
            else "none (view)"
        )
        lines.append(
            f"| `kommo.{t.name}` | {t.kind} | {_code(t.inputs)} | {_code(t.key) or '-'} | "
            f"{slices} | {_code(t.triggers) or '-'} |"
        )
    return "\n".join(lines)


def links_table() -> str:
    """The link tables (`kommo_dagster.kommo.links`): where their rows come from."""
    lines = ["| table | holds | key | read from | references |", "|---|---|---|---|---|"]
    for t in LINK_TABLES.values():
        parent = STREAMS[t.parent]
        refs = "<br>".join(
            f"`{', '.join(r.columns)}` → `{r.stream}.{', '.join(r.keys)}`" for r in t.references
        )
        holds = t.description.split(". ")[0].rstrip(".") + "."
        lines.append(
            f"| `kommo.{t.name}` | {holds} | {_code(t.key)} | `_embedded.{t.embed}` of "
            f"`kommo.{parent.name}` pages ({_sync(parent)}) | {refs} |"
        )
    return "\n".join(lines)


def configuration_table() -> str:
    """The README's table of settings, rendered from `SETTINGS`."""
    where = {"own": "own", "account": "own, else shared", "shared": "shared", "single": "-"}
    lines = [
        "| variable | default | per account | `defs.yaml` | meaning |",
        "|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        yaml = f"`{s.yaml_field}`" if s.scope != "single" else "-"
        yaml = f"{yaml} (top level)" if s.scope == "shared" else yaml
        lines.append(f"| `{s.env}` | {s.default} | {where[s.scope]} | {yaml} | {s.meaning} |")
    lines.append(
        f"| `{ENV_ACCOUNTS}` | none | - | `accounts[].name` | several accounts, e.g. `br,ru`, "
        "each configured by `KOMMO_<ACCOUNT>_*` variables (see [Several accounts]"
        "(#several-accounts)) |"
    )
    return "\n".join(lines)


TABLES: dict[str, Callable[[], str]] = {
    "streams": streams_table,
    "links": links_table,
    "partitions": partitions_table,
    "stream_settings": stream_settings_table,
    "derived": derived_table,
    "configuration": configuration_table,
}


def render(text: str) -> str:
    """``text`` with every generated block replaced by what the declaration renders now."""

    def block(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise KeyError(f"the README names an unknown generated table {name!r}")
        return f"{m.group(1)}{TABLES[name]()}\n{m.group(4)}"

    return _BLOCK.sub(block, text)


def generated_names(text: str) -> list[str]:
    return [m.group("name") for m in _BLOCK.finditer(text)]


def update_readme(path: Path) -> bool:
    """Rewrite the generated tables of the README at ``path``; True if it changed."""
    text = path.read_text(encoding="utf-8")
    new = render(text)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    import sys

    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    print(f"{readme}: {'updated' if update_readme(readme) else 'already up to date'}")
