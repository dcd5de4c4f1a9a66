"""Content images for training: a folder of photos (COCO train2014 or any other).

Images are found recursively, resized on their shorter side to ``image_size`` and cropped to an
``image_size`` square: a random crop and horizontal flip for training, the centre crop for
validation. An unreadable file is skipped with a warning (and counted, see ``skipped`` in each
batch) so that one bad file never stops a long run.

The training order and every crop are functions of the seed and the step (:class:`TrainingOrder`),
not of a random state that lives in the loader's processes: a run resumed from any checkpoint,
mid-epoch included, sees the photos and crops the uninterrupted run would have.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from .errors import ConfigError, ImageError
from .image import IMAGE_EXTENSIONS, find_images, open_image, pil_to_tensor

log = logging.getLogger(__name__)

#: Where ``data.root=null`` looks, in order ($FASTNS_DATA first).
DEFAULT_ROOTS = ("$FASTNS_DATA/coco/train2014", "~/datasets/coco/train2014", "data/coco/train2014")
COCO_HELP = (
    "download COCO train2014 (http://images.cocodataset.org/zips/train2014.zip, 13 GB, 83k photos), unzip it, "
    "and pass data.root=/path/to/train2014 (any folder of photos works); or try experiment=quickstart, which needs no download"
)

# Photos bundled with scikit-image (no download): the content set of experiment=quickstart.
SAMPLE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle_left",
    "motorcycle_right",
    "camera",
    "coins",
    "grass",
    "gravel",
    "brick",
    "hubble_deep_field",
)


def dataset_images(root: str | os.PathLike, key: str = "data.root") -> list[Path]:
    """All image files under the dataset folder ``root`` (recursive, sorted); a one-line error if there are none."""
    root = Path(os.path.expanduser(os.path.expandvars(str(root))))
    if not root.is_dir():
        raise ConfigError(f"{key}={root}: no such folder; {COCO_HELP}")
    files = find_images(root)[1]
    if not files:
        raise ConfigError(f"{key}={root}: no images ({' '.join(IMAGE_EXTENSIONS)}) in this folder or below")
    return files


def default_root() -> Path:
    """The first existing default dataset location, or a one-line error saying how to get COCO."""
    for cand in DEFAULT_ROOTS:
        if cand.startswith("$FASTNS_DATA") and not os.environ.get("FASTNS_DATA"):
            continue
        p = Path(os.path.expanduser(os.path.expandvars(cand)))
        if p.is_dir():
            return p
    raise ConfigError(
        f"data.root is not set and no dataset was found at {', '.join(DEFAULT_ROOTS)}; {COCO_HELP}"
    )


def sample_photos() -> list[Path]:
    """Paths of scikit-image's bundled sample photos (the quickstart content set)."""
    try:
        import skimage
    except ImportError:  # pragma: no cover - a dependency; only missing in broken installs
        raise ConfigError("data.root=samples needs scikit-image: pip install scikit-image") from None
    folder = Path(skimage.__file__).parent / "data"
    files = [
        p for name in SAMPLE_PHOTOS for p in sorted(folder.glob(f"{name}.*")) if p.suffix in (".png", ".jpg")
    ]
    if not files:
        raise ConfigError(f"data.root=samples: scikit-image's sample photos are missing from {folder}")
    return files


def resolve_root(root: str | os.PathLike | None, key: str = "data.root") -> list[Path]:
    """Image files for a ``data.root`` value: a folder, ``samples``, or ``None`` (default locations)."""
    if root is None and key == "data.root":
        return dataset_images(default_root(), key)
    if str(root) == "samples":
        return sample_photos()
    return dataset_images(root, key)


def square_crop(im: Image.Image, size: int, rng=None, zoom: float = 1.0) -> Image.Image:
    """Resize the shorter side to ``size`` and crop a ``size`` square (random if ``rng`` is given).

    ``zoom`` > 1, with ``rng``: the shorter side goes to ``size * z`` instead, ``z`` drawn
    log-uniformly from [1, ``zoom``] and never past the photo's own shorter side, so the square
    holds a part of the photo at up to the scale users stylise it at.
    """
    w, h = im.size
    scale = size / min(w, h)
    top_zoom = min(float(zoom), min(w, h) / size)
    if rng is not None and top_zoom > 1.0:
        scale *= math.exp(rng.uniform(0.0, math.log(top_zoom)))
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize(
            (nw, nh), Image.Resampling.BILINEAR if scale < 1 else Image.Resampling.BICUBIC, reducing_gap=2.0
        )
    if rng is None:
        left, top = (nw - size) // 2, (nh - size) // 2
    else:
        left, top = rng.randint(0, nw - size), rng.randint(0, nh - size)
    return im.crop((left, top, left + size, top + size))


#: Unreadable files passed over for one sample before giving up: a folder this broken is not a dataset.
MAX_SKIPPED = 50


class ContentImages(Dataset):
    """Square crops of the images in ``files``: ``{"image": (3, S, S) in [0, 1], "skipped": int, "skipped_files": ...}``.

    Args:
        files: image paths.
        image_size: the side S of the crops.
        train: random crop + horizontal flip (``True``) or the centre crop (``False``).
        seed: with ``train``, the crop and flip of key ``k`` (photo ``k mod n``; :class:`TrainingOrder`
            numbers epoch ``e``'s photos ``e·n + i``) are drawn from (seed, k): the same in every
            run, whichever process loads it, and different in every epoch.
        zoom: with ``train``, crops of up to this many times the scale of the whole photo at
            ``image_size`` (:func:`square_crop`); 1: the whole photo's shorter side, as the paper.

    An unreadable file is replaced by the next readable one; ``skipped`` counts how many were
    passed over for this sample and ``skipped_files`` holds their indices in ``files``
    (:data:`MAX_SKIPPED` long, padded with -1) so that a trainer can count distinct files. Each
    bad file is warned about once per worker.
    """

    def __init__(
        self, files: Sequence[Path], image_size: int, train: bool = True, seed: int = 0, zoom: float = 1.0
    ) -> None:
        if not files:
            raise ConfigError("no content images")
        if image_size < 8:
            raise ConfigError(f"data.image_size={image_size} must be at least 8 px")
        if not zoom >= 1.0:
            raise ConfigError(f"data.zoom={zoom} must be 1 (whole photos) or more")
        self.files, self.image_size, self.train = list(files), int(image_size), train
        self.zoom = float(zoom)
        self.seed = int(seed)
        self._warned: set[Path] = set()

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int, key: int) -> torch.Tensor:
        rng = random.Random(f"{self.seed}:{key}") if self.train else None
        zoom = self.zoom if self.train else 1.0
        side = math.ceil(self.image_size * zoom)
        im = square_crop(open_image(self.files[index], max_side=side), self.image_size, rng, zoom)
        if rng is not None and rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return pil_to_tensor(im)[0]

    def __getitem__(self, key: int) -> dict[str, torch.Tensor | int]:
        n = len(self.files)
        index = key % n
        passed_over = torch.full(
            (MAX_SKIPPED,), -1, dtype=torch.long
        )  # indices of unreadable files, -1 padded
        for skipped in range(min(n, MAX_SKIPPED)):
            i = (index + skipped) % n
            try:
                return {"image": self._load(i, key), "skipped": skipped, "skipped_files": passed_over}
            except ImageError as e:
                passed_over[skipped] = i
                if self.files[i] not in self._warned:
                    self._warned.add(self.files[i])
                    log.warning("skipping unreadable training image: %s", e)
        raise ImageError(
            f"{self.files[index]}: this and the next {min(n, MAX_SKIPPED) - 1} images are all unreadable"
        )


class TrainingOrder(Sampler[int]):
    """Which photos each training step takes: a function of the seed and the step alone.

    Epoch ``e`` is a permutation of the ``n`` photos drawn from (seed, e). Of each run of
    ``world_size · batch_size`` photos in it, rank ``r`` takes the ``r``-th ``batch_size`` for one
    step; an epoch has ``n // (world_size · batch_size)`` steps (at least one: fewer photos than a
    step are repeated). Photo ``i`` of epoch ``e`` is yielded as the key ``e·n + i``, from which
    :class:`ContentImages` draws its crop.

    Iteration starts at the step ``start_step()`` returns when it begins: an epoch entered mid-way
    (a run resumed from a mid-epoch checkpoint) yields only its remaining steps, the ones the
    uninterrupted run took. Nothing to save in checkpoints, and the same on any number of loader
    processes.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_step: Callable[[], int] = lambda: 0,
    ) -> None:
        if n < 1:
            raise ConfigError("no content images")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.rank, self.world_size, self.start_step = int(rank), int(world_size), start_step

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.n // (self.batch_size * self.world_size))

    def __len__(self) -> int:
        return self.steps_per_epoch * self.batch_size

    def permutation(self, epoch: int) -> list[int]:
        """The order of the photos in epoch ``epoch``."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.n).tolist()

    def __iter__(self) -> Iterator[int]:
        epoch, first = divmod(int(self.start_step()), self.steps_per_epoch)
        order = self.permutation(epoch)
        for step in range(first, self.steps_per_epoch):
            start = (step * self.world_size + self.rank) * self.batch_size
            for position in range(start, start + self.batch_size):
                yield epoch * self.n + order[position % self.n]


def _readable(files: Sequence[Path]) -> list[Path]:
    """The validation photos that can be read, checked once up front (they are few): the previews and
    the validation loss then always show the same photos. Unreadable ones are left out with a
    warning; none readable is a one-line error naming the first."""
    readable, reasons = [], []
    for path in files:
        try:
            open_image(path)
            readable.append(path)
        except ImageError as e:
            reasons.append(str(e))
            log.warning("validation photo left out: %s", e)
    if not readable:
        raise ImageError(f"none of the {len(files)} validation photo(s) can be read (first: {reasons[0]})")
    return readable


class ContentDataModule(pl.LightningDataModule):
    """Training and validation content images.

    Args:
        root: folder of training photos (searched recursively); ``"samples"`` for scikit-image's
            bundled photos; ``None`` to look in the default locations (:data:`DEFAULT_ROOTS`).
        val_root: folder of validation photos; by default ``val_size`` photos are held out of ``root``.
        image_size: side of the square training crops (256 in the paper).
        batch_size: images per step *per device* (4 in the paper).
        val_size: number of fixed validation images (used for the preview grid and val loss).
        num_workers: data-loading worker processes.
        zoom: training crops at up to this many times the whole photo's scale (:class:`ContentImages`).
        seed: the training order and crops (:class:`TrainingOrder`); each rank of a distributed
            run takes its own share of every step, so Lightning's distributed sampler must be
            off (``use_distributed_sampler=False``, as ``scripts/train.py`` sets it).
    """

    def __init__(
        self,
        root: str | None = None,
        val_root: str | None = None,
        image_size: int = 256,
        batch_size: int = 4,
        val_size: int = 8,
        num_workers: int = 4,
        seed: int = 0,
        zoom: float = 1.0,
    ) -> None:
        super().__init__()
        self.zoom = float(zoom)
        self.root, self.val_root = root, val_root
        self.image_size, self.batch_size, self.val_size = int(image_size), int(batch_size), int(val_size)
        self.num_workers, self.seed = int(num_workers), int(seed)
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size} must be >= 1")
        self.train_set: ContentImages | None = None
        self.val_set: ContentImages | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        files = resolve_root(self.root)
        if self.val_root is not None:
            val_files = resolve_root(self.val_root, "data.val_root")[: self.val_size]
            train_files = files
        elif len(files) > self.val_size >= 1:
            # Hold out the last few (sorted) files: the same ones in every run and on every rank.
            train_files, val_files = files[: -self.val_size], files[-self.val_size :]
        else:
            train_files, val_files = files, files[: max(self.val_size, 1)]
        self.train_set = ContentImages(
            train_files, self.image_size, train=True, seed=self.seed, zoom=self.zoom
        )
        self.val_set = ContentImages(_readable(val_files), self.image_size, train=False)
        log.info("content images: %d for training, %d for validation", len(train_files), len(val_files))

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        trainer = self.trainer
        pin = trainer is not None and trainer.strategy.root_device.type == "cuda"
        sampler = None
        if shuffle:
            sampler = TrainingOrder(
                len(dataset),
                self.batch_size,
                seed=self.seed,
                rank=trainer.global_rank if trainer is not None else 0,
                world_size=trainer.world_size if trainer is not None else 1,
                start_step=self._steps_done,
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=pin,
            persistent_workers=self.num_workers > 0,
        )

    def _steps_done(self) -> int:
        """Training batches already taken by this run (restored from the checkpoint on a resume)."""
        trainer = self.trainer
        return 0 if trainer is None else trainer.global_step * trainer.accumulate_grad_batches

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
