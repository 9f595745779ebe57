import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# Under pytest-xdist each worker already has a core: one thread per worker avoids threads stalling on
# each other (seen as 10x slower steps on the 2-core box); a plain run uses up to two.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct loaded by lmforge from the shipped GGUF (fp32, CPU), once per worker.
    Shared: tests must not change its weights."""
    import lmforge

    # eager steps whatever AOT packages this machine keeps: tests do not depend on the disk's state
    return lmforge.load("smollm2", dtype=torch.float32, device="cpu", compile="eager")


@pytest.fixture(scope="session")
def hf_smollm2():
    """The reference: transformers reading the same GGUF file -> (model, tokenizer), once per worker."""
    import transformers

    from lmforge.assets import asset_path

    path = asset_path("smollm2")
    transformers.logging.set_verbosity_error()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model.eval(), tok


@pytest.fixture
def tiny_config():
    """The shared tiny-config factory, `tiny_config(family="llama", vocab_size=259, **overrides)`
    (tests/tiny.py; import it from there where a fixture does not fit, e.g. at module level)."""
    from tiny import tiny_config

    return tiny_config


@pytest.fixture
def tiny_model():
    """The shared tiny-model factory, `tiny_model(family="llama", seed=0, **overrides)`: seeded random
    weights, eval mode (tests/tiny.py)."""
    from tiny import tiny_model

    return tiny_model


@pytest.fixture
def low_precision_as_asked(monkeypatch):
    """bf16 and fp16 count as native on this CPU, so the Trainer runs them as asked: on a CPU without
    them (a Zen 3) it falls back to fp32 by design (tests/test_hardware.py), and autocast tests are about
    what happens once the precision is chosen. Emulated, a tiny model still runs them."""
    from lmforge import hardware

    native = hardware.native_support
    monkeypatch.setattr(
        hardware,
        "native_support",
        lambda precision, device="cpu", flags=None: native(precision, device, flags) or "assumed by the test",
    )
