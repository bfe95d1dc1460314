"""Versioned, overridable prompt templates for every LLM step (METHOD.md §1–3).

Each :class:`PromptTemplate` renders to chat messages: a system message, few-shot turns (a user turn with
the example's inputs, an assistant turn with its answer) and the final user turn. Chat models read them as a
conversation; the offline model (:class:`~syntriever_haystack.generate.local_llm.LocalChatModel`) renders the
same turns as a plain few-shot transcript for small *base* models, which is why every prompt carries
examples whose answers show the exact output format.

A template's identity is ``name@version`` plus a digest of its full content: the digest is part of the
response-cache key, so editing a prompt (even without bumping the version) never reuses stale answers, and
every generated example records the version and digest it came from.

Override any template with a YAML or JSON file (``--prompts FILE``) holding a mapping ``name → fields``;
omitted fields keep their defaults, e.g.::

    queries:
      version: "my-1"
      system: "You write search queries that a nurse would type..."
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from haystack.dataclasses import ChatMessage
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from syntriever_haystack.errors import SyntrieverError

OutputKind = Literal["text", "yes_no", "choice"]

_JINJA = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)


class PromptError(SyntrieverError):
    """A prompt template or prompt-override file is invalid."""


@dataclass(frozen=True)
class FewShotExample:
    """One demonstration: the template variables of a user turn and the answer the model should give."""

    inputs: dict[str, str]
    output: str


@dataclass(frozen=True)
class PromptTemplate:
    """A versioned prompt.

    :param name: Step name (``positive_passage``, ``negative_passage``, ``cot``, ``verify``, ``preference``,
        ``queries``, ``relevance``).
    :param version: Human version label, recorded in every example's provenance.
    :param system: System message.
    :param user: Jinja2 template of the user turn (undefined variables are an error).
    :param examples: Few-shot demonstrations, rendered as user/assistant turns before the real question.
    :param output: How the answer is parsed: free ``text``, ``yes_no`` or ``choice`` (``1``/``2``).
    :param answer_field: The JSON field holding the answer when structured output is used.
    :param generation_kwargs: Defaults for this step (temperature, max_tokens, stop), overridable per run.
    :param example_key: Show only the few-shot examples whose input ``example_key`` equals the request's (e.g.
        ``query_type``: a keyword query is demonstrated by keyword examples); all examples when none match.
        Small base models follow a format far better from matching examples (type-correct queries from Gemma
        3 270M on MedQuAD: 25/30 with matched examples vs 15/30 with one example of each type).
    """

    name: str
    version: str
    system: str
    user: str
    examples: tuple[FewShotExample, ...] = ()
    output: OutputKind = "text"
    answer_field: str = "answer"
    generation_kwargs: dict[str, Any] = field(default_factory=dict)
    example_key: str | None = None

    @property
    def variables(self) -> set[str]:
        """Template variables of the user turn."""
        from jinja2 import meta

        return set(meta.find_undeclared_variables(_JINJA.parse(self.user)))

    @property
    def digest(self) -> str:
        """12-hex digest of the full template content (part of every cache key)."""
        payload = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]

    @property
    def label(self) -> str:
        """``name@version#digest``, as written into provenance records."""
        return f"{self.name}@{self.version}#{self.digest}"

    def json_schema(self) -> dict[str, Any]:
        """The OpenAI ``response_format`` for structured output of this step."""
        if self.output == "yes_no":
            answer: dict[str, Any] = {"type": "string", "enum": ["yes", "no"]}
        elif self.output == "choice":
            answer = {"type": "integer", "enum": [1, 2]}
        else:
            answer = {"type": "string"}
        return {
            "type": "json_schema",
            "json_schema": {
                "name": self.name,
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {self.answer_field: answer},
                    "required": [self.answer_field],
                    "additionalProperties": False,
                },
            },
        }

    def render(self, variables: Mapping[str, Any], *, structured: bool = False) -> list[ChatMessage]:
        """Chat messages for one request.

        :param variables: Values of the user-turn template variables.
        :param structured: Ask for ``{"<answer_field>": ...}`` JSON (with a JSON-schema ``response_format``);
            the few-shot answers are then shown in the same JSON shape.
        """
        missing = self.variables - set(variables)
        if missing:
            raise PromptError(
                f"Prompt {self.name!r} needs the variables {sorted(missing)}; got {sorted(variables)}. "
                "If you overrode the template, use only the variables of the default template."
            )
        system = self.system
        if structured:
            system += f'\nAnswer with a JSON object {{"{self.answer_field}": ...}} and nothing else.'
        messages = [ChatMessage.from_system(system)]
        examples = self.examples
        if self.example_key is not None and self.example_key in variables:
            wanted = str(variables[self.example_key])
            matching = tuple(e for e in examples if e.inputs.get(self.example_key) == wanted)
            examples = matching or examples
        for example in examples:
            messages.append(ChatMessage.from_user(self._render_user(example.inputs)))
            answer = example.output
            if structured:
                value: Any = int(answer) if self.output == "choice" else answer
                answer = json.dumps({self.answer_field: value}, ensure_ascii=False)
            messages.append(ChatMessage.from_assistant(answer))
        messages.append(ChatMessage.from_user(self._render_user(variables)))
        return messages

    def _render_user(self, variables: Mapping[str, Any]) -> str:
        try:
            return _JINJA.from_string(self.user).render(**variables).strip()
        except TemplateError as error:
            raise PromptError(f"Prompt {self.name!r} failed to render: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["examples"] = [asdict(e) for e in self.examples]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptTemplate:
        data = dict(data)
        data["examples"] = tuple(FewShotExample(**e) for e in data.get("examples", ()))
        return cls(**data)


# --------------------------------------------------------------------------------------------------- defaults
_PASSAGE_STOP = ["\n\n\n"]

_EX_Q1 = "Does vitamin D supplementation reduce the risk of fractures in older adults?"
_EX_Q2 = "what causes iron deficiency anemia"
_EX_POS1 = (
    "In adults over 65, daily vitamin D supplementation alone does not consistently reduce fracture risk. "
    "Meta-analyses of randomized trials find a small reduction in hip and non-vertebral fractures only when "
    "vitamin D (800 IU or more per day) is combined with calcium, mainly in people living in institutions "
    "or with low baseline vitamin D levels."
)
_EX_POS2 = (
    "Iron deficiency anemia develops when the body lacks iron to make hemoglobin. The most common causes "
    "are chronic blood loss (heavy menstrual periods, bleeding from the gut), a diet low in iron, poor "
    "absorption (celiac disease, gastric surgery) and increased needs during pregnancy or growth spurts."
)
_EX_NEG1 = (
    "Vitamin D is produced in the skin after exposure to ultraviolet B light and is converted in the liver "
    "and kidneys into its active form, calcitriol. Calcitriol regulates calcium and phosphate absorption in "
    "the intestine and is measured in blood as 25-hydroxyvitamin D."
)
_EX_NEG2 = (
    "Anemia is diagnosed with a complete blood count. Hemoglobin below 13.5 g/dL in men or 12 g/dL in women "
    "indicates anemia, and the mean corpuscular volume helps classify it as microcytic, normocytic or "
    "macrocytic."
)

POSITIVE_PASSAGE = PromptTemplate(
    name="positive_passage",
    version="1",
    system=(
        "You are a domain expert writing reference passages for a search engine. Given a search query, write "
        "one passage (3 to 5 sentences) that answers it accurately and completely, as it would appear in an "
        "encyclopedia or a scientific abstract. State facts only; do not speculate, do not mention the query."
    ),
    user="Query: {{ query }}\nPassage:",
    examples=(
        FewShotExample({"query": _EX_Q1}, _EX_POS1),
        FewShotExample({"query": _EX_Q2}, _EX_POS2),
    ),
    answer_field="passage",
    generation_kwargs={"temperature": 0.7, "max_tokens": 256, "stop": _PASSAGE_STOP},
)

NEGATIVE_PASSAGE = PromptTemplate(
    name="negative_passage",
    version="1",
    system=(
        "You write hard negative passages for training a search engine. Given a search query, write one "
        "passage (3 to 5 sentences) on the same topic, using the query's key terms, that looks relevant but "
        "does NOT answer the query. Do not mention the query."
    ),
    user="Query: {{ query }}\nPassage:",
    examples=(
        FewShotExample({"query": _EX_Q1}, _EX_NEG1),
        FewShotExample({"query": _EX_Q2}, _EX_NEG2),
    ),
    answer_field="passage",
    generation_kwargs={"temperature": 0.7, "max_tokens": 256, "stop": _PASSAGE_STOP},
)

CHAIN_OF_THOUGHT = PromptTemplate(
    name="cot",
    version="1",
    system=(
        "Think step by step about what a search query is asking and what a relevant document would contain. "
        "Write your reasoning as a short paragraph (3 to 5 sentences)."
    ),
    user="Query: {{ query }}\nReasoning:",
    examples=(
        FewShotExample(
            {"query": _EX_Q2},
            "The query asks for the causes of anemia due to lack of iron. Iron is needed to make hemoglobin, "
            "so anything that removes iron from the body or stops it from being absorbed is a cause. A "
            "relevant document would list blood loss, low dietary iron, malabsorption and pregnancy.",
        ),
    ),
    answer_field="reasoning",
    generation_kwargs={"temperature": 0.7, "max_tokens": 256, "stop": _PASSAGE_STOP},
)

VERIFY = PromptTemplate(
    name="verify",
    version="1",
    system=(
        "You judge search results. Answer 'yes' if the passage answers the query (fully or mostly), "
        "otherwise 'no'. Answer with one word."
    ),
    user="Query: {{ query }}\nPassage: {{ passage }}\nDoes the passage answer the query?",
    examples=(
        FewShotExample({"query": _EX_Q2, "passage": _EX_POS2}, "yes"),
        FewShotExample({"query": _EX_Q2, "passage": _EX_NEG2}, "no"),
    ),
    output="yes_no",
    generation_kwargs={"temperature": 0.0, "max_tokens": 8},
)

PREFERENCE = PromptTemplate(
    name="preference",
    version="1",
    system=(
        "You compare two search results for a query. Answer 1 if passage 1 answers the query better, 2 if "
        "passage 2 does. Answer with the number only."
    ),
    user="Query: {{ query }}\nPassage 1: {{ passage_1 }}\nPassage 2: {{ passage_2 }}\nWhich passage answers the "
    "query better?",
    examples=(
        FewShotExample({"query": _EX_Q2, "passage_1": _EX_NEG2, "passage_2": _EX_POS2}, "2"),
        FewShotExample({"query": _EX_Q1, "passage_1": _EX_POS1, "passage_2": _EX_NEG1}, "1"),
    ),
    output="choice",
    generation_kwargs={"temperature": 0.0, "max_tokens": 8},
)

QUERIES = PromptTemplate(
    name="queries",
    version="2",
    system=(
        "You write search queries that a passage answers. A 'question' is a natural question, 'keywords' is a "
        "short keyword query, a 'claim' is a statement that the passage supports or refutes. Write one query "
        "of the requested type on a single line. Do not copy sentences from the passage."
    ),
    user="Passage: {{ passage }}\nType: {{ query_type }}\nQuery:",
    examples=(
        FewShotExample(
            {"passage": _EX_POS2, "query_type": "question"}, "Why do people become iron deficient and anemic?"
        ),
        FewShotExample(
            {"passage": _EX_NEG1, "query_type": "question"}, "How does the body make vitamin D from sunlight?"
        ),
        FewShotExample(
            {"passage": _EX_POS1, "query_type": "keywords"}, "vitamin d calcium fracture prevention elderly"
        ),
        FewShotExample({"passage": _EX_NEG2, "query_type": "keywords"}, "anemia diagnosis hemoglobin threshold"),
        FewShotExample(
            {"passage": _EX_POS1, "query_type": "claim"},
            "Vitamin D without calcium prevents hip fractures in older people.",
        ),
        FewShotExample(
            {"passage": _EX_POS2, "query_type": "claim"}, "Heavy menstrual bleeding can cause iron deficiency anemia."
        ),
    ),
    answer_field="query",
    generation_kwargs={"temperature": 0.7, "max_tokens": 48, "stop": ["\n"]},
    example_key="query_type",
)

RELEVANCE = PromptTemplate(
    name="relevance",
    version="1",
    system=(
        "You label search results. Answer 'yes' if the passage is relevant to the query (it answers it or "
        "contains the information asked for), otherwise 'no'. Answer with one word."
    ),
    user="Query: {{ query }}\nPassage: {{ passage }}\nRelevant?",
    examples=(
        FewShotExample({"query": _EX_Q1, "passage": _EX_POS1}, "yes"),
        FewShotExample({"query": _EX_Q1, "passage": _EX_NEG1}, "no"),
    ),
    output="yes_no",
    generation_kwargs={"temperature": 0.0, "max_tokens": 8},
)

DEFAULT_PROMPTS: dict[str, PromptTemplate] = {
    p.name: p for p in (POSITIVE_PASSAGE, NEGATIVE_PASSAGE, CHAIN_OF_THOUGHT, VERIFY, PREFERENCE, QUERIES, RELEVANCE)
}


def load_prompts(overrides: str | Path | Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, PromptTemplate]:
    """The default prompts with user overrides applied.

    :param overrides: A YAML/JSON file or a mapping ``name → {field: value}``; fields not given keep their
        default. An override that keeps the default ``version`` gets ``<version>+custom`` so provenance shows it.
    """
    prompts = dict(DEFAULT_PROMPTS)
    if overrides is None:
        return prompts
    if isinstance(overrides, (str, Path)):
        path = Path(overrides)
        if not path.is_file():
            raise PromptError(f"Prompt file {path} does not exist; pass a YAML or JSON file of name → fields.")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise PromptError(
                f"Prompt file {path} is not UTF-8 text (byte {error.start}): save it as UTF-8 YAML or JSON."
            ) from None
        except OSError as error:
            raise PromptError(f"Cannot read prompt file {path} ({error.strerror or error}).") from None
        import yaml

        try:
            loaded = yaml.safe_load(text)  # JSON is YAML
        except yaml.YAMLError as error:
            raise PromptError(f"Prompt file {path} is not valid YAML/JSON: {error}") from error
        if not isinstance(loaded, dict):
            raise PromptError(f"Prompt file {path} must hold a mapping of prompt name → fields.")
        overrides = loaded
    for name, fields in overrides.items():
        if name not in prompts:
            raise PromptError(f"Unknown prompt {name!r} in overrides; known prompts: {sorted(prompts)}.")
        base = prompts[name]
        if not isinstance(fields, Mapping):
            raise PromptError(f"Prompt {name!r}: the override must be a mapping of field → value.")
        fields = dict(fields)
        unknown = set(fields) - set(base.to_dict())
        if unknown:
            raise PromptError(f"Prompt {name!r}: unknown fields {sorted(unknown)}; allowed: {sorted(base.to_dict())}.")
        if "examples" in fields:
            try:
                fields["examples"] = tuple(FewShotExample(**e) for e in fields["examples"])
            except TypeError as error:
                raise PromptError(f"Prompt {name!r}: bad examples ({error}).") from None
        if "version" not in fields:
            fields["version"] = f"{base.version}+custom"
        updated = replace(base, **fields)
        missing = base.variables - updated.variables
        if missing:
            raise PromptError(f"Prompt {name!r}: the overriding template must use the variables {sorted(missing)}.")
        prompts[name] = updated
    return prompts
