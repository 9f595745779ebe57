"""Image–text evaluation against independent implementations: the zero-shot classifier against
open_clip's, retrieval Recall@K against scikit-learn and ranx; CLIPScore with our checkpoints; the grids."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmforge.errors import LMForgeError
from lmforge.multimodal.clip import CLIP, ClipConfig, train_caption_tokenizer
from lmforge.multimodal.evaluate import (
    clip_score_model,
    clip_score_pairs,
    retrieval_recall,
    zero_shot_classifier,
)


def _open_clip_module(name: str):
    spec = importlib.util.find_spec("open_clip")
    assert spec is not None, "open_clip_torch is not installed: `make setup` installs it (--no-deps)"
    path = Path(next(iter(spec.submodule_search_locations))) / f"{name}.py"
    module_spec = importlib.util.spec_from_file_location(f"open_clip_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_zero_shot_classifier_matches_open_clip_prompt_ensembling():
    reference = _open_clip_module("zero_shot_classifier")
    classes = ["circle", "rectangle", "triangle"]
    templates = ["a {}", "a picture of a {}", "the shape is a {}"]
    tokenizer = train_caption_tokenizer([t.format(c) for t in templates for c in classes])
    clip = CLIP.create(
        ClipConfig(
            image_size=16, patch_size=8, vision_d_model=16, vision_n_layer=1, text_d_model=16, text_n_layer=1
        ),
        tokenizer,
    )

    class Adapter:  # open_clip's model / tokenizer interface over our CLIP
        def encode_text(self, ids, normalize=True):
            return clip.model.encode_text(ids, (ids != tokenizer.pad_token_id).long())

    with torch.no_grad():
        expected = reference.build_zero_shot_classifier(
            Adapter(), lambda texts: clip.tokenize(texts)[0], classes, templates, num_classes_per_batch=2
        )
    ours = zero_shot_classifier(clip, classes, templates)
    torch.testing.assert_close(ours, expected.T, atol=1e-5, rtol=1e-5)
    # ensembling differs from the single template
    assert not torch.allclose(ours, zero_shot_classifier(clip, classes, templates[:1]))


def test_image_to_text_recall_matches_sklearn_top_k_accuracy():
    from sklearn.metrics import top_k_accuracy_score

    g = torch.Generator().manual_seed(1)
    images = F.normalize(torch.randn(60, 8, generator=g), dim=-1)
    texts = F.normalize(torch.randn(12, 8, generator=g), dim=-1)
    labels = [i % 12 for i in range(60)]
    ours = retrieval_recall(images, texts, labels, list(range(12)))
    scores = (images @ texts.T).numpy()
    for k in (1, 5, 10):
        expected = top_k_accuracy_score(labels, scores, k=k, labels=list(range(12)))
        assert ours[f"image_to_text_R@{k}"] == pytest.approx(expected)
    assert 0 < ours["image_to_text_R@1"] < ours["image_to_text_R@5"] < 1


@pytest.mark.slow  # ranx compiles its metrics with numba on first use (~20 s)
def test_retrieval_recall_matches_ranx_hit_rate():
    import ranx

    g = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(40, 8, generator=g), dim=-1)
    texts = F.normalize(torch.randn(12, 8, generator=g), dim=-1)
    image_labels = [i % 12 for i in range(40)]
    text_labels = list(range(12))
    ours = retrieval_recall(images, texts, image_labels, text_labels)
    sim = (images @ texts.T).tolist()
    for direction, queries, docs, q_labels, d_labels, scores in (
        ("image_to_text", 40, 12, image_labels, text_labels, sim),
        ("text_to_image", 12, 40, text_labels, image_labels, [list(r) for r in zip(*sim, strict=True)]),
    ):
        qrels = ranx.Qrels(
            {f"q{q}": {f"d{d}": 1 for d in range(docs) if d_labels[d] == q_labels[q]} for q in range(queries)}
        )
        run = ranx.Run({f"q{q}": {f"d{d}": scores[q][d] for d in range(docs)} for q in range(queries)})
        expected = ranx.evaluate(qrels, run, ["hit_rate@1", "hit_rate@5", "hit_rate@10"])
        for k in (1, 5, 10):
            assert ours[f"{direction}_R@{k}"] == pytest.approx(expected[f"hit_rate@{k}"])


def test_clip_score_model_pairs_images_with_texts():
    tokenizer = train_caption_tokenizer(["a red circle", "a blue triangle"])
    clip = CLIP.create(
        ClipConfig(image_size=16, patch_size=8, vision_d_model=16, vision_n_layer=1), tokenizer
    )
    images = torch.rand(2, 3, 16, 16)
    scores = clip_score_model(clip, images, ["a red circle", "a blue triangle"])
    expected = 2.5 * (
        clip.encode_images(images) * clip.encode_texts(["a red circle", "a blue triangle"])
    ).sum(-1)
    torch.testing.assert_close(scores, expected.clamp(min=0))
    with pytest.raises(LMForgeError, match="one text per image"):
        clip_score_model(clip, images, ["a red circle"])


def test_clip_score_equals_open_clips_scoring_of_the_same_features():
    """CLIPScore from open_clip's own scoring: its `get_logits` at logit scale 1 is the cosine matrix of
    normalised features; CLIPScore is 2.5 x its diagonal, floored at 0."""
    from lmforge.eval.metrics.multimodal import clip_score

    g = torch.Generator().manual_seed(3)
    image, text = torch.randn(12, 24, generator=g), torch.randn(12, 24, generator=g)
    logits, _ = (
        _open_clip_module("loss")
        .ClipLoss()
        .get_logits(F.normalize(image, dim=-1), F.normalize(text, dim=-1), torch.tensor(1.0))
    )
    expected = 2.5 * logits.diagonal().clamp(min=0)
    torch.testing.assert_close(clip_score(image, text), expected)
    assert (expected == 0).any() and (expected > 0).any()  # both sides of the floor are exercised


def test_clipscore_command_scores_image_files(tmp_path, capsys):
    """`lmforge eval clipscore --model DIR --pairs FILE`: image files with their captions, equal to
    clip_score_model on the same images; a malformed line and a wrong size are one-line errors."""
    import json

    from PIL import Image

    from lmforge.cli import main
    from lmforge.multimodal.data import load_easy_vqa

    data = load_easy_vqa("test", limit=3)
    clip = CLIP.create(
        ClipConfig(patch_size=16, vision_d_model=16, vision_n_layer=1, text_d_model=16), _tokenizer()
    )
    clip.save(tmp_path / "clip")
    lines = []
    for i in range(3):
        Image.fromarray(data.images[i].permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "text": data.captions[i]}))
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    main(["eval", "clipscore", "--model", str(tmp_path / "clip"), "--pairs", str(tmp_path / "pairs.jsonl")])
    printed = json.loads(capsys.readouterr().out)
    expected = clip_score_model(clip, data.images, data.captions)
    assert printed["pairs"] == 3
    assert printed["scores"] == pytest.approx(expected.tolist(), abs=1e-6)
    (tmp_path / "bad.jsonl").write_text('{"image": "0.png"}\n')
    with pytest.raises(LMForgeError, match="bad.jsonl:1: each line must be"):
        clip_score_pairs(clip, tmp_path / "bad.jsonl")
    Image.new("RGB", (32, 32)).save(tmp_path / "small.png")
    with pytest.raises(LMForgeError, match="32x32 but the model takes 64x64"):
        clip_score_pairs(clip, [(tmp_path / "small.png", "a red circle")])
    assert clip_score_pairs(clip, [(tmp_path / "small.png", "a red circle")], resize=True)["pairs"] == 1


def test_grids_are_written(tmp_path):
    from lmforge.multimodal.data import load_easy_vqa
    from lmforge.multimodal.evaluate import prediction_grid, retrieval_grid

    data = load_easy_vqa("test", limit=30)
    clip = CLIP.create(
        ClipConfig(patch_size=16, vision_d_model=16, vision_n_layer=1, text_d_model=16), _tokenizer()
    )
    for path in (
        prediction_grid(clip, data, tmp_path / "zero_shot.png", n=6),
        retrieval_grid(clip, data, tmp_path / "retrieval.png", ["a red circle"], k=3),
    ):
        assert path.read_bytes()[:4] == b"\x89PNG"


def _tokenizer():
    from lmforge.multimodal.train import all_template_texts

    return train_caption_tokenizer(all_template_texts())
