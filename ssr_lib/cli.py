"""Command line: `python -m ssr_lib {train,evaluate,summary,download,prepare,demo,bench}`.

Every command that fails on bad input prints one message naming the file
or folder and the fix, and exits with status 2, never with a traceback.
"""

import argparse
import json
import sys
from pathlib import Path

from ssr_lib.download import DownloadError

DATASETS = ("utkface",)


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1. Received: {value}")
    return value


def _fraction(text):
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1. Received: {value}")
    return value


def _add_data_options(parser):
    parser.add_argument("--dataset", choices=DATASETS, default="utkface", help="dataset to read (default: utkface)")
    parser.add_argument("--data-dir", type=Path, help="folder that contains UTKFace/, or the image folder itself "
                        "(default: $SSR_DATA_DIR or data/)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/validation/test split (default: 0)")


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m ssr_lib", description="SSR-Net teaching kit")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train SSR-Net and evaluate it on the test split")
    _add_data_options(train)
    train.add_argument("--profile", choices=("quick", "full"), default="quick",
                       help="quick: 15 epochs for a CPU; full: the paper's 90 epochs (default: quick)")
    train.add_argument("--output", type=Path, required=True,
                       help="run folder; writes model.keras, history.csv and metrics.json there")
    train.add_argument("--stages", type=int, nargs="+", default=[3, 3, 3], help="bins per stage (default: 3 3 3)")
    train.add_argument("--epochs", type=int, help="override the profile's number of epochs")
    train.add_argument("--fresh", action="store_true", help="ignore a finished or interrupted run in --output")
    train.add_argument("--batch-size", type=_positive, help="override the profile's batch (per replica)")
    train.add_argument("--prepared", type=Path,
                       help="train on a folder written by `prepare` instead of --dataset, streamed from its "
                            "shards; people with an identity stay on one side of the split")
    train.add_argument("--strategy", choices=("default", "mirrored", "multi-worker"), default="default",
                       help="default: one device; mirrored: every GPU of this machine; multi-worker: the "
                            "machines TF_CONFIG names, one process each (default: default)")

    evaluate = commands.add_parser("evaluate", help="print MAE, CA(3) and CA(5) of a saved model")
    evaluate.add_argument("model", type=Path,
                          help="a .keras file written by `train`, or an authors' released SSR-Net .h5 file")
    _add_data_options(evaluate)
    evaluate.add_argument("--split", choices=("train", "val", "test", "all"), default="test",
                          help="images to evaluate on; `all` is every readable image (default: test)")
    evaluate.add_argument("--channels", choices=("rgb", "bgr"),
                          help="channel order the model expects (default: bgr for .h5, rgb for .keras)")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as one JSON object")

    summary = commands.add_parser("summary", help="print the parameters and bytes of an SSR-Net configuration")
    summary.add_argument("--stages", type=int, nargs="+", default=[3, 3, 3], help="bins per stage (default: 3 3 3)")
    summary.add_argument("--lambda-local", type=float, default=1.0, help="weight of the shifts (default: 1.0)")
    summary.add_argument("--lambda-d", type=float, default=1.0, help="weight of the scales (default: 1.0)")
    summary.add_argument("--image-size", type=int, default=64, help="input height and width (default: 64)")
    summary.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    fetch = commands.add_parser("download", help="download and unpack a dataset or the authors' weights")
    fetch.add_argument("name", help="imdb, wiki, fgnet or ssrnet-weights (utkface, morph2 and megaage-asian "
                       "explain the manual steps)")
    fetch.add_argument("--data-dir", type=Path, help="datasets folder (default: $SSR_DATA_DIR or data/)")

    prep = commands.add_parser("prepare", help="detect, align and crop a dataset's faces into 64x64 shards")
    prep.add_argument("name", help="utkface, utkface-wild, imdb, wiki, morph2, fgnet or megaage-asian")
    prep.add_argument("--source", type=Path, required=True, help="folder the dataset was unpacked into")
    prep.add_argument("--output", type=Path, required=True,
                      help="folder for the shards and manifest.json; an interrupted run resumes there")
    prep.add_argument("--method", choices=("resize", "align", "margin"),
                      help="resize aligned faces, align on the eyes, or crop the box with a 40%% margin "
                           "(default: resize for utkface and megaage-asian, align for the others)")
    prep.add_argument("--detector", choices=("dlib", "mtcnn", "haar"), default="dlib",
                      help="face detector where the dataset has no landmarks (default: dlib)")
    prep.add_argument("--workers", type=_positive, help="processes (default: one per CPU core)")
    prep.add_argument("--shard-size", type=_positive, default=1000, help="images per shard (default: 1000)")
    prep.add_argument("--limit", type=_positive, help="prepare only N records, spread evenly over the dataset")
    prep.add_argument("--json", action="store_true", help="print the manifest as JSON instead of the report")

    demo = commands.add_parser("demo", help="write a video with an age on every face")
    demo.add_argument("video", type=Path, help="input video file")
    demo.add_argument("--output", type=Path,
                      help="annotated video to write: .mp4 (MPEG-4, for video players), .webm (VP8, for "
                           "browsers) or .avi (Motion JPEG)")
    demo.add_argument("--detector", choices=("dlib", "mtcnn", "haar", "fastest"), default="mtcnn",
                      help="face detector; fastest runs MTCNN on a frame shrunk to 3/4 every 10th frame "
                           "and tracks faces in between (default: mtcnn)")
    demo.add_argument("--every", type=_positive, help="detect on every N-th frame and track in between (default: 1)")
    demo.add_argument("--scale", type=_fraction, help="shrink frames by this factor, above 0 and at most 1, "
                      "before detection (default: 1)")
    demo.add_argument("--model", default="imdb",
                      help="imdb, wiki or morph2 (the authors' weights) or a .keras/.h5 file (default: imdb)")
    demo.add_argument("--max-frames", type=_positive, help="stop after N frames")
    demo.add_argument("--json", action="store_true", help="print fps, stage timings and frame counts as JSON")

    bench = commands.add_parser("bench", help="time SSR-Net and the baselines on real faces, and its exports")
    bench.add_argument("--models", nargs="+", default=None,
                       help="models to time; the first is the one exported and the baseline of the ratios "
                            "(default: ssrnet dex mobilenet_0.25 mobilenet_0.5 densenet_13 densenet_19)")
    bench.add_argument("--data-dir", type=Path, help="folder that contains UTKFace/ (default: $SSR_DATA_DIR or data/)")
    bench.add_argument("--training-models", nargs="+", default=["ssrnet", "mobilenet_0.25"],
                       help="models whose training throughput to time (default: ssrnet mobilenet_0.25)")
    bench.add_argument("--training-steps", type=int, default=20,
                       help="steps timed per training measurement; 0 skips training (default: 20)")
    bench.add_argument("--export-dir", type=Path,
                       help="where to write the TFLite and ONNX files (default: a temporary folder)")
    bench.add_argument("--json", action="store_true", help="print one JSON object per measurement")
    return parser.parse_args(argv)


def _print_metrics(metrics, as_json):
    if as_json:
        print(json.dumps(metrics))
    else:
        print(f"MAE {metrics['mae']:.2f} years, CA(3) {metrics['ca3']:.3f}, "
              f"CA(5) {metrics['ca5']:.3f} on {metrics['n_test']:,} images")


def run_train(args):
    from ssr_lib import data, distribute, evaluate, model, train

    # A multi-worker strategy must exist before TensorFlow does any work.
    strategy = None if args.strategy == "default" else distribute.get_strategy(args.strategy)
    if args.prepared:
        from ssr_lib import prepare

        splits = prepare.open_prepared_splits(args.prepared, seed=args.seed)
    else:
        splits = data.load_utkface(args.data_dir, seed=args.seed)
    network = model.build_ssrnet(args.stages)
    network, _ = train.train(network, splits, args.output, profile=args.profile, seed=args.seed,
                             resume=not args.fresh, strategy=strategy, epochs=args.epochs,
                             batch_size=args.batch_size)
    if strategy is not None and not distribute.is_chief():
        return
    metrics = evaluate.evaluate(network, splits["test"])
    (args.output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _print_metrics(metrics, as_json=False)
    print(f"Wrote {args.output / 'model.keras'}, history.csv and metrics.json")


def run_evaluate(args):
    from ssr_lib import data, evaluate, pretrained

    network = pretrained.load_model(args.model)
    # The authors' weights were trained on BGR images read by OpenCV.
    channels = args.channels or ("bgr" if args.model.suffix == ".h5" else "rgb")
    if args.split == "all":
        arrays, _ = data.prepare_utkface(args.data_dir, verbose=not args.json)
        split = data.Split(arrays["images"], arrays["ages"], arrays["files"])
    else:
        split = data.load_utkface(args.data_dir, seed=args.seed, verbose=not args.json)[args.split]
    images = split.images[..., ::-1] if channels == "bgr" else split.images
    metrics = evaluate.age_metrics(split.ages, evaluate.predict_ages(network, images))
    _print_metrics(metrics, args.json)


def run_summary(args):
    from ssr_lib import model

    network = model.build_ssrnet(args.stages, args.lambda_local, args.lambda_d, args.image_size)
    summary = {
        "model": network.name,
        "stages": args.stages,
        "parameters": int(network.count_params()),
        "bytes": model.count_bytes(network),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['model']}: {summary['parameters']:,} parameters, "
              f"{summary['bytes']:,} bytes as float32")


def run_download(args):
    from ssr_lib import download

    print(f"Unpacked into {download.download(args.name, args.data_dir)}")


def run_prepare(args):
    from ssr_lib import prepare

    manifest, _ = prepare.prepare(args.name, args.source, args.output, method=args.method,
                                  detector=args.detector, workers=args.workers, shard_size=args.shard_size,
                                  limit=args.limit, verbose=not args.json)
    if args.json:
        print(json.dumps(manifest))
    else:
        count = len(manifest["shards"])
        print(f"Wrote {count} shard{'s' if count != 1 else ''} and manifest.json to {args.output}")


def run_demo(args):
    from ssr_lib import video

    settings = dict(video.FASTEST) if args.detector == "fastest" else {"detector": args.detector}
    if args.every:
        settings["detect_every"] = args.every
    if args.scale:
        settings["detect_scale"] = args.scale
    pipeline = video.FacePipeline(video.AgeEstimator.load(args.model), **settings)
    report = video.run_video(args.video, pipeline, output=args.output, max_frames=args.max_frames)
    report["settings"] = {**settings, "model": args.model}
    if args.json:
        print(json.dumps(report))
        return
    print(f"{report['frames']} frames, {report['frames_with_faces']} with faces, {report['fps']} frames/s")
    if report["frames"] < report["frames_expected"]:
        print(f"Warning: {args.video} breaks off after frame {report['frames']} of {report['frames_expected']}; "
              "the file is damaged or incomplete.")
    if not report["frames_with_faces"]:
        if settings.get("detect_every", 1) > 1:
            hint = "--every 1 to detect on every frame"
        elif settings["detector"] != "mtcnn":
            hint = "--detector mtcnn, which finds small and turned faces"
        else:
            hint = "a video where faces are at least about 40 pixels wide"
        print(f"No face was found: try {hint}.")
    print("ms per frame: " + ", ".join(f"{stage} {ms}" for stage, ms in report["stage_ms"].items()))
    if args.output:
        print(f"Wrote {args.output}")


def _released_or_fresh(name):
    """Return the authors' IMDB model `name` when its weights are found, else an untrained one.

    Speed does not depend on the weights, but the exports' agreement does:
    quantising an untrained model's activations is not a fair test.
    """
    from ssr_lib import baselines, pretrained

    try:
        return pretrained.load_released_baseline(name)
    except (FileNotFoundError, ValueError) as error:
        if name in baselines.RELEASED_NAMES:
            print(f"Timing an untrained {name}: {error}", file=sys.stderr)
        return baselines.build(name)


def run_bench(args):
    import tempfile

    from ssr_lib import baselines, bench, data

    names = args.models or list(baselines.BUILDERS)
    unknown = sorted(set(names + args.training_models) - set(baselines.BUILDERS))
    if unknown:
        raise ValueError(f"Unknown model {unknown[0]!r}. Expected names from {sorted(baselines.BUILDERS)}.")
    splits = data.load_utkface(args.data_dir, verbose=not args.json)
    # The authors' weights read BGR faces; the exports are checked and calibrated on such faces.
    faces = splits["test"].images[:200, ..., ::-1].astype("float32")
    models = {name: _released_or_fresh(name) for name in names}
    with tempfile.TemporaryDirectory() as scratch:
        rows = bench.single_face_paths(models[names[0]], faces, args.export_dir or scratch)
    rows += bench.benchmark_models(models, faces)
    if args.training_steps > 0:
        trained = {name: models.get(name) or baselines.build(name) for name in args.training_models}
        rows += bench.training_rows(trained, splits["train"].images, splits["train"].ages,
                                    steps=args.training_steps)
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            extra = f", ratio {row['ratio']:.2f}" if "ratio" in row else ""
            print(f"{row['model']:<24} {row['path']:<20} batch {row['batch']:>3}: "
                  f"{row['latency_ms']:9.3f} ms, {row['images_per_s']:9.1f} images/s{extra}")


def main(argv=None):
    args = _parse_args(argv)
    handlers = {"train": run_train, "evaluate": run_evaluate, "summary": run_summary,
                "download": run_download, "prepare": run_prepare, "demo": run_demo,
                "bench": run_bench}
    try:
        handlers[args.command](args)
    except (FileNotFoundError, ValueError, DownloadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted. Finished work is kept: run the same command again to resume.", file=sys.stderr)
        return 130
    return 0
