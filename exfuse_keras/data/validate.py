"""Scan a dataset for bad files and report every problem, with counts.

Usage::

    python -m exfuse_keras.data.validate --config configs/voc.yaml [--split train] [--set k=v ...]

Reads the extracted files under ``data.root`` (VOCdevkit / SBD folders, the shapes dataset, or
a folder dataset; each entry's root for a mix) with the same checks the TFDS builders apply
(exfuse_keras/data/checks.py), but keeps going after a problem: each bad file is printed as one
line ``<file>: <problem>``, then a summary counts problems by kind and images that were
converted to RGB. Masks are read as ``data.mask_format`` and ``data.label_map`` say. Per split,
the labels are tallied: a split whose masks hold only 0 and the ignore label (black-and-white
masks without ``data.label_map``) is a problem; a train split that never holds a class is
reported (a warning, not a problem). Exits 1 when there are problems, 0 otherwise.

COCO (``coco_voc``) has no mask files to scan: its images and annotations go through the same
checks while its records are prepared, which stops at the first problem; the scan says so.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
from pathlib import Path
from typing import Optional, Sequence

from tqdm import tqdm

from exfuse_keras.config import ConfigError, DataConfig, load_config
from exfuse_keras.data.progress import bar_disable
from exfuse_keras.data.checks import DataError, ExampleFiles, MaskTally, mask_reading, read_example
from exfuse_keras.data.folder import folder_examples
from exfuse_keras.data.voc import SBD_ARCHIVE, SBD_SUBDIR, VOC_ARCHIVE, VOC_SUBDIR, voc_examples

__all__ = ["DataError", "Report", "list_examples", "scan", "main"]


@dataclasses.dataclass
class Report:
    """What a scan found.

    Attributes:
        checked: number of examples read.
        problems: one DataError per bad example (or per unreadable listing).
        converted: count of images converted to RGB, by their original PIL mode.
        warnings: lines that are not problems (classes a train split never holds).
        tallies: each split's ``MaskTally`` (label pixel and image counts).
    """

    checked: int = 0
    problems: list[DataError] = dataclasses.field(default_factory=list)
    converted: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    warnings: list[str] = dataclasses.field(default_factory=list)
    tallies: dict = dataclasses.field(default_factory=dict)

    def counts(self) -> collections.Counter:
        """Problems by kind."""
        return collections.Counter(p.kind for p in self.problems)

    def summary(self) -> str:
        lines = [f"checked {self.checked} examples: {len(self.problems)} problem(s)"]
        for kind, count in sorted(self.counts().items()):
            lines.append(f"  {kind}: {count}")
        if self.converted:
            modes = ", ".join(f"{mode} {count}" for mode, count in sorted(self.converted.items()))
            lines.append(f"converted to RGB (handled): {modes}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def list_examples(data: DataConfig) -> dict[str, list[ExampleFiles]]:
    """The examples of each split of the configured dataset, from extracted folders.

    A mix lists each entry's splits as ``"mix[<i>] <dataset> <split>"``; ``coco_voc`` lists
    none (see the module doc).

    Raises:
        DataError: a folder or split list is missing.
    """
    if data.dataset == "mix":
        return {f"mix[{i}] {c.dataset} {split}": examples for i, c in enumerate(data.mix)
                for split, examples in list_examples(data.mix_entry(c)).items()}
    if data.dataset == "coco_voc":
        return {}
    root = Path(data.root)
    if data.dataset == "folder":
        f = data.folder
        return folder_examples(root, f.image_dir, f.mask_dir, f.train_list, f.val_list,
                               f.val_fraction, f.split_seed, f.test_list)
    voc_dir = root / VOC_SUBDIR
    if not voc_dir.is_dir():
        raise DataError("missing", voc_dir, f"folder not found; the validator reads extracted data "
                        f"(extract {VOC_ARCHIVE} into {root}, or generate the shapes dataset there)")
    sbd_dir = None
    if data.dataset == "train_aug":
        sbd_dir = root / SBD_SUBDIR
        if not sbd_dir.is_dir():
            raise DataError("missing", sbd_dir, f"folder not found; extract {SBD_ARCHIVE} into {root}")
    return voc_examples(voc_dir, sbd_dir, data.dataset)


def scan(examples: dict[str, list[ExampleFiles]], num_classes: int, ignore_label: int = 255,
         progress: bool = True, colours: Optional[dict] = None, label_map: Optional[dict] = None,
         class_names: Sequence[str] = ()) -> Report:
    """Reads every example with the builders' checks and collects the problems.

    Args:
        examples: ``{split: [ExampleFiles, ...]}``, e.g. from ``list_examples``.
        num_classes: labels must lie in ``[0, num_classes)``...
        ignore_label: ...or equal this.
        progress: show a tqdm progress bar per split (on stderr).
        colours, label_map: how masks are read (``checks.read_mask``; ``checks.mask_reading``).
        class_names: for the warnings.

    Returns:
        Report.
    """
    report = Report()
    for split, split_examples in examples.items():
        tally = report.tallies[split] = MaskTally(num_classes, ignore_label)
        for files in tqdm(split_examples, desc=f"checking {split}", unit="img",
                          disable=bar_disable(progress)):
            report.checked += 1
            try:
                image, mask = read_example(files, num_classes, ignore_label, colours, label_map)
            except DataError as err:
                report.problems.append(err)
                continue
            tally.add(files.mask_path, mask)
            if image.converted_from is not None:
                report.converted[image.converted_from] += 1
        trap = tally.binary_trap()
        if trap is not None:
            report.problems.append(trap)
        elif split.split(" ")[-1] == "train" and tally.first_path is not None and tally.absent():
            report.warnings.append(f"{split}: no mask holds class(es) {tally.absent_names(class_names)}")
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line entry point; returns the exit status (1 when problems were found)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML config whose data section names the dataset")
    parser.add_argument("--split", action="append", help="split(s) to check (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. data.root=/data/voc")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        data = load_config(args.config, args.set).data
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        examples = list_examples(data)
    except DataError as err:
        print(err)
        print(Report(problems=[err]).summary())
        return 1
    if data.dataset == "coco_voc" or any(c.dataset == "coco_voc" for c in data.mix):
        print("coco_voc: not scanned; COCO's images and annotations are checked while its records are prepared")
    if args.split:
        unknown = sorted(set(args.split) - set(examples))
        if unknown:
            print(f"error: --split {unknown[0]!r} not in {sorted(examples)}", file=sys.stderr)
            return 2
        examples = {split: examples[split] for split in args.split}
    report = scan(examples, data.num_classes, data.ignore_label, progress=not args.no_progress,
                  class_names=data.class_names, **mask_reading(data))
    for problem in report.problems:
        print(problem)
    print(report.summary())
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
