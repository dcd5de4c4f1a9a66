"""The live webcam window: camera frames stylised as they come, with the frame rate shown."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..image import fit_longest
from .stylizer import Stylizer, check_controls

log = logging.getLogger(__name__)

#: Frame rate for a video file that does not say its own.
FALLBACK_FPS = 30.0
#: Weight of the newest frame in the displayed frame rate (an exponential moving average).
FPS_SMOOTHING = 0.1
#: How to get OpenCV's GUI build in place of the headless one fastns depends on. Both provide ``cv2``:
#: uninstalling one deletes files the other shares, so both go, then the GUI build comes back alone.
GUI_OPENCV = "pip uninstall -y opencv-python-headless opencv-python && pip install opencv-python"


def import_cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise ConfigError(f"input=webcam needs OpenCV with a GUI: {GUI_OPENCV}") from None
    return cv2


def _camera_source(camera: int | str) -> int | str:
    """An OpenCV camera index (``0``, ``"1"``) as an int; a path or URL unchanged."""
    text = str(camera).strip()
    return int(text) if text.lstrip("-").isdigit() else text


def run_webcam(
    stylizer: Stylizer,
    camera: int | str = 0,
    *,
    max_size: int | None = 720,
    mirror: bool = True,
    max_frames: int | None = None,
    temporal: Callable[[Any, Any], Any] | None = None,
    style: Any = None,
    **controls: Any,
) -> int:
    """Show the stylised camera stream in a window with the frame rate; q or Esc quits.

    A network of several styles starts with ``style`` (default: the first) and keys 1-9 switch to
    its first nine styles; the style's name is shown under the frame rate.

    Frames are grabbed in a background thread that keeps only the newest one, so the display
    lags the camera by one network call at most. Returns the number of frames shown.

    Args:
        stylizer: the network.
        camera: OpenCV camera index (0 = the default camera), or anything else OpenCV opens as a
            stream: a device path (``/dev/video2``), a network camera URL (``rtsp://...``), a file.
        max_size: downscale camera frames so that the longest side is at most this, px.
        mirror: flip horizontally, like a mirror (what people expect of a front camera).
        max_frames: stop after this many frames (None: until q/Esc or the window is closed).
        temporal: ``None``, or a :class:`~fastns.stylize.temporal.FlowBlend` (``temporal=flow``)
            that blends each frame with the previous one shown, where the flow says it only moved.
        style: networks of several styles: the first style shown (a name or a blend, as
            :meth:`Stylizer.style_weights` takes); keys 1-9 switch.
        controls: ``strength`` and ``preserve_color``.
    """
    cv2 = import_cv2()
    check_controls(controls.get("strength", 1.0), max_size, None)
    stylizer.style_weights(style)  # an unknown style: the one-line error before the camera opens
    shown_style = style if style is not None or stylizer.num_styles == 1 else stylizer.styles[0]
    source = _camera_source(camera)
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise ConfigError(f"camera={camera}: the camera could not be opened (is it connected, and free?)")
    # A camera or stream delivers frames at its own pace; a video file would be read as fast as
    # the disk allows, so it is played at its frame rate, like a camera (frames are dropped, not queued).
    is_file = isinstance(source, str) and Path(source).is_file()
    file_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0) if is_file else 0.0
    period = (1.0 / (file_fps if file_fps > 0 else FALLBACK_FPS)) if is_file else 0.0
    keys = " 1-9 styles," if stylizer.num_styles > 1 else ""
    title = f"fastns: {stylizer.name} ({keys} q to quit)".replace("( ", "(")
    try:
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)
    except cv2.error:
        capture.release()
        raise ConfigError(
            f"input=webcam: this OpenCV build has no GUI (opencv-python-headless); swap it: {GUI_OPENCV}"
        ) from None

    latest: list[Any] = [None]
    have_frame = threading.Condition()
    stop = threading.Event()

    def grab() -> None:
        due = time.perf_counter()
        while not stop.is_set():
            ok, frame = capture.read()
            if not ok:
                break
            if period:
                due += period
                time.sleep(max(0.0, due - time.perf_counter()))
            with have_frame:
                latest[0] = frame
                have_frame.notify()
        with have_frame:
            stop.set()
            have_frame.notify()

    grabber = threading.Thread(target=grab, name="fastns-camera", daemon=True)
    grabber.start()
    shown, fps, last = 0, 0.0, time.perf_counter()
    try:
        while max_frames is None or shown < max_frames:
            with have_frame:
                while latest[0] is None and not stop.is_set():
                    have_frame.wait(timeout=1.0)
                frame, latest[0] = latest[0], None
            if frame is None:
                break
            if mirror:
                frame = cv2.flip(frame, 1)
            h, w = frame.shape[:2]
            if max_size is not None and max(h, w) > max_size:
                frame = cv2.resize(frame, fit_longest(w, h, max_size), interpolation=cv2.INTER_AREA)
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            styled = stylizer.stylize_frames(rgb[None], temporal=temporal, style=shown_style, **controls)[0]
            out = cv2.cvtColor(styled, cv2.COLOR_RGB2BGR)
            now = time.perf_counter()
            rate = 1 / max(now - last, 1e-6)
            fps = (1 - FPS_SMOOTHING) * fps + FPS_SMOOTHING * rate if shown else rate
            last = now
            cv2.putText(out, f"{fps:.1f} fps", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
            if stylizer.num_styles > 1:
                label = shown_style if isinstance(shown_style, str) else "blend"
                cv2.putText(out, label, (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
            cv2.imshow(title, out)
            shown += 1
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27) or cv2.getWindowProperty(title, cv2.WND_PROP_VISIBLE) < 1:
                break
            index = key - ord("1")
            if 0 <= index < min(9, stylizer.num_styles) and stylizer.num_styles > 1:
                shown_style = stylizer.styles[index]
                if temporal is not None and hasattr(temporal, "reset"):
                    temporal.reset()  # no ghost of the previous style
    finally:
        stop.set()
        grabber.join(timeout=2)
        capture.release()
        cv2.destroyAllWindows()
    log.info("webcam: %d frames, %.1f fps at the end", shown, fps)
    return shown
