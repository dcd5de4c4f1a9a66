"""Stylising video files with PyAV (FFmpeg): frame rate, timestamps and audio kept."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, FastnsError, first_line
from ..image import fit_longest
from ..utils import atomic_write
from .stylizer import Stylizer, check_controls
from .threads import Background, Writer

log = logging.getLogger(__name__)

#: Files that ``input=`` treats as video (anything else is read as an image).
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
# Output container per extension: FFmpeg's muxer name, video encoders to try in order, and the
# audio codecs it can take as they are (others are re-encoded to the first listed).
_CONTAINERS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    ".mp4": ("mp4", ("libx264", "h264", "mpeg4"), ("aac", "mp3", "ac3", "eac3", "alac", "opus", "flac")),
    ".m4v": ("mp4", ("libx264", "h264", "mpeg4"), ("aac", "mp3", "ac3", "eac3", "alac")),
    ".mov": ("mov", ("libx264", "h264", "mpeg4"), ("aac", "mp3", "ac3", "alac", "pcm_s16le", "pcm_s24le")),
    ".mkv": (
        "matroska",
        ("libx264", "h264", "mpeg4"),
        ("aac", "mp3", "ac3", "opus", "vorbis", "flac", "pcm_s16le", "mp2"),
    ),
    ".webm": ("webm", ("libvpx-vp9", "libvpx"), ("opus", "vorbis")),
    ".avi": ("avi", ("libx264", "h264", "mpeg4"), ("mp3", "mp2", "ac3", "pcm_s16le", "aac")),
}


class VideoError(FastnsError):
    """A video file cannot be read, or written with the codecs available."""


def import_av() -> Any:
    try:
        import av
    except ImportError:
        raise ConfigError("video needs PyAV: pip install av") from None
    return av


def _video_encoder(av: Any, candidates: tuple[str, ...], requested: str | None, path: Path) -> str:
    for name in [requested] if requested else list(candidates):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 (PyAV raises various errors for unknown codecs)
            continue
    raise VideoError(
        f"{path}: no video encoder available for {path.suffix} (tried {', '.join([requested] if requested else candidates)})"
    )


_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def _audio_encoder(av: Any, sink: Any, codec: str, template: Any) -> Any:
    """An output audio stream that re-encodes ``template``'s audio as ``codec`` (PyAV resamples frames)."""
    cc = template.codec_context
    rates = av.codec.Codec(codec, "w").audio_rates
    rate = cc.sample_rate if not rates or cc.sample_rate in rates else max(rates)  # e.g. Opus: 48 kHz only
    stream = sink.add_stream(codec, rate=rate)
    # Some decoders report an unordered layout ("1 channels") that encoders refuse.
    stream.layout = _LAYOUTS.get(cc.layout.nb_channels, cc.layout.name)
    return stream


def _even_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """Output frame size: the ``max_size`` fit, rounded down to even sides (yuv420p needs them)."""
    if max_size is not None and max(width, height) > max_size:
        width, height = fit_longest(width, height, max_size)
    return max(2, width - width % 2), max(2, height - height % 2)


def read_frames(
    path: str | os.PathLike, *, start: int = 0, count: int | None = None, max_size: int | None = None
) -> np.ndarray:
    """Decoded frames ``start`` .. ``start + count`` of a video as ``(T, H, W, 3)`` uint8 RGB, sized
    as :func:`stylize_video` sizes them (``max_size``: longest side, even dimensions).

    For measuring (``scripts/evaluate.py video=``): the frames are held in memory, so ``count``
    should stay in the hundreds at 640 px. A missing, unreadable or too short video is a
    :class:`VideoError` naming the file.
    """
    av = import_av()
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    if start < 0 or (count is not None and count < 1):
        raise ConfigError(f"frames {start}..+{count}: start must be >= 0 and the count >= 1")
    try:
        source = av.open(str(path))
    except Exception as e:  # noqa: BLE001 (FFmpeg errors come in several types)
        raise VideoError(f"{path}: not a readable video ({first_line(e)})") from None
    out: list[np.ndarray] = []
    try:
        if not source.streams.video:
            raise VideoError(f"{path}: has no video stream")
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = _even_size(stream.codec_context.width, stream.codec_context.height, max_size)
        index = 0
        for frame in source.decode(stream):
            if index >= start:
                out.append(frame.to_ndarray(format="rgb24", width=width, height=height))
                if count is not None and len(out) == count:
                    break
            index += 1
    except av.error.FFmpegError as e:
        if not out:
            raise VideoError(f"{path}: cannot decode ({first_line(e)})") from None
        log.warning("%s: decoding stopped after %d frame(s) (%s)", path, len(out), first_line(e))
    finally:
        source.close()
    if len(out) < 2:
        raise VideoError(f"{path}: {len(out)} frame(s) from frame {start}; at least 2 are needed")
    return np.stack(out)


def frame_slot(pts: int | None, time_base: Fraction, frame_time: Fraction, last: int) -> int | None:
    """The output slot (in units of ``frame_time``, one frame) of a decoded frame, or None to drop it.

    Source time is rounded to the nearest frame slot: exact for constant-rate sources even when
    their container rounded the timestamps (Matroska's milliseconds). Slots must increase strictly
    (a muxer requirement): a frame with no timestamp takes the next slot, and a frame from before
    the last one written is dropped — after damaged packets a decoder can emit frames it held back
    from before the damage, and placing them later would shift the rest of the clip.
    """
    if pts is None:
        return last + 1
    slot = round(pts * time_base / frame_time)
    return slot if slot > last else None


@dataclass
class VideoReport:
    """What :func:`stylize_video` did."""

    output: Path
    frames: int
    seconds: float
    fps: float
    size: tuple[int, int]
    audio_streams: int
    damaged_packets: int = 0  # video packets that could not be decoded, skipped with a warning


def stylize_video(
    stylizer: Stylizer,
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    max_size: int | None = None,
    batch_size: int = 1,
    codec: str | None = None,
    crf: int = 18,
    preset: str = "veryfast",
    progress: bool = False,
    temporal: Callable[[Any, Any], Any] | None = None,
    **controls: Any,
) -> VideoReport:
    """Stylise a video file with PyAV (FFmpeg): same frame rate and timestamps, audio copied.

    Decoding runs in one background thread and encoding + muxing in another, so both overlap
    with the network. Audio streams are copied packet for packet when the output container takes
    their codec, otherwise re-encoded (e.g. PCM into .mp4 becomes AAC). The result is written to
    a temporary file beside ``output`` and renamed at the end: an error or Ctrl-C leaves no file
    under the final name.

    Args:
        stylizer: the network.
        input: a video file FFmpeg reads.
        output: ``.mp4``/``.m4v``/``.mov``/``.mkv``/``.avi`` (H.264 via libx264 when available,
            else MPEG-4 part 2) or ``.webm`` (VP9).
        max_size: downscale frames so that the longest side is at most this, px.
        batch_size: frames per network call.
        codec: an FFmpeg video encoder name to use instead of the default.
        crf: x264/VP9 constant-quality factor: lower is better and larger (18 is visually lossless).
        preset: x264 speed/size trade-off (``ultrafast`` ... ``veryslow``). ``veryfast`` keeps up
            with a GPU at 1080p; ``medium`` gives smaller files at equal quality, encoding slower.
        progress: show a progress bar.
        temporal: ``None``: each frame stylised on its own; a
            :class:`~fastns.stylize.temporal.FlowBlend` (``temporal=flow``): each frame blended with
            the previous output where the optical flow says it only moved (less flicker).
        controls: ``strength`` and ``preserve_color`` (tiling is for still images).
    """
    from tqdm.auto import tqdm

    av = import_av()
    input, output = Path(input), Path(output)
    if output.suffix.lower() not in _CONTAINERS:
        raise ConfigError(f"output={output}: a video needs a video file name ({', '.join(_CONTAINERS)})")
    if output.resolve() == input.resolve():
        raise ConfigError(f"output={output} is the input file; refusing to overwrite an input")
    check_controls(controls.get("strength", 1.0), max_size, None)
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    mux_format, encoders, copyable_audio = _CONTAINERS[output.suffix.lower()]
    encoder = _video_encoder(av, encoders, codec, output)
    if not input.is_file():
        raise VideoError(f"{input}: no such file")
    try:
        source = av.open(str(input))
    except Exception as e:  # noqa: BLE001 (FFmpeg errors come in several types)
        raise VideoError(f"{input}: not a readable video ({first_line(e)})") from None
    start = time.perf_counter()
    try:
        if not source.streams.video:
            raise VideoError(f"{input}: has no video stream")
        vin = source.streams.video[0]
        vin.thread_type = "AUTO"  # FFmpeg's frame + slice threads
        audio_in = list(source.streams.audio)
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        width, height = _even_size(vin.codec_context.width, vin.codec_context.height, max_size)
        total = vin.frames or None
        report = VideoReport(output, 0, 0.0, 0.0, (width, height), len(audio_in))

        with atomic_write(output) as tmp:
            sink = av.open(str(tmp), mode="w", format=mux_format)
            try:
                vout = sink.add_stream(encoder, rate=rate)
                vout.width, vout.height = width, height
                vout.pix_fmt = "yuv420p"
                vout.thread_type = "FRAME"  # x264 frame threads: 3x the throughput of slice threads
                # Timestamps in units of one frame: exact for constant-rate sources even when their
                # container rounded them (Matroska's milliseconds), the nearest frame slot otherwise.
                vout.time_base = vout.codec_context.time_base = 1 / Fraction(rate)
                if encoder in ("libx264", "libvpx-vp9", "libvpx"):
                    vout.options = {"crf": str(int(crf))} | (
                        {"preset": str(preset)} if encoder == "libx264" else {"b:v": "0"}
                    )
                else:
                    vout.bit_rate = max(1_000_000, width * height * 8)  # mpeg4: no CRF; ~8 bits/px/s
                audio_map = {}
                for a in audio_in:
                    if a.codec_context.name in copyable_audio:
                        audio_map[a.index] = (sink.add_stream_from_template(a), None)
                    else:
                        audio_map[a.index] = (_audio_encoder(av, sink, copyable_audio[0], a), a)
                        log.info(
                            "audio stream %d: %s re-encoded as %s for %s",
                            a.index,
                            a.codec_context.name,
                            copyable_audio[0],
                            output.suffix,
                        )
                try:
                    report.frames, report.damaged_packets = _video_pipeline(
                        av,
                        source,
                        vin,
                        audio_in,
                        sink,
                        vout,
                        audio_map,
                        stylizer,
                        (width, height),
                        int(batch_size),
                        controls,
                        temporal,
                        tqdm(total=total, desc="stylise", unit="frame", disable=not progress),
                    )
                except av.error.FFmpegError as e:
                    raise VideoError(f"{output}: cannot encode or write ({first_line(e)})") from None
            finally:
                sink.close()
    finally:
        source.close()
    report.seconds = time.perf_counter() - start
    report.fps = report.frames / max(report.seconds, 1e-9)
    return report


def _video_pipeline(
    av: Any,
    source: Any,
    vin: Any,
    audio_in: list,
    sink: Any,
    vout: Any,
    audio_map: dict,
    stylizer: Stylizer,
    size: tuple[int, int],
    batch_size: int,
    controls: dict,
    temporal: Callable[[Any, Any], Any] | None,
    bar: Any,
) -> tuple[int, int]:
    """Decode (thread) -> stylise (this thread) -> encode and mux (thread). Returns the frames written and the
    damaged packets skipped.

    Audio packets travel through the same queues as the video frames, so the one writer thread
    is the only one touching the output container, and packets reach the muxer in decoding order
    (FFmpeg's interleaving muxer buffers what needs reordering).
    """
    width, height = size

    damaged = 0

    def decode(put: Callable[[Any], None]) -> None:
        nonlocal damaged
        try:
            for packet in source.demux(vin, *audio_in):
                if packet.stream.type == "video":
                    try:
                        decoded = packet.decode()
                    except av.error.InvalidDataError as e:
                        # A damaged packet loses its frame(s); the decoder recovers at the next
                        # keyframe, and the output keeps the source's timing for the rest.
                        damaged += 1
                        if damaged == 1:  # the rest are counted in the summary, not one line each
                            log.warning("%s: skipping damaged video packets (%s)", source.name, first_line(e))
                        continue
                    for frame in decoded:
                        rgb = frame.to_ndarray(format="rgb24", width=width, height=height)  # swscale, here
                        put(("video", rgb, frame.pts, frame.time_base))
                else:  # audio, including the final empty packet that flushes a re-encoder
                    put(("audio", packet, None, None))
        except av.error.FFmpegError as e:
            raise VideoError(f"{source.name}: cannot decode ({first_line(e)})") from None

    def write_audio(packet: Any) -> None:
        out_stream, decode_from = audio_map[packet.stream.index]
        if decode_from is None:
            if packet.dts is not None:  # the empty end-of-stream packet has nothing to copy
                packet.stream = out_stream
                sink.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None  # let the encoder number the samples
            for out_packet in out_stream.encode(frame):
                sink.mux(out_packet)

    last_pts = [-1]
    frame_time = vout.codec_context.time_base  # 1 / frame rate, as set up by stylize_video

    def write_video(frames: np.ndarray, stamps: list) -> None:
        for planes, (pts, time_base) in zip(frames, stamps, strict=True):
            slot = frame_slot(pts, time_base, frame_time, last_pts[0])
            if slot is None:
                log.debug("dropped a frame at %s, before the last one written", pts)
                continue
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts, frame.time_base = slot, frame_time
            last_pts[0] = slot
            for packet in vout.encode(frame):
                sink.mux(packet)

    def finish() -> None:
        for packet in vout.encode(None):
            sink.mux(packet)
        for out_stream, decode_from in audio_map.values():
            if decode_from is not None:
                for packet in out_stream.encode(None):
                    sink.mux(packet)

    frames: list[np.ndarray] = []
    stamps: list[tuple[Any, Any]] = []
    count = 0

    def run_batch() -> None:
        nonlocal count
        if not frames:
            return
        out = stylizer.stylize_frames(frames, yuv420p=True, temporal=temporal, **controls)
        batch_stamps = list(stamps)
        writer.submit(lambda: write_video(out, batch_stamps))
        count += len(frames)
        bar.update(len(frames))
        frames.clear()
        stamps.clear()

    try:
        with Writer(maxsize=4, name="encode") as writer:
            with Background(decode, maxsize=2 * batch_size + 4, name="decode") as decoded:
                for kind, item, pts, time_base in decoded:
                    if kind == "audio":
                        run_batch()  # keep audio behind the video frames decoded before it
                        writer.submit(lambda item=item: write_audio(item))
                        continue
                    frames.append(item)
                    stamps.append((pts, time_base))
                    if len(frames) >= batch_size:
                        run_batch()
                run_batch()
            writer.submit(finish)
    finally:
        bar.close()
    if count == 0 and damaged:
        raise VideoError(f"{source.name}: no frame could be decoded ({damaged} damaged packet(s))")
    if count == 0:
        raise VideoError(f"{source.name}: no frames could be decoded")
    return count, damaged
