"""Convert the original MedQuAD repository (github.com/abachaa/MedQuAD, XML) into a BEIR folder.

Input layout: numbered folders (``1_CancerGov_QA/``, ``2_GARD_QA/``, ... ``12_MPlusHerbsSupplements_QA/``)
of XML files like::

    <Document id="0000001_1" source="CancerGov" url="https://...">
      <Focus>Adult Acute Lymphoblastic Leukemia</Focus>
      <QAPairs>
        <QAPair pid="1">
          <Question qid="0000001_1-1" qtype="information">What is (are) ... ?</Question>
          <Answer>...</Answer>
        </QAPair>
      </QAPairs>
    </Document>

Output (the layout of the MedQuAD BEIR folder the project already uses):

- ``corpus.jsonl``: one record per answer, ``_id`` = ``{source}_{document id}_Sec{pid}``
  (e.g. ``CDC_0000001_Sec1``, ``CancerGov_0000001_1_Sec1``), ``title`` = the question, ``text`` = the answer,
  ``metadata`` = ``source``/``focus``/``qtype``/``url``;
- ``queries.jsonl``: one query ``mq-<answer id>`` per answer (``metadata`` = ``qtype``/``focus``), plus the
  TREC-2017 LiveQA medical test questions ``TQ1..TQ104`` when given;
- ``qrels/qa.tsv``: ``mq-<id>`` → ``<id>`` with score 1; ``qrels/test.tsv``: the 2,479 judged LiveQA answers
  when given, graded 0-3 (the judgments 1-Incorrect, 2-Related, 3-Incomplete, 4-Excellent minus one).

The XML release leaves the answers of three MedlinePlus collections empty for copyright (A.D.A.M.,
MedlinePlus Drugs, Herbs and Supplements); those pairs are skipped and counted. The judged answers of the
LiveQA test collection (``QA-TestSet-LiveQA-Med-Qrels-2479-Answers``: ``All-qrels_...txt`` + ``All-2479-Answers-
retrieved-from-MedQuAD.csv``) include some of them; they are added to the corpus with ``source``/``url``.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from syntriever_haystack.errors import SyntrieverError

_QA_FOLDER = re.compile(r"^(\d+)_")
_CSV_ANSWER = re.compile(r"^\s*Question:\s*(?P<question>.*?)\s*URL:\s*(?P<url>\S*)\s*Answer:\s*(?P<answer>.*)$", re.S)
_JUDGMENT = re.compile(r"^(?P<grade>\d+)(?:-\S*)?$")


@dataclass
class _Record:
    doc_id: str
    title: str
    text: str
    metadata: dict[str, str]


def _collapse(text: str | None) -> str:
    return " ".join(text.split()) if text else ""


def _all_text(element: ET.Element | None) -> str:
    return "".join(element.itertext()) if element is not None else ""


def _parse_xml(path: Path) -> ET.Element:
    """Parse an XML file; a syntax error names the file, line and column."""
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, column = exc.position
        message = re.sub(r":\s*line \d+, column \d+$", "", str(exc))
        raise SyntrieverError(
            f"{path}:{line}:{column + 1}: malformed XML ({message}). Fix or delete that file (a fresh "
            "`git clone https://github.com/abachaa/MedQuAD` has none) and run again."
        ) from None
    except OSError as exc:
        raise SyntrieverError(f"cannot read {path}: {exc.strerror or exc}.") from None


def _xml_files(repo: Path) -> list[Path]:
    """The QA XML files: numbered folders in numeric order, files by name (or XML files right in ``repo``)."""
    folders = [d for d in repo.iterdir() if d.is_dir() and not d.name.startswith(".")]
    numbered = [d for d in folders if _QA_FOLDER.match(d.name)]

    def order(folder: Path) -> tuple[int, str]:
        match = _QA_FOLDER.match(folder.name)
        return (int(match.group(1)) if match else 1 << 30, folder.name)

    files: list[Path] = []
    for folder in sorted(numbered or folders, key=order):
        files.extend(sorted(folder.glob("*.xml")))
    files.extend(sorted(repo.glob("*.xml")))
    return files


def _read_document(path: Path) -> tuple[list[tuple[_Record, str]], int]:
    """Records of one MedQuAD XML file: ([(record, qtype)], number of empty answers skipped)."""
    root = _parse_xml(path)
    if root.tag != "Document":
        raise SyntrieverError(
            f"{path}: the root element is <{root.tag}>, expected <Document id=... source=... url=...>; "
            "pass the folder of a MedQuAD clone (https://github.com/abachaa/MedQuAD)."
        )
    source = (root.get("source") or "").strip()
    if not source:
        raise SyntrieverError(f'{path}: <Document> has no source="..." attribute; the answer ids need it.')
    doc_id = (root.get("id") or "").strip()
    url = (root.get("url") or "").strip()
    focus = _collapse(root.findtext("Focus"))
    pairs = root.find("QAPairs")
    records: list[tuple[_Record, str]] = []
    empty = 0
    for index, pair in enumerate(pairs.findall("QAPair") if pairs is not None else [], start=1):
        pid = (pair.get("pid") or str(index)).strip()
        question_el = pair.find("Question")
        question = _collapse(_all_text(question_el))
        qtype = (question_el.get("qtype") or "").strip() if question_el is not None else ""
        answer = _collapse(_all_text(pair.find("Answer")))
        if not answer:
            empty += 1
            continue
        record = _Record(
            doc_id=f"{source}_{doc_id}_Sec{pid}",
            title=question,
            text=answer,
            metadata={"source": source, "focus": focus, "qtype": qtype, "url": url},
        )
        records.append((record, qtype))
    return records, empty


def _child(element: ET.Element | None, *names: str) -> ET.Element | None:
    """The first direct child whose tag matches one of ``names`` (case-insensitive)."""
    if element is None:
        return None
    wanted = {n.lower() for n in names}
    return next((c for c in element if isinstance(c.tag, str) and c.tag.lower() in wanted), None)


def read_liveqa_questions(path: str | Path) -> list[dict[str, Any]]:
    """Read the TREC-2017 LiveQA medical test questions as BEIR query records.

    Accepts both ``TREC-2017-LiveQA-Medical-Test-Questions-w-summaries.xml`` (``SUBJECT``/``MESSAGE``/
    ``NIST-PARAPHRASE``/``NLM-Summary``) and ``TREC-2017-LiveQA-Medical-Test.xml`` (``Subject``/``Message``/
    ``Paraphrase``) from github.com/abachaa/LiveQA_MedicalTask_TREC2017. The query text is the NLM summary,
    else the paraphrase, else the original message.

    :param path: The questions XML file.
    :returns: ``{"_id": "TQ1", "text": ..., "metadata": {"subject", "message", "paraphrase"}}`` in file order.
    :raises SyntrieverError: Malformed XML (file and line) or not a LiveQA questions file.
    """
    path = Path(path)
    root = _parse_xml(path)
    questions = [e for e in root if isinstance(e.tag, str) and e.tag.upper() == "NLM-QUESTION"]
    if not questions:
        raise SyntrieverError(
            f"{path}: no <NLM-QUESTION qid=...> elements; pass TestDataset/TREC-2017-LiveQA-Medical-Test-"
            "Questions-w-summaries.xml from https://github.com/abachaa/LiveQA_MedicalTask_TREC2017."
        )
    records: list[dict[str, Any]] = []
    for number, question in enumerate(questions, start=1):
        qid = (question.get("qid") or "").strip()
        if not qid:
            raise SyntrieverError(f"{path}: question number {number} has no qid attribute.")
        original = _child(question, "Original-Question")
        subject = _all_text(_child(original, "SUBJECT")).strip()
        message = _all_text(_child(original, "MESSAGE")).strip()
        paraphrase = _all_text(_child(question, "NIST-PARAPHRASE", "Paraphrase")).strip()
        summary = _all_text(_child(question, "NLM-Summary")).strip()
        text = summary or paraphrase or message or subject
        if not text:
            raise SyntrieverError(f"{path}: question {qid} has no summary, paraphrase or message text.")
        records.append(
            {"_id": qid, "text": text, "metadata": {"subject": subject, "message": message, "paraphrase": paraphrase}}
        )
    return records


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _single(candidates: list[str], what: str, where: Path) -> str | None:
    if len(candidates) > 1:
        raise SyntrieverError(f"{where} holds several {what} files ({', '.join(candidates)}); pass the one to use.")
    return candidates[0] if candidates else None


def _find_liveqa_files(spec: Path, answers: Path | None) -> tuple[str, str, str | None, str | None]:
    """(qrels name, qrels text, answers name, answers text) from a qrels file, its folder or the zip."""
    if spec.is_file() and spec.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(spec) as archive:
                members = [m for m in archive.namelist() if "__MACOSX" not in m]
                qrels_member = _single(
                    [m for m in members if m.lower().endswith(".txt") and "qrels" in m.lower()], "qrels .txt", spec
                )
                if qrels_member is None:
                    raise SyntrieverError(
                        f"{spec} has no *qrels*.txt member; pass QA-TestSet-LiveQA-Med-Qrels-2479-Answers.zip."
                    )
                csv_member = _single([m for m in members if m.lower().endswith(".csv")], "answers .csv", spec)
                qrels_text = _decode(archive.read(qrels_member))
                csv_text = _decode(archive.read(csv_member)) if csv_member and answers is None else None
        except zipfile.BadZipFile as exc:
            raise SyntrieverError(f"{spec} is not a valid zip file ({exc}).") from None
        if answers is not None:
            return f"{spec}:{qrels_member}", qrels_text, str(answers), _decode(answers.read_bytes())
        return f"{spec}:{qrels_member}", qrels_text, f"{spec}:{csv_member}" if csv_member else None, csv_text
    if spec.is_dir():
        found = _single(sorted(str(p) for p in spec.rglob("*.txt") if "qrels" in p.name.lower()), "qrels", spec)
        if found is None:
            raise SyntrieverError(
                f"{spec} has no *qrels*.txt file; pass the unzipped QA-TestSet-LiveQA-Med-Qrels-2479-Answers "
                "folder from https://github.com/abachaa/MedQuAD, or its qrels file."
            )
        qrels_file = Path(found)
        csv_candidates = sorted(str(p) for p in spec.rglob("*.csv"))
    elif spec.is_file():
        qrels_file = spec
        csv_candidates = sorted(str(p) for p in spec.parent.glob("*.csv"))
    else:
        raise SyntrieverError(f"LiveQA qrels {spec} does not exist.")
    if answers is None:
        single = _single(csv_candidates, "answers .csv", qrels_file.parent)
        answers = Path(single) if single else None
    try:
        qrels_text = _decode(qrels_file.read_bytes())
        csv_text = _decode(answers.read_bytes()) if answers is not None else None
    except OSError as exc:
        raise SyntrieverError(f"cannot read the LiveQA judgments: {exc}.") from None
    return str(qrels_file), qrels_text, str(answers) if answers is not None else None, csv_text


def _parse_judged_qrels(name: str, text: str) -> list[tuple[str, str, int]]:
    """``Question_ID judgment Answer_ID`` lines (e.g. ``1 2-Related GHR_0000123_Sec1``) → (TQ id, doc id, 0-3)."""
    rows: list[tuple[str, str, int]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        match = _JUDGMENT.match(parts[1]) if len(parts) == 3 else None
        if match is None or not 1 <= int(match.group("grade")) <= 4:
            if line_no == 1 and len(parts) == 3 and not parts[1][:1].isdigit():
                continue  # a header line
            raise SyntrieverError(
                f"{name}:{line_no}: expected 'Question_ID judgment Answer_ID' with a judgment of 1-4 "
                f"(e.g. '1 2-Related GHR_0000123_Sec1'), got {line.strip()[:80]!r}."
            )
        qid, _, answer_id = parts
        rows.append((f"TQ{qid}" if qid.isdigit() else qid, _strip_txt(answer_id), int(match.group("grade")) - 1))
    if not rows:
        raise SyntrieverError(f"{name} has no judgments.")
    return rows


def _strip_txt(answer_id: str) -> str:
    return answer_id[:-4] if answer_id.lower().endswith(".txt") else answer_id


def _parse_judged_answers(name: str, text: str) -> dict[str, _Record]:
    """``AnswerID,Answer`` rows whose answer reads ``Question: ... URL: ... Answer: ...`` → corpus records."""
    reader = csv.DictReader(io.StringIO(text))
    fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
    if "answerid" not in fields or "answer" not in fields:
        raise SyntrieverError(
            f"{name}: expected the columns AnswerID and Answer, found {', '.join(reader.fieldnames or []) or 'none'}."
        )
    records: dict[str, _Record] = {}
    for row in reader:
        answer_id = _strip_txt((row.get(fields["answerid"]) or "").strip())
        raw = row.get(fields["answer"]) or ""
        if not answer_id or not raw.strip():
            continue
        match = _CSV_ANSWER.match(raw)
        question, url, answer = (
            (match.group("question"), match.group("url"), match.group("answer")) if match else ("", "", raw)
        )
        answer = _collapse(answer)
        if answer.endswith(")") and answer.count(")") > answer.count("("):
            answer = answer[:-1].rstrip()  # the export closes every answer with an unmatched ")"
        records[answer_id] = _Record(
            doc_id=answer_id,
            title=_collapse(question),
            text=answer,
            metadata={"source": answer_id.split("_", 1)[0], "url": url.strip()},
        )
    return records


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _write_qrels(path: Path, rows: list[tuple[str, str, int]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for query_id, doc_id, score in rows:
            handle.write(f"{query_id}\t{doc_id}\t{score}\n")


def _publish(staging: Path, out: Path) -> None:
    """Move ``staging`` to ``out``; an existing ``out`` is swapped out first and deleted afterwards."""
    if not out.exists():
        staging.rename(out)
        return
    trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    out.rename(trash / out.name)
    try:
        staging.rename(out)
    except OSError:
        (trash / out.name).rename(out)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def convert_medquad_xml(
    repo_dir: str | Path,
    out_dir: str | Path,
    *,
    liveqa_questions: str | Path | None = None,
    liveqa_qrels: str | Path | None = None,
    liveqa_answers: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Convert a MedQuAD clone into a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/``).

    :param repo_dir: The MedQuAD repository folder (with ``1_CancerGov_QA/`` ...) or a single QA folder.
    :param out_dir: Output folder; written via a staging folder and renamed into place.
    :param liveqa_questions: Optional LiveQA test questions XML (see :func:`read_liveqa_questions`); adds the
        queries ``TQ1..``.
    :param liveqa_qrels: Optional judged answers: the ``All-qrels_LiveQAMed2017-TestQuestions_2479_Judged-
        Answers.txt`` file, its folder ``QA-TestSet-LiveQA-Med-Qrels-2479-Answers`` or that zip. Writes
        ``qrels/test.tsv``; needs ``liveqa_questions``.
    :param liveqa_answers: The ``All-2479-Answers-retrieved-from-MedQuAD.csv`` file when it is not next to
        the qrels file. Judged answers missing from the XML (the copyright-removed ones) come from it.
    :param overwrite: Replace an existing, non-empty ``out_dir``.
    :param progress: Show a progress bar while reading the XML files.
    :returns: Counts: ``files``, ``documents``, ``queries``, ``qa_judgments``, ``skipped_empty`` (QA pairs
        without an answer), ``duplicates`` (answer ids seen before, kept once), ``liveqa_questions``,
        ``liveqa_answers_added``, ``test_judgments``, ``test_dropped`` (judged answers with no text), the
        per-source document counts ``sources`` and ``out_dir``.
    :raises SyntrieverError: Missing input, malformed XML/qrels (file and line), or an existing ``out_dir``.
    """
    repo = Path(repo_dir).expanduser()
    out = Path(out_dir).expanduser()
    if not repo.is_dir():
        raise SyntrieverError(
            f"MedQuAD folder {repo} does not exist; clone it with `git clone https://github.com/abachaa/MedQuAD` "
            "and pass that folder."
        )
    if liveqa_qrels is not None and liveqa_questions is None:
        raise SyntrieverError(
            "--liveqa-qrels needs --liveqa-questions (TREC-2017-LiveQA-Medical-Test-Questions-w-summaries.xml): "
            "the judgments are for those questions."
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise SyntrieverError(f"output folder {out} already exists and is not empty; pass a new folder or --force.")
    files = _xml_files(repo)
    if not files:
        raise SyntrieverError(
            f"{repo} contains no MedQuAD XML files (expected folders like 1_CancerGov_QA/ with *.xml); "
            "pass the folder of a clone of https://github.com/abachaa/MedQuAD."
        )

    corpus: dict[str, _Record] = {}
    mq_queries: list[dict[str, Any]] = []
    qa_rows: list[tuple[str, str, int]] = []
    skipped_empty = duplicates = 0
    for path in tqdm(files, desc="MedQuAD XML", unit="file", disable=not progress):
        records, empty = _read_document(path)
        skipped_empty += empty
        for record, qtype in records:
            if record.doc_id in corpus:
                duplicates += 1
                continue
            corpus[record.doc_id] = record
            if record.title:
                query_id = f"mq-{record.doc_id}"
                focus = record.metadata["focus"]
                mq_queries.append({"_id": query_id, "text": record.title, "metadata": {"qtype": qtype, "focus": focus}})
                qa_rows.append((query_id, record.doc_id, 1))
    if not corpus:
        raise SyntrieverError(f"{repo}: none of the {len(files)} XML files has a non-empty answer.")

    tq_queries = read_liveqa_questions(Path(liveqa_questions)) if liveqa_questions is not None else []
    test_rows: list[tuple[str, str, int]] = []
    added = dropped = 0
    if liveqa_qrels is not None:
        qrels_name, qrels_text, csv_name, csv_text = _find_liveqa_files(
            Path(liveqa_qrels).expanduser(), Path(liveqa_answers).expanduser() if liveqa_answers else None
        )
        judged = _parse_judged_answers(csv_name, csv_text) if csv_name and csv_text is not None else {}
        known_questions = {q["_id"] for q in tq_queries}
        for query_id, doc_id, grade in _parse_judged_qrels(qrels_name, qrels_text):
            if doc_id not in corpus and doc_id in judged:
                corpus[doc_id] = judged[doc_id]
                added += 1
            if doc_id in corpus and query_id in known_questions:
                test_rows.append((query_id, doc_id, grade))
            else:
                dropped += 1

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
    try:
        _write_jsonl(
            staging / "corpus.jsonl",
            [
                {"_id": r.doc_id, "title": r.title, "text": r.text, "metadata": r.metadata}
                for r in sorted(corpus.values(), key=lambda r: r.doc_id)
            ],
        )
        _write_jsonl(staging / "queries.jsonl", tq_queries + mq_queries)
        (staging / "qrels").mkdir()
        _write_qrels(staging / "qrels" / "qa.tsv", qa_rows)
        if test_rows:
            _write_qrels(staging / "qrels" / "test.tsv", test_rows)
        _publish(staging, out)
    except OSError as exc:
        raise SyntrieverError(f"could not write {out}: {exc.strerror or exc}; nothing was changed there.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    return {
        "out_dir": str(out),
        "files": len(files),
        "documents": len(corpus),
        "queries": len(tq_queries) + len(mq_queries),
        "qa_judgments": len(qa_rows),
        "skipped_empty": skipped_empty,
        "duplicates": duplicates,
        "liveqa_questions": len(tq_queries),
        "liveqa_answers_added": added,
        "test_judgments": len(test_rows),
        "test_dropped": dropped,
        "sources": dict(sorted(Counter(r.metadata["source"] for r in corpus.values()).items())),
    }


__all__ = ["convert_medquad_xml", "read_liveqa_questions"]
