"""Data sources: BEIR downloads (file:// URLs, no network), MedQuAD XML conversion, a user's own documents."""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import zipfile
from pathlib import Path
from typing import Any

import pytest

from syntriever_haystack.data import download as download_module
from syntriever_haystack.data.documents import documents_from_store, load_documents, write_beir_corpus
from syntriever_haystack.data.download import BEIR_DATASETS, BeirSource, download_beir, resolve_dataset
from syntriever_haystack.data.medquad_xml import convert_medquad_xml, read_liveqa_questions
from syntriever_haystack.errors import SyntrieverError

SHARED_MEDQUAD = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "medquad"

# ---------------------------------------------------------------------------------------------- downloads


def _beir_zip(path: Path, *, top: str | None = "tiny", extra: dict[str, str] | None = None) -> tuple[Path, str]:
    prefix = f"{top}/" if top else ""
    files = {
        "corpus.jsonl": json.dumps({"_id": "d1", "title": "t", "text": "iron deficiency anemia"}) + "\n",
        "queries.jsonl": json.dumps({"_id": "q1", "text": "what causes anemia"}) + "\n",
        "qrels/test.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
    }
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(prefix + name, content)
        for name, content in (extra or {}).items():
            archive.writestr(name, content)
    return path, hashlib.md5(path.read_bytes()).hexdigest()


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_registry_has_the_published_checksums() -> None:
    for name in ("scifact", "nfcorpus", "fiqa", "arguana", "scidocs", "trec-covid", "quora", "nq", "hotpotqa"):
        source = BEIR_DATASETS[name]
        assert source.url == f"https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
        assert re.fullmatch(r"[0-9a-f]{32}", source.md5)
    assert BEIR_DATASETS["scifact"].md5 == "5f7d1de60b170fc8027bb7898e2efca1"


def test_download_verifies_md5_and_is_cached(tmp_path: Path) -> None:
    archive, md5 = _beir_zip(tmp_path / "tiny.zip")
    cache = tmp_path / "cache"
    folder = download_beir("tiny", cache_dir=cache, url=archive.as_uri(), md5=md5, progress=False)
    assert folder == cache / "tiny"
    assert (folder / "corpus.jsonl").is_file()
    assert (folder / "qrels" / "test.tsv").is_file()
    assert _leftovers(cache) == ["tiny"]  # no temp zip or staging folder left behind

    archive.unlink()  # a second call must not touch the (now missing) source
    assert download_beir("tiny", cache_dir=cache, url=archive.as_uri(), md5=md5, progress=False) == folder


def test_download_of_a_flat_zip(tmp_path: Path) -> None:
    archive, md5 = _beir_zip(tmp_path / "flat.zip", top=None)
    folder = download_beir("flat", cache_dir=tmp_path / "c", url=archive.as_uri(), md5=md5, progress=False)
    assert (folder / "corpus.jsonl").is_file()
    assert _leftovers(tmp_path / "c") == ["flat"]


def test_incomplete_cache_folder_is_not_deleted(tmp_path: Path) -> None:
    archive, md5 = _beir_zip(tmp_path / "tiny.zip")
    (tmp_path / "cache" / "tiny").mkdir(parents=True)
    (tmp_path / "cache" / "tiny" / "mine.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(SyntrieverError, match="not a complete dataset"):
        download_beir("tiny", cache_dir=tmp_path / "cache", url=archive.as_uri(), md5=md5, progress=False)
    assert (tmp_path / "cache" / "tiny" / "mine.txt").is_file()


def test_md5_mismatch_leaves_nothing(tmp_path: Path) -> None:
    archive, md5 = _beir_zip(tmp_path / "tiny.zip")
    cache = tmp_path / "cache"
    with pytest.raises(SyntrieverError) as info:
        download_beir("tiny", cache_dir=cache, url=archive.as_uri(), md5="0" * 32, progress=False)
    message = str(info.value)
    assert "0" * 32 in message
    assert md5 in message
    assert archive.as_uri() in message
    assert _leftovers(cache) == []


def test_registry_md5_is_used_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, _ = _beir_zip(tmp_path / "scifact.zip", top="scifact")
    monkeypatch.setenv("SYNTRIEVER_CACHE", str(tmp_path / "env-cache"))
    with pytest.raises(SyntrieverError, match="5f7d1de60b170fc8027bb7898e2efca1"):
        download_beir("scifact", url=archive.as_uri(), progress=False)
    assert _leftovers(tmp_path / "env-cache" / "datasets") == []


def test_zip_path_traversal_is_refused(tmp_path: Path) -> None:
    archive, md5 = _beir_zip(tmp_path / "evil.zip", extra={"../escaped.txt": "x"})
    cache = tmp_path / "cache"
    with pytest.raises(SyntrieverError, match="traversal"):
        download_beir("evil", cache_dir=cache, url=archive.as_uri(), md5=md5, progress=False)
    assert not (tmp_path / "escaped.txt").exists()
    assert _leftovers(cache) == []


def test_network_failure_says_how_to_work_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*_args: object, **_kwargs: object) -> object:
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(download_module.urllib.request, "urlopen", offline)
    cache = tmp_path / "cache"
    with pytest.raises(SyntrieverError) as info:
        download_beir("scifact", cache_dir=cache, progress=False)
    message = str(info.value)
    assert "--dataset PATH" in message
    assert "no network?" in message
    assert BEIR_DATASETS["scifact"].url in message
    assert _leftovers(cache) == []


def test_missing_file_url_is_a_download_error(tmp_path: Path) -> None:
    with pytest.raises(SyntrieverError, match="download of 'x' failed"):
        download_beir("x", cache_dir=tmp_path, url=(tmp_path / "nope.zip").as_uri(), progress=False)


def test_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(SyntrieverError) as info:
        download_beir("not-a-dataset", cache_dir=tmp_path)
    assert "scifact" in str(info.value)
    assert "--dataset PATH" in str(info.value)
    with pytest.raises(SyntrieverError, match="neither a folder nor a known BEIR dataset name") as info:
        resolve_dataset("not-a-dataset", cache_dir=tmp_path)
    assert "nfcorpus" in str(info.value)
    assert "--dataset PATH" in str(info.value)


def test_resolve_dataset(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    assert resolve_dataset(folder) == folder
    assert resolve_dataset(str(folder)) == folder
    cached = tmp_path / "cache" / "scifact"
    cached.mkdir(parents=True)
    (cached / "corpus.jsonl").write_text("{}\n", encoding="utf-8")
    assert resolve_dataset("beir:scifact", cache_dir=tmp_path / "cache") == cached  # cached: no network


# ---------------------------------------------------------------------------------------------- MedQuAD

_CANCER = """<?xml version="1.0" encoding="UTF-8"?>
<Document id="0000001_1" source="CancerGov" url="https://www.cancer.gov/types/leukemia/patient/adult-all-treatment-pdq">
<Focus>Adult Acute Lymphoblastic Leukemia</Focus>
<FocusAnnotations><UMLS><CUIs><CUI>C0751606</CUI></CUIs></UMLS></FocusAnnotations>
<QAPairs>
\t<QAPair pid="1">
\t\t\t<Question qid="0000001_1-1" qtype="information">What is (are) Adult Acute Lymphoblastic Leukemia ?</Question>
\t\t\t<Answer>Key Points
                    - Adult ALL is a type of cancer.    - Leukemia may affect red blood cells.</Answer>
\t</QAPair>
\t<QAPair pid="2">
\t\t\t<Question qid="0000001_1-2" qtype="symptoms">What are the symptoms of Adult Acute \
Lymphoblastic Leukemia ?</Question>
\t\t\t<Answer>Fever, feeling tired &amp; easy bruising.</Answer>
\t</QAPair>
</QAPairs>
</Document>
"""
_CDC = """<?xml version="1.0" encoding="UTF-8"?>
<Document id="0000001" source="CDC" url="http://www.cdc.gov/parasites/acanthamoeba/">
<Focus>Acanthamoeba - Granulomatous Amebic Encephalitis (GAE); Keratitis</Focus>
<QAPairs>
\t<QAPair pid="1">
\t\t<Question qid="0000001-1" qtype="information">What is (are) Acanthamoeba - Granulomatous Amebic \
Encephalitis (GAE); Keratitis ?</Question>
\t\t<Answer>Acanthamoeba is a microscopic, free-living ameba (single-celled living organism) commonly found in the
        environment that can cause rare, but severe, illness. Acanthamoeba causes three main types of illness involving
        the eye (Acanthamoeba keratitis), the brain and spinal cord (Granulomatous Encephalitis), and infections that
        can spread throughout the entire body (disseminated infection).</Answer>
\t</QAPair>
</QAPairs>
</Document>
"""
_ADAM = """<?xml version="1.0" encoding="UTF-8"?>
<Document id="0000011" source="ADAM" url="https://www.nlm.nih.gov/medlineplus/ency/article/003789.htm">
 <!--Answers from the A.D.A.M. medical encyclopedia were removed to comply with the MedlinePlus copyright-->
<Focus>Abdominal CT scan</Focus>
<QAPairs>
\t<QAPair pid="1">
\t\t\t<Question qid="0000011-1" qtype="information">Do you have information about Abdominal CT scan</Question>
\t\t\t<Answer></Answer>
\t</QAPair>
</QAPairs>
</Document>
"""
_LIVEQA = """<?xml version="1.0" encoding="UTF-8"?>
<LiveQA2017-Medical-Test-Set-Full>
\t<NLM-QUESTION qid="TQ1">
\t\t<Original-Question qfile="71.txt">
\t\t\t<SUBJECT>Abdominal CT</SUBJECT>
\t\t\t<MESSAGE> what is an abdominal ct scan	</MESSAGE>
\t\t</Original-Question>
\t\t<NIST-PARAPHRASE>What is an abdominal CT scan?</NIST-PARAPHRASE>
\t\t<NLM-Summary> What is an abdominal CT scan and how is it done?</NLM-Summary>
\t</NLM-QUESTION>
\t<NLM-QUESTION qid="TQ2">
\t\t<Original-Question qfile="72.txt"><SUBJECT>ALL</SUBJECT><MESSAGE>leukemia signs</MESSAGE></Original-Question>
\t\t<NIST-PARAPHRASE>What are the signs of leukemia?</NIST-PARAPHRASE>
\t</NLM-QUESTION>
</LiveQA2017-Medical-Test-Set-Full>
"""


def _medquad_repo(root: Path) -> Path:
    for folder, name, content in (
        ("1_CancerGov_QA", "0000001_1.xml", _CANCER),
        ("9_CDC_QA", "0000001.xml", _CDC),
        ("10_MPlus_ADAM_QA", "0000011.xml", _ADAM),
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / name).write_text(content, encoding="utf-8")
    return root


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_medquad_conversion(tmp_path: Path) -> None:
    repo = _medquad_repo(tmp_path / "MedQuAD")
    out = tmp_path / "out"
    summary = convert_medquad_xml(repo, out, progress=False)
    assert summary["files"] == 3
    assert summary["documents"] == 3
    assert summary["queries"] == 3
    assert summary["skipped_empty"] == 1  # the ADAM answer removed for copyright

    corpus = {d["_id"]: d for d in _jsonl(out / "corpus.jsonl")}
    assert sorted(corpus) == ["CDC_0000001_Sec1", "CancerGov_0000001_1_Sec1", "CancerGov_0000001_1_Sec2"]
    first = corpus["CancerGov_0000001_1_Sec1"]
    assert first["title"] == "What is (are) Adult Acute Lymphoblastic Leukemia ?"
    assert first["text"] == "Key Points - Adult ALL is a type of cancer. - Leukemia may affect red blood cells."
    assert first["metadata"] == {
        "source": "CancerGov",
        "focus": "Adult Acute Lymphoblastic Leukemia",
        "qtype": "information",
        "url": "https://www.cancer.gov/types/leukemia/patient/adult-all-treatment-pdq",
    }
    assert corpus["CancerGov_0000001_1_Sec2"]["text"] == "Fever, feeling tired & easy bruising."

    queries = {q["_id"]: q for q in _jsonl(out / "queries.jsonl")}
    assert queries["mq-CDC_0000001_Sec1"] == {
        "_id": "mq-CDC_0000001_Sec1",
        "text": "What is (are) Acanthamoeba - Granulomatous Amebic Encephalitis (GAE); Keratitis ?",
        "metadata": {
            "qtype": "information",
            "focus": "Acanthamoeba - Granulomatous Amebic Encephalitis (GAE); Keratitis",
        },
    }
    lines = (out / "qrels" / "qa.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "query-id\tcorpus-id\tscore"
    assert "mq-CancerGov_0000001_1_Sec2\tCancerGov_0000001_1_Sec2\t1" in lines[1:]
    assert not (out / "qrels" / "test.tsv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MedQuAD", "out"]  # staging folder gone

    with pytest.raises(SyntrieverError, match="already exists"):
        convert_medquad_xml(repo, out, progress=False)
    assert convert_medquad_xml(repo, out, overwrite=True, progress=False)["documents"] == 3


def test_medquad_duplicate_answer_ids_are_kept_once(tmp_path: Path) -> None:
    repo = _medquad_repo(tmp_path / "MedQuAD")
    (repo / "1_CancerGov_QA" / "0000001_1_1.xml").write_text(_CANCER, encoding="utf-8")  # same Document id
    summary = convert_medquad_xml(repo, tmp_path / "out", progress=False)
    assert summary["duplicates"] == 2
    assert summary["documents"] == 3
    ids = [q["_id"] for q in _jsonl(tmp_path / "out" / "queries.jsonl")]
    assert len(ids) == len(set(ids))


def test_malformed_xml_names_file_and_line(tmp_path: Path) -> None:
    repo = _medquad_repo(tmp_path / "MedQuAD")
    bad = repo / "9_CDC_QA" / "0000002.xml"
    bad.write_text('<?xml version="1.0"?>\n<Document id="2" source="CDC">\n<Focus>x</Foc>\n</Document>\n')
    with pytest.raises(SyntrieverError) as info:
        convert_medquad_xml(repo, tmp_path / "out", progress=False)
    assert f"{bad}:3:" in str(info.value)
    assert "malformed XML" in str(info.value)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MedQuAD"]


def test_medquad_with_liveqa_judgments(tmp_path: Path) -> None:
    repo = _medquad_repo(tmp_path / "MedQuAD")
    questions = tmp_path / "TREC-2017-LiveQA-Medical-Test-Questions-w-summaries.xml"
    questions.write_text(_LIVEQA, encoding="utf-8")
    judged = tmp_path / "QA-TestSet-LiveQA-Med-Qrels-2479-Answers"
    judged.mkdir()
    (judged / "All-qrels_LiveQAMed2017-TestQuestions_2479_Judged-Answers.txt").write_text(
        "1 4-Excellent ADAM_0000011_Sec1.txt\n1 1-Incorrect CDC_0000001_Sec1.txt\n"
        "2 3-Incomplete CancerGov_0000001_1_Sec2.txt\n2 2-Related MPlusDrugs_0000001_Sec1.txt\n",
        encoding="utf-8",
    )
    (judged / "All-2479-Answers-retrieved-from-MedQuAD.csv").write_text(
        "AnswerID,Answer\n"
        '"ADAM_0000011_Sec1.txt","Question: Do you have information about Abdominal CT scan (Also called: CAT scan)\n'
        "URL: https://www.nlm.nih.gov/medlineplus/ency/article/003789.htm\n"
        'Answer: Summary : An abdominal CT scan is an imaging method (x-rays).)"\n',
        encoding="utf-8",
    )
    summary = convert_medquad_xml(
        repo, tmp_path / "out", liveqa_questions=questions, liveqa_qrels=judged, progress=False
    )
    assert summary["liveqa_questions"] == 2
    assert summary["liveqa_answers_added"] == 1
    assert summary["test_judgments"] == 3
    assert summary["test_dropped"] == 1

    corpus = {d["_id"]: d for d in _jsonl(tmp_path / "out" / "corpus.jsonl")}
    adam = corpus["ADAM_0000011_Sec1"]
    assert adam["title"] == "Do you have information about Abdominal CT scan (Also called: CAT scan)"
    assert adam["text"] == "Summary : An abdominal CT scan is an imaging method (x-rays)."
    assert adam["metadata"] == {"source": "ADAM", "url": "https://www.nlm.nih.gov/medlineplus/ency/article/003789.htm"}

    queries = _jsonl(tmp_path / "out" / "queries.jsonl")
    assert [q["_id"] for q in queries[:2]] == ["TQ1", "TQ2"]
    assert queries[0]["text"] == "What is an abdominal CT scan and how is it done?"
    assert queries[0]["metadata"] == {
        "subject": "Abdominal CT",
        "message": "what is an abdominal ct scan",
        "paraphrase": "What is an abdominal CT scan?",
    }
    assert queries[1]["text"] == "What are the signs of leukemia?"  # no summary: the paraphrase
    test = (tmp_path / "out" / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    assert test == [
        "query-id\tcorpus-id\tscore",
        "TQ1\tADAM_0000011_Sec1\t3",
        "TQ1\tCDC_0000001_Sec1\t0",
        "TQ2\tCancerGov_0000001_1_Sec2\t2",
    ]


def test_liveqa_qrels_need_questions_and_valid_lines(tmp_path: Path) -> None:
    repo = _medquad_repo(tmp_path / "MedQuAD")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("1 9-Great CDC_0000001_Sec1\n", encoding="utf-8")
    with pytest.raises(SyntrieverError, match="needs --liveqa-questions"):
        convert_medquad_xml(repo, tmp_path / "out", liveqa_qrels=qrels, progress=False)
    questions = tmp_path / "q.xml"
    questions.write_text(_LIVEQA, encoding="utf-8")
    with pytest.raises(SyntrieverError, match=rf"{re.escape(str(qrels))}:1: expected"):
        convert_medquad_xml(repo, tmp_path / "out", liveqa_questions=questions, liveqa_qrels=qrels, progress=False)
    assert [q["_id"] for q in read_liveqa_questions(questions)] == ["TQ1", "TQ2"]


_ID_FORMAT = re.compile(r"^[A-Za-z]+_[0-9_]*_Sec\d+$")


@pytest.mark.skipif(not (SHARED_MEDQUAD / "corpus.jsonl").is_file(), reason="shared MedQuAD BEIR folder not present")
def test_id_scheme_matches_the_shared_medquad_folder(tmp_path: Path) -> None:
    convert_medquad_xml(_medquad_repo(tmp_path / "MedQuAD"), tmp_path / "out", progress=False)
    ours = _jsonl(tmp_path / "out" / "corpus.jsonl")
    ours_by_id = {d["_id"]: d for d in ours}
    with (SHARED_MEDQUAD / "corpus.jsonl").open(encoding="utf-8") as handle:
        theirs = [json.loads(line) for line in handle]
    for doc in ours + theirs:
        assert _ID_FORMAT.match(str(doc["_id"])), doc["_id"]
        assert set(doc) == {"_id", "title", "text", "metadata"}
    xml_derived = [d for d in theirs if "focus" in d["metadata"]]
    assert xml_derived
    assert all(set(d["metadata"]) == set(ours[0]["metadata"]) for d in xml_derived)
    same = [d for d in theirs if d["_id"] in ours_by_id]  # the same XML answers get the same ids and titles
    assert {d["_id"] for d in same} == {"CDC_0000001_Sec1", "CancerGov_0000001_1_Sec1", "CancerGov_0000001_1_Sec2"}
    assert all(ours_by_id[d["_id"]]["title"] == d["title"] for d in same)
    cdc = next(d for d in same if d["_id"] == "CDC_0000001_Sec1")
    assert ours_by_id["CDC_0000001_Sec1"] == cdc  # whitespace handling and metadata identical
    with (SHARED_MEDQUAD / "queries.jsonl").open(encoding="utf-8") as handle:
        mq = [q for q in (json.loads(line) for line in handle) if str(q["_id"]).startswith("mq-")][:50]
    ours_q = [q for q in _jsonl(tmp_path / "out" / "queries.jsonl") if str(q["_id"]).startswith("mq-")]
    assert all(set(q["metadata"]) == set(ours_q[0]["metadata"]) for q in mq)
    header = (SHARED_MEDQUAD / "qrels" / "qa.tsv").read_text(encoding="utf-8").split("\n", 1)[0]
    assert header == (tmp_path / "out" / "qrels" / "qa.tsv").read_text(encoding="utf-8").split("\n", 1)[0]


# ---------------------------------------------------------------------------------------------- documents


def _docs_folder(root: Path) -> Path:
    (root / "notes").mkdir(parents=True)
    (root / "anemia.txt").write_text(" ".join(f"w{i}" for i in range(25)), encoding="utf-8")
    (root / "notes" / "iron.md").write_text("# Iron\n\nIron deficiency causes anemia.\n", encoding="utf-8")
    (root / ".hidden.txt").write_text("ignored", encoding="utf-8")
    (root / "data.csv").write_text("a,b\n", encoding="utf-8")
    return root


def test_load_documents_splits_with_stable_ids(tmp_path: Path) -> None:
    folder = _docs_folder(tmp_path / "docs")
    docs = load_documents(folder, split_length=10, split_overlap=2, progress=False)
    again = load_documents(folder, split_length=10, split_overlap=2, progress=False)
    assert [d.id for d in docs] == [d.id for d in again]
    assert len({d.id for d in docs}) == len(docs)

    by_file: dict[str, list[int]] = {}
    for doc in docs:
        by_file.setdefault(doc.meta["file_path"], []).append(doc.meta["split_id"])
    assert by_file == {"anemia.txt": [0, 1, 2], "notes/iron.md": [0]}
    anemia = [d for d in docs if d.meta["file_path"] == "anemia.txt"]
    assert len({d.meta["source_id"] for d in anemia}) == 1
    assert anemia[0].meta["source_id"] != docs[-1].meta["source_id"]
    assert (anemia[0].content or "").startswith("w0 w1")
    assert "Iron deficiency causes anemia." in (docs[-1].content or "")
    for doc in anemia[1:]:  # the overlap bookkeeping points at the new, stable ids
        assert all(o["doc_id"] in {d.id for d in anemia} for o in doc.meta["_split_overlap"])

    moved = tmp_path / "elsewhere"
    folder.rename(moved)  # ids depend on paths relative to the folder, not on where the folder is
    assert [d.id for d in load_documents(moved, split_length=10, split_overlap=2, progress=False)] == [
        d.id for d in docs
    ]


def test_load_documents_warns_once_about_empty_files(tmp_path: Path) -> None:
    folder = _docs_folder(tmp_path / "docs")
    (folder / "empty1.txt").write_text("", encoding="utf-8")
    (folder / "empty2.txt").write_text("  \n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"skipped 2 empty file\(s\)") as record:
        docs = load_documents(folder, progress=False)
    assert len([w for w in record if "empty" in str(w.message)]) == 1
    assert {d.meta["file_path"] for d in docs} == {"anemia.txt", "notes/iron.md"}


def test_missing_converter_is_one_counted_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from syntriever_haystack.data import documents as documents_module

    real = documents_module._make_converter

    def without_html(kind: str) -> object:
        if kind == "html":
            raise ImportError("No module named 'trafilatura'")  # as Haystack's lazy import reports it
        return real(kind)

    monkeypatch.setattr(documents_module, "_make_converter", without_html)
    folder = _docs_folder(tmp_path / "docs")
    for name in ("a.html", "b.htm"):
        (folder / name).write_text("<html><body><p>Hello</p></body></html>", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"2 html file\(s\).*pip install trafilatura"):
        docs = load_documents(folder, progress=False)
    assert {d.meta["file_path"] for d in docs} == {"anemia.txt", "notes/iron.md"}


def test_html_goes_through_haystacks_converter(tmp_path: Path) -> None:
    pytest.importorskip("trafilatura", reason="the documents extra is not installed")
    folder = _docs_folder(tmp_path / "docs")
    body = " ".join(["Iron deficiency is the most common cause of anaemia worldwide."] * 5)
    (folder / "page.html").write_text(
        f"<html><head><title>Anaemia</title></head><body><nav>menu</nav><article><p>{body}</p></article></body></html>",
        encoding="utf-8",
    )
    docs = [d for d in load_documents(folder, progress=False) if d.meta["file_path"] == "page.html"]
    assert docs
    assert "Iron deficiency" in (docs[0].content or "")
    assert "<p>" not in (docs[0].content or "")


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SyntrieverError) as info:
        load_documents(tmp_path / "empty", progress=False)
    assert str(tmp_path / "empty") in str(info.value)
    assert ".txt" in str(info.value)
    assert ".md" in str(info.value)
    with pytest.raises(SyntrieverError, match="does not exist"):
        load_documents(tmp_path / "missing", progress=False)
    with pytest.raises(SyntrieverError, match="overlap"):
        load_documents(tmp_path / "empty", split_length=5, split_overlap=5, progress=False)


def test_write_beir_corpus_round_trip(tmp_path: Path) -> None:
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    from syntriever_haystack.data.beir import read_corpus

    docs = load_documents(_docs_folder(tmp_path / "docs"), split_length=10, split_overlap=0, progress=False)
    path = write_beir_corpus(docs, tmp_path / "beir")
    assert path == tmp_path / "beir" / "corpus.jsonl"
    assert [p.name for p in (tmp_path / "beir").iterdir()] == ["corpus.jsonl"]  # no temp file left
    corpus = read_corpus(path)
    assert list(corpus) == [d.id for d in docs]
    first = corpus[docs[0].id]
    assert first.title == "anemia"
    assert first.text == docs[0].content
    assert first.metadata["file_path"] == "anemia.txt"
    assert first.metadata["split_id"] == 0
    assert corpus[docs[-1].id].title == "iron"

    store = InMemoryDocumentStore()
    store.write_documents(docs)
    back = documents_from_store(store)
    assert sorted(d.id for d in back) == sorted(d.id for d in docs)
    write_beir_corpus(back, tmp_path / "again")
    assert sorted(read_corpus(tmp_path / "again" / "corpus.jsonl")) == sorted(corpus)
    with pytest.raises(SyntrieverError, match="no documents"):
        documents_from_store(InMemoryDocumentStore())
    with pytest.raises(SyntrieverError, match="duplicate document id"):
        write_beir_corpus([docs[0], docs[0]], tmp_path / "dup")


def test_data_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from syntriever_haystack.data.cli import register

    parser = argparse.ArgumentParser(prog="syntriever")
    register(parser.add_subparsers(dest="command", required=True))

    args = parser.parse_args(
        ["data", "from-folder", str(_docs_folder(tmp_path / "docs")), "--out", str(tmp_path / "o"), "--quiet"]
    )
    assert args.func(args) == 0
    assert "2 files" in capsys.readouterr().out

    repo = _medquad_repo(tmp_path / "MedQuAD")
    args = parser.parse_args(["data", "medquad-xml", str(repo), "--out", str(tmp_path / "mq"), "--quiet"])
    assert args.func(args) == 0
    assert "3 documents" in capsys.readouterr().out

    archive, md5 = _beir_zip(tmp_path / "scifact.zip", top="scifact")
    monkeypatch.setitem(BEIR_DATASETS, "scifact", BeirSource("scifact", archive.as_uri(), md5))
    args = parser.parse_args(["data", "download", "scifact", "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert args.func(args) == 0
    assert str(tmp_path / "cache" / "scifact") in capsys.readouterr().out


def test_from_folder_skips_symlinks_out_of_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A link to a file elsewhere (``/etc/hostname``) must not end up in the corpus; linked folders (out of the
    folder, or looping back into it) are not entered. Each is skipped with a counted warning."""
    from syntriever_haystack.cli import main

    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("the password is hunter2 " * 5)
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("the fox jumps over the lazy dog " * 5)
    (folder / "sub" / "more.txt").write_text("a second document about foxes " * 5)
    (folder / "leak.txt").symlink_to(secret)
    (folder / "outside-dir").symlink_to(secret.parent, target_is_directory=True)
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "alias.txt").symlink_to(folder / "notes.txt")  # inside the folder: read

    with pytest.warns(UserWarning, match=r"skipped 3 symlink\(s\) .*leak\.txt, outside-dir/, sub/loop/"):
        documents = load_documents(folder, progress=False)
    assert sorted({d.meta["file_path"] for d in documents}) == ["alias.txt", "notes.txt", "sub/more.txt"]
    assert not any("hunter2" in (d.content or "") for d in documents)

    out = tmp_path / "beir"
    with pytest.warns(UserWarning, match="skipped 3 symlink"):
        assert main(["data", "from-folder", str(folder), "--out", str(out), "--quiet"]) == 0
    assert "hunter2" not in (out / "corpus.jsonl").read_text()
    assert "from 3 files" in capsys.readouterr().out
