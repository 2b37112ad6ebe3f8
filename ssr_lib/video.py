"""Ages on every face of a video: detect, follow, crop, estimate, draw.

`FacePipeline.process(frame)` takes one BGR frame, as OpenCV reads it, and
returns the frame with a box and an age on each face. Five stages, each timed:

1. `detect`: a `faces.Detector` on the frame (optionally shrunk first), on
   every frame or every n-th one, and at once after a cut;
2. `track`: between detections, each face's box follows the image with
   optical flow (the median motion of corner points inside the box). At a
   detection, boxes are matched to the faces they overlap, so each face
   keeps its number;
3. `crop`: the face cut out as the model expects it, with the 40% margin of
   the authors' demo or aligned on the eyes;
4. `estimate`: all faces of the frame in one batch through SSR-Net, the age
   then smoothed per face so that it does not flicker;
5. `draw`: boxes and ages on the frame.

`run_video` runs the pipeline over a file or camera and reports frames per
second and each stage's time. Introduced in notebook 08, *Demo*.
"""

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ssr_lib import faces

STAGES = ("read", "detect", "track", "crop", "estimate", "draw", "write")
# The fastest settings that kept an age on about 97% of the faces that MTCNN
# finds on every full frame of the example clip (benchmarks/bench_demo.py).
FASTEST = {"detector": "mtcnn", "detect_every": 10, "detect_scale": 0.75}


class VideoError(ValueError):
    """Raised when a video or camera cannot be read."""


class AgeEstimator:
    """An SSR-Net model with the crop and channel order it was trained with.

    The kit's `.keras` models were trained on aligned RGB faces; the
    authors' released weights on BGR faces cropped with a 40% margin.
    Prediction runs as a compiled function with a fixed input signature,
    which is much faster than `model.predict` for a handful of faces.
    """

    def __init__(self, model, crop="margin", channels="bgr", name="model"):
        import keras

        self.model, self.crop, self.channels, self.name = model, crop, channels, name
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            signature = [tf.TensorSpec((None, 64, 64, 3), tf.float32)]
            self._predict = tf.function(lambda x: model(x, training=False), input_signature=signature)
        else:
            self._predict = lambda x: model(x, training=False)

    @classmethod
    def load(cls, name_or_path):
        """Load `"imdb"`, `"wiki"` or `"morph2"` (the authors' weights) or a `.keras`/`.h5` file."""
        from ssr_lib import pretrained

        path = name_or_path
        if str(name_or_path) in pretrained.RELEASED_DATASETS:
            path = pretrained.released_weights(str(name_or_path))
        path = Path(path)
        if path.suffix in (".keras", ".h5") and not path.is_file():
            raise FileNotFoundError(f"Model file not found: {path}. Check the path, or train one with "
                                    "`python -m ssr_lib train --output DIR`, which writes DIR/model.keras.")
        if not path.is_file() or path.suffix not in (".keras", ".h5"):
            raise FileNotFoundError(
                f"Unknown model {str(name_or_path)!r}: give imdb, wiki or morph2 (the authors' weights) "
                "or the path of a .keras file (written by `python -m ssr_lib train`) or an authors' .h5 file.")
        model = pretrained.load_model(path)
        if path.suffix == ".h5":
            return cls(model, crop="margin", channels="bgr", name=str(name_or_path))
        return cls(model, crop="align", channels="rgb", name=path.parent.name or path.stem)

    def cut(self, frame_rgb, box, eyes):
        if self.crop == "align" and eyes is not None:
            return faces.align_face(frame_rgb, eyes)
        return faces.crop_with_margin(frame_rgb, box)

    def predict(self, crops):
        """Return the ages of RGB uint8 crops of shape `(n, 64, 64, 3)`."""
        if len(crops) == 0:
            return np.zeros(0, np.float32)
        x = np.asarray(crops, np.float32)
        if self.channels == "bgr":
            x = x[..., ::-1].copy()
        return np.asarray(self._predict(x)).reshape(-1)


@dataclass
class Track:
    """One face followed across frames."""

    number: int
    box: np.ndarray
    eyes: np.ndarray = None
    age: float = None
    points: np.ndarray = None
    missed: int = 0


def _iou(a, b):
    """Return the intersection over union of two boxes."""
    shared = faces.box_overlap(a, b)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - shared
    return shared / union if union > 0 else 0.0


def _best_match(tracks, box):
    """Return the track whose box contains the centre of `box` and overlaps it most, or `None`."""
    centre = faces.box_centre(box)
    candidates = [t for t in tracks if faces.box_contains(t.box, centre) or _iou(t.box, box) > 0.3]
    return max(candidates, key=lambda t: _iou(t.box, box), default=None)


def _corner_points(gray, box):
    """Pick up to 30 trackable corner points inside `box`."""
    mask = np.zeros_like(gray)
    x1, y1, x2, y2 = (int(v) for v in box)
    mask[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = 255
    return cv2.goodFeaturesToTrack(gray, maxCorners=30, qualityLevel=0.01, minDistance=3, mask=mask)


@dataclass
class FacePipeline:
    """Detect, track, crop, estimate and draw, frame after frame.

    Args:
        estimator: an `AgeEstimator`.
        detector: a detector name of `faces.DETECTORS`.
        detect_every: run the detector on every n-th frame, track in between.
        detect_scale: shrink the frame by this factor before detection.
        upsample: for the dlib detector, look at the frame at twice its size
            first, which finds smaller faces at four times the cost.
        smoothing: weight of a face's previous age in its smoothed age
            (0 turns smoothing off).
        keep_missed: detections a face may be missed in before it is dropped.
        cut_threshold: mean change of a 32x18 grayscale thumbnail, in grey
            levels, above which a frame counts as a cut and is detected at once.
    """

    estimator: AgeEstimator
    detector: str = "mtcnn"
    detect_every: int = 1
    detect_scale: float = 1.0
    upsample: int = 0
    smoothing: float = 0.8
    keep_missed: int = 0
    cut_threshold: float = 20.0
    tracks: list = field(default_factory=list)
    timings: dict = field(default_factory=lambda: defaultdict(float))
    frames: int = 0

    def __post_init__(self):
        self._detector = faces.Detector(self.detector, upsample=self.upsample)
        self._gray = None
        self._next_number = 0

    def reset(self):
        """Forget all faces and timings, before a new video."""
        self.tracks, self.frames, self._gray, self._next_number = [], 0, None, 0
        self.timings = defaultdict(float)

    def _timed(self, stage, start):
        now = time.perf_counter()
        self.timings[stage] += now - start
        return now

    def _detect(self, rgb, gray):
        small = rgb
        if self.detect_scale != 1:
            small = cv2.resize(rgb, None, fx=self.detect_scale, fy=self.detect_scale, interpolation=cv2.INTER_AREA)
        unmatched = list(self.tracks)
        kept = []
        for face in self._detector(small):
            box = np.array(face.box, float) / self.detect_scale
            track = _best_match(unmatched, box)
            if track is None:
                track = Track(self._next_number, box)
                self._next_number += 1
            else:
                unmatched.remove(track)
                track.box, track.missed = box, 0
            track.eyes = face.points / self.detect_scale
            kept.append(track)
        # With keep_missed, a face the detector misses keeps its tracked box for that many detections.
        for track in unmatched:
            track.missed += 1
            if track.missed <= self.keep_missed:
                kept.append(track)
        for track in kept:
            track.points = _corner_points(gray, track.box)
        self.tracks = kept

    def _scene_cut(self, gray):
        """Return whether the picture changed at once, as at a cut, where tracking cannot follow."""
        before = cv2.resize(self._gray, (32, 18), interpolation=cv2.INTER_AREA).astype(np.int16)
        now = cv2.resize(gray, (32, 18), interpolation=cv2.INTER_AREA).astype(np.int16)
        return np.abs(now - before).mean() > self.cut_threshold

    def _track(self, gray):
        for track in self.tracks:
            if track.points is None or len(track.points) < 3:
                continue
            moved, status, _ = cv2.calcOpticalFlowPyrLK(self._gray, gray, track.points, None)
            good = status.reshape(-1) == 1
            if good.sum() < 3:
                continue
            shift = np.median((moved - track.points).reshape(-1, 2)[good], axis=0)
            track.box = track.box + np.tile(shift, 2)
            if track.eyes is not None:
                track.eyes = track.eyes + shift
            track.points = moved[good].reshape(-1, 1, 2)

    def process(self, frame_bgr):
        """Annotate one BGR frame; return it and the `(number, box, age)` of each face."""
        start = time.perf_counter()
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        if self._gray is not None and self._gray.shape != gray.shape:
            self.tracks, self._gray = [], None  # a camera changed its resolution: start afresh
        if self.frames % self.detect_every == 0 or self._gray is None or self._scene_cut(gray):
            self._detect(rgb, gray)
            start = self._timed("detect", start)
        else:
            self._track(gray)
            start = self._timed("track", start)
        self._gray = gray
        self.frames += 1

        crops = [self.estimator.cut(rgb, track.box, track.eyes) for track in self.tracks]
        start = self._timed("crop", start)
        ages = self.estimator.predict(np.stack(crops)) if crops else []
        for track, age in zip(self.tracks, ages):
            track.age = float(age) if track.age is None else self.smoothing * track.age + (1 - self.smoothing) * float(age)
        start = self._timed("estimate", start)
        annotated = draw_faces(frame_bgr, self.tracks)
        self._timed("draw", start)
        return annotated, [(t.number, tuple(t.box), t.age) for t in self.tracks]


def draw_faces(frame_bgr, tracks):
    """Return a copy of the frame with each track's box and rounded age."""
    canvas = frame_bgr.copy()
    thickness = max(1, canvas.shape[1] // 320)
    for track in tracks:
        x1, y1, x2, y2 = (int(v) for v in track.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 200, 255), thickness)
        if track.age is not None:
            label = f"{track.age:.0f}"
            scale = 0.5 * thickness
            (width, height), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
            top = max(y1 - height - 6, 0)
            cv2.rectangle(canvas, (x1, top), (x1 + width + 6, top + height + 6), (0, 200, 255), -1)
            cv2.putText(canvas, label, (x1 + 3, top + height + 3), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (0, 0, 0), thickness, cv2.LINE_AA)
    return canvas


def open_video(source):
    """Open a video file or a camera number with OpenCV, or raise `VideoError` saying what to do."""
    if isinstance(source, int):
        capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            raise VideoError(f"Camera {source} failed to open: no camera, or access was refused. "
                             "Check that a camera is connected and that no other program uses it.")
        return capture
    path = Path(source)
    if path.is_dir():
        raise VideoError(f"{path} is a folder. Give a video file.")
    if not path.is_file():
        raise VideoError(f"Video not found: {path}. Check the path.")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError(f"{path} could not be opened as a video: it is not a video, or it is damaged or "
                         "incomplete (as after a download that broke off). Check that a video player opens it.")
    return capture


def read_frames(source, max_frames=None):
    """Yield BGR frames from a video file or camera number until it ends or breaks off.

    Raises:
        VideoError: if nothing can be opened, or the video has no frame.
    """
    capture = open_video(source)
    count = 0
    try:
        while max_frames is None or count < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            yield frame
    finally:
        capture.release()
    if count == 0:
        raise VideoError(f"{source} contains no readable frame: the file is empty or damaged.")


def video_info(source):
    """Return `(frames per second, frame count)` of a video file; a camera gives `(30.0, 0)`."""
    if isinstance(source, int):
        return 30.0, 0
    capture = open_video(source)
    fps, count = capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return (fps if 1 <= fps <= 240 else 30.0), max(count, 0)


# Codecs that OpenCV's pip wheels can write. Browsers play WebM (VP8), not
# OpenCV's MPEG-4 Part 2 in .mp4, which video players such as VLC do play.
CODECS = {".mp4": "mp4v", ".webm": "VP80", ".avi": "MJPG"}


def check_output(output, source):
    """Raise `VideoError` before any work if the annotated video cannot be written to `output`."""
    output = Path(output)
    if output.suffix.lower() not in CODECS:
        raise VideoError(f"Cannot write {output}: the name must end in {', '.join(CODECS)}.")
    if output.is_dir() or not output.parent.is_dir():
        raise VideoError(f"Cannot write {output}: the folder {output.parent} must exist and {output.name} "
                         "must not be a folder.")
    if not isinstance(source, int) and output.resolve() == Path(source).resolve():
        raise VideoError(f"The output {output} is the input video. Choose another name, so the input is kept.")


def _open_writer(output, fps, frame):
    height, width = frame.shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*CODECS[Path(output).suffix.lower()])
    writer = cv2.VideoWriter(str(output), fourcc, fps, (width, height))
    if not writer.isOpened():
        raise VideoError(f"OpenCV could not write {output}. Try another name ending in {', '.join(CODECS)}.")
    return writer


def run_video(source, pipeline, output=None, max_frames=None, on_frame=None, warm_up=True):
    """Run `pipeline` over every frame of `source` and report its speed.

    Args:
        source: a video file or a camera number.
        pipeline: a `FacePipeline`; its faces and timings are reset first.
        output: a `.mp4`, `.webm` or `.avi` file to write the annotated
            video to, at the input's frame rate, or `None`.
        max_frames: stop after this many frames.
        on_frame: called as `on_frame(index, annotated_frame, faces)` after
            each frame; return `False` from it to stop early.
        warm_up: run the first frame once before timing, so that loading
            the detector and compiling the model are not counted.

    Returns:
        A dict with `frames`, `frames_expected` (the file's frame count,
        0 for a camera), `frames_with_faces`, `faces` (detections summed
        over frames), `fps` (end to end) and `stage_ms` (milliseconds per
        frame for each stage).
    """
    if output is not None:
        check_output(output, source)
    fps, expected = video_info(source)
    frame_source = read_frames(source, max_frames)
    first = next(frame_source)
    if warm_up:
        pipeline.process(first)
    pipeline.reset()
    writer = None
    frames = with_faces = total_faces = 0
    started = time.perf_counter()
    frame = first
    try:
        while frame is not None:
            annotated, found = pipeline.process(frame)
            frames += 1
            with_faces += bool(found)
            total_faces += len(found)
            start = time.perf_counter()
            if output is not None:
                writer = writer or _open_writer(output, fps, annotated)
                writer.write(annotated)
            pipeline.timings["write"] += time.perf_counter() - start
            if on_frame is not None and on_frame(frames - 1, annotated, found) is False:
                break
            start = time.perf_counter()
            frame = next(frame_source, None)
            pipeline.timings["read"] += time.perf_counter() - start
    finally:
        frame_source.close()
        if writer is not None:
            writer.release()
    seconds = time.perf_counter() - started
    return {
        "frames": frames,
        "frames_expected": expected if max_frames is None else min(expected, max_frames),
        "frames_with_faces": with_faces,
        "faces": total_faces,
        "fps": round(frames / seconds, 1),
        "stage_ms": {stage: round(1000 * pipeline.timings[stage] / frames, 2) for stage in STAGES},
    }


def write_gif(frames_bgr, path, fps=10, width=320):
    """Write BGR frames as an animated GIF, shrunk to `width` pixels, for pages without a video player."""
    from PIL import Image

    pictures = []
    for frame in frames_bgr:
        height = round(frame.shape[0] * width / frame.shape[1])
        small = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        pictures.append(Image.fromarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB)))
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0,
                     optimize=True)
    return path
