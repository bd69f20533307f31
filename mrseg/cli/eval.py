"""`mrseg eval`: COCO box, mask and keypoint AP/AR of a results file against a ground truth (pycocotools)."""

from __future__ import annotations

import warnings

import click
from rich.console import Console
from rich.table import Table

from mrseg.engine.evaluate.evaluator import (
    IOU_TYPES,
    EvalInputError,
    EvalWarning,
    evaluate,
    load_ground_truth,
    load_results,
    metric_descriptions,
    metric_names,
    predict_results,
    skipped_iou_types,
    write_json,
)


def parse_iou_types(value: str) -> tuple[str, ...] | None:
    """The --iou-type list; None for "auto" (every type the results hold, `held_iou_types`)."""
    if value.strip() == "auto":
        return None
    types = tuple(t.strip() for t in value.split(",") if t.strip())
    bad = [t for t in types if t not in IOU_TYPES]
    if not types or bad:
        raise click.BadParameter(
            f"{value!r}: give auto or a comma list of {', '.join(IOU_TYPES)}.", param_hint="--iou-type"
        )
    return tuple(dict.fromkeys(types))


def held_iou_types(results: list[dict]) -> tuple[str, ...]:
    """bbox, plus segm when some detection has a mask and keypoints when some has keypoints."""
    held = [("segm", "segmentation"), ("keypoints", "keypoints")]
    return ("bbox", *(t for t, key in held if any(key in d for d in results)))


def metrics_tables(metrics: dict[str, dict[str, float]]) -> list[Table]:
    """One table per set of metric names (bbox and segm share the 12 COCO metrics; keypoints has its 10 OKS
    metrics): rows the metrics, columns the iou types; values x100 ('-' where pycocotools gives -1)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for iou_type in metrics:
        groups.setdefault(metric_names(iou_type), []).append(iou_type)
    tables = []
    for names, types in groups.items():
        table = Table(title="COCO evaluation (x100)" if "keypoints" not in types else "COCO keypoints (x100)")
        table.add_column("metric")
        table.add_column("definition", style="dim")
        for iou_type in types:
            table.add_column(iou_type, justify="right")
        descriptions = metric_descriptions(types[0])
        for name in names:
            values = [metrics[t][name] for t in types]
            table.add_row(name, descriptions[name], *("-" if v < 0 else f"{100 * v:.1f}" for v in values))
        tables.append(table)
    return tables


@click.command("eval")
@click.option(
    "--coco", "gt_path", required=True, type=click.Path(dir_okay=False), help="Ground-truth COCO json."
)
@click.option(
    "--pred",
    "pred_path",
    type=click.Path(dir_okay=False),
    help="Results json (COCO results list: image_id, category_id, score, bbox, segmentation, keypoints).",
)
@click.option(
    "--images", "images_dir", type=click.Path(file_okay=False), help="Run --weights on these images."
)
@click.option("--weights", default=None, help="Model to run on --images: zoo name, checkpoint or .onnx.")
@click.option("--arch", default=None, help="Architecture of a bare state dict (with --weights).")
@click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (with --weights)."
)
@click.option(
    "--score", default=0.05, show_default=True, type=click.FloatRange(0, 1), help="Keep detections >= this."
)
@click.option(
    "--save-pred", type=click.Path(dir_okay=False), help="With --weights: also write the results json."
)
@click.option(
    "--iou-type",
    "iou_type",
    default="auto",
    show_default=True,
    help="Comma list: bbox, segm, keypoints (pycocotools' OKS: its sigmas, maxDets 20); auto: bbox, and "
    "segm / keypoints where the detections have masks / keypoints.",
)
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), help="Also write the metrics (0..1) here."
)
@click.option("--verbose", is_flag=True, help="Show pycocotools' own progress and summary.")
def eval_cmd(
    gt_path, pred_path, images_dir, weights, arch, device, score, save_pred, iou_type, json_out, verbose
):
    """Score detections against a COCO ground truth: box, mask and keypoint AP/AR (pycocotools).

    Either a results file (--pred), or a model run on the ground truth's images (--images DIR --weights W).
    The figures are pycocotools' own (COCO.loadRes + COCOeval), also for segm: when the detections carry a
    bbox, each one's area (small/medium/large) is its box area, as pycocotools computes it.
    """
    iou_types = parse_iou_types(iou_type)
    if (pred_path is None) == (images_dir is None or weights is None):
        raise click.UsageError("Give either --pred RESULTS.json, or --images DIR with --weights W.")
    if pred_path is not None and (images_dir or weights):
        raise click.UsageError("--pred scores a results file; drop --images/--weights (or drop --pred).")
    err = Console(stderr=True)
    try:
        gt = load_ground_truth(gt_path, verbose=verbose)
        if pred_path is not None:
            results, name = load_results(pred_path), pred_path
        else:
            results = run_model(gt, images_dir, weights, arch, device, score)
            name = f"{weights} on {images_dir}"
            if save_pred:
                write_json(results, save_pred)
            if not results:
                raise EvalInputError(
                    f"{weights} found nothing scoring >= {score} in {images_dir}; nothing to score."
                )
        if iou_types is None:
            iou_types = held_iou_types(results)
        for skipped, reason in skipped_iou_types(gt, results, iou_types).items():
            err.print(f"[yellow]note:[/] {skipped} not evaluated: {reason}.")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", EvalWarning)
            metrics = evaluate(gt, results, iou_types=iou_types, verbose=verbose, results_name=name)
        for w in caught:
            if issubclass(w.category, EvalWarning):
                err.print(f"[yellow]note:[/] {w.message}", highlight=False)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    except (EvalInputError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    if not metrics:
        raise click.ClickException(f"Nothing to evaluate: none of {', '.join(iou_types)} applies to {name}.")
    for table in metrics_tables(metrics):
        Console().print(table)
    if json_out:
        write_json(metrics, json_out)
        err.print(f"metrics written to {json_out}")


def run_model(gt, images_dir: str, weights: str, arch, device: str, score: float) -> list[dict]:
    """COCO results of `weights` on the ground truth's images (see evaluate.evaluator.predict_results)."""
    from mrseg.engine.predict.predictor import Predictor
    from mrseg.engine.progress import ProgressBar

    predictor = Predictor(weights=weights, arch=arch, device=device, score=score, mask_crops=True)
    with ProgressBar("predicting", len(gt.getImgIds()), "bar", "percent", "eta", transient=True) as progress:
        return predict_results(gt, images_dir, predictor, on_image=progress.advance)
