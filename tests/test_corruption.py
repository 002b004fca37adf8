"""Corruption suite: every kind of index file damaged four ways, then `rag search` and one
`rag ingest`, in the manner of the kill-9 suite (tests/test_faults.py).

Damages: cut to half its size, filled with random bytes of the same length, deleted,
or replaced by the same file from the previous generation of the same index (a backup
put back, a sync tool). A folder is damaged file by file (or deleted, or swapped whole).

For each case, `rag search` either exits 8 naming the damaged file (or the folder that
holds it), or answers from what remains: every hit a verbatim slice of a version of its
note. Then one `rag ingest` of the notes leaves a complete, consistent index
(`check_index`: manifest, snapshot, BM25, chunk files and Chroma agree, nothing left
over), with the same chunks as a fresh ingest of the same notes, every note searchable,
and `rag status` clean. No output holds a traceback, and a damage that `search` reported
is one the ingest reports as repaired.

Two index templates: Chroma as a small index has it (vectors replayed from its log, the
HNSW files scratch), and with its HNSW segment persisted (`sync_threshold` 2), where a
damaged vector file would crash hnswlib if Chroma loaded it. (Search reads the snapshot's
copy of the vectors, so Chroma's damage shows at the ingest, which opens Chroma.)
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.index.manifest import Manifest
from pipeline.ingest.sync import Ingestor
from tests.conftest import hash_settings, run_main
from tests.test_faults import check_index, version_bytes, write_corpus

DAMAGES = ("truncate", "garbage", "delete", "swap")
QUERY = "7Bモデルは4bit量子化で約4GBのメモリで動く"  # keep1.md, the same in both generations
CHANGED_NOTE = "mod1.md"  # differs between the generations: its chunk file has another name in each
# What the index keeps, as paths relative to it ({snap}: the live snapshot, {doc}: the
# chunk file of CHANGED_NOTE, {seg}: Chroma's vector segment folder).
SMALL_KINDS = (
    "manifest.json",
    "{snap}",
    "{snap}/chunks.jsonl",
    "{snap}/documents.jsonl",
    "{snap}/bm25/chunk_ids.json",
    "{snap}/bm25/data.csc.index.npy",
    "{snap}/bm25/indices.csc.index.npy",
    "{snap}/bm25/indptr.csc.index.npy",
    "{snap}/bm25/vocab.index.json",
    "{snap}/bm25/params.index.json",
    "{snap}/vectors.npy",
    "{doc}",
    "last_run.json",
    "chroma/chroma.sqlite3",
    "chroma/{seg}",
)
PERSISTED_KINDS = (
    "chroma/chroma.sqlite3",
    "chroma/{seg}",
    "chroma/{seg}/header.bin",
    "chroma/{seg}/data_level0.bin",
    "chroma/{seg}/length.bin",
    "chroma/{seg}/link_lists.bin",
    "chroma/{seg}/index_metadata.pickle",
)
CASES = [("small", k, d) for k in SMALL_KINDS for d in DAMAGES] + [
    ("persisted", k, d) for k in PERSISTED_KINDS for d in DAMAGES
]


def _persist_early(index_dir: Path) -> None:
    """Create the collection so Chroma persists its HNSW segment after two records."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(
        path=str(index_dir / "chroma"), settings=ChromaSettings(anonymized_telemetry=False)
    )
    client.get_or_create_collection(
        "rag_chunks", embedding_function=None,
        configuration={"hnsw": {"space": "cosine", "sync_threshold": 2, "batch_size": 2}},
    )
    client.close()


def _build(base: Path, persisted: bool) -> SimpleNamespace:
    """An index of generation B and a copy of the same index at generation A."""
    notes, current, older = base / "notes", base / "index", base / "older"
    write_corpus(notes, "A")
    if persisted:
        _persist_early(current)
    Ingestor(hash_settings(current), current).run([notes])
    shutil.copytree(current, older)
    files = write_corpus(notes, "B")
    Ingestor(hash_settings(current), current).run([notes])
    return SimpleNamespace(notes=notes, current=current, older=older, files=files)


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    base = tmp_path_factory.mktemp("corruption")
    return {"small": _build(base / "small", False), "persisted": _build(base / "persisted", True)}


def _segment(index_dir: Path) -> str:
    segs = sorted(p.name for p in (index_dir / "chroma").iterdir() if p.is_dir())
    return segs[0] if segs else "no-segment"


def _paths(template: SimpleNamespace, kind: str) -> tuple[str, str]:
    """The damaged path (relative to the index) and its counterpart in the older generation."""
    now, then = Manifest.load(template.current), Manifest.load(template.older)
    key = str(template.notes / CHANGED_NOTE)
    fields = {"snap": now.snapshot, "doc": now.documents[key].chunk_file, "seg": _segment(template.current)}
    older = {"snap": then.snapshot, "doc": then.documents[key].chunk_file, "seg": _segment(template.older)}
    return kind.format(**fields), kind.format(**older)


def damage(target: Path, how: str, source: Path) -> None:
    rng = random.Random(f"{target.name}:{how}")
    files = [target] if target.is_file() else sorted(f for f in target.rglob("*") if f.is_file())
    if how == "delete":
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    elif how == "swap":
        if target.is_dir():
            shutil.rmtree(target)
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    else:
        for f in files:
            size = f.stat().st_size
            f.write_bytes(f.read_bytes()[: size // 2] if how == "truncate" else rng.randbytes(size))


@pytest.fixture
def rag(monkeypatch, capsys):
    """`rag ARGS` in this process through the CLI's entry point: (exit code, stdout, stderr)."""
    monkeypatch.setenv("RAG_EMBED_MODEL", "hash:256")
    monkeypatch.setenv("RAG_CHUNK_TOKENS", "120")
    # no LLM: ingest skips the long-context preparation (tests/test_long_context.py)
    monkeypatch.setenv("RAG_LLM_BACKEND", "extractive")

    def run(*args) -> tuple[int, str, str]:
        code, out, err = run_main(monkeypatch, capsys, *args)
        assert "Traceback" not in out + err, out + err
        return code, out, err

    return run


def assert_answers(out: str) -> None:
    """Every hit is a verbatim slice of one version of its note, and the queried note is found."""
    hits = json.loads(out)
    versions = [version_bytes("A"), version_bytes("B")]
    for hit in hits:
        name = Path(hit["path"]).name
        slices = [v[name].decode("utf-8")[hit["start"] : hit["end"]] for v in versions if name in v]
        assert hit["text"] in slices, f"{hit['path']}:{hit['start']} is not a slice of the note"
    assert "keep1.md" in {Path(h["path"]).name for h in hits}


def named_path(err: str) -> Path:
    match = re.search(r"インデックスが壊れています: (.+?) \(", err)
    assert match, err
    return Path(match.group(1))


@pytest.mark.parametrize("template_name,kind,how", CASES, ids=[f"{t}-{k}-{d}" for t, k, d in CASES])
def test_damaged_index_file_is_named_or_survived_and_one_ingest_rebuilds_it(
    template_name, kind, how, templates, rag, tmp_path
):
    template = templates[template_name]
    index_dir = tmp_path / "index"
    shutil.copytree(template.current, index_dir)
    rel, older_rel = _paths(template, kind)
    target, source = index_dir / rel, template.older / older_rel
    if not target.exists() or (how == "swap" and not source.exists()):
        pytest.skip(f"{rel}: not in this index")
    damage(target, how, source)

    searched, out, err = rag("search", QUERY, "--index", index_dir, "--json", "-k", "5")
    assert searched in (0, 8), err
    if searched == 8:
        named = named_path(err)
        assert named == target or named in target.parents or target in named.parents, (named, target)
        assert index_dir in named.parents
        assert f"--index {index_dir}" in err and str(template.notes) in err  # the way out, runnable
    else:
        assert_answers(out)

    code, out, err = rag("ingest", template.notes, "--index", index_dir, "--quiet")
    assert code == 0, err
    line = json.loads(out.split("rag-ingest ", 1)[1])
    assert line["status"] == "ok" and line["documents"] == len(template.files) and not line["skipped"]
    if searched == 8:
        assert line["repaired"], "search found damage that the ingest did not repair"

    settings = hash_settings(index_dir)
    check_index(settings, template.files, final=True)
    fresh = Manifest.load(template.current)
    rebuilt = Manifest.load(index_dir)
    assert {p: e.chunk_ids for p, e in rebuilt.documents.items()} == {
        p: e.chunk_ids for p, e in fresh.documents.items()
    }, "chunks differ from a fresh ingest of the same notes"

    code, out, err = rag("status", "--index", index_dir, "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["documents"] == len(template.files)
    assert not any(status["changed_since_ingest"].values())
    code, out, err = rag("search", QUERY, "--index", index_dir, "--json", "-k", "5")
    assert code == 0, err
    assert_answers(out)
    for path in template.files:  # every note can be found again
        name = Path(path).name
        code, out, err = rag("search", f"{name}の補足3番目の説明文です。", "--index", index_dir, "--json",
                             "--retriever", "bm25", "-k", "3")
        assert code == 0, err
        assert name in {Path(h["path"]).name for h in json.loads(out)}, f"{name} cannot be found"


def test_rebuild_indexes_every_note_again_and_keeps_the_vectors(templates, rag, tmp_path):
    template = templates["small"]
    index_dir = tmp_path / "index"
    shutil.copytree(template.current, index_dir)
    before = Manifest.load(index_dir)
    code, out, err = rag("ingest", template.notes, "--index", index_dir, "--rebuild", "--quiet")
    assert code == 0, err
    line = json.loads(out.split("rag-ingest ", 1)[1])
    assert line["reindexed"] == len(template.files) and line["embedded_chunks"] == 0
    assert line["reused_vectors"] == line["chunks"] == before.chunk_count()
    assert line["repair_note"].startswith("インデックスをノートから作り直しました") and line["repaired"] == []
    after = Manifest.load(index_dir)
    assert after.generation > before.generation
    assert all(after.documents[p].chunk_stamp["mtime_ns"] != e.chunk_stamp["mtime_ns"] for p, e in before.documents.items())
    check_index(hash_settings(index_dir), template.files, final=True)


def test_rebuild_through_the_api_embeds_again_what_chroma_lost(templates, tmp_path):
    from pipeline import api

    template = templates["small"]
    index_dir = tmp_path / "index"
    shutil.copytree(template.current, index_dir)
    shutil.rmtree(index_dir / "chroma")
    summary = api.ingest([template.notes], settings=hash_settings(index_dir), rebuild=True)
    assert summary.rebuilt and summary.embedded_chunks == summary.chunks and summary.reused_vectors == 0
    check_index(hash_settings(index_dir), template.files, final=True)


def test_an_index_written_before_checksums_is_read_and_upgraded_without_a_repair(templates, rag, tmp_path):
    template = templates["small"]
    index_dir = tmp_path / "index"
    shutil.copytree(template.current, index_dir)
    raw = json.loads((index_dir / "manifest.json").read_text("utf-8"))
    for key in ("snapshot_files", "chroma_files", "chroma_seq", "roots"):
        raw.pop(key)
    for entry in raw["documents"].values():
        entry.pop("chunk_stamp")
    raw["format_version"] = 1
    (index_dir / "manifest.json").write_text(json.dumps(raw, ensure_ascii=False), "utf-8")

    code, out, err = rag("search", QUERY, "--index", index_dir, "--json")
    assert code == 0, err
    assert_answers(out)
    code, out, err = rag("ingest", template.notes, "--index", index_dir, "--quiet")
    assert code == 0, err
    assert "repaired" not in json.loads(out.split("rag-ingest ", 1)[1])
    upgraded = Manifest.load(index_dir)
    assert upgraded.format_version == 2 and upgraded.snapshot_files and upgraded.roots == [str(template.notes)]
    assert all(e.chunk_stamp for e in upgraded.documents.values())
    check_index(hash_settings(index_dir), template.files, final=True)


def test_ingest_of_a_sound_index_reports_no_repair_and_changes_nothing(templates, rag, tmp_path):
    template = templates["small"]
    index_dir = tmp_path / "index"
    shutil.copytree(template.current, index_dir)
    code, out, err = rag("ingest", template.notes, "--index", index_dir, "--quiet")
    assert code == 0, err
    line = json.loads(out.split("rag-ingest ", 1)[1])
    assert "repaired" not in line and line["unchanged"] == len(template.files) and line["embedded_chunks"] == 0
    assert Manifest.load(index_dir) == Manifest.load(template.current)


@pytest.mark.parametrize("chroma_damage", ["garbage", "delete"])
@pytest.mark.parametrize("rebuild", [False, True], ids=["cut-manifest", "rebuild"])
def test_two_damages_at_once_still_end_in_a_complete_index(chroma_damage, rebuild, templates, rag, tmp_path):
    """The manifest cut (or --rebuild asked) while Chroma's database is damaged too."""
    template = templates["persisted"]
    index_dir = tmp_path / "index"
    shutil.copytree(template.current, index_dir)
    if not rebuild:
        damage(index_dir / "manifest.json", "truncate", template.older / "manifest.json")
    damage(index_dir / "chroma" / "chroma.sqlite3", chroma_damage, template.older / "chroma" / "chroma.sqlite3")
    code, out, err = rag("search", QUERY, "--index", index_dir, "--json")
    assert code == (0 if rebuild else 8), err  # search reads the snapshot's vectors, not Chroma
    args = ("--rebuild",) if rebuild else ()
    code, out, err = rag("ingest", template.notes, "--index", index_dir, "--quiet", *args)
    assert code == 0, err
    line = json.loads(out.split("rag-ingest ", 1)[1])
    assert line["documents"] == len(template.files) and line["embedded_chunks"] == line["chunks"]
    check_index(hash_settings(index_dir), template.files, final=True)


def test_ask_on_a_damaged_index_names_the_file_instead_of_answering(templates, rag, tmp_path):
    template = templates["small"]
    index_dir = tmp_path / "index"
    shutil.copytree(template.current, index_dir)
    snapshot = Manifest.load(index_dir).snapshot
    damage(index_dir / snapshot / "documents.jsonl", "truncate", template.older)
    code, out, err = rag("ask", "量子化したモデルのメモリは？", "--backend", "extractive", "--index", index_dir)
    assert code == 8, err
    assert named_path(err) == index_dir / snapshot / "documents.jsonl" and out == ""


def test_a_damaged_note_outside_the_folders_given_is_rebuilt_from_its_note_or_dropped(tmp_path, notes):
    other = tmp_path / "other"
    other.mkdir()
    memo = other / "memo.md"
    memo.write_text("# 別のメモ\n\n検索拡張生成のメモです。根拠の文書を引用する。\n", "utf-8")
    index_dir = tmp_path / "index"
    settings = hash_settings(index_dir)
    Ingestor(settings, index_dir).run([notes, other])
    (index_dir / Manifest.load(index_dir).documents[str(memo)].chunk_file).unlink()

    run = Ingestor(settings, index_dir).run([notes])  # only the first folder
    assert run.reindexed == 1 and run.repaired and run.embedded_chunks == 0
    assert (index_dir / Manifest.load(index_dir).documents[str(memo)].chunk_file).exists()

    (index_dir / Manifest.load(index_dir).documents[str(memo)].chunk_file).unlink()
    memo.unlink()
    run = Ingestor(settings, index_dir).run([notes])
    assert run.deleted_paths == [str(memo)] and str(memo) not in Manifest.load(index_dir).documents
    assert set(Manifest.load(index_dir).documents) == {str(p) for p in notes.iterdir()}
