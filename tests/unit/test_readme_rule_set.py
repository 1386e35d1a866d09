"""The README's rule-set example is a shipped rule set: the YAML block under "## Rule sets" names its file, and
parses to exactly that file's content (comments aside), which the rule book loads."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from rules.book import load_rules

ROOT = Path(__file__).parents[2]


def test_the_readme_rule_set_example_is_the_shipped_file() -> None:
    readme = ROOT.joinpath("README.md").read_text()
    section = readme.split("\n## Rule sets\n", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match is not None, "no YAML example under ## Rule sets"
    block = match.group(1)
    named = re.match(r"# (rules/sets/[\w.-]+\.yaml)", block)
    assert named is not None, "the example's first line names the shipped file it shows"
    shipped = ROOT / named.group(1)
    assert yaml.safe_load(block) == yaml.safe_load(shipped.read_text())
    assert yaml.safe_load(block)["rule_set"] in {rs.rule_set for rs in load_rules().rule_sets}


def test_the_example_directory_gives_each_audit_its_full_name() -> None:
    from notifications.recipients import Directory

    directory = Directory.load(ROOT / "examples" / "recipients.yaml")
    for rs in load_rules().rule_sets:
        assert directory.audit_name(rs.audit) == rs.name, rs.audit  # e.g. NHFD: National Hip Fracture Database
