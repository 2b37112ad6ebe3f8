"""Face detection and alignment on the real photos in ../shared/media."""

import cv2
import numpy as np
import pytest

from ssr_lib import faces

# Centre of every clearly visible face, read off the photos by eye. The two
# group photos also carry the boxes and ages that the authors' demo drew.
VISIBLE_FACES = {
    "obama.jpg": [(480, 270)],
    "biden.jpg": [(580, 400)],
    "two_people.jpg": [(330, 125), (870, 150)],
    "TGOP_tvbs.png": [(70, 130), (280, 180), (530, 140), (820, 220)],
    "the_flash_cast.png": [(315, 115), (500, 140), (595, 140), (765, 100), (455, 290), (715, 290)],
}
# dlib's HOG box of an average 64x64 UTKFace chip, where the landmark model
# expects the face when it measures the eyes of an aligned crop.
CHIP_BOX = np.array([3.7, 2.6, 61.0, 60.4])


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def dlib_detector():
    return faces.Detector("dlib")


def eyes_in_crop(image, face, landmark_model, scale=4):
    """Align `face` at `scale` times 64 pixels, then measure the eyes again, in 64x64 pixels."""
    crop = faces.align_face(image, face.points, size=64 * scale)
    return faces.eye_centres(landmark_model.landmarks(crop, CHIP_BOX * scale)) / scale


def test_similarity_transform_recovers_motion():
    angle, scale, shift = np.deg2rad(20), 1.7, np.array([5.0, -3.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = np.array([[0.0, 0.0], [10.0, 2.0], [4.0, 9.0], [-3.0, 5.0]])
    target = source @ (scale * rotation).T + shift
    matrix = faces.similarity_transform(source, target)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_two_eyes_land_exactly_on_the_template():
    eyes = np.array([[100.0, 120.0], [160.0, 110.0]])
    matrix = faces.similarity_transform(eyes, faces.TEMPLATE)
    moved = eyes @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(moved, faces.TEMPLATE, atol=1e-9)


def test_eye_centres_image_order():
    five = [(570, 216), (528, 215), (424, 217), (463, 216), (496, 295)]  # dlib's 5-point model
    np.testing.assert_allclose(faces.eye_centres(five), [[443.5, 216.5], [549.0, 215.5]])
    np.testing.assert_allclose(faces.eye_centres([(9, 1), (3, 1)]), [[3, 1], [9, 1]])
    sixty_eight = np.zeros((68, 2))
    sixty_eight[36:42] = (10, 20)
    sixty_eight[42:48] = (30, 20)
    np.testing.assert_allclose(faces.eye_centres(sixty_eight), [[10, 20], [30, 20]])
    with pytest.raises(ValueError, match="Expected 68, 5 or 2 landmarks. Received: 3"):
        faces.eye_centres([(0, 0)] * 3)


def test_margin_box_widens_and_clamps():
    assert faces.margin_box((100, 100, 200, 150), (400, 400, 3)) == (60, 80, 240, 170)
    assert faces.margin_box((10, 20, 110, 220), (200, 150, 3)) == (0, 0, 150, 200)


def test_crop_with_margin_is_square_and_sized():
    image = np.zeros((300, 400, 3), np.uint8)
    assert faces.crop_with_margin(image, (100, 50, 180, 150)).shape == (64, 64, 3)


def test_unknown_detector_names_the_choices():
    with pytest.raises(ValueError, match="Choose one of: dlib, mtcnn, haar"):
        faces.Detector("yolo")


@pytest.mark.parametrize("name", sorted(VISIBLE_FACES))
def test_dlib_finds_and_aligns_every_face(shared, dlib_detector, name):
    image = read_rgb(shared / "media" / name)
    found = dlib_detector(image)
    assert len(found) == len(VISIBLE_FACES[name])
    for centre in VISIBLE_FACES[name]:
        assert sum(faces.box_contains(face.box, centre) for face in found) == 1, centre
    for face in found:
        error = np.abs(eyes_in_crop(image, face, dlib_detector) - faces.TEMPLATE).max()
        assert error < 3, (name, face.box, error)


@pytest.mark.parametrize("name", ["haar", "mtcnn"])
def test_other_detectors_on_two_people(shared, dlib_detector, name):
    image = read_rgb(shared / "media" / "two_people.jpg")
    found = faces.Detector(name)(image)
    assert len(found) == 2
    for face in found:
        assert np.abs(eyes_in_crop(image, face, dlib_detector) - faces.TEMPLATE).max() < 3
