"""Jupyter widgets for the demo: a video player and a browser webcam.

`VideoPlayer` plays a file through a `video.FacePipeline` with play, pause,
stop, a frame slider and detector and model menus, and shows frames per
second and each stage's time. Playing runs as an asyncio task on the
kernel's event loop and yields after every frame, so the kernel keeps
handling button clicks while a video plays.

`WebcamWidget` captures the camera in the browser, which works when the
kernel runs on another machine (JupyterHub, a remote server): the browser
sends JPEG frames to the kernel, the kernel annotates them and sends them
back. The browser sends a new frame only after the previous one came back,
so a slow kernel lowers the frame rate instead of piling up frames.

Introduced in notebook 08, *Demo*.
"""

import asyncio
import logging
import time

import anywidget
import cv2
import ipywidgets as widgets
import numpy as np
import traitlets

from ssr_lib import faces, video

log = logging.getLogger(__name__)


def to_jpeg(frame_bgr, quality=85):
    return cv2.imencode(".jpg", frame_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def _stage_text(report):
    stages = ", ".join(f"{stage} {ms:.1f}" for stage, ms in report["stage_ms"].items() if ms)
    return f"{report['fps']:.1f} frames/s; ms per frame: {stages}"


class VideoPlayer:
    """Play a video with ages on every face.

    Args:
        source: a video file.
        estimators: a dict from model names to `video.AgeEstimator`s.
        detector: the detector selected at start.
        **settings: passed to `video.FacePipeline` (`detect_every`, ...).

    Show it with `display(player.view)`, or as the last line of a cell.
    """

    def __init__(self, source, estimators, detector="mtcnn", **settings):
        if detector == "fastest":
            settings = {**video.FASTEST, **settings}
            detector = settings.pop("detector")
        self.source, self.estimators, self.settings = source, estimators, settings
        self.capture, self.total, self.task = None, 0, None
        self.image = widgets.Image(format="jpeg", layout=widgets.Layout(max_width="640px"))
        self.play_button = widgets.ToggleButton(description="Play", icon="play")
        self.stop_button = widgets.Button(description="Stop", icon="stop")
        self.slider = widgets.IntSlider(description="frame", min=0, max=0, continuous_update=False)
        self.detector_menu = widgets.Dropdown(description="detector", options=faces.DETECTORS, value=detector)
        self.model_menu = widgets.Dropdown(description="model", options=list(estimators))
        self.status = widgets.HTML()
        self.view = widgets.VBox([
            widgets.HBox([self.play_button, self.stop_button, self.slider]),
            widgets.HBox([self.detector_menu, self.model_menu]),
            self.image, self.status,
        ])
        self.play_button.observe(self._on_play, "value")
        self.stop_button.on_click(lambda _: self.stop())
        self.slider.observe(self._on_seek, "value")
        self.detector_menu.observe(self._on_switch, "value")
        self.model_menu.observe(self._on_switch, "value")
        self._seeking = False
        self._playing = False
        self._build_pipeline()
        self._open()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.view)

    def _build_pipeline(self):
        self.pipeline = video.FacePipeline(self.estimators[self.model_menu.value],
                                           detector=self.detector_menu.value, **self.settings)

    def _on_switch(self, _change):
        """Use the chosen detector and model from the next frame on; when paused, redraw this frame."""
        self._build_pipeline()
        if not self._playing and self.capture is not None:
            self._on_seek({"new": self.slider.value})

    def _open(self):
        """Open the video and show its first frame, or show why it cannot be played."""
        try:
            self.capture = video.open_video(self.source)
        except video.VideoError as error:
            self._fail(str(error))
            return
        self.total = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.slider.max = max(self.total - 1, 0)
        if not self.show_next_frame():
            self._fail(f"{self.source} contains no readable frame: the file is empty or damaged.")

    def _fail(self, message):
        self.capture = None
        self.play_button.disabled = True
        self.status.value = f"<b>Cannot play:</b> {message}"

    def show_next_frame(self):
        """Read, annotate and show the next frame; return `False` at the end of the video."""
        if self.capture is None:
            return False
        start = time.perf_counter()
        ok, frame = self.capture.read()
        if not ok:
            return False
        self.pipeline.timings["read"] += time.perf_counter() - start
        annotated, found = self.pipeline.process(frame)
        self.image.value = to_jpeg(annotated)
        self._seeking = True
        self.slider.value = int(self.capture.get(cv2.CAP_PROP_POS_FRAMES)) - 1
        self._seeking = False
        self.last_faces = found
        return True

    async def play(self, max_frames=None):
        """Play from the current frame until the end, Pause, Stop or `max_frames` frames."""
        if self._playing:
            return 0
        self._playing = True
        if self.total and self.slider.value >= self.total - 1:
            self._on_seek({"new": 0})  # Play at the end starts again from the beginning
        self.pipeline.reset()
        frames_shown, with_faces, started = 0, 0, time.perf_counter()
        try:
            while self.play_button.value and (max_frames is None or frames_shown < max_frames):
                if not self.show_next_frame():
                    at = self.slider.value + 1
                    if at >= self.total:
                        self.status.value = "Stopped at the end of the video."
                    else:
                        self.status.value = f"Stopped: the video breaks off after frame {at} of {self.total}."
                    break
                frames_shown += 1
                with_faces += bool(self.last_faces)
                frames = max(self.pipeline.frames, 1)
                report = {"fps": frames_shown / (time.perf_counter() - started),
                          "stage_ms": {s: 1000 * t / frames for s, t in self.pipeline.timings.items()}}
                self.status.value = _stage_text(report) + f"; faces in this frame: {len(self.last_faces)}"
                await asyncio.sleep(0)  # let the kernel handle widget events between frames
        except Exception as error:  # a task's errors reach no cell, so the status line reports them
            log.warning("Video player stopped on %s at frame %d: %r", self.source, self.slider.value, error)
            self.status.value = f"<b>Stopped by an error:</b> {type(error).__name__}: {error}"
        finally:
            self._playing = False
            self.play_button.value = False
        if frames_shown and not with_faces:
            self.status.value += (f" <b>No face found in the {frames_shown} frames played:</b> "
                                  "try another detector, or detect on every frame.")
        return frames_shown

    def _on_play(self, change):
        self.play_button.description = "Pause" if change["new"] else "Play"
        self.play_button.icon = "pause" if change["new"] else "play"
        if change["new"] and (self.task is None or self.task.done()):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no event loop, as in a plain script: await play() instead
            self.task = loop.create_task(self.play())

    def stop(self):
        """Stop playing and go back to the first frame."""
        self.play_button.value = False
        self.slider.value = 0

    def _on_seek(self, change):
        if self._seeking or self.capture is None:
            return
        self.capture.set(cv2.CAP_PROP_POS_FRAMES, change["new"])
        self.pipeline.reset()
        self.show_next_frame()


class WebcamWidget(anywidget.AnyWidget):
    """Browser camera in, annotated frames out; the kernel side is `handle_frame`."""

    _esm = """
    function render({ model, el }) {
      const video = document.createElement("video");
      const canvas = document.createElement("canvas");
      const shown = document.createElement("img");
      const status = document.createElement("div");
      const button = document.createElement("button");
      button.textContent = "Start camera";
      shown.style.maxWidth = "640px";
      el.append(button, shown, status);
      let running = false;
      let starting = false;
      let inFlight = false;  // at most one frame waits in the kernel
      let url = null;

      function report(text, error = "") {
        status.textContent = text;
        model.set("error", error);
        model.save_changes();
      }
      function stopCamera() {
        running = false;
        if (video.srcObject) video.srcObject.getTracks().forEach((track) => track.stop());
        video.srcObject = null;
        button.textContent = "Start camera";
      }
      function sendFrame() {
        if (!running || inFlight) return;
        if (!video.videoWidth) { setTimeout(sendFrame, 100); return; }
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
        canvas.getContext("2d").drawImage(video, 0, 0);
        inFlight = true;
        canvas.toBlob(async (blob) => {
          if (!blob) { inFlight = false; setTimeout(sendFrame, 200); return; }
          model.send({ type: "frame" }, undefined, [await blob.arrayBuffer()]);
        }, "image/jpeg", 0.8);
      }
      model.on("msg:custom", (message, buffers) => {
        if (message.type !== "annotated") return;
        inFlight = false;
        if (!running) return;
        if (url) URL.revokeObjectURL(url);
        url = URL.createObjectURL(new Blob([buffers[0]], { type: "image/jpeg" }));
        shown.src = url;
        status.textContent = message.status;
        requestAnimationFrame(sendFrame);
      });
      button.onclick = async () => {
        if (starting) return;
        if (running) { stopCamera(); report("Camera stopped."); return; }
        if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
          report("This browser gives no camera access (it needs HTTPS or localhost).", "no camera API");
          return;
        }
        starting = true;
        try {
          video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: 640 } });
          video.srcObject.getVideoTracks()[0].onended = () => {
            stopCamera();
            report("The camera was disconnected or its permission withdrawn.", "camera ended");
          };
          await video.play();
        } catch (error) {
          stopCamera();
          report("No camera: " + error.name + ". Allow camera access for this page, or check that a "
                 + "camera is connected.", error.name);
          return;
        } finally {
          starting = false;
        }
        running = true;
        button.textContent = "Stop camera";
        report("Camera on; waiting for the first annotated frame.");
        sendFrame();
      };
      return () => stopCamera();
    }
    export default { render };
    """
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, pipeline, **kwargs):
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.frames, self.last_faces, self.last_status = 0, [], ""
        self.on_msg(self._on_message)

    def _on_message(self, _widget, content, buffers):
        if content.get("type") != "frame":
            return
        annotated, status = self.handle_frame(bytes(buffers[0]) if buffers else b"")
        self.send({"type": "annotated", "status": status}, [annotated])

    def handle_frame(self, jpeg):
        """Annotate one JPEG frame from the browser; return the annotated JPEG and a status line.

        An undecodable frame or an error in the pipeline becomes the status
        line instead of an exception, so the browser gets a reply and goes on
        sending frames.
        """
        blank = to_jpeg(np.zeros((240, 320, 3), np.uint8))
        frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) if jpeg else None
        if frame is None:
            self.last_status = "The browser sent a frame that could not be decoded; waiting for the next one."
            return blank, self.last_status
        start = time.perf_counter()
        try:
            annotated, self.last_faces = self.pipeline.process(frame)
        except Exception as error:  # reported to the browser, which keeps sending frames
            log.warning("Webcam frame %d failed: %r", self.frames, error)
            self.last_status = f"The kernel failed on this frame: {type(error).__name__}: {error}"
            return blank, self.last_status
        self.frames += 1
        milliseconds = 1000 * (time.perf_counter() - start)
        self.last_status = f"{len(self.last_faces)} face(s), {milliseconds:.0f} ms in the kernel"
        if not self.last_faces:
            self.last_status = "No face found: face the camera in good light. " + self.last_status
        return to_jpeg(annotated), self.last_status
