"""schemas/: the JSON Schemas published for the manifest and ``users/latest.json``, in step with records.py.

The schemas are what consumers validate against; ``Manifest.parse`` and ``LatestPointer.parse`` are what the
exporter reads back. Whatever a schema accepts, the parser must read (to the same document); whatever the
parser rejects, the schema must reject. The schema is deliberately stricter in a few listed places (blob
name patterns, times to the second in ``Z``, no unknown fields, …): those are pinned below, so a change on
either side shows up here. (One gap is not tested: JSON Schema counts 3.0 as an integer, the parser does
not; JSON written by the exporter never holds one.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
from jsonschema import Draft202012Validator

from graph_export.records import MANIFEST_FORMAT, CsvFile, DeltaApplied, LatestPointer, Manifest, RecordError

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
FILES = ("manifest.schema.json", "manifest-1.schema.json", "latest.schema.json", "manifest-2.schema.json",
         "manifest-3.schema.json")
FORMAT_1 = "graph-users-export/1"
FORMAT_2 = "graph-users-export/2"
FORMAT_3 = "graph-users-export/3"

#: sha256 of the schemas' structure (titles and descriptions left out), per manifest format. A schema change
#: readers can see needs a new MANIFEST_FORMAT (records.py); the old manifest schema then stays as
#: schemas/manifest-N.schema.json for the manifests already written, frozen like manifest-1.
SCHEMA_DIGESTS = {
    MANIFEST_FORMAT: "c9213c9a72ab63761845831775be8fb8cb2ec53012b52093b678dc57678f6731",
    FORMAT_3: "db9be4fdb496304939be3514f55188a11ba35f9bf4bd7565da6bc6936e85f2a0",
    FORMAT_2: "a9cf53251ac6263a2078eb47592e3653c523e17520cef86850791d19a50fcd13",
    FORMAT_1: "566cc77227c546bded807ca65b2d11ea8259b5ed370fb8ed17b4eb23f98233e5",
}


def load(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


MANIFEST_SCHEMA, MANIFEST_1_SCHEMA, LATEST_SCHEMA, MANIFEST_2_SCHEMA, MANIFEST_3_SCHEMA = (validator(name) for name in FILES)


def manifest_schema_for(document: Any) -> Draft202012Validator:
    """As a reader picks it: by the manifest's format."""
    version = document.get("format") if isinstance(document, dict) else None
    return {FORMAT_1: MANIFEST_1_SCHEMA, FORMAT_2: MANIFEST_2_SCHEMA, FORMAT_3: MANIFEST_3_SCHEMA}.get(version, MANIFEST_SCHEMA) \
        if isinstance(version, str) else MANIFEST_SCHEMA


def schema_errors(document: Any, schema: Draft202012Validator | None = None) -> list[str]:
    schema = schema or manifest_schema_for(document)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(document)'}: {e.message}" for e in schema.iter_errors(document)]


def parses(parse: Callable[[Any], Any], document: Any) -> bool:
    try:
        parse(document)
    except RecordError:
        return False
    return True


SLOT = datetime(2026, 3, 7, 2, tzinfo=timezone.utc)
SHA = "ab" * 32
OTHER_SHA = "0123456789abcdef" * 4
RUN = "0123456789ab"
DAY = f"users/2026/03/07/users-20260307T020000Z-{RUN}"

FULL = Manifest(
    container="graph-exports", blob=f"{DAY}.jsonl.gz", manifest=f"{DAY}.manifest.json", users=3, pages=1,
    properties=("id", "displayName", "mail"), bytes=10, uncompressed_bytes=30, sha256=SHA, slot=SLOT,
    started=SLOT + timedelta(seconds=1), finished=SLOT + timedelta(seconds=42), resumed=False,
    tenant_id="contoso.onmicrosoft.com", graph_endpoint="https://graph.microsoft.com", run=RUN)
DELTA = DeltaApplied(base_manifest="users/2026/03/06/users-20260306T020000Z.manifest.json", base_sha256=OTHER_SHA,
                     changes_blob=f"{DAY}.changes.jsonl.gz", changes_bytes=99, changes_sha256=SHA, change_records=7,
                     added=1, updated=5, removed=1)
CSV = CsvFile(blob=f"{DAY}.csv.gz", bytes=12, uncompressed_bytes=40, sha256=OTHER_SHA)

EXAMPLES = {
    "full": FULL,
    "full with csv": dataclasses.replace(FULL, csv=CSV),
    "delta": dataclasses.replace(FULL, mode="delta", delta=DELTA),
    "delta with csv": dataclasses.replace(FULL, mode="delta", delta=DELTA, csv=CSV),
    "full in delta mode with drift": dataclasses.replace(FULL, drift=4),
    "no drift": dataclasses.replace(FULL, drift=0, csv=CSV),
    "resumed, empty tenant": dataclasses.replace(FULL, users=0, uncompressed_bytes=0, bytes=20, resumed=True,
                                                 properties=("id",), tenant_id="4a1c2b9e-0000-4000-8000-000000000001"),
    "forced, superseding a format 2 export": dataclasses.replace(
        FULL, supersedes="users/2026/03/07/users-20260307T020000Z.manifest.json"),
    "forced again": dataclasses.replace(FULL, supersedes=f"users/2026/03/07/users-20260307T020000Z-{'f' * 12}"
                                                         ".manifest.json"),
}


# --- The schemas themselves -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", FILES)
def test_each_schema_is_valid_json_schema_2020_12_with_its_own_id(name):
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/schemas/{name}")
    assert schema["title"] and schema["description"]
    assert schema["additionalProperties"] is False


def described(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every object's properties in a schema (top level and $defs), by a readable path."""
    found = dict(schema["properties"])
    for definition, spec in schema.get("$defs", {}).items():
        for name, field in spec.get("properties", {}).items():
            found[f"{definition}.{name}"] = field
    return found


@pytest.mark.parametrize("name", FILES)
def test_every_field_has_a_title_and_a_description_a_reader_can_use(name):
    for path, spec in described(load(name)).items():
        assert spec.get("title") and len(spec.get("description", "")) >= 20, f"{name}: {path}"


def test_the_schemas_list_exactly_the_fields_the_exporter_writes():
    manifest, manifest_1, latest, manifest_2, manifest_3 = (load(name) for name in FILES)
    document = EXAMPLES["delta with csv"].to_document()
    assert set(manifest["properties"]) == set(manifest["required"]) == set(document)
    assert set(manifest_3["properties"]) == set(manifest_3["required"]) == set(document) - {"count"}
    assert set(manifest_2["properties"]) == set(document) - {"run", "supersedes", "count"}
    assert set(manifest_2["required"]) == set(document) - {"run", "supersedes", "csv", "count"}  # absent csv: before CSV
    assert set(manifest["$defs"]["deltaApplied"]["properties"]) == set(document["delta"])
    assert set(manifest["$defs"]["deltaApplied"]["required"]) == set(document["delta"])
    assert set(manifest["$defs"]["csvFile"]["properties"]) == set(document["csv"])
    assert set(manifest["$defs"]["csvFile"]["required"]) == set(document["csv"])
    assert set(manifest_1["properties"]) == set(manifest_1["required"]) == set(document) - {
        "mode", "delta", "drift", "csv", "run", "supersedes", "count"}
    assert set(latest["properties"]) == set(latest["required"]) == set(FULL.pointer().to_document())


def test_the_format_in_the_schema_is_the_one_the_exporter_writes():
    assert load("manifest.schema.json")["properties"]["format"]["const"] == MANIFEST_FORMAT
    assert FULL.to_document()["format"] == MANIFEST_FORMAT
    assert load("manifest-1.schema.json")["properties"]["format"]["const"] == FORMAT_1
    assert load("manifest-2.schema.json")["properties"]["format"]["const"] == FORMAT_2


def structure(schema: Any) -> Any:
    """What a validator sees: the schema without its annotations for people."""
    if isinstance(schema, dict):
        return {k: structure(v) for k, v in schema.items() if k not in ("title", "description", "$comment")}
    if isinstance(schema, list):
        return [structure(v) for v in schema]
    return schema


def digest(*names: str) -> str:
    canonical = json.dumps([structure(load(name)) for name in names], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def test_a_changed_schema_comes_with_a_new_format():
    current = {MANIFEST_FORMAT: digest("manifest.schema.json", "latest.schema.json"),
               FORMAT_3: digest("manifest-3.schema.json"), FORMAT_2: digest("manifest-2.schema.json"), FORMAT_1: digest("manifest-1.schema.json")}
    assert current == SCHEMA_DIGESTS, (
        "schemas/ changed in a way validators see. If readers of existing exports could tell (a field added, "
        "removed, renamed, retyped or stricter), give the manifest a new format (MANIFEST_FORMAT in records.py), "
        "keep the previous schema as schemas/manifest-N.schema.json, and pin the new digests here. "
        "Descriptions and titles are free to change.")


# --- What the exporter writes validates, and reads back -------------------------------------------------

@pytest.mark.parametrize("example", EXAMPLES)
def test_a_manifest_built_from_records_validates_and_reads_back(example):
    manifest = EXAMPLES[example]
    document = manifest.to_document()
    assert schema_errors(document) == []
    assert Manifest.parse(document) == manifest
    pointer = manifest.pointer().to_document()
    assert schema_errors(pointer, LATEST_SCHEMA) == []
    assert LatestPointer.parse(pointer) == manifest.pointer()


#: What a format 2 manifest (before run-unique names) says of the same export.
FULL_2 = dataclasses.replace(FULL, blob="users/2026/03/07/users-20260307T020000Z.jsonl.gz",
                             manifest="users/2026/03/07/users-20260307T020000Z.manifest.json", run=None)


def format_2(manifest: Manifest) -> dict[str, Any]:
    return {k: v for k, v in {**manifest.to_document(), "format": FORMAT_2}.items()
            if k not in ("run", "supersedes", "count")}


def test_a_format_2_manifest_without_a_csv_field_is_one_without_a_csv_copy():
    document = format_2(FULL_2)
    del document["csv"]
    assert schema_errors(document) == [] and Manifest.parse(document) == FULL_2
    assert schema_errors(without(FULL, "csv"))  # format 3 always says


def test_a_format_2_manifest_has_its_own_schema_and_still_reads():
    csv = CsvFile(blob="users/2026/03/07/users-20260307T020000Z.csv.gz", bytes=12, uncompressed_bytes=40,
                  sha256=OTHER_SHA)
    document = format_2(dataclasses.replace(FULL_2, csv=csv))
    assert schema_errors(document, MANIFEST_2_SCHEMA) == []
    assert Manifest.parse(document) == dataclasses.replace(FULL_2, csv=csv)  # no run: a run before format 3
    assert schema_errors(document, MANIFEST_SCHEMA)  # it is not a format 3 manifest
    assert schema_errors({**FULL.to_document(), "format": FORMAT_2}, MANIFEST_2_SCHEMA)  # format 2 had no run
    assert schema_errors(FULL.to_document(), MANIFEST_2_SCHEMA)


def test_a_format_1_manifest_has_its_own_schema():
    document = {k: v for k, v in format_2(FULL_2).items() if k not in ("mode", "delta", "drift", "csv")}
    document["format"] = FORMAT_1
    assert schema_errors(document, MANIFEST_1_SCHEMA) == []
    assert Manifest.parse(document) == FULL_2  # still read, as a full export
    assert schema_errors(document, MANIFEST_SCHEMA)  # it is not a format 3 manifest
    assert schema_errors({**document, "mode": "full"}, MANIFEST_1_SCHEMA)  # format 1 had no mode
    assert schema_errors(FULL.to_document(), MANIFEST_1_SCHEMA)


# --- What the schema rejects --------------------------------------------------------------------------

def changed(base: Manifest | LatestPointer, **fields: Any) -> dict[str, Any]:
    document = base.to_document()
    for name, value in fields.items():
        if "__" in name:  # delta__added=…: a field of a nested object
            outer, inner = name.split("__")
            document[outer] = {**document[outer], inner: value}
        else:
            document[name] = value
    return document


def without(base: Manifest | LatestPointer, name: str) -> dict[str, Any]:
    return {k: v for k, v in base.to_document().items() if k != name}


DELTA_CSV = EXAMPLES["delta with csv"]
POINTER = FULL.pointer()

#: (document, whether Manifest.parse rejects it too): False marks where the schema is deliberately stricter.
REJECTED_MANIFESTS = {
    # wrong type
    "users as text": (changed(FULL, users="3"), True),
    "users a boolean": (changed(FULL, users=True), True),
    "users a fraction": (changed(FULL, users=2.5), True),
    "resumed as text": (changed(FULL, resumed="no"), True),
    "properties as text": (changed(FULL, properties="id,mail"), True),
    "a property not text": (changed(FULL, properties=["id", 5]), True),
    "drift as text": (changed(FULL, drift="3"), True),
    "slot a number": (changed(FULL, slot=5), True),
    "delta not an object": (changed(DELTA_CSV, delta=5), True),
    "csv not an object": (changed(FULL, csv="users.csv.gz"), True),
    "a delta count as text": (changed(DELTA_CSV, delta__added="1"), True),
    "csv bytes negative": (changed(DELTA_CSV, csv__bytes=-1), True),
    "the whole manifest a list": ([FULL.to_document()], True),
    # missing field
    "no users": (without(FULL, "users"), True),
    "no sha256": (without(FULL, "sha256"), True),
    "no mode": (without(FULL, "mode"), True),
    "no format": (without(FULL, "format"), True),
    "no finished": (without(FULL, "finished"), True),
    "delta without removed": ({**DELTA_CSV.to_document(),
                               "delta": {k: v for k, v in DELTA.to_document().items() if k != "removed"}}, True),
    "csv without sha256": ({**DELTA_CSV.to_document(),
                            "csv": {k: v for k, v in CSV.to_document().items() if k != "sha256"}}, True),
    "no delta field": (without(FULL, "delta"), False),  # the parser reads an absent delta/drift as null
    "no drift field": (without(FULL, "drift"), False),
    # extra field: the parser ignores what it does not know, the schema does not
    "an extra field": (changed(FULL, comment="added by hand"), False),
    "an extra delta field": (changed(DELTA_CSV, delta__note="x"), False),
    "an extra csv field": (changed(DELTA_CSV, csv__rows=3), False),
    # bad sha256
    "sha256 in capitals": (changed(FULL, sha256=SHA.upper()), True),
    "sha256 too short": (changed(FULL, sha256=SHA[:-1]), True),
    "sha256 not hex": (changed(FULL, sha256="z" * 64), True),
    "base_sha256 bad": (changed(DELTA_CSV, delta__base_sha256="nothex"), True),
    "csv sha256 bad": (changed(DELTA_CSV, csv__sha256=SHA + "00"), True),
    # bad format
    "a future format": (changed(FULL, format="graph-users-export/5"), True),
    "run missing": (without(FULL, "run"), True),
    "run not hex": (changed(FULL, run="ZZZZZZZZZZZZ"), True),
    "supersedes a number": (changed(FULL, supersedes=5), True),
    "no supersedes field": (without(FULL, "supersedes"), False),  # the parser reads absent as null
    "no csv field": (without(FULL, "csv"), False),
    "supersedes not a manifest's name": (changed(FULL, supersedes="users/x.json"), False),
    "blob without its run": (changed(FULL, blob="users/2026/03/07/users-20260307T020000Z.jsonl.gz"), False),
    "format null": (changed(FULL, format=None), True),
    "format 1 with format 3's fields": (changed(FULL, format=FORMAT_1), False),  # parser: a full export
    "format 2 with format 3's fields": (changed(FULL, format=FORMAT_2), False),  # parser: a run-less export
    # mode and delta
    "mode partial": (changed(FULL, mode="partial"), True),
    "mode delta without delta": (changed(FULL, mode="delta"), True),
    "mode full with delta": (changed(DELTA_CSV, mode="full"), True),
    "drift negative": (changed(FULL, drift=-1), True),
    # times
    "time without a zone": (changed(FULL, slot="2026-03-07T02:00:00"), True),
    "no such day": (changed(FULL, finished="2026-02-30T02:00:00Z"), True),
    "not a time": (changed(FULL, started="yesterday"), True),
    "time with an offset": (changed(FULL, slot="2026-03-07T03:00:00+01:00"), False),  # the parser reads any zone
    "time with a fraction": (changed(FULL, finished="2026-03-07T02:00:42.5Z"), False),
    # names
    "blob empty": (changed(FULL, blob=""), True),
    "blob not an export's name": (changed(FULL, blob="users/latest.jsonl.gz"), False),  # parser: any text
    "csv blob not a csv name": (changed(DELTA_CSV, csv__blob=f"{DAY}.jsonl.gz"), False),
    "container with capitals": (changed(FULL, container="Graph_Exports"), False),
    "id not the first property": (changed(FULL, properties=["mail", "id"]), False),
    "no properties": (changed(FULL, properties=[]), False),
}


@pytest.mark.parametrize("case", REJECTED_MANIFESTS)
def test_a_manifest_the_exporter_would_not_write_fails_the_schema(case):
    document, parser_rejects_too = REJECTED_MANIFESTS[case]
    assert schema_errors(document), "the schema accepted it"
    assert parses(Manifest.parse, document) is not parser_rejects_too


REJECTED_POINTERS = {
    "not an object": (None, True),
    "empty": ({}, True),
    "no sha256": (without(POINTER, "sha256"), True),
    "users negative": (changed(POINTER, users=-1), True),
    "users as text": (changed(POINTER, users="3"), True),
    "sha256 in capitals": (changed(POINTER, sha256=SHA.upper()), True),
    "slot not a time": (changed(POINTER, slot="zzz"), True),
    "finished without a zone": (changed(POINTER, finished="2026-03-07T02:00:42"), True),
    "an extra field": (changed(POINTER, format="graph-users-export/2"), False),
    "finished with an offset": (changed(POINTER, finished="2026-03-07T03:00:42+01:00"), False),
    "blob not an export's name": (changed(POINTER, blob="users/x"), False),
}


@pytest.mark.parametrize("case", REJECTED_POINTERS)
def test_a_latest_json_the_exporter_would_not_write_fails_the_schema(case):
    document, parser_rejects_too = REJECTED_POINTERS[case]
    assert schema_errors(document, LATEST_SCHEMA), "the schema accepted it"
    assert parses(LatestPointer.parse, document) is not parser_rejects_too


# --- Generated documents: the schema and the parser agree, but where the schema is knowingly stricter ---

#: Values tried in every field: right and wrong types, edge values, and values valid for some field.
VALUES = [None, True, False, 0, 1, 7, -1, 2.5, "", "x", "3", "full", "delta", SHA, OTHER_SHA, SHA.upper(),
          "2026-03-08T02:00:00Z", "2026-03-08T02:00:00", "2026-03-08T03:00:00+01:00", "2026-13-01T00:00:00Z",
          [], ["id"], ["id", "mail"], ["mail"], ["id", 5], {}, DELTA.to_document(), CSV.to_document(),
          f"{DAY}.jsonl.gz", f"{DAY}.manifest.json", f"{DAY}.changes.jsonl.gz", f"{DAY}.csv.gz",
          "graph-exports", "https://graph.microsoft.us", MANIFEST_FORMAT, FORMAT_1, FORMAT_2, FORMAT_3, "graph-users-export/5",
          RUN, "f" * 12]

#: Fields whose schema says more than the parser checks: name patterns, times to the second in Z, properties
#: with id first and no repeats, the container's naming rules, a URI. (Absent delta/drift, unknown fields and
#: format 1 with format 2's fields are the other places, tested above and below.)
STRICTER = {"container", "blob", "manifest", "properties", "slot", "started", "finished", "graph_endpoint",
            "delta.base_manifest", "delta.changes_blob", "csv.blob", "supersedes"}


def generated(base: dict[str, Any]):
    """Every field of ``base`` (nested ones too) replaced by every value in VALUES, and removed."""
    for name in base:
        for value in VALUES:
            yield name, {**base, name: value}
        yield f"-{name}", {k: v for k, v in base.items() if k != name}
        if isinstance(base[name], dict):
            for inner, document in generated(base[name]):
                yield f"{name}.{inner}", {**base, name: document}
    yield "+extra", {**base, "extra": 1}


def check_agreement(parse: Callable[[Any], Any], schema_ok: Callable[[Any], bool], base: dict[str, Any],
                    allowed: Callable[[str, dict[str, Any]], bool], defaults: dict[str, Any]) -> int:
    """Every generated document: valid => parsed, to the same document (``defaults`` for fields it may lack);
    parsed but not valid => ``allowed`` (a place where the schema is knowingly stricter). Returns how many
    documents the schema accepted."""
    accepted = 0
    for where, document in generated(base):
        valid, parsed = schema_ok(document), parses(parse, document)
        if valid:
            accepted += 1
            assert parsed, f"{where}: the schema accepts {document} but the parser rejects it"
            assert parse(document).to_document() == {**defaults, **document}, where
        elif parsed:
            assert allowed(where, document), f"{where}: the parser reads {document} but the schema rejects it"
    return accepted


@pytest.mark.parametrize("example", ["delta with csv", "full in delta mode with drift"])
def test_generated_manifests_are_accepted_by_the_schema_only_if_the_parser_reads_them(example):
    def allowed(where: str, document: dict[str, Any]) -> bool:
        field = where.lstrip("-")
        return (field in STRICTER or where in ("-delta", "-drift", "-csv", "-supersedes", "-count", "+extra")
                or where.endswith(".+extra") or document.get("format") in (FORMAT_1, FORMAT_2, FORMAT_3))

    accepted = check_agreement(Manifest.parse, lambda d: manifest_schema_for(d).is_valid(d),
                               EXAMPLES[example].to_document(), allowed, {"csv": None, "supersedes": None, "count": None})
    assert accepted > 50  # the generator also makes documents the schema accepts, not only rejections


def test_generated_pointers_are_accepted_by_the_schema_only_if_the_parser_reads_them():
    def allowed(where: str, document: dict[str, Any]) -> bool:
        return where in ("blob", "manifest", "slot", "finished", "+extra")

    accepted = check_agreement(LatestPointer.parse, LATEST_SCHEMA.is_valid, POINTER.to_document(), allowed, {})
    assert accepted > 5
