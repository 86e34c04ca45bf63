"""Shipped description files and the loader's checks on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torchvision

import headstrong as hs
from headstrong.textguided import descriptions

# torchvision's class lists; CIFAR and STL read theirs from the downloaded files, so they are
# written out here (same order as torchvision's dataset.classes).
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10 = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
CIFAR100 = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab
crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard
lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom
oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider
squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout
tulip turtle wardrobe whale willow_tree wolf woman worm""".split()

EXPECTED = {
    "fashion_mnist": list(torchvision.datasets.FashionMNIST.classes),
    "mnist": list(torchvision.datasets.MNIST.classes),
    "cifar10": CIFAR10,
    "cifar100": CIFAR100,
    "stl10": STL10,
}


def test_every_data_set_has_a_shipped_file() -> None:
    assert descriptions.list_shipped() == list(EXPECTED)
    assert len(CIFAR100) == 100 and CIFAR100 == sorted(CIFAR100)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_shipped_file_covers_the_classes_in_order(name: str) -> None:
    desc = descriptions.load(name, classes=EXPECTED[name])
    assert list(desc) == EXPECTED[name]
    assert list(descriptions.load(name)) == EXPECTED[name]  # the file itself is in that order
    assert descriptions.shipped_classes(name) == EXPECTED[name]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_shipped_file_answers_every_question(name: str) -> None:
    record = descriptions.read(name)
    assert record.dataset == name
    assert record.generator == "written by the headstrong developers"
    assert record.questions == descriptions.DEFAULT_QUESTIONS
    assert len(record.questions) >= 5 and all("{class}" in q for q in record.questions)
    seen: set[str] = set()
    for cls, answers in record.classes.items():
        assert len(answers) == len(record.questions), cls
        assert len(set(answers)) == len(answers), f"{cls}: repeated answer"
        for text in answers:
            assert text == text.strip() and len(text.split()) >= 6, (cls, text)
            assert text.endswith("."), (cls, text)
            assert text not in seen, f"{cls}: answer also used by another class: {text}"
            seen.add(text)


@pytest.mark.parametrize(
    ("alias", "name"),
    [("fashion-mnist", "fashion_mnist"), ("FashionMNIST", "fashion_mnist"), ("CIFAR-10", "cifar10"),
     ("cifar_100", "cifar100"), ("stl-10", "stl10"), ("MNIST", "mnist")],
)
def test_aliases_name_the_same_set(alias: str, name: str) -> None:
    assert descriptions.load(alias) == descriptions.load(name)


def test_public_api_reaches_the_loader() -> None:
    assert hs.descriptions.load("cifar10")["ship"][0].startswith("A ship")


def test_plain_mapping_and_order_from_classes(tmp_path: Path) -> None:
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"b": ["second letter"], "a": ["first letter", "vowel"]}))
    assert list(descriptions.load(path)) == ["b", "a"]
    assert list(descriptions.load(str(path), classes=["a", "b"])) == ["a", "b"]


def test_save_round_trips_and_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.json"
    desc = {"x": ["one", "two"], "y": ["three", "four"]}
    descriptions.save(desc, path, questions=["A {class}?", "B {class}?"], dataset="toy", generator="me")
    record = descriptions.read(path)
    assert record.classes == desc and record.questions == ("A {class}?", "B {class}?")
    assert (record.dataset, record.generator) == ("toy", "me")
    descriptions.save({"x": ["five"]}, path)
    assert descriptions.load(path) == {"x": ["five"]}
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]  # no temporary file left


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    descriptions.save({"x": ["kept"]}, path)
    with pytest.raises(TypeError):
        descriptions.write_json_atomic({"classes": {"x": ["new", object()]}}, path)
    assert descriptions.load(path) == {"x": ["kept"]}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_save_refuses_what_load_would_refuse(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    with pytest.raises(ValueError, match="'x' has an empty list"):
        descriptions.save({"x": []}, path)
    assert not path.exists()


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "desc.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cat": []}, r"desc.json: class 'cat' has an empty list; expected at least one"),
        ({"cat": "furry"}, r"class 'cat' has a str; expected a list of description strings"),
        ({"cat": ["ok", 3]}, r"class 'cat', description 1 is a int; expected a non-empty string"),
        ({"cat": ["ok", "  "]}, r"class 'cat', description 1 is empty"),
        ({}, r"no classes; expected at least one class"),
        (["cat"], r"top level is a list; expected a JSON object"),
        ('{"cat": ["a"], "cat": ["b"]}', r"key 'cat' appears more than once"),
        ("{not json", r"not valid JSON"),
        ({"questions": ["Q {class}?", "R {class}?"], "classes": {"cat": ["a"]}},
         r"class 'cat' has 1 answers but the file records 2 questions"),
        ({"questions": "Q", "classes": {"cat": ["a"]}}, r"'questions' must be a non-empty list"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path: Path, data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        descriptions.load(_write(tmp_path, data))


def test_missing_and_extra_classes_are_listed(tmp_path: Path) -> None:
    path = _write(tmp_path, {"cat": ["c"], "dog": ["d"], "emu": ["e"]})
    with pytest.raises(ValueError) as info:
        descriptions.load(path, classes=["cat", "dog", "fox", "gnu"])
    text = str(info.value)
    assert str(path) in text
    assert "missing classes: 'fox', 'gnu'" in text and "classes not in the data set: 'emu'" in text


def test_shipped_file_against_the_wrong_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing classes: 'car'.*not in the data set: 'automobile'"):
        descriptions.load("cifar10", classes=STL10[:2] + ["car"] + CIFAR10[3:])


def test_unknown_name_lists_the_shipped_sets() -> None:
    with pytest.raises(ValueError) as info:
        descriptions.load("imagenet")
    text = str(info.value)
    assert "'imagenet'" in text
    assert all(name in text for name in EXPECTED)


def test_class_and_question_lists(tmp_path: Path) -> None:
    text = tmp_path / "classes.txt"
    text.write_text("owl\n\n  hawk \n")
    assert descriptions.class_list(text) == ["owl", "hawk"]
    listed = tmp_path / "classes.json"
    listed.write_text(json.dumps(["owl", "hawk"]))
    assert descriptions.class_list(listed) == ["owl", "hawk"]
    assert descriptions.class_list("Fashion-MNIST")[0] == "T-shirt/top"
    listed.write_text(json.dumps(["owl", "owl"]))
    with pytest.raises(ValueError, match="listed more than once: 'owl'"):
        descriptions.class_list(listed)
    questions = tmp_path / "q.txt"
    questions.write_text("Is a {class} big?\nWhat colour is it?\n")
    with pytest.raises(ValueError, match="without the \\{class\\} placeholder: 'What colour is it\\?'"):
        descriptions.question_list(questions)
