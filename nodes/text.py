"""Text nodes with ComfyUI's names, inputs and results (comfy_extras/nodes_string.py): concatenate, substring,
length, case, trim, replace, contains, compare, and the regex match/extract/replace.

Regex flags follow the inputs (case_insensitive, multiline, dotall). As in ComfyUI, a pattern that does not compile
makes RegexMatch false and RegexExtract empty, and fails RegexReplace (naming the pattern).
"""

from __future__ import annotations

import re

from nodes.context import RunContext
from nodes.inputs import Boolean, Combo, Int, String
from nodes.registry import Node, Output
from nodes.special_inputs import PlainInt

CATEGORY = "utils/string"
EXTRACT_MODES = ("First Match", "All Matches", "First Group", "All Groups")


def _flags(case_insensitive: bool, multiline: bool, dotall: bool) -> int:
    return (re.IGNORECASE if case_insensitive else 0) | (re.MULTILINE if multiline else 0) | \
        (re.DOTALL if dotall else 0)


class StringConcatenate(Node):
    display_name = "Concatenate"
    category = CATEGORY
    v3_schema = True
    string_a = String(None, multiline=True)
    string_b = String(None, multiline=True)
    delimiter = String("", multiline=False)
    outputs = (Output("STRING"),)

    @classmethod
    def run(cls, ctx: RunContext, string_a: str, string_b: str, delimiter: str) -> tuple[str]:
        return (delimiter.join((string_a, string_b)),)


# Python's string[start:end] (negative indices count from the end).
class StringSubstring(Node):
    display_name = "Substring"
    category = CATEGORY
    v3_schema = True
    string = String(None, multiline=True)
    start = PlainInt()
    end = PlainInt()
    outputs = (Output("STRING"),)

    @classmethod
    def run(cls, ctx: RunContext, string: str, start: int, end: int) -> tuple[str]:
        return (string[start:end],)


class StringLength(Node):
    display_name = "Length"
    category = CATEGORY
    v3_schema = True
    string = String(None, multiline=True)
    outputs = (Output("INT", name="length"),)

    @classmethod
    def run(cls, ctx: RunContext, string: str) -> tuple[int]:
        return (len(string),)


class CaseConverter(Node):
    display_name = "Case Converter"
    category = CATEGORY
    v3_schema = True
    string = String(None, multiline=True)
    mode = Combo(("UPPERCASE", "lowercase", "Capitalize", "Title Case"))
    outputs = (Output("STRING"),)

    @classmethod
    def run(cls, ctx: RunContext, string: str, mode: str) -> tuple[str]:
        convert = {"UPPERCASE": str.upper, "lowercase": str.lower, "Capitalize": str.capitalize,
                   "Title Case": str.title}.get(mode)
        return (convert(string) if convert else string,)


class StringTrim(Node):
    display_name = "Trim"
    category = CATEGORY
    v3_schema = True
    string = String(None, multiline=True)
    mode = Combo(("Both", "Left", "Right"))
    outputs = (Output("STRING"),)

    @classmethod
    def run(cls, ctx: RunContext, string: str, mode: str) -> tuple[str]:
        trim = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}.get(mode)
        return (trim(string) if trim else string,)


class StringReplace(Node):
    display_name = "Replace"
    category = CATEGORY
    v3_schema = True
    string = String(None, multiline=True)
    find = String(None, multiline=True)
    replace = String(None, multiline=True)
    outputs = (Output("STRING"),)

    @classmethod
    def run(cls, ctx: RunContext, string: str, find: str, replace: str) -> tuple[str]:
        return (string.replace(find, replace),)


class StringContains(Node):
    display_name = "Contains"
    category = CATEGORY
    v3_schema = True
    string = String(None, multiline=True)
    substring = String(None, multiline=True)
    case_sensitive = Boolean(True)
    outputs = (Output("BOOLEAN", name="contains"),)

    @classmethod
    def run(cls, ctx: RunContext, string: str, substring: str, case_sensitive: bool) -> tuple[bool]:
        if case_sensitive:
            return (substring in string,)
        return (substring.lower() in string.lower(),)


class StringCompare(Node):
    display_name = "Compare"
    category = CATEGORY
    v3_schema = True
    string_a = String(None, multiline=True)
    string_b = String(None, multiline=True)
    mode = Combo(("Starts With", "Ends With", "Equal"))
    case_sensitive = Boolean(True)
    outputs = (Output("BOOLEAN"),)

    @classmethod
    def run(cls, ctx: RunContext, string_a: str, string_b: str, mode: str, case_sensitive: bool) -> tuple[bool]:
        a, b = (string_a, string_b) if case_sensitive else (string_a.lower(), string_b.lower())
        if mode == "Starts With":
            return (a.startswith(b),)
        if mode == "Ends With":
            return (a.endswith(b),)
        return (a == b,)


class RegexMatch(Node):
    display_name = "Regex Match"
    category = CATEGORY
    v3_schema = True
    string = String(None, multiline=True)
    regex_pattern = String(None, multiline=True)
    case_insensitive = Boolean(True)
    multiline = Boolean(False)
    dotall = Boolean(False)
    outputs = (Output("BOOLEAN", name="matches"),)

    @classmethod
    def run(cls, ctx: RunContext, string: str, regex_pattern: str, case_insensitive: bool, multiline: bool,
            dotall: bool) -> tuple[bool]:
        try:
            return (re.search(regex_pattern, string, _flags(case_insensitive, multiline, dotall)) is not None,)
        except re.error:
            return (False,)


# "First Match"/"All Matches": whole matches (for "All Matches" with groups, each match's first group);
# "First Group"/"All Groups": group group_index of the first/every match. Several results are joined by newlines.
class RegexExtract(Node):
    display_name = "Regex Extract"
    category = CATEGORY
    v3_schema = True
    string = String(None, multiline=True)
    regex_pattern = String(None, multiline=True)
    mode = Combo(EXTRACT_MODES)
    case_insensitive = Boolean(True)
    multiline = Boolean(False)
    dotall = Boolean(False)
    group_index = Int(1, min=0, max=100)
    outputs = (Output("STRING"),)

    @classmethod
    def run(cls, ctx: RunContext, string: str, regex_pattern: str, mode: str, case_insensitive: bool,
            multiline: bool, dotall: bool, group_index: int) -> tuple[str]:
        flags = _flags(case_insensitive, multiline, dotall)
        try:
            return (_extract(string, regex_pattern, mode, flags, group_index),)
        except re.error:
            return ("",)


def _extract(string: str, pattern: str, mode: str, flags: int, group_index: int) -> str:
    if mode == "First Match":
        match = re.search(pattern, string, flags)
        return match.group(0) if match else ""
    if mode == "All Matches":
        matches = re.findall(pattern, string, flags)
        if matches and isinstance(matches[0], tuple):
            return "\n".join(m[0] for m in matches)
        return "\n".join(matches)
    if mode == "First Group":
        match = re.search(pattern, string, flags)
        return match.group(group_index) if match and len(match.groups()) >= group_index else ""
    if mode == "All Groups":
        return "\n".join(m.group(group_index) for m in re.finditer(pattern, string, flags)
                         if m.groups() and len(m.groups()) >= group_index)
    return ""


class RegexReplace(Node):
    description = "Find and replace text using regex patterns."
    display_name = "Regex Replace"
    category = CATEGORY
    v3_schema = True
    string = String(None, multiline=True)
    regex_pattern = String(None, multiline=True)
    replace = String(None, multiline=True)
    case_insensitive = Boolean(True, optional=True)
    multiline = Boolean(False, optional=True)
    dotall = Boolean(False, optional=True,
                     tooltip="When enabled, the dot (.) character will match any character including newline "
                             "characters. When disabled, dots won't match newlines.")
    count = Int(0, min=0, max=100, optional=True,
                tooltip="Maximum number of replacements to make. Set to 0 to replace all occurrences (default). "
                        "Set to 1 to replace only the first match, 2 for the first two matches, etc.")
    outputs = (Output("STRING"),)

    @classmethod
    def run(cls, ctx: RunContext, string: str, regex_pattern: str, replace: str, case_insensitive: bool = True,
            multiline: bool = False, dotall: bool = False, count: int = 0) -> tuple[str]:
        try:
            pattern = re.compile(regex_pattern, _flags(case_insensitive, multiline, dotall))
        except re.error as error:
            raise ValueError(f"regex_pattern {regex_pattern!r} is not a valid regular expression: {error}") from None
        try:
            return (pattern.sub(replace, string, count=count),)
        except re.error as error:
            raise ValueError(f"replace {replace!r} is not a valid replacement for this pattern: {error}") from None


NODES = (StringConcatenate, StringSubstring, StringLength, CaseConverter, StringTrim, StringReplace, StringContains,
         StringCompare, RegexMatch, RegexExtract, RegexReplace)
