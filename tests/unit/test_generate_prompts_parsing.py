"""Prompt templates (render, structured mode, digest, overrides) and tolerant answer parsing (no network)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from haystack.dataclasses import ChatRole

from syntriever_haystack.generate.parsing import ParseFailure, extract_json_object, parse_answer
from syntriever_haystack.generate.prompts import DEFAULT_PROMPTS, PromptError, load_prompts

PROMPTS = load_prompts()

# values for every variable any default prompt uses
VALUES = {
    "query": "what causes iron deficiency anemia",
    "passage": "Iron deficiency anemia is caused by blood loss, poor diet and malabsorption.",
    "passage_1": "Iron deficiency anemia is caused by blood loss.",
    "passage_2": "Anemia is diagnosed with a blood count.",
    "query_type": "question",
}


# ------------------------------------------------------------------------------------------------- prompts


def test_the_seven_default_prompts_exist() -> None:
    assert set(DEFAULT_PROMPTS) == {
        "positive_passage",
        "negative_passage",
        "cot",
        "verify",
        "preference",
        "queries",
        "relevance",
    }
    assert load_prompts() == DEFAULT_PROMPTS
    assert load_prompts() is not DEFAULT_PROMPTS  # a copy: overriding never touches the defaults


@pytest.mark.parametrize("name", sorted(DEFAULT_PROMPTS))
def test_every_default_prompt_renders_system_few_shot_and_final_user(name: str) -> None:
    template = PROMPTS[name]
    variables = {v: VALUES[v] for v in template.variables}
    messages = template.render(variables)
    assert template.examples, "every prompt carries few-shot examples showing the output format"
    shown = template.examples
    if template.example_key is not None:
        shown = tuple(e for e in shown if e.inputs[template.example_key] == variables[template.example_key])
        assert shown, "the test values must match some examples"
    assert len(messages) == 1 + 2 * len(shown) + 1
    assert messages[0].role == ChatRole.SYSTEM
    assert messages[0].text == template.system
    for i, example in enumerate(shown):
        user, assistant = messages[1 + 2 * i], messages[2 + 2 * i]
        assert user.role == ChatRole.USER
        assert assistant.role == ChatRole.ASSISTANT
        assert assistant.text == example.output
        for value in example.inputs.values():
            assert value in (user.text or "")
    final = messages[-1]
    assert final.role == ChatRole.USER
    for value in variables.values():
        assert value in (final.text or "")
    assert final.text == (final.text or "").strip()
    # every example's answer parses with the template's own parser (the format it demonstrates is readable)
    for example in template.examples:
        parse_answer(template, example.output)


@pytest.mark.parametrize("name", sorted(DEFAULT_PROMPTS))
def test_structured_mode_adds_json_instructions_and_json_answers(name: str) -> None:
    template = PROMPTS[name]
    variables = {v: VALUES[v] for v in template.variables}
    plain = template.render(variables)
    structured = template.render(variables, structured=True)
    assert len(structured) == len(plain)
    assert "JSON" in (structured[0].text or "")
    assert f'"{template.answer_field}"' in (structured[0].text or "")
    assert structured[-1].text == plain[-1].text
    shown = [m for m in structured[2:-1:2]]
    examples = template.examples
    if template.example_key is not None:
        examples = tuple(e for e in examples if e.inputs[template.example_key] == variables[template.example_key])
    assert len(shown) == len(examples)
    for i, example in enumerate(examples):
        answer = json.loads(structured[2 + 2 * i].text or "")
        expected = int(example.output) if template.output == "choice" else example.output
        assert answer == {template.answer_field: expected}
        assert parse_answer(template, structured[2 + 2 * i].text) == parse_answer(template, example.output)
    schema = template.json_schema()
    assert schema["type"] == "json_schema"
    body = schema["json_schema"]
    assert body["name"] == name
    assert body["strict"] is True
    assert body["schema"]["required"] == [template.answer_field]
    assert body["schema"]["additionalProperties"] is False


def test_json_schema_of_each_output_kind() -> None:
    answer = PROMPTS["verify"].json_schema()["json_schema"]["schema"]["properties"]["answer"]
    assert answer == {"type": "string", "enum": ["yes", "no"]}
    answer = PROMPTS["preference"].json_schema()["json_schema"]["schema"]["properties"]["answer"]
    assert answer == {"type": "integer", "enum": [1, 2]}
    props = PROMPTS["queries"].json_schema()["json_schema"]["schema"]["properties"]
    assert props == {"query": {"type": "string"}}


def test_missing_variable_is_a_prompt_error_naming_it() -> None:
    with pytest.raises(PromptError, match=r"'verify'.*\['passage'\]"):
        PROMPTS["verify"].render({"query": "q"})
    with pytest.raises(PromptError, match=r"passage_1.*passage_2"):
        PROMPTS["preference"].render({"query": "q"})


def test_digest_and_label_follow_content() -> None:
    template = PROMPTS["verify"]
    assert len(template.digest) == 12
    assert template.label == f"verify@1#{template.digest}"
    assert replace(template).digest == template.digest
    assert replace(template, system=template.system + " ").digest != template.digest
    assert replace(template, generation_kwargs={"temperature": 0.1}).digest != template.digest
    assert replace(template, examples=template.examples[:1]).digest != template.digest
    assert replace(template, version="2").digest != template.digest
    assert len({p.digest for p in DEFAULT_PROMPTS.values()}) == len(DEFAULT_PROMPTS)


def test_to_dict_round_trip() -> None:
    from syntriever_haystack.generate.prompts import PromptTemplate

    for template in DEFAULT_PROMPTS.values():
        again = PromptTemplate.from_dict(json.loads(json.dumps(template.to_dict())))
        assert again.digest == template.digest


# ------------------------------------------------------------------------------------------------ overrides


def _write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_load_prompts_from_yaml_overrides_fields(tmp_path: Path) -> None:
    path = _write_yaml(
        tmp_path / "prompts.yaml",
        {
            "queries": {"system": "You write queries a nurse would type."},
            "verify": {"version": "my-2", "user": "Q: {{ query }}\nP: {{ passage }}\nAnswers it?"},
            "relevance": {"examples": [{"inputs": {"query": "a b", "passage": "a b c"}, "output": "yes"}]},
        },
    )
    prompts = load_prompts(path)
    assert prompts["queries"].system == "You write queries a nurse would type."
    assert prompts["queries"].version == f"{DEFAULT_PROMPTS['queries'].version}+custom"
    assert prompts["queries"].user == DEFAULT_PROMPTS["queries"].user  # omitted fields keep their defaults
    assert prompts["queries"].digest != DEFAULT_PROMPTS["queries"].digest
    assert prompts["verify"].version == "my-2"
    assert prompts["verify"].label.startswith("verify@my-2#")
    assert prompts["verify"].render({"query": "x", "passage": "y"})[-1].text == "Q: x\nP: y\nAnswers it?"
    assert len(prompts["relevance"].examples) == 1
    assert prompts["relevance"].examples[0].output == "yes"
    assert prompts["cot"] is DEFAULT_PROMPTS["cot"]  # untouched prompts are the defaults
    # JSON is YAML; a mapping works too
    json_path = tmp_path / "prompts.json"
    json_path.write_text(json.dumps({"cot": {"system": "Think."}}), encoding="utf-8")
    assert load_prompts(json_path)["cot"].system == "Think."
    assert load_prompts({"cot": {"system": "Think."}})["cot"].version == "1+custom"


def test_load_prompts_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match=r"Unknown prompt 'summary'.*known prompts"):
        load_prompts({"summary": {"system": "x"}})
    with pytest.raises(PromptError, match=r"'verify': unknown fields \['temprature'\]"):
        load_prompts({"verify": {"temprature": 0.3}})
    with pytest.raises(PromptError, match=r"'verify'.*must use the variables \['passage'\]"):
        load_prompts({"verify": {"user": "Query: {{ query }}"}})
    with pytest.raises(PromptError, match=r"does not exist"):
        load_prompts(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("verify: [unclosed\n", encoding="utf-8")
    with pytest.raises(PromptError, match=r"not valid YAML"):
        load_prompts(bad)
    listed = _write_yaml(tmp_path / "list.yaml", ["verify"])
    with pytest.raises(PromptError, match=r"must hold a mapping"):
        load_prompts(listed)


def test_override_adding_an_undefined_variable_fails_at_render() -> None:
    prompts = load_prompts({"cot": {"user": "Query: {{ query }} for {{ audience }}"}})
    with pytest.raises(PromptError, match="audience"):
        prompts["cot"].render({"query": "q"})


# -------------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes", True),
        ("Yes.", True),
        ("YES, it answers the query", True),
        ("Answer: yes", True),
        ('"no"', False),
        ("No.", False),
        ("no, it does not", False),
        ("Not relevant", False),
        ("relevant", True),
        ("irrelevant", False),
        ("True", True),
        ("false", False),
        ('{"answer": "yes"}', True),
        ('{"answer": false}', False),
        ('Sure! {"answer": "no"}', False),
    ],
)
def test_yes_no_variants(text: str, expected: bool) -> None:
    assert parse_answer(PROMPTS["verify"], text) is expected
    assert parse_answer(PROMPTS["relevance"], text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2", 2),
        ("1", 1),
        ("Passage 2", 2),
        ("passage #1 answers it better", 1),
        ("Answer: 2", 2),
        ('{"answer": 2}', 2),
        ('{"answer": "1"}', 1),
        ('```json\n{"answer": 2}\n```', 2),
        ('```\n{"answer": 1,}\n```', 1),
        ('{"answer": 2,}', 2),
    ],
)
def test_choice_variants(text: str, expected: int) -> None:
    assert parse_answer(PROMPTS["preference"], text) == expected


@pytest.mark.parametrize(
    ("name", "text", "reason", "finish_reason"),
    [
        ("verify", "maybe", "not_yes_no", None),
        ("verify", '{"answer": "perhaps"}', "not_yes_no", None),
        ("preference", "neither", "not_a_choice", None),
        ("preference", "passage 3", "not_a_choice", None),
        ("preference", '{"answer": 3}', "not_a_choice", None),
        ("preference", '{"verdict": 1, "why": "more complete"}', "json_missing_field", None),
        ("queries", '{"passage": "iron deficiency", "note": "x"}', "json_missing_field", None),
        ("preference", "{not json", "malformed_json", None),
        ("positive_passage", '{"passage": "unterminated', "malformed_json", None),
        ("verify", "", "empty", None),
        ("verify", "   \n ", "empty", None),
        ("positive_passage", None, "empty", None),
        ("queries", "word", "empty", None),
        ("positive_passage", "Iron deficiency anemia develops when the body", "truncated", "length"),
        ("queries", '{"query": "causes of iron"', "malformed_json", None),
    ],
)
def test_parse_failures_have_the_right_reason(
    name: str, text: str | None, reason: str, finish_reason: str | None
) -> None:
    with pytest.raises(ParseFailure) as caught:
        parse_answer(PROMPTS[name], text, finish_reason=finish_reason)
    assert caught.value.reason == reason
    assert caught.value.text == (text or "")


def test_truncation_only_matters_for_text_answers() -> None:
    # a one-word verdict cut by max_tokens is still a verdict
    assert parse_answer(PROMPTS["verify"], "yes", finish_reason="length") is True
    assert parse_answer(PROMPTS["positive_passage"], "A full passage.", finish_reason="stop") == "A full passage."


def test_text_answers() -> None:
    queries = PROMPTS["queries"]
    assert parse_answer(queries, "what causes iron deficiency\nand a second line") == "what causes iron deficiency"
    assert parse_answer(queries, 'Query: "iron deficiency causes"') == "iron deficiency causes"
    assert parse_answer(queries, '{"query": "iron deficiency causes"}') == "iron deficiency causes"
    assert parse_answer(queries, '```json\n{"query": "iron deficiency causes",}\n```') == "iron deficiency causes"
    # multi-line passages keep every line (only single-line prompts, stop=["\n"], take the first)
    passage = parse_answer(PROMPTS["positive_passage"], "Passage: line one here.\nline two here.")
    assert passage == "line one here.\nline two here."
    cot = parse_answer(PROMPTS["cot"], '{"reasoning": "The query asks about iron."}')
    assert cot == "The query asks about iron."


def test_extract_json_object() -> None:
    assert extract_json_object('prose {"a": {"b": "}"}} more') == {"a": {"b": "}"}}
    assert extract_json_object('{"a": [1, 2,],}') == {"a": [1, 2]}
    assert extract_json_object('```JSON\n{"a": 1}\n```') == {"a": 1}
    assert extract_json_object('{bad} then {"ok": true}') == {"ok": True}
    assert extract_json_object("no json here") is None
    assert extract_json_object('{"a": "escaped \\" quote"}') == {"a": 'escaped " quote'}


def test_query_examples_match_the_requested_type() -> None:
    """Type-matched few-shot examples: a keyword request is demonstrated only by keyword queries."""
    template = PROMPTS["queries"]
    for query_type in ("question", "keywords", "claim"):
        messages = template.render({"passage": "Iron deficiency anemia.", "query_type": query_type})
        users = [m.text or "" for m in messages[1:-1:2]]
        assert len(users) == 2
        assert all(f"Type: {query_type}" in u for u in users)
    # an unknown type falls back to every example
    messages = template.render({"passage": "Iron deficiency anemia.", "query_type": "title"})
    assert len(messages) == 2 + 2 * len(template.examples)
