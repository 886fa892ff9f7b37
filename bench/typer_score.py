"""Which score should a colour-typed detection carry? Scored on cross-validation folds of the training splits.

    python bench/typer_score.py RUN_DIR:DATA_DIR [RUN_DIR:DATA_DIR ...]

Each RUN_DIR is a run of `bench/learn_wbc.py --fold K/N` (its last checkpoint and colour typer), DATA_DIR the fold's
COCO folder it wrote (`.../foldKofN/data`, whose `val` is the scored part of the train split). The network detects
once per image; the typer types each detected cell; the detections are then scored (mask mAP50, COCO segm AP,
typing) with three scores:

- `class head`: the network's own score (of the class the head chose, not necessarily the typer's);
- `typer`: the typer's probability of the type it chose (the package's rule since 2026-12-07);
- `product`: the two multiplied (how sure the network is of a cell, times how sure the typer is of its type).

Val is not read: this chooses the rule, by cross-validation.
"""
import pathlib
import sys


class Rescored:
    """Answers `detect` with the recorded detections, typed, under one scoring rule."""

    def __init__(self, model, calls, rule):
        self.model, self.calls, self.rule = model, calls, rule
        self.config = model.config

    def detect(self, images, verbose=0):
        from mrcnn_tf.inference.colour_typer import retype

        results = []
        for raw, image in zip(self.calls.pop(0), images):
            typed = retype(raw, image, self.model.typer)
            if self.rule == "class head":
                typed["scores"] = raw["scores"]
            elif self.rule == "product":
                typed["scores"] = (raw["scores"] * typed["scores"]).astype(raw["scores"].dtype)
            results.append(typed)
        return results


class Recorder:
    """The untyped model's detections, recorded for the three passes."""

    def __init__(self, model):
        self.model, self.config, self.calls = model, model.config, []

    def detect(self, images, verbose=0):
        typer, self.model.typer = self.model.typer, None
        try:
            results = self.model.detect(images, verbose=verbose)
        finally:
            self.model.typer = typer
        self.calls.append(results)
        return results


def main(argv):
    from mrcnn_tf.evaluation.evaluate import evaluate_dataset
    from mrcnn_tf.wbc.runs import load_dataset, load_inference_model

    print("| run (scored part) | score | mask mAP50 | COCO segm AP | typing |")
    print("|---|---|---|---|---|")
    for item in argv:
        run, data = (pathlib.Path(p) for p in item.split(":"))
        checkpoint = sorted(run.glob("*.weights.h5"))[-1]
        model, _ = load_inference_model(str(checkpoint), str(run.parent), echo=lambda line: None)
        dataset = load_dataset(data, "val")
        recorder = Recorder(model)
        evaluate_dataset(recorder, dataset)
        for rule in ("class head", "typer", "product"):
            metrics = evaluate_dataset(Rescored(model, list(recorder.calls), rule), dataset)
            print(f"| {run.parents[2].name}/{run.name} | {rule} | {metrics['mAP50']:.3f} | {metrics['AP']:.3f} | "
                  f"{metrics['accuracy']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
