"""Finding faces in photos and cutting them out as 64x64 crops.

Three detectors:

- `"dlib"`: dlib's HOG detector and its 68-point landmark model (the
  SSR-Net authors aligned MORPH2 with these landmarks); finds frontal faces,
  fast on still photos;
- `"mtcnn"`: the `mtcnn` package's three-stage network, with five keypoints
  (the authors' video demo used MTCNN); finds small and turned faces, and
  is the slowest;
- `"haar"`: OpenCV's Haar cascade with dlib's 5-point landmark model; the
  oldest, and it needs background around a face.

Every detector returns `Face`s with a box and the two eye centres, in image
order (the eye on the left of the picture first). Two ways to cut a face out:

- `align_face`: the similarity transform (rotation, uniform scale, shift)
  that puts the eye centres on `TEMPLATE`, their mean positions on UTKFace's
  aligned chips, so prepared faces look like the faces the kit trains on;
- `crop_with_margin`: the authors' demo rule, the box widened by 40% of its
  width and height on every side, clamped to the image, resized to 64x64.

The landmark models come with the `face-recognition-models` package, so
nothing is downloaded at run time. Introduced in notebook 02, *Preparing the
data*.
"""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MARGIN = 0.4
# Eye centres (image order) on a 64x64 UTKFace chip: the mean of dlib's
# 68-point landmarks over 1,016 chips (every 20th file); spread about 1 pixel.
TEMPLATE = np.array([[19.0, 19.2], [43.8, 19.2]])
DETECTORS = ("dlib", "mtcnn", "haar")


@dataclass
class Face:
    """One detected face.

    `box` is `(x1, y1, x2, y2)` in pixels; `points` contains the two eye
    centres, shape `(2, 2)`, in image order.
    """

    box: tuple
    score: float
    points: np.ndarray

    @property
    def width(self):
        return self.box[2] - self.box[0]


def eye_centres(landmarks):
    """Return the two eye centres, left of the picture first, as a `(2, 2)` array.

    Accepts the 68-point layout (dlib, FG-NET, UTKFace), dlib's 5-point
    layout (two corners per eye, then the nose) or the two centres themselves.
    """
    points = np.asarray(landmarks, dtype=float)
    if len(points) == 68:
        eyes = np.array([points[36:42].mean(axis=0), points[42:48].mean(axis=0)])
    elif len(points) == 5:
        eyes = np.array([points[0:2].mean(axis=0), points[2:4].mean(axis=0)])
    elif len(points) == 2:
        eyes = points.copy()
    else:
        raise ValueError(f"Expected 68, 5 or 2 landmarks. Received: {len(points)}")
    return eyes[np.argsort(eyes[:, 0])]


def similarity_transform(source, target):
    """Return the 2x3 matrix of the similarity that maps `source` onto `target`.

    Least squares over the point pairs (Umeyama's method without
    reflection); with two pairs, such as two eyes, the fit is exact.
    """
    source, target = np.asarray(source, float), np.asarray(target, float)
    mean_s, mean_t = source.mean(axis=0), target.mean(axis=0)
    s, t = source - mean_s, target - mean_t
    u, singular, vt = np.linalg.svd(t.T @ s / len(s))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / (s**2).sum(axis=1).mean()
    matrix = scale * rotation
    return np.hstack([matrix, (mean_t - matrix @ mean_s)[:, None]])


def align_face(image, eyes, size=64):
    """Warp `image` so that the eye centres `eyes` land on `TEMPLATE`; return a `size`x`size` crop.

    Pixels from outside the photo repeat its edge.
    """
    matrix = similarity_transform(eyes, TEMPLATE * size / 64)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)


def margin_box(box, shape, margin=MARGIN):
    """Widen `box` by `margin` times its width and height on every side, clamped to the image."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    height, width = shape[:2]
    return (max(int(x1 - margin * w), 0), max(int(y1 - margin * h), 0),
            min(int(x2 + margin * w), width), min(int(y2 + margin * h), height))


def crop_with_margin(image, box, size=64, margin=MARGIN):
    """Cut out `box` widened by `margin` (see `margin_box`) and resize it to `size`x`size`."""
    x1, y1, x2, y2 = margin_box(box, image.shape, margin)
    return cv2.resize(image[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)


def _dlib_rect(box):
    import dlib

    return dlib.rectangle(*(int(round(v)) for v in box))


def landmark_model_file(points):
    """Return the path of dlib's 68- or 5-point landmark model in the `face-recognition-models` package.

    The package is found without being imported, because its `__init__`
    needs `pkg_resources`, which recent setuptools releases no longer ship.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise ModuleNotFoundError("dlib's landmark models are missing: pip install face-recognition-models")
    name = "shape_predictor_68_face_landmarks.dat" if points == 68 else "shape_predictor_5_face_landmarks.dat"
    return Path(spec.submodule_search_locations[0]) / "models" / name


def _landmark_model(points):
    import dlib

    return dlib.shape_predictor(str(landmark_model_file(points)))


class Detector:
    """Find faces in RGB uint8 images: `Detector("dlib")(image)` returns a list of `Face`.

    `upsample` (dlib only) looks at the image at twice its size first, which
    finds faces down to about 40 pixels wide at four times the cost.
    """

    def __init__(self, name="dlib", upsample=1):
        if name not in DETECTORS:
            raise ValueError(f"Unknown detector {name!r}. Choose one of: {', '.join(DETECTORS)}")
        self.name = name
        self.upsample = upsample
        if name == "dlib":
            import dlib

            self._find = dlib.get_frontal_face_detector()
            self._landmarks = _landmark_model(68)
        elif name == "mtcnn":
            from mtcnn import MTCNN

            self._find = MTCNN()
        else:
            self._find = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
            self._landmarks = _landmark_model(5)

    def __call__(self, image):
        return getattr(self, f"_detect_{self.name}")(image)

    def landmarks(self, image, box):
        """Return the landmark model's points for `box` as an `(n, 2)` array."""
        shape = self._landmarks(image, _dlib_rect(box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=float)

    def _detect_dlib(self, image):
        rects, scores, _ = self._find.run(image, self.upsample)
        faces = []
        for rect, score in zip(rects, scores):
            box = (rect.left(), rect.top(), rect.right(), rect.bottom())
            faces.append(Face(box, float(score), eye_centres(self.landmarks(image, box))))
        return faces

    def _detect_mtcnn(self, image):
        faces = []
        for found in self._find.detect_faces(image):
            x, y, w, h = found["box"]
            keys = found["keypoints"]
            eyes = eye_centres([keys["left_eye"], keys["right_eye"]])
            faces.append(Face((x, y, x + w, y + h), float(found["confidence"]), eyes))
        return faces

    def _detect_haar(self, image):
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        boxes, _, weights = self._find.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=6, minSize=(24, 24), outputRejectLevels=True)
        faces = []
        for (x, y, w, h), weight in sorted(zip(boxes, weights), key=lambda pair: -pair[1]):
            box = (int(x), int(y), int(x + w), int(y + h))
            if not any(box_contains(face.box, box_centre(box)) for face in faces):
                faces.append(Face(box, float(weight), eye_centres(self.landmarks(image, box))))
        return faces


def box_centre(box):
    """Return the centre `(x, y)` of a box `(x1, y1, x2, y2)`."""
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def box_contains(box, point):
    """Return whether `point` lies inside `box`, edges included."""
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def box_overlap(a, b):
    """Return the area that boxes `a` and `b` share (0 when they are apart)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(width, 0) * max(height, 0)
