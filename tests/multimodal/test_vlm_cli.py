"""`lmforge generate --image` on a saved VLM (the answer equals the API's), one-line errors for a
text-only model given an image and for a file that is not an image, and (slow) `lmforge quickstart
--recipe vlm` end to end."""

import json

import pytest
import torch

import lmforge
from lmforge.cli import main, run
from lmforge.multimodal.data import load_easy_vqa
from lmforge.multimodal.vlm import VLM, VLMConfig, train_vlm_tokenizer
from lmforge.multimodal.vlm_train import training_texts

TINY = dict(
    patch_size=16, vision_d_model=32, vision_n_layer=1, vision_n_head=2, text_d_model=32, text_n_head=2
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny random VLM saved as a checkpoint, and one test image written as a PNG."""
    from PIL import Image

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("vlm")
    data = load_easy_vqa("train", limit=50)
    vlm = VLM.create(VLMConfig(**TINY), train_vlm_tokenizer(training_texts(data)), seed=2)
    vlm.save(root / "model")
    image = root / "shape.png"
    Image.fromarray(data.images[3].permute(1, 2, 0).numpy()).save(image)
    return root / "model", image


def test_generate_with_image_matches_the_api(saved, capsys):
    model, image = saved
    argv = ["generate", "--model", str(model), "--image", str(image), "--prompt", "what shape is this?"]
    run([*argv, "--max-new-tokens", "4", "--json-output"])
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    vlm = lmforge.load(model)
    expected = vlm.generate("what shape is this?", image=str(image), max_new_tokens=4)
    assert record["token_ids"] == expected.token_ids
    assert record["prompt_tokens"] == vlm.config.prefix_length + len(
        vlm.tokenizer.encode("what shape is this? answer:")
    )


def test_text_only_model_given_an_image_is_one_line(saved, tmp_path, capsys):
    from tiny import tiny_chat_tokenizer, tiny_model

    _, image = saved
    lm = lmforge.LM(tiny_model("llama", vocab_size=320), tiny_chat_tokenizer(["hello there"]))
    lm.save(tmp_path / "text")
    code = main(["generate", "--model", str(tmp_path / "text"), "--image", str(image), "--prompt", "hi"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "text-only model" in err


def test_not_an_image_is_one_line(saved, tmp_path, capsys):
    model, _ = saved
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    code = main(["generate", "--model", str(model), "--image", str(bad), "--prompt", "what shape is this?"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "not a readable image" in err


@pytest.mark.slow
def test_quickstart_vlm_prints_accuracy_last(tmp_path, capsys):
    result = run(
        ["quickstart", "--recipe", "vlm", "--out", str(tmp_path), "--minutes", "0.5", "--no-progress"]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("accuracy ") and "%" in out[-1]
    assert any("Q: " in line and "A: " in line for line in out)
    assert any(line.startswith("stages: clip ") for line in out)  # the CLIP tower, then the VLM
    figures = json.loads(result.results.read_text())
    assert figures["accuracy"] == result.accuracy and set(figures["evaluation"]["by_type"]) == {
        "colour",
        "shape",
        "yes/no",
    }
    assert isinstance(lmforge.load(result.final), VLM)


def test_chat_with_an_image(saved):
    from lmforge.cli.generate import chat_loop

    model, image = saved
    vlm = lmforge.load(model)
    lines = iter(["what color is the shape?", "/exit"])
    written = []
    history = chat_loop(
        vlm, read_line=lambda _: next(lines), write=written.append, image=str(image), max_new_tokens=3
    )
    expected = vlm.generate("what color is the shape?", image=str(image), max_new_tokens=3).text
    assert history[-1] == {"role": "assistant", "content": expected}
