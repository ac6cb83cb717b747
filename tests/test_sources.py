from pathlib import Path

import pytest
from conftest import copy_photos, real_photos

from headstart.data import load_dataset
from headstart.data.split import hashed_split
from headstart.errors import HeadstartError


@pytest.fixture
def class_folders(tmp_path: Path) -> Path:
    copy_photos(real_photos("daisy", 10), tmp_path / "daisy")
    copy_photos(real_photos("sunflower", 10), tmp_path / "sunflower")
    return tmp_path


def test_class_folders_are_split_by_hash(class_folders):
    dataset = load_dataset(class_folders, val_percent=30, test_percent=30)
    assert dataset.classes == ["daisy", "sunflower"]
    assert dataset.layout == "class folders"
    counts = dataset.counts()
    assert sum(counts.values()) == 20 and all(counts.values())
    again = load_dataset(class_folders, val_percent=30, test_percent=30)
    assert [s.split for s in again.samples] == [s.split for s in dataset.samples]


def test_a_folder_of_links_splits_as_the_photos_do_and_moving_them_moves_nothing(
    class_folders, tmp_path_factory
):
    """Before: a link was hashed by the absolute path it pointed to, so moving the photos
    behind a folder of links reshuffled its splits (and test images into training)."""
    links = tmp_path_factory.mktemp("links")
    for photo in class_folders.rglob("*.jpg"):
        link = links / photo.relative_to(class_folders)
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(photo)
    split = {
        s.path.relative_to(class_folders): s.split for s in load_dataset(class_folders).samples
    }
    linked = {s.path.relative_to(links): s.split for s in load_dataset(links).samples}
    assert linked == split


def test_adding_images_never_moves_old_ones(class_folders):
    before = {s.path.name: s.split for s in load_dataset(class_folders).samples}
    copy_photos(real_photos("daisy", 15, skip=10), class_folders / "daisy")
    after = {s.path.name: s.split for s in load_dataset(class_folders).samples}
    assert len(after) == 35
    assert all(after[name] == split for name, split in before.items())


def test_hashed_split_shares_match_the_percentages():
    splits = [hashed_split(f"class/img_{i}.jpg", 20, 10) for i in range(5000)]
    assert abs(splits.count("val") / 5000 - 0.20) < 0.02
    assert abs(splits.count("test") / 5000 - 0.10) < 0.02


def test_hidden_files_and_non_images_are_ignored(class_folders):
    (class_folders / "daisy" / "notes.txt").write_text("not an image")
    (class_folders / "daisy" / ".hidden.jpg").write_bytes(b"")
    (class_folders / ".git").mkdir()
    (class_folders / ".git" / "x.jpg").write_bytes(b"")
    dataset = load_dataset(class_folders)
    assert dataset.classes == ["daisy", "sunflower"]
    assert len(dataset.samples) == 20


def test_pre_split_folders_keep_their_splits(tmp_path):
    for folder, skip in (("train", 0), ("valid", 12), ("test", 20)):
        for label in ("daisy", "sunflower"):
            copy_photos(real_photos(label, 3, skip=skip), tmp_path / folder / label)
    dataset = load_dataset(tmp_path)
    assert dataset.counts() == {"train": 6, "val": 6, "test": 6}
    assert dataset.evaluation_split() == "test"
    assert all(s.path.parts[-3] == {"val": "valid"}.get(s.split, s.split) for s in dataset.samples)


def test_validation_is_carved_from_train_when_only_test_is_given(tmp_path):
    for label in ("daisy", "sunflower"):
        copy_photos(real_photos(label, 20), tmp_path / "train" / label)
        copy_photos(real_photos(label, 3, skip=20), tmp_path / "test" / label)
    dataset = load_dataset(tmp_path, val_percent=25)
    counts = dataset.counts()
    assert counts["test"] == 6 and counts["val"] > 0 and counts["train"] + counts["val"] == 40
    assert all(s.path.parts[-3] == "train" for s in dataset.split("val"))


def test_csv_and_mapping_file(class_folders):
    rows = [
        (p.relative_to(class_folders).as_posix(), p.parent.name)
        for p in sorted(class_folders.rglob("*.jpg"))
    ]
    csv_file = class_folders / "labels.csv"
    csv_file.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    mapping = class_folders / "map.txt"
    mapping.write_text(
        "".join(f"{class_folders / p}\t{int(label == 'sunflower')}\n" for p, label in rows)
    )
    from_csv, from_map = load_dataset(csv_file), load_dataset(mapping)
    assert from_csv.layout == "csv" and from_csv.classes == ["daisy", "sunflower"]
    assert from_map.layout == "mapping file" and from_map.classes == ["0", "1"]
    assert len(from_csv.samples) == len(from_map.samples) == 20


def test_csv_naming_a_missing_file_is_a_clear_error(class_folders):
    csv_file = class_folders / "labels.csv"
    csv_file.write_text("path,label\nants/missing.jpg,daisy\n")
    with pytest.raises(
        HeadstartError, match=r"labels.csv line 2: no such image file .*missing.jpg"
    ):
        load_dataset(csv_file)


def test_empty_class_folder_is_a_clear_error(class_folders):
    (class_folders / "wasps").mkdir()
    with pytest.raises(HeadstartError, match="wasps: class folder has no images"):
        load_dataset(class_folders)


def test_class_with_one_image_is_a_clear_error(class_folders):
    copy_photos(real_photos("sunflower", 1, skip=12), class_folders / "wasps")
    with pytest.raises(HeadstartError, match="class 'wasps' has 1 image; at least 2"):
        load_dataset(class_folders)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(HeadstartError, match="no such file or folder"):
        load_dataset(tmp_path / "nowhere")
