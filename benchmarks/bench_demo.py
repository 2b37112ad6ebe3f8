"""Benchmark of the video demo: frames per second and per-stage time, by setting.

Each setting runs over the whole clip in this process. The reference is MTCNN
on every full-size frame, the slowest and most thorough setting. Every other
row gives its speed as a ratio to the reference, and its coverage: the share
of the reference's faces (frame by frame) that also got a box with an age.
Run from the repository root:

    python benchmarks/bench_demo.py --video ../shared/media/short_hamilton_clip.mp4 --model imdb
"""

import argparse
import json
from pathlib import Path

from ssr_lib import faces, video

SETTINGS = {
    "reference: mtcnn, every frame": {"detector": "mtcnn"},
    "mtcnn, every 5th frame": {"detector": "mtcnn", "detect_every": 5},
    "mtcnn at half size, every 10th": {"detector": "mtcnn", "detect_every": 10, "detect_scale": 0.5},
    "fastest: mtcnn at 3/4 size, every 10th": video.FASTEST,
    "dlib, every frame": {"detector": "dlib"},
    "haar at half size, every 10th": {"detector": "haar", "detect_every": 10, "detect_scale": 0.5},
}


def run(path, estimator, settings, max_frames):
    boxes = []
    report = video.run_video(path, video.FacePipeline(estimator, **settings), max_frames=max_frames,
                             on_frame=lambda i, frame, found: boxes.append([b for _, b, age in found if age]))
    return report, boxes


def coverage(reference, boxes):
    """Share of reference faces whose centre lies inside some box of the same frame."""
    total = covered = 0
    for expected, found in zip(reference, boxes):
        for box in expected:
            centre = faces.box_centre(box)
            total += 1
            covered += any(faces.box_contains(other, centre) for other in found)
    return covered / total if total else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, required=True, help="video file")
    parser.add_argument("--model", default="imdb", help="imdb, wiki, morph2 or a .keras/.h5 file (default: imdb)")
    parser.add_argument("--max-frames", type=int, help="frames per setting (default: the whole video)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per row")
    args = parser.parse_args()

    estimator = video.AgeEstimator.load(args.model)
    run(args.video, estimator, video.FASTEST, 20)  # compile the model and load the detectors first
    rows, reference, reference_fps = [], None, None
    for name, settings in SETTINGS.items():
        report, boxes = run(args.video, estimator, settings, args.max_frames)
        if reference is None:
            reference, reference_fps = boxes, report["fps"]
        row = {"setting": name, **report, "ratio_to_reference": round(report["fps"] / reference_fps, 2),
               "coverage": round(coverage(reference, boxes), 3)}
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            stages = ", ".join(f"{stage} {ms}" for stage, ms in report["stage_ms"].items())
            print(f"{name:42s} {report['fps']:6.1f} frames/s ({row['ratio_to_reference']:5.2f}x), "
                  f"coverage {row['coverage']:.3f}, frames with faces {report['frames_with_faces']}; "
                  f"ms per frame: {stages}", flush=True)


if __name__ == "__main__":
    main()
