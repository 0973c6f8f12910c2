"""docs/architecture.md's "How to add ..." lists are true: every file listed exists, every file marked
"edit" holds the piece of each existing op / frame mode / diffusers class, and the counts in the text
match the lists."""
import re
from pathlib import Path

import pytest

from fastvid.frame_modes import FRAME_MODES
from fastvid.registry import OPS

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text()
BLOCK = re.compile(r"\*\*(?P<title>[^*]+)\*\*(?P<counts>[^\n]*)\n(?:.*\n)*?<!-- change-list: (?P<kind>[^>]+) -->\n"
                   r"```text\n(?P<body>(?:.*\n)*?)```\n<!-- /change-list -->")


def change_lists():
    """kind -> (title's counts text, [(action, path)])."""
    lists = {}
    for m in BLOCK.finditer(DOC):
        # one entry per line "action path what"; an indented line continues the one above
        entries = [tuple(line.split()[:2]) for line in m["body"].splitlines() if line.strip() and not line[0].isspace()]
        lists[m["kind"]] = (m["counts"], entries)
    return lists


def _count(counts, word):
    found = re.search(rf"(\d+) {word}", counts)
    return int(found[1]) if found else 0


def test_every_list_is_parsed_and_its_counts_are_true():
    lists = change_lists()
    assert set(lists) == {"op", "frame mode", "diffusers class"}
    for kind, (counts, entries) in lists.items():
        actions = [action for action, _ in entries]
        assert set(actions) <= {"new", "edit"}, kind
        assert _count(counts, "new file") == actions.count("new"), (kind, counts)
        assert _count(counts, "edit") == actions.count("edit"), (kind, counts)


@pytest.mark.parametrize("op", sorted(OPS))
def test_each_op_has_every_file_of_the_op_list(op):
    for action, path in change_lists()["op"][1]:
        file = ROOT / path.format(op=op)
        assert file.is_file(), f"{op}: {file} is missing"
        if action == "edit":
            assert re.search(rf"\b{op}\b", file.read_text()), f"{op}: no piece of it in {path}"


def test_every_frame_mode_is_in_the_frame_mode_list():
    for _, path in change_lists()["frame mode"][1]:
        text = (ROOT / path).read_text()
        for mode in FRAME_MODES:
            assert f'"{mode}"' in text, f"frame mode {mode!r} is not in {path}"


def _swapped_classes(source):
    """(fastvid subclass, diffusers class) of each SWAPS entry, read from the source (no diffusers import)."""
    names = re.search(r"SWAPS = \{swap\.original\(\): swap for swap in \(([^)]*)\)\}", source)[1]
    for name in re.findall(r"\w+", names):
        bases = re.search(rf"^class {name}\(([^)]*)\):", source, re.M)[1]
        yield name, bases.split(",")[-1].strip()


def test_every_swapped_diffusers_class_is_in_the_diffusers_list():
    paths = [path for _, path in change_lists()["diffusers class"][1]]
    integration, test = ((ROOT / p).read_text() for p in paths)
    swapped = list(_swapped_classes(integration))
    assert swapped, f"no SWAPS entries found in {paths[0]}"
    for swap, original in swapped:
        assert original in test, f"{swap} ({original}) has no test in {paths[1]}"
