"""The VLM: shapes, the image prefix through the generation engine, save/load, the answer-only loss,
bad input, CIDEr, and a tiny end-to-end training that learns above chance."""

import math

import pytest
import torch

import lmforge
from lmforge import LMForgeError
from lmforge.multimodal.data import COLOURS, PALETTE, ImageSet, load_easy_vqa
from lmforge.multimodal.vlm import VLM, VLMConfig, prompt_text, train_vlm_tokenizer
from lmforge.multimodal.vlm_train import (
    VLMTrainConfig,
    answer_loss,
    cider,
    encode_samples,
    evaluate_vlm,
    train_vlm,
    training_texts,
)

TINY = dict(
    patch_size=16, vision_d_model=32, vision_n_layer=1, vision_n_head=2, text_d_model=32, text_n_head=2
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    return load_easy_vqa("train", limit=300)


@pytest.fixture(scope="module")
def vlm(data) -> VLM:
    return VLM.create(VLMConfig(**TINY), train_vlm_tokenizer(training_texts(data)), seed=1)


def test_shapes(vlm, data):
    images = data.float_images(slice(0, 3))
    prefix = vlm.network.image_prefix(images)
    assert prefix.shape == (3, vlm.config.prefix_length, vlm.config.text_d_model)
    ids = torch.randint(0, vlm.config.vocab_size, (3, 7))
    logits = vlm.network(images, ids)
    assert logits.shape == (3, vlm.config.prefix_length + 7, vlm.config.vocab_size)
    # the image changes the text positions' logits (the prefix is read), the ids do not change the prefix's
    other = vlm.network(data.float_images(slice(3, 6)), ids)
    assert not torch.allclose(logits[:, -1], other[:, -1])
    ids2 = ids.clone()
    ids2[:, 3] = (ids2[:, 3] + 1) % vlm.config.vocab_size
    torch.testing.assert_close(vlm.network(images, ids2)[:, :6], logits[:, :6])


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"prefix_tokens": 3}, "prefix_tokens"),
        ({"prefix_tokens": 64}, "prefix_tokens"),
        ({"text_max_len": 6}, "text_max_len"),
    ],
)
def test_config_errors(fields, match):
    with pytest.raises(LMForgeError, match=match):
        VLMConfig(**{**TINY, **fields})


def greedy_without_cache(vlm: VLM, image: torch.Tensor, prompt: str, n: int) -> list[int]:
    ids = vlm.tokenizer.encode(prompt, add_special_tokens=True)
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = vlm.network(image[None].float() / 255, torch.tensor([ids + out]))[0, -1]
            out.append(int(logits.argmax()))
    return out


def test_generate_with_image_matches_a_full_forward(vlm, data):
    """The engine's prefill of the image prefix + KV-cache decoding = rerunning the network each step."""
    image = data.images[5]
    out = vlm.generate("What color is the shape?", image=image, max_new_tokens=5, ignore_eos=True)
    assert out.token_ids == greedy_without_cache(vlm, image, "what color is the shape? answer:", 5)
    # a batch of two images with prompts of different lengths (left padding) gives each row's own answer
    questions = ["what color is the shape?", "is there not a red shape in the image?"]
    both = vlm.generate(questions, image=[data.images[5], data.images[7]], max_new_tokens=4, ignore_eos=True)
    assert both[0].token_ids == out.token_ids[:4]
    assert both[1].token_ids == greedy_without_cache(vlm, data.images[7], prompt_text(questions[1]), 4)


def test_save_load_roundtrip(vlm, data, tmp_path):
    path = vlm.save(tmp_path / "vlm")
    loaded = lmforge.load(path)
    assert isinstance(loaded, VLM)
    images, ids = data.float_images(slice(0, 2)), torch.randint(0, vlm.config.vocab_size, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(loaded.network(images, ids), vlm.network(images, ids))
    assert loaded.config == vlm.config
    assert loaded.ask("what shape is in the image?", data.images[0]) == vlm.ask(
        "what shape is in the image?", data.images[0]
    )
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "lmforge-clip"}')
    with pytest.raises(
        LMForgeError, match="holds a 'lmforge-clip' model, not a VLM; give a directory written by"
    ):
        VLM.load(tmp_path / "other")


def test_loss_is_on_answer_tokens_only(vlm, data):
    ids, targets = encode_samples(vlm, [("what color is the shape?", "blue", 0)])
    tok = vlm.tokenizer
    kept = targets[targets != -100].tolist()
    assert kept == tok.encode(" blue", add_special_tokens=False) + [tok.eos_token_id]
    # the answer's first token is predicted from the last prompt position
    n_prompt = len(tok.encode(prompt_text("what color is the shape?")))
    assert targets[0, n_prompt - 1] == ids[0, n_prompt]
    # the question's tokens get no gradient through the loss targets: the loss equals the answer's NLL
    images = data.float_images(slice(0, 1))
    with torch.no_grad():
        logits = vlm.network(images, ids)[0, vlm.config.prefix_length :]
        logp = logits.log_softmax(-1)
        mask = targets[0] != -100
        nll = -logp[mask].gather(1, targets[0][mask][:, None]).mean()
        torch.testing.assert_close(answer_loss(vlm, images, ids, targets), nll)


def test_bad_images(vlm, tmp_path):
    text = tmp_path / "note.png"
    text.write_text("not an image")
    with pytest.raises(LMForgeError, match="not a readable image"):
        vlm.ask("what shape is in the image?", str(text))
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(tmp_path / "small.png")
    with pytest.raises(LMForgeError, match="32x32"):
        vlm.ask("what shape is in the image?", tmp_path / "small.png")
    with pytest.raises(LMForgeError, match="images for 2 prompts"):
        vlm.generate(["a", "b"], image=[tmp_path / "small.png"] * 3)


def test_cider_by_hand():
    refs = [["a red circle"], ["a blue circle"], ["a red triangle"]]
    assert cider(["a red circle", "a blue circle", "a red triangle"], refs, n=3) == pytest.approx(10.0)
    # n = 4: 3-word texts have no 4-grams, so that order adds nothing (as in the reference CIDEr)
    assert cider(["a red circle", "a blue circle", "a red triangle"], refs) == pytest.approx(7.5)
    assert cider(["green square", "green square", "green square"], refs) == 0.0
    # unigrams, "a red triangle" against "a red circle": idf("a") = 0 (in every reference),
    # idf("red") = idf("circle") = log(3/2), idf("triangle") = log 3; tf = 1/3 each; cosine of the two
    w, t = math.log(3 / 2), math.log(3)
    cosine = w / (math.sqrt(2) * math.sqrt(w * w + t * t))
    assert cider(["a red triangle", "x", "x"], refs, n=1) == pytest.approx(10 * cosine / 3, rel=1e-6)


def solid_images(n: int, seed: int) -> ImageSet:
    """n 64×64 images each filled with one palette colour (plus pixel noise), asked for their colour."""
    g = torch.Generator().manual_seed(seed)
    colours = [COLOURS[i] for i in torch.randint(len(COLOURS), (n,), generator=g).tolist()]
    rgb = torch.tensor([PALETTE[c] for c in colours], dtype=torch.float32)[:, :, None, None]
    noise = torch.randint(-20, 21, (n, 3, 64, 64), generator=g)
    images = (rgb + noise).clamp(0, 255).to(torch.uint8)
    questions = [("what color is the shape?", c, r) for r, c in enumerate(colours)]
    return ImageSet(images, ["rectangle"] * n, colours, questions, "synthetic")


def test_tiny_training_learns_from_the_image():
    """Seconds of end-to-end training (ViT, projector, decoder from scratch) answer held-out images'
    colours far above chance (1/8): the answer comes from the image prefix."""
    train = VLMTrainConfig(
        steps=100, batch_size=32, lr=1e-2, warmup_steps=10, caption_share=0.0, log_every=1000
    )
    result = train_vlm(VLMConfig(**TINY), train, data=solid_images(256, seed=0), progress=False)
    test = solid_images(64, seed=1)
    scores = evaluate_vlm(result.vlm, test, samples=0)
    assert scores.by_type["colour"] >= 0.6, scores
    assert scores.clip_score is None
    # with a CLIP model, the captions' mean CLIPScore under it, beside the reference captions'
    from lmforge.multimodal.clip import CLIP, ClipConfig, train_caption_tokenizer
    from lmforge.multimodal.evaluate import clip_score_model

    clip = CLIP.create(
        ClipConfig(patch_size=16, vision_d_model=16, vision_n_layer=1, text_d_model=16, text_n_layer=1),
        train_caption_tokenizer(test.captions + ["a picture"]),
        seed=0,
    )
    small = test.subset(range(8))
    scored = evaluate_vlm(result.vlm, small, samples=0, clip=clip)
    captions = result.vlm.caption(list(small.images))
    assert scored.clip_score == pytest.approx(float(clip_score_model(clip, small.images, captions).mean()))
    assert scored.clip_score_reference == pytest.approx(
        float(clip_score_model(clip, small.images, small.captions).mean())
    )


@pytest.mark.slow
def test_training_on_easy_vqa_learns_colours():
    """A few minutes on easy-VQA with the recipe's model: colour questions on the held-out test split
    ≥ 90% (800 steps measured 100% on 1,500 test questions)."""
    from lmforge.multimodal.vlm_quickstart import RECIPE_MODEL

    result = train_vlm(RECIPE_MODEL, VLMTrainConfig(steps=800, log_every=1000), progress=False)
    test = load_easy_vqa("test", limit=300)
    scores = evaluate_vlm(result.vlm, test, samples=0)
    assert scores.by_type["colour"] >= 0.9, scores


def test_caption_bleu_3_is_sacrebleus():
    import sacrebleu

    from lmforge.eval.metrics.text import bleu

    preds, refs = (
        ["a red circle", "a blue circle", "a teal triangle"],
        ["a red circle", "a red circle", "a teal triangle"],
    )
    expected = sacrebleu.BLEU(max_ngram_order=3).corpus_score(preds, [refs]).score
    assert bleu(preds, refs, max_ngram_order=3) == pytest.approx(expected)
    assert 0 < expected < 100 and bleu(preds, refs) == 0.0  # BLEU-4 of 3-word captions


def test_vision_tower_from_a_clip_checkpoint(data, tmp_path):
    """LLaVA-style start: the VLM's ViT is a CLIP checkpoint's image tower; other shapes are refused."""
    from lmforge.multimodal.clip import CLIP, ClipConfig, train_caption_tokenizer

    vision = {k: v for k, v in TINY.items() if not k.startswith("text_")}
    clip = CLIP.create(ClipConfig(**vision), train_caption_tokenizer(data.captions), seed=3)
    clip.save(tmp_path / "clip")
    tok = train_vlm_tokenizer(training_texts(data))
    vlm = VLM.create(VLMConfig(**TINY), tok, vision_from=tmp_path / "clip")
    for name, value in clip.model.visual.state_dict().items():
        torch.testing.assert_close(vlm.network.visual.state_dict()[name], value)
    with pytest.raises(LMForgeError, match="image tower"):
        VLM.create(VLMConfig(**{**TINY, "vision_n_layer": 2}), tok, vision_from=tmp_path / "clip")
