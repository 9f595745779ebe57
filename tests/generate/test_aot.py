"""`aot=True`: the batch-1 decode step compiled ahead of time (torch.export + AOTInductor).

Same step logits as the eager step and the same tokens, for Llama (RoPE) and GPT-2 (learned positions),
with every step counted as an AOT step; the cache is written in place; the package reads the model's own
weights (an in-place change is seen); the package is kept on disk and reused, and an LM's engine loads
its runner once; batches, padding and the step that fills the cache's last slot take `compile=True`'s
path instead; `compile="auto"` uses a kept package and never compiles.
"""

from __future__ import annotations

import pytest
import torch
from generate_helpers import tiny_lm, tiny_model

from lmforge.generate import aot as aot_module
from lmforge.generate import generate
from lmforge.generate.aot import AOTStep
from lmforge.generate.engine import Engine

pytestmark = pytest.mark.xdist_group("compile")  # one worker pays for the compiles


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Every package of this module in one fresh folder (each family compiles once)."""
    folder = tmp_path_factory.mktemp("lmforge-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMFORGE_CACHE", str(folder))
        yield folder / "aot"


@pytest.fixture(scope="module")
def models():
    return {family: tiny_model(family, seed=13, scale=20.0) for family in ("llama", "gpt2")}


def step_logits(model, prompt, n_steps, engine=None, **engine_options):
    engine = engine or Engine(model, **engine_options)
    batch = engine.new_batch([prompt], len(prompt) + n_steps + 1)
    out = [engine.prefill(batch)]
    for i in range(n_steps):
        out.append(engine.step(batch, torch.tensor([(7 * i + 3) % 250])))
    return torch.stack(out), batch


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("prompt", [[5, 17, 99, 3, 42, 7], [9]])  # a one-token prompt: fill level 1
def test_aot_step_logits_equal_eager(packages, models, family, prompt, monkeypatch):
    model = models[family]
    calls = []
    call = aot_module.AOTStep.__call__
    monkeypatch.setattr(aot_module.AOTStep, "__call__", lambda self, *a: calls.append(1) or call(self, *a))
    aot, aot_batch = step_logits(model, prompt, 12, compile="aot")
    monkeypatch.undo()
    eager, eager_batch = step_logits(model, prompt, 12)
    assert len(calls) == 12 and aot_batch.step_counts == {"aot": 12}  # every step went through the package
    assert eager_batch.step_counts == {"eager": 12}
    torch.testing.assert_close(aot, eager, rtol=1e-4, atol=1e-4)
    # the package wrote the new keys and values into the engine's own cache tensors
    torch.testing.assert_close(aot_batch.cache.k[0], eager_batch.cache.k[0], rtol=1e-4, atol=1e-4)
    assert list(packages.glob("*.pt2"))


def test_aot_reads_the_models_own_weights(packages, models):
    """The runner's constants are the model's tensors (not copies): an in-place update is seen."""
    AOTStep(models["llama"], torch.float32)  # the package is on disk, whatever ran first
    model = tiny_model("llama", seed=13, scale=20.0)  # same shapes as models["llama"]: same package
    before = len(list(packages.glob("*.pt2")))
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)
    aot, batch = step_logits(model, [5, 17, 99], 4, compile="aot")
    eager, _ = step_logits(model, [5, 17, 99], 4)
    assert batch.step_counts == {"aot": 4}
    torch.testing.assert_close(aot, eager, rtol=1e-4, atol=1e-4)
    assert len(list(packages.glob("*.pt2"))) == before  # reused from disk, not compiled again


def test_aot_generate_equals_eager_and_other_steps_fall_back(packages, models):
    lm = tiny_lm(models["llama"])
    prompts = ["Hello there", "Hi"]  # a left-padded batch: the compile=True path
    for prompt, step in ((prompts[0], "aot"), (prompts, "compile")):
        eager = generate(lm, prompt, max_new_tokens=10)
        aot = generate(lm, prompt, max_new_tokens=10, aot=True)
        outputs = eager if isinstance(eager, list) else [eager]
        aot_outputs = aot if isinstance(aot, list) else [aot]
        assert [o.token_ids for o in aot_outputs] == [o.token_ids for o in outputs]
        assert {o.decode_step for o in aot_outputs} == {step} and {o.decode_step for o in outputs} == {
            "eager"
        }


def test_an_lm_loads_its_runner_once(packages, models, monkeypatch):
    """`compile="aot"`: the LM's engine builds its AOTStep on the first call and keeps it."""
    built = []
    init = AOTStep.__init__
    monkeypatch.setattr(AOTStep, "__init__", lambda self, *a: built.append(1) or init(self, *a))
    lm = tiny_lm(models["gpt2"], compile="aot")
    first = lm.generate("Hello there", max_new_tokens=6)
    runner = lm.engine.aot_step
    second = generate(lm, "Hello there", max_new_tokens=6)
    streamed = list(lm.stream("Hello there", max_new_tokens=6))
    assert len(built) == 1 and lm.engine.aot_step is runner
    assert first.decode_step == second.decode_step == streamed[-1].decode_step == "aot"
    assert lm.engine.step_counts == {"aot": 3 * 5}


def test_auto_uses_a_kept_package_and_never_compiles(packages, models, monkeypatch, tmp_path):
    AOTStep(models["llama"], torch.float32)  # kept on disk (compiled if no earlier test did)
    lm = tiny_lm(models["llama"], compile="auto")
    assert lm.generate("Hello there", max_new_tokens=6).decode_step == "aot"
    assert {c.decode_step for c in lm.generate(["Hello there", "Hi"], max_new_tokens=6)} == {"eager"}
    assert lm.engine.compiled_forward is None  # the batch's steps were not compiled
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))  # no package kept here
    fresh = tiny_lm(models["llama"], compile="auto")
    assert fresh.generate("Hello there", max_new_tokens=6).decode_step == "eager"
    assert not list(tmp_path.rglob("*.pt2"))


def test_package_key_includes_threads_and_instruction_set(models, monkeypatch):
    model = models["llama"]
    key = aot_module.package_key(model, torch.float32)
    torch.set_num_threads(2)  # the autouse fixture restores the count
    assert aot_module.package_key(model, torch.float32) != key
    torch.set_num_threads(1)
    assert aot_module.package_key(model, torch.float32) == key
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert aot_module.package_key(model, torch.float32) != key


def test_serves_only_batch_one_unpadded_with_a_free_slot():
    assert aot_module.serves(1, False, 10, 12)
    assert not aot_module.serves(2, False, 10, 12)
    assert not aot_module.serves(1, True, 10, 12)
    assert not aot_module.serves(1, False, 12, 12)  # this step fills the last slot
    assert aot_module.serves(1, False, 2, 4) and not aot_module.serves(1, False, 2, 3)  # the smallest cache


@pytest.mark.slow  # a third compile (~30 s)
def test_a_corrupt_kept_package_is_compiled_again(packages, models):
    """A truncated package on disk (an interrupted copy, a full disk) is rebuilt, not an error."""
    model = models["gpt2"]
    path = packages / f"{aot_module.package_key(model, torch.float32)}.pt2"
    AOTStep(model, torch.float32)  # compiled (or loaded) once
    path.write_bytes(path.read_bytes()[:100])
    aot, batch = step_logits(model, [5, 17], 3, compile="aot")  # a new engine reads the package again
    assert path.stat().st_size > 100 and batch.step_counts == {"aot": 3}
    eager, _ = step_logits(model, [5, 17], 3)
    torch.testing.assert_close(aot, eager, rtol=1e-4, atol=1e-4)


def test_a_model_whose_tensors_moved_gets_a_new_runner(packages, models):
    """`param.data = ...` (what `model.to()` does) moves a tensor: the runner read the old address,
    so the engine's next batch gets a new runner on the new tensors (from the kept package)."""
    model = tiny_model("llama", seed=14, scale=20.0)
    engine = Engine(model, compile="aot")
    step_logits(model, [5, 17, 99], 2, engine=engine)
    first = engine.aot_step
    with torch.no_grad():
        model.lm_head.weight.data = -model.lm_head.weight.data  # new storage
    aot, batch = step_logits(model, [5, 17, 99], 4, engine=engine)
    eager, _ = step_logits(model, [5, 17, 99], 4)
    assert engine.aot_step is not first and batch.step_counts == {"aot": 4}
    torch.testing.assert_close(aot, eager, rtol=1e-4, atol=1e-4)
