"""Content data: folders, crops, bad files, empty or missing folders."""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image

from fastns.data import (
    ContentDataModule,
    ContentImages,
    TrainingOrder,
    dataset_images,
    resolve_root,
    square_crop,
)
from fastns.errors import ConfigError

from .conftest import make_photo


@pytest.fixture
def photo_dir(tmp_path):
    root = tmp_path / "photos"
    for i in range(6):
        make_photo(
            root / ("sub" if i % 2 else "") / f"p{i}.{['jpg', 'png', 'webp'][i % 3]}",
            size=(60 + 7 * i, 40),
            seed=i,
        )
    (root / "notes.txt").write_text("not an image, ignored by extension")
    return root


def test_finds_images_recursively(photo_dir):
    files = dataset_images(photo_dir)
    assert len(files) == 6 and all(f.suffix in (".jpg", ".png", ".webp") for f in files)


def test_crops_are_square_in_range_and_random_for_training(photo_dir):
    files = dataset_images(photo_dir)
    train, val = ContentImages(files, 32, train=True), ContentImages(files, 32, train=False)
    item = train[0]
    assert item["image"].shape == (3, 32, 32) and item["skipped"] == 0
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert torch.equal(val[3]["image"], val[3]["image"])  # centre crop: deterministic
    # Random crop / flip: photo 5 in 8 epochs (keys 5 + 6e), each drawn from (seed, key).
    crops = {tuple(train[5 + 6 * e]["image"].flatten()[:50].tolist()) for e in range(8)}
    assert len(crops) > 1
    assert torch.equal(train[11]["image"], ContentImages(files, 32, train=True)[11]["image"])
    assert not torch.equal(train[11]["image"], ContentImages(files, 32, train=True, seed=1)[11]["image"])


def _span(crop: Image.Image) -> int:
    """How many of the photo's columns a crop of the ramp photo below holds (its red channel is x)."""
    red = crop.getchannel("R").getextrema()
    return int(red[1] - red[0])


def test_zoom_crops_a_part_of_the_photo_at_up_to_zoom_times_its_scale_and_never_past_its_own():
    ramp = Image.merge("RGB", [Image.linear_gradient("L").rotate(90).resize((256, 128))] * 3)  # red: 255 - x
    whole = _span(square_crop(ramp, 32, random.Random(0)))  # the shorter side at 32: 128 of 256 columns
    assert whole == pytest.approx(127, abs=4)
    rng = random.Random(0)
    spans = [_span(square_crop(ramp, 32, rng, zoom=3.0)) for _ in range(200)]
    assert min(spans) == pytest.approx(127 / 3, abs=4) and max(spans) <= whole  # between 1x and 3x the scale
    assert len({s // 10 for s in spans}) >= 6  # drawn over the range, not one zoom
    rng = random.Random(0)
    native = [_span(square_crop(ramp, 32, rng, zoom=100.0)) for _ in range(200)]
    assert min(native) >= 31  # 128 px is the photo's own shorter side: at most 4x, never upsampled
    assert square_crop(ramp, 32, None, zoom=3.0) == square_crop(ramp, 32)  # validation: the whole photo
    assert _span(square_crop(ramp, 32, random.Random(0), zoom=1.0)) == whole  # 1: the paper's crops


def test_a_zoom_below_one_is_one_line(photo_dir):
    with pytest.raises(ConfigError, match=r"^data.zoom=0.5 must be 1"):
        ContentImages(dataset_images(photo_dir), 32, zoom=0.5)


@pytest.mark.parametrize("world_size", [1, 3])
def test_training_order_is_a_function_of_the_seed_and_the_step(world_size):
    n, batch = 20, 2

    def taken(start: int, seed: int = 0) -> list[list[int]]:
        """Each step's keys, all ranks together, from step ``start`` to the end of its epoch."""
        ranks = [
            list(TrainingOrder(n, batch, seed, rank, world_size, start_step=lambda: start))
            for rank in range(world_size)
        ]
        return [sum((r[i : i + batch] for r in ranks), []) for i in range(0, len(ranks[0]), batch)]

    steps = n // (batch * world_size)
    assert len(TrainingOrder(n, batch, world_size=world_size)) == steps * batch  # per rank
    epoch0, epoch1 = taken(0), taken(steps)
    assert len(epoch0) == steps and all(len(s) == batch * world_size for s in epoch0)
    flat0 = sum(epoch0, [])
    assert len(set(flat0)) == len(flat0) and all(0 <= k < n for k in flat0)  # no photo twice in an epoch
    assert all(n <= k < 2 * n for k in sum(epoch1, []))  # epoch 1's keys: n + photo
    assert [k - n for k in sum(epoch1, [])] != flat0  # a new order every epoch
    assert taken(0) == epoch0 and taken(0, seed=1) != epoch0
    # Started mid-epoch (a resumed run): the steps the uninterrupted run took from there.
    assert taken(2) == epoch0[2:]
    assert taken(steps + 1) == epoch1[1:]


def test_training_order_repeats_photos_when_fewer_than_a_step():
    keys = list(TrainingOrder(3, 4))
    assert len(keys) == 4 and sorted(set(keys)) == [0, 1, 2]


def test_corrupt_file_is_skipped_and_counted(photo_dir, caplog):
    bad = photo_dir / "a_corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    files = dataset_images(photo_dir)
    assert files[0] == bad
    ds = ContentImages(files, 24, train=False)
    item = ds[0]
    assert item["skipped"] == 1 and item["image"].shape == (3, 24, 24)
    assert "a_corrupt.jpg" in caplog.text


def test_datamodule_holds_out_fixed_validation_images(photo_dir):
    dm = ContentDataModule(root=str(photo_dir), image_size=24, batch_size=2, val_size=2, num_workers=0)
    dm.setup("fit")
    assert len(dm.train_set) == 4 and len(dm.val_set) == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 24, 24) and batch["skipped"].shape == (2,)
    assert set(dm.val_set.files).isdisjoint(dm.train_set.files)


def test_empty_and_missing_folders_are_one_line_errors(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"data.root=.*empty: no images"):
        dataset_images(tmp_path / "empty")
    with pytest.raises(ConfigError, match=r"no such folder.*train2014"):
        dataset_images(tmp_path / "missing")
    monkeypatch.delenv("FASTNS_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        resolve_root(None)
    assert "data.root is not set" in str(e.value) and "cocodataset.org" in str(e.value)


def test_default_location_is_found(tmp_path, monkeypatch):
    root = tmp_path / "coco" / "train2014"
    make_photo(root / "x.jpg")
    monkeypatch.setenv("FASTNS_DATA", str(tmp_path))
    assert resolve_root(None) == [root / "x.jpg"]


def test_bundled_sample_photos_exist():
    files = resolve_root("samples")
    assert len(files) >= 8
