"""The video demo on the real clip: pipeline, errors, command line and widgets, run headlessly."""

import asyncio
import json
import re

import cv2
import numpy as np
import pytest

from ssr_lib import cli, model, video

CLIP_FRAMES = 275


@pytest.fixture(scope="module")
def clip(shared):
    return shared / "media" / "short_hamilton_clip.mp4"


@pytest.fixture(scope="module")
def estimator(shared):
    from ssr_lib import pretrained

    path = shared / "pretrained" / "imdb" / pretrained.RELEASED_SSRNET / f"{pretrained.RELEASED_SSRNET}.h5"
    return video.AgeEstimator.load(path)


@pytest.fixture(scope="module")
def broken_avi(clip, tmp_path_factory):
    """An MJPG video of 40 clip frames, cut off after about half its bytes."""
    path = tmp_path_factory.mktemp("video") / "broken.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (640, 360))
    for frame in video.read_frames(clip, max_frames=40):
        writer.write(frame)
    writer.release()
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    return path


def test_fastest_pipeline_annotates_the_whole_clip(clip, estimator, tmp_path):
    output = tmp_path / "annotated.mp4"
    report = video.run_video(clip, video.FacePipeline(estimator, **video.FASTEST), output=output)
    assert report["frames"] == CLIP_FRAMES
    assert report["frames_with_faces"] > 200
    assert report["fps"] > 0
    assert set(report["stage_ms"]) == set(video.STAGES)
    assert sum(1 for _ in video.read_frames(output)) == CLIP_FRAMES


def test_every_face_gets_an_age(clip, estimator):
    pipeline = video.FacePipeline(estimator, **video.FASTEST)
    ages = []
    video.run_video(clip, pipeline, max_frames=60, on_frame=lambda i, frame, found: ages.extend(a for *_, a in found))
    assert ages
    assert all(1 <= age <= 100 for age in ages)


def test_compiled_prediction_matches_predict(clip, estimator):
    frame = next(video.read_frames(clip))
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    crops = np.stack([rgb[100:164, 200:264], rgb[50:114, 500:564]])
    expected = estimator.model.predict(crops[..., ::-1].astype(np.float32), verbose=0).reshape(-1)
    np.testing.assert_allclose(estimator.predict(crops), expected, atol=1e-3)


def test_kit_model_is_fed_aligned_rgb(tmp_path):
    path = tmp_path / "model.keras"
    model.build_ssrnet([3, 3, 3]).save(path)
    loaded = video.AgeEstimator.load(path)
    assert (loaded.crop, loaded.channels) == ("align", "rgb")


def test_tracking_keeps_face_numbers(clip, estimator):
    pipeline = video.FacePipeline(estimator, **video.FASTEST)
    numbers = []
    video.run_video(clip, pipeline, max_frames=20, on_frame=lambda i, frame, found: numbers.append(
        sorted(n for n, *_ in found)))
    # The clip opens on two faces for 20 frames; the camera then cuts to a close-up.
    assert numbers == [[0, 1]] * 20


@pytest.mark.parametrize("content, message", [
    (None, "Video not found"),
    (b"", "could not be opened as a video"),
    (b"this is a text file" * 100, "could not be opened as a video"),
])
def test_unreadable_videos_raise_with_the_fix(tmp_path, content, message):
    path = tmp_path / "input.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(video.VideoError, match=message):
        list(video.read_frames(path))


def test_cut_mp4_names_the_file(clip, tmp_path):
    path = tmp_path / "cut.mp4"
    path.write_bytes(clip.read_bytes()[:50_000])
    with pytest.raises(video.VideoError, match="cut.mp4"):
        list(video.read_frames(path))


def test_broken_avi_yields_the_frames_before_the_break(broken_avi):
    frames = list(video.read_frames(broken_avi))
    assert 0 < len(frames) < 40


def test_cli_demo_prints_json(clip, shared, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SSR_PRETRAINED_DIR", str(shared / "pretrained"))
    status = cli.main(["demo", str(clip), "--detector", "fastest", "--max-frames", "30",
                       "--output", str(tmp_path / "out.mp4"), "--json"])
    assert status == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["frames"] == 30
    assert report["frames_with_faces"] > 0
    assert report["fps"] > 0
    assert report["stage_ms"]["detect"] > 0


@pytest.mark.parametrize("arguments, message", [
    (["NONE.mp4"], "Video not found: .*none.mp4"),
    (["CLIP", "--model", "imbd"], "Unknown model 'imbd': give imdb, wiki or morph2"),
    (["CLIP", "--model", "NONE.keras"], "Model file not found: .*none.keras"),
    (["CLIP", "--output", "CLIP"], "is the input video"),
    (["CLIP", "--output", "NONE/out.mp4"], "the folder .*none must exist"),
    (["CLIP", "--output", "out.mkv"], "must end in .mp4, .webm, .avi"),
])
def test_cli_demo_bad_input_exits_2(clip, shared, tmp_path, capsys, monkeypatch, arguments, message):
    monkeypatch.setenv("SSR_PRETRAINED_DIR", str(shared.resolve() / "pretrained"))
    clip = clip.resolve()
    monkeypatch.chdir(tmp_path)
    arguments = [str(clip) if a == "CLIP" else a.replace("NONE", str(tmp_path / "none")) for a in arguments]
    assert cli.main(["demo", *arguments]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert clip.stat().st_size > 500_000


def test_cli_demo_warns_about_a_broken_video(broken_avi, shared, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SSR_PRETRAINED_DIR", str(shared / "pretrained"))
    assert cli.main(["demo", str(broken_avi), "--detector", "fastest", "--output", str(tmp_path / "o.webm")]) == 0
    assert "breaks off after frame" in capsys.readouterr().out
    capture = cv2.VideoCapture(str(tmp_path / "o.webm"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(25, abs=0.5)


def test_cli_demo_rejects_a_zero_scale(clip):
    with pytest.raises(SystemExit):
        cli.main(["demo", str(clip), "--scale", "0"])


def test_player_plays_and_pauses_headlessly(clip, estimator):
    from ssr_lib import widgets

    player = widgets.VideoPlayer(clip, {"imdb": estimator}, **video.FASTEST)
    assert player.slider.max == CLIP_FRAMES - 1

    async def click_play_then_pause():
        player.play_button.value = True
        while player.slider.value < 30:
            await asyncio.sleep(0.001)
        player.play_button.value = False
        return await player.task

    shown = asyncio.run(click_play_then_pause())
    assert 30 <= shown < CLIP_FRAMES - 1
    assert "frames/s" in player.status.value
    assert player.image.value[:2] == b"\xff\xd8"
    player.stop()
    assert player.slider.value == 0


def test_player_reports_a_broken_video(broken_avi, estimator):
    from ssr_lib import widgets

    player = widgets.VideoPlayer(broken_avi, {"imdb": estimator}, **video.FASTEST)
    player.play_button.value = True
    shown = asyncio.run(player.play())
    assert shown < 39
    assert "breaks off after frame" in player.status.value


def test_player_says_when_no_face_was_found(tmp_path, estimator):
    from ssr_lib import widgets

    path = tmp_path / "empty_room.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (320, 240))
    for level in range(0, 200, 20):
        writer.write(np.full((240, 320, 3), level, np.uint8))
    writer.release()
    player = widgets.VideoPlayer(path, {"imdb": estimator}, **video.FASTEST)
    player.play_button.value = True
    assert asyncio.run(player.play()) == 9
    assert "No face found in the 9 frames played" in player.status.value


def test_player_shows_why_a_video_cannot_play(tmp_path, estimator):
    from ssr_lib import widgets

    player = widgets.VideoPlayer(tmp_path / "missing.mp4", {"imdb": estimator})
    assert "Cannot play" in player.status.value
    assert player.play_button.disabled


def test_webcam_kernel_side_with_recorded_frames(clip, estimator):
    from ssr_lib import widgets

    webcam = widgets.WebcamWidget(video.FacePipeline(estimator, **video.FASTEST))
    sent = []
    webcam.send = lambda content, buffers: sent.append((content, buffers))
    for frame in video.read_frames(clip, max_frames=5):
        webcam._on_message(webcam, {"type": "frame"}, [memoryview(widgets.to_jpeg(frame))])
    assert webcam.frames == 5
    assert len(sent) == 5
    assert sent[-1][0]["type"] == "annotated"
    assert sent[-1][1][0][:2] == b"\xff\xd8"
    assert len(webcam.last_faces) == 2
    for garbage in (b"not a jpeg", b""):
        _, status = webcam.handle_frame(garbage)
        assert "could not be decoded" in status
    # A camera that changes its resolution mid-stream.
    small = cv2.resize(next(video.read_frames(clip)), (320, 180))
    _, status = webcam.handle_frame(widgets.to_jpeg(small))
    assert "face(s)" in status


def test_webcam_javascript_sends_frames_as_buffers():
    from ssr_lib import widgets

    # Widget models take (content, callbacks, buffers): the JPEG must be the third argument.
    assert 'model.send({ type: "frame" }, undefined, [' in widgets.WebcamWidget._esm


def test_player_reports_an_error_while_playing(clip, estimator):
    from ssr_lib import widgets

    player = widgets.VideoPlayer(clip, {"imdb": estimator}, detector="fastest")
    assert player.pipeline.detect_every == video.FASTEST["detect_every"]

    def fail(frame):
        raise RuntimeError("model exploded")

    player.pipeline.process = fail
    player.play_button.value = True
    assert asyncio.run(player.play()) == 0
    assert "Stopped by an error" in player.status.value
    assert "model exploded" in player.status.value
    assert player.play_button.value is False
